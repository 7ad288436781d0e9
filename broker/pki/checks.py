"""The checks of a path OpenSSL leaves to the caller (pure): weak algorithms (MD5/SHA-1
signatures, RSA under 2048 bits, unknown curves), the maximum depth, key usage (digitalSignature
on the login key, keyCertSign on CAs), extended key usage (clientAuth, smart-card logon or
anyExtendedKeyUsage for purpose "client-auth"), unknown critical extensions, wildcard names
under excluded subtrees, and the RFC 5280 profile of the CRLs a path rests on. Each failure is
a PkiError with a stable reason code naming the certificate at fault.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from broker.codes import Code
from broker.pki import profile
from broker.pki.errors import MALFORMED_DER, PkiError
from broker.pki.paths import name_key
from broker.pki.revocation import crl_applies

SMART_CARD_LOGON = ObjectIdentifier("1.3.6.1.4.1.311.20.2.2")
ANY_EKU = ObjectIdentifier("2.5.29.37.0")
CLIENT_EKUS = {ExtendedKeyUsageOID.CLIENT_AUTH, SMART_CARD_LOGON, ANY_EKU}
# Extensions some check on the path processes; any other one marked critical is refused.
KNOWN_EXTENSIONS = {
    "2.5.29.14", "2.5.29.35", "2.5.29.15", "2.5.29.37", "2.5.29.17", "2.5.29.18",
    "2.5.29.19", "2.5.29.30", "2.5.29.32", "2.5.29.33", "2.5.29.36", "2.5.29.54",
    "2.5.29.31", "2.5.29.46", "1.3.6.1.5.5.7.1.1", "1.3.6.1.5.5.7.1.11", "2.5.29.9",
}
WEAK_HASHES = {"md5", "sha1", "md2", "md4"}
STRONG_CURVES = {"secp256r1", "secp384r1", "secp521r1"}



def who(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def weakness(cert: x509.Certificate, check_signature: bool) -> str | None:
    if check_signature:
        try:
            alg = cert.signature_hash_algorithm
        except Exception:  # unsupported algorithm OIDs raise UnsupportedAlgorithm
            return "an unsupported signature algorithm"
        if alg is not None and alg.name in WEAK_HASHES:
            return f"a {alg.name.upper()} signature"
    try:
        key = cert.public_key()
    except Exception:  # unknown key types raise UnsupportedAlgorithm / ValueError
        return "an unsupported key type"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        return f"an RSA key of {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in STRONG_CURVES:
        return f"an EC key on {key.curve.name}"
    if isinstance(key, dsa.DSAPublicKey):
        return "a DSA key"
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
                      | ed448.Ed448PublicKey):
        return "an unsupported key type"
    return None


def extension(cert: x509.Certificate, cls: type) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None
    except MALFORMED_DER as exc:
        raise PkiError(Code.CERTIFICATE_MALFORMED, f"Malformed extension in {who(cert)!r}: "
                                                f"{str(exc)[:100]}") from None


def counted_intermediates(path: Sequence[x509.Certificate]) -> int:
    """Intermediate CAs that count against the depth limit: self-issued ones (a key rollover
    under the same name) do not (RFC 5280 §6.1.4 (l))."""
    return sum(1 for c in path[1:-1] if name_key(c.subject) != name_key(c.issuer))


def check_path_usage(path: list[x509.Certificate], purpose: str, max_depth: int) -> None:
    # Depth counts the intermediate CAs between leaf and anchor (cryptography's
    # max_chain_depth), never the leaf, the anchor or self-issued intermediates.
    intermediates = counted_intermediates(path)
    if intermediates > max_depth:
        raise PkiError(Code.CHAIN_TOO_LONG, f"The path has {intermediates} intermediate CAs "
                                         f"between the certificate and the trust anchor; at "
                                         f"most {max_depth} are allowed.",
                       {"intermediates": intermediates, "max_depth": max_depth})
    for i, cert in enumerate(path):
        is_anchor = i == len(path) - 1
        weak = weakness(cert, check_signature=not is_anchor)
        if weak:
            raise PkiError(Code.CERTIFICATE_WEAK_ALGORITHM,
                           f"{who(cert)!r} uses {weak}, which is not accepted.",
                           {"subject": who(cert)})
        if i > 0:
            bc = extension(cert, x509.BasicConstraints)
            if bc is None or not bc.ca:
                raise PkiError(Code.CERTIFICATE_UNTRUSTED, f"{who(cert)!r} is not a CA.",
                               {"subject": who(cert)})
            ku = extension(cert, x509.KeyUsage)
            if ku is not None and not ku.key_cert_sign:
                raise PkiError(Code.CERTIFICATE_UNTRUSTED, f"{who(cert)!r} may not sign "
                                                        "certificates (key usage).")
    leaf = path[0]
    bc = extension(leaf, x509.BasicConstraints)
    if purpose == "any":
        return
    if bc is not None and bc.ca:
        raise PkiError(Code.CERTIFICATE_NOT_FOR_CLIENT_AUTH, "A CA certificate cannot log in.")
    ku = extension(leaf, x509.KeyUsage)
    if ku is not None and not ku.digital_signature:
        raise PkiError(Code.CERTIFICATE_NOT_FOR_CLIENT_AUTH,
                       "The certificate's key may not make signatures (key usage lacks "
                       "digitalSignature).")
    eku = extension(leaf, x509.ExtendedKeyUsage)
    if eku is not None and not (set(eku) & CLIENT_EKUS):
        raise PkiError(Code.CERTIFICATE_NOT_FOR_CLIENT_AUTH,
                       "The certificate is not for client authentication (its extended key "
                       "usage has neither clientAuth nor smart-card logon).")


def check_unknown_critical(path: list[x509.Certificate]) -> None:
    """A critical extension nobody on the path processes makes the certificate unusable."""
    for cert in path:
        try:
            exts = list(cert.extensions)
        except MALFORMED_DER as exc:
            raise PkiError(Code.CERTIFICATE_MALFORMED, f"Malformed extension in {who(cert)!r}: "
                                                    f"{str(exc)[:100]}",
                           {"check": "malformed_extension", "subject": who(cert)}) from None
        for ext in exts:
            if ext.critical and ext.oid.dotted_string not in KNOWN_EXTENSIONS:
                raise PkiError(Code.CERTIFICATE_UNTRUSTED,
                               f"{who(cert)!r} has an unknown critical extension "
                               f"{ext.oid.dotted_string}.",
                               {"subject": who(cert), "extension": ext.oid.dotted_string})


def _wildcard_in(wildcard: str, excluded: str) -> bool:
    """Could the SAN ``wildcard`` ("*.rest") stand for a name inside the excluded dNSName
    subtree ``excluded``? Its one leftmost label can be any label, so it can when the subtree
    is ``rest`` or an ancestor of it (the name itself lies in it) or ``label.rest`` (one of the
    names the wildcard stands for is the subtree's root)."""
    rest = wildcard[2:].rstrip(".").lower()
    base = excluded.rstrip(".").lower().lstrip(".")
    if not base:
        return True
    if rest == base or rest.endswith("." + base):
        return True
    head, dot, tail = base.partition(".")
    return bool(dot) and tail == rest and bool(head)


def check_excluded_wildcards(path: list[x509.Certificate]) -> None:
    """RFC 5280 §4.2.1.10 for wildcard dNSNames (Go CVE-2025-61727's class): a SAN
    ``*.corp.example`` under an excludedSubtrees entry ``test.corp.example`` claims the
    excluded host. OpenSSL matches the wildcard literally and lets it through; this refuses it.
    Applies to every certificate below the constraining CA (self-issued intermediates
    excepted, §6.1.3 (b))."""
    for i in range(1, len(path)):
        constraints = extension(path[i], x509.NameConstraints)
        if constraints is None or not constraints.excluded_subtrees:
            continue
        excluded = [g.value for g in constraints.excluded_subtrees
                    if isinstance(g, x509.DNSName)]
        if not excluded:
            continue
        for j, cert in enumerate(path[:i]):
            if j > 0 and name_key(cert.subject) == name_key(cert.issuer):
                continue
            san = extension(cert, x509.SubjectAlternativeName)
            for dns in san.get_values_for_type(x509.DNSName) if san is not None else []:
                if not dns.startswith("*."):
                    continue
                hit = next((e for e in excluded if _wildcard_in(dns, e)), None)
                if hit is not None:
                    raise PkiError(Code.CERTIFICATE_UNTRUSTED,
                                   f"The name {dns!r} of {who(cert)!r} can stand for a name "
                                   f"that {who(path[i])!r} excludes ({hit!r}).",
                                   {"check": "name_constraints_excluded_wildcard",
                                    "subject": who(cert), "name": dns, "excluded": hit,
                                    "constrained_by": who(path[i])})


def check_crl_profile(path: list[x509.Certificate], crls: list[x509.CertificateRevocationList],
                 at: dt.datetime) -> None:
    """RFC 5280 §5 checks on every CRL that speaks for a certificate of the path."""
    for issuer in path[1:]:
        for crl in crls:
            if crl_applies(crl, issuer, at):
                found = profile.crl_violations(crl, issuer)
                if found:
                    raise found[0].as_error()


