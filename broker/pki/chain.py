"""Certificate path validation for smart-card logins (pure: no Twisted, no database).

Two independent engines must both accept a path:

1. OpenSSL through pyOpenSSL (``X509Store`` + ``X509StoreContext``, ``X509_STRICT``, the
   validation time): builds the path from the directory's trust anchors and the intermediates
   (the directory's and the client's), checks signatures, validity, basic constraints, path
   length, name constraints and critical extensions.
2. Our own checks on the verified path, for what OpenSSL leaves to the caller (shared/notes):
   maximum depth, weak algorithms (MD5/SHA-1 signatures, RSA under 2048 bits, unknown curves),
   key usage (digitalSignature on the login key, keyCertSign on CAs), extended key usage
   (clientAuth, smart-card logon or anyExtendedKeyUsage for purpose "client-auth"), and
   revocation (broker.pki.revocation).

Every rejection is a PkiError with a stable reason code and names the certificate at fault.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from OpenSSL import crypto

from broker.pki.errors import PkiError
from broker.pki.identity import CertIdentity, identity_of
from broker.pki.revocation import Fetch, RevocationCache, RevocationSettings, check_chain

SMART_CARD_LOGON = ObjectIdentifier("1.3.6.1.4.1.311.20.2.2")
ANY_EKU = ObjectIdentifier("2.5.29.37.0")
CLIENT_EKUS = {ExtendedKeyUsageOID.CLIENT_AUTH, SMART_CARD_LOGON, ANY_EKU}
MAX_CERT_BYTES = 64 * 1024
MAX_CHAIN = 10
WEAK_HASHES = {"md5", "sha1", "md2", "md4"}
STRONG_CURVES = {"secp256r1", "secp384r1", "secp521r1"}

# OpenSSL X509_V_ERR_* codes → our reasons.
_OPENSSL_REASONS = {
    9: "certificate_not_yet_valid", 10: "certificate_expired",
    13: "certificate_malformed", 14: "certificate_malformed",
    23: "certificate_revoked", 22: "chain_too_long", 43: "certificate_untrusted",
    66: "certificate_weak_algorithm", 67: "certificate_weak_algorithm",
    68: "certificate_weak_algorithm",
    26: "certificate_not_for_client_auth",  # X509_V_ERR_INVALID_PURPOSE
}


def parse_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from DER or PEM bytes; PkiError certificate_malformed otherwise."""
    if isinstance(data, x509.Certificate):
        return data
    if not isinstance(data, bytes | bytearray) or not data:
        raise PkiError("certificate_malformed", "No certificate was given.")
    if len(data) > MAX_CERT_BYTES:
        raise PkiError("certificate_malformed", "The certificate is too large.")
    try:
        if bytes(data).lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(bytes(data))
        return x509.load_der_x509_certificate(bytes(data))
    except ValueError as exc:
        raise PkiError("certificate_malformed", f"The certificate cannot be parsed: "
                                                f"{str(exc)[:120]}") from None


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (or one DER certificate)."""
    if bytes(data).lstrip().startswith(b"-----BEGIN") or b"-----BEGIN" in data:
        try:
            return x509.load_pem_x509_certificates(bytes(data))
        except ValueError as exc:
            raise PkiError("certificate_malformed", f"No readable PEM certificate: "
                                                    f"{str(exc)[:120]}") from None
    return [parse_certificate(data)]


def load_crl(data: bytes | x509.CertificateRevocationList) -> x509.CertificateRevocationList:
    if isinstance(data, x509.CertificateRevocationList):
        return data
    try:
        if bytes(data).lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(bytes(data))
        return x509.load_der_x509_crl(bytes(data))
    except ValueError as exc:
        raise PkiError("certificate_malformed", f"The CRL cannot be parsed: "
                                                f"{str(exc)[:120]}") from None


@dataclass
class TrustStore:
    """A directory's trust material: anchors, known intermediates, uploaded CRLs."""

    anchors: list[x509.Certificate]
    intermediates: list[x509.Certificate] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)

    @classmethod
    def from_pem(cls, anchors: Sequence[bytes], intermediates: Sequence[bytes] = (),
                 crls: Sequence[bytes] = ()) -> TrustStore:
        """Each item PEM (possibly several certificates) or DER."""
        return cls([c for a in anchors for c in load_pem_certificates(a)],
                   [c for i in intermediates for c in load_pem_certificates(i)],
                   [load_crl(c) for c in crls])

    def accepted_issuer_dns(self) -> list[str]:
        return [c.subject.rfc4514_string() for c in self.anchors + self.intermediates]


@dataclass(frozen=True)
class VerificationResult:
    chain: list[x509.Certificate]
    identity: CertIdentity
    revocation_status: str
    soft_fail_reasons: list[str]


def _who(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _openssl_path(leaf: x509.Certificate, untrusted: list[x509.Certificate], trust: TrustStore,
                  at: dt.datetime,
                  crls: list[x509.CertificateRevocationList] | None = None
                  ) -> list[x509.Certificate]:
    """OpenSSL's verdict; with ``crls`` it also checks every certificate against them."""
    store = crypto.X509Store()
    for anchor in trust.anchors:
        store.add_cert(crypto.X509.from_cryptography(anchor))
    flags = crypto.X509StoreFlags.X509_STRICT | crypto.X509StoreFlags.POLICY_CHECK
    if crls is not None:
        for crl in crls:
            store.add_crl(crl)
        flags |= crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL
    store.set_flags(flags)
    store.set_time(at.astimezone(dt.UTC).replace(tzinfo=None))
    chain = [crypto.X509.from_cryptography(c) for c in untrusted]
    ctx = crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf), chain)
    try:
        verified = ctx.get_verified_chain()
    except crypto.X509StoreContextError as exc:
        code = exc.errors[0] if exc.errors else -1
        try:
            bad = exc.certificate.to_cryptography() if exc.certificate is not None else leaf
        except (crypto.Error, ValueError):  # a certificate cryptography cannot represent
            bad = leaf
        reason = _OPENSSL_REASONS.get(code, "certificate_untrusted")
        text = exc.errors[2] if len(exc.errors) > 2 else str(exc)
        raise PkiError(reason, f"The certificate path does not validate: {text} "
                               f"(at {_who(bad)!r}).",
                       {"openssl_error": code, "subject": _who(bad)}) from None
    except crypto.Error as exc:
        raise PkiError("certificate_malformed", f"OpenSSL cannot process the path: "
                                                f"{str(exc)[:120]}") from None
    try:
        return [c.to_cryptography() for c in verified]
    except (crypto.Error, ValueError) as exc:
        raise PkiError("certificate_malformed", f"A certificate of the path cannot be read: "
                                                f"{str(exc)[:120]}") from None


def _weakness(cert: x509.Certificate, check_signature: bool) -> str | None:
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


def _ext(cert: x509.Certificate, cls: type) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise PkiError("certificate_malformed", f"Malformed extension in {_who(cert)!r}: "
                                                f"{str(exc)[:100]}") from None


def _policy_checks(path: list[x509.Certificate], purpose: str, max_depth: int) -> None:
    if len(path) - 1 > max_depth:
        raise PkiError("chain_too_long", f"The path has {len(path) - 1} certificates below "
                                         f"the trust anchor; at most {max_depth} are allowed.")
    for i, cert in enumerate(path):
        is_anchor = i == len(path) - 1
        weak = _weakness(cert, check_signature=not is_anchor)
        if weak:
            raise PkiError("certificate_weak_algorithm",
                           f"{_who(cert)!r} uses {weak}, which is not accepted.",
                           {"subject": _who(cert)})
        if i > 0:
            bc = _ext(cert, x509.BasicConstraints)
            if bc is None or not bc.ca:
                raise PkiError("certificate_untrusted", f"{_who(cert)!r} is not a CA.",
                               {"subject": _who(cert)})
            ku = _ext(cert, x509.KeyUsage)
            if ku is not None and not ku.key_cert_sign:
                raise PkiError("certificate_untrusted", f"{_who(cert)!r} may not sign "
                                                        "certificates (key usage).")
    leaf = path[0]
    bc = _ext(leaf, x509.BasicConstraints)
    if purpose == "any":
        return
    if bc is not None and bc.ca:
        raise PkiError("certificate_not_for_client_auth", "A CA certificate cannot log in.")
    ku = _ext(leaf, x509.KeyUsage)
    if ku is not None and not ku.digital_signature:
        raise PkiError("certificate_not_for_client_auth",
                       "The certificate's key may not make signatures (key usage lacks "
                       "digitalSignature).")
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if eku is not None and not (set(eku) & CLIENT_EKUS):
        raise PkiError("certificate_not_for_client_auth",
                       "The certificate is not for client authentication (its extended key "
                       "usage has neither clientAuth nor smart-card logon).")


def verify_certificate(leaf_der: bytes | x509.Certificate,
                       chain_der: Sequence[bytes | x509.Certificate], trust: TrustStore, *,
                       at: dt.datetime | None = None, purpose: str = "client-auth",
                       max_depth: int = 6,
                       revocation: RevocationSettings = RevocationSettings(),
                       fetch: Fetch | None = None,
                       cache: RevocationCache | None = None) -> VerificationResult:
    """Validate ``leaf_der`` for ``purpose`` ("client-auth" or "any") at time ``at``.

    Raises PkiError with one of: certificate_malformed, chain_too_long, certificate_untrusted,
    certificate_expired, certificate_not_yet_valid, certificate_weak_algorithm,
    certificate_not_for_client_auth, certificate_revoked, certificate_revocation_unknown.
    """
    if purpose not in ("client-auth", "any"):
        raise ValueError(f"purpose must be client-auth or any, not {purpose!r}")
    if len(chain_der) > MAX_CHAIN:
        raise PkiError("chain_too_long", f"At most {MAX_CHAIN} chain certificates are "
                                         "accepted.")
    leaf = parse_certificate(leaf_der)
    untrusted = [parse_certificate(c) for c in chain_der] + list(trust.intermediates)
    at = at or dt.datetime.now(dt.UTC)
    if not trust.anchors:
        raise PkiError("certificate_untrusted", "This directory has no trust anchors.")
    path = _openssl_path(leaf, untrusted, trust, at)
    _policy_checks(path, purpose, max_depth)

    def crl_verdict(crls: list[x509.CertificateRevocationList]) -> tuple[str, str]:
        """OpenSSL decides CRL status (indirect CRLs, IDPs, key rollover, scope, cRLSign)."""
        try:
            _openssl_path(leaf, untrusted, trust, at, crls)
        except PkiError as exc:
            if exc.code == "certificate_revoked":
                return "revoked", exc.message
            return "unknown", exc.message
        return "good", ""

    status, soft = check_chain(path, revocation, trust.crls, at, fetch, cache, crl_verdict)
    return VerificationResult(path, identity_of(leaf), status, soft)
