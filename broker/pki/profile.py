"""RFC 5280 profile checks: the MUSTs that OpenSSL and RFC 5280 path validation let through.

Path validation (§6) judges signatures, validity, constraints and policies; it does not ask
whether each certificate and CRL was *issued* as §4 and §5 require. A client-certificate
verifier must, because a non-conforming certificate is a sign of a broken or hostile CA. Each
violation is a ``Violation`` with a stable ``check`` name (documented in docs/pki.md, "How
certificates are verified"); the verifier refuses the path with code ``certificate_malformed``
and ``details.check`` naming the first violation.

Measured alternatives (shared/notes/pki.md): pkilint catches these too but costs tens of
milliseconds per certificate in pure Python and needs a certificate-type profile; the checks
below are the few the issue lists, each a handful of lines and a few microseconds.
``check_ca_upload`` gives the admin upload path errors (MUST) and warnings (SHOULD).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtensionOID

from broker.codes import Code
from broker.pki.errors import MALFORMED_DER, PkiError
from broker.pki.memo import FingerprintMemo, cert_fp, crl_fp

MAX_SERIAL_OCTETS = 20
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.I)
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")

CHECKS = {
    "serial_not_positive": "the serial number is zero or negative (RFC 5280 §4.1.2.2)",
    "serial_too_long": "the serial number is longer than 20 octets (RFC 5280 §4.1.2.2)",
    "ca_basic_constraints_not_critical":
        "a CA certificate's basicConstraints is not critical (RFC 5280 §4.2.1.9)",
    "ca_basic_constraints_missing":
        "a certificate that issues certificates has no basicConstraints (RFC 5280 §4.2.1.9)",
    "name_constraints_in_end_entity":
        "nameConstraints in an end-entity certificate (RFC 5280 §4.2.1.10)",
    "name_constraints_not_critical": "nameConstraints is not critical (RFC 5280 §4.2.1.10)",
    "name_constraints_empty": "nameConstraints with neither permitted nor excluded subtrees",
    "policy_constraints_not_critical": "policyConstraints is not critical (RFC 5280 §4.2.1.11)",
    "policy_constraints_empty": "policyConstraints with neither field (RFC 5280 §4.2.1.11)",
    "empty_subject_san_not_critical":
        "the subject is empty but subjectAltName is not critical (RFC 5280 §4.2.1.6)",
    "empty_subject_without_san":
        "the subject is empty and there is no subjectAltName (RFC 5280 §4.1.2.6)",
    "san_empty": "subjectAltName holds no names (RFC 5280 §4.2.1.6)",
    "malformed_dns_name": "a malformed DNS name (RFC 5280 §4.2.1.6, RFC 1034 preferred syntax)",
    "malformed_email": "a malformed e-mail address (RFC 5280 §4.2.1.6)",
    "malformed_ip_address": "a malformed IP address entry (RFC 5280 §4.2.1.6, §4.2.1.10)",
    "authority_key_identifier_missing":
        "a CA certificate that is not self-signed has no authorityKeyIdentifier keyIdentifier "
        "(RFC 5280 §4.2.1.1)",
    "subject_key_identifier_critical":
        "the subjectKeyIdentifier extension is marked critical (RFC 5280 §4.2.1.2)",
    "malformed_extension": "an extension that cannot be decoded",
    "unprocessable": "a certificate the RFC 5280 engine cannot process",
    "crl_number_missing": "the CRL has no cRLNumber extension (RFC 5280 §5.2.3)",
    "crl_number_critical": "the CRL's cRLNumber extension is critical (RFC 5280 §5.2.3)",
    "crl_issuer_without_crl_sign":
        "the CRL issuer's keyUsage lacks cRLSign (RFC 5280 §4.2.1.3, §6.3.3 (f))",
}


@dataclass(frozen=True)
class ProfileOptions:
    """A directory's relaxations of the profile, one boolean per setting of the same name.

    Each option that is on turns the checks ``RELAXES`` lists for it into warnings: the path is
    accepted, the admin upload shows the warning. All off (the default) is the strict profile.
    Adding an option is a field here and its entry in ``RELAXES``; the directory setting that
    feeds it is the field of the same name in broker/admin/directories.py (a test checks).
    """

    #: CA certificates whose basicConstraints or policyConstraints is not critical (RFC 5280
    #: §4.2.1.9, §4.2.1.11 MUSTs that legacy PKIs and NIST PKITS break).
    accept_noncritical_constraints: bool = False

    def relaxed(self) -> frozenset[str]:
        return frozenset(check for f in fields(self) if getattr(self, f.name)
                         for check in RELAXES[f.name])


#: Option name → the checks it turns into warnings.
RELAXES: dict[str, frozenset[str]] = {
    "accept_noncritical_constraints": frozenset({"ca_basic_constraints_not_critical",
                                                 "policy_constraints_not_critical"}),
}
STRICT = ProfileOptions()


@dataclass(frozen=True)
class Violation:
    check: str
    subject: str
    detail: str = ""

    @property
    def sentence(self) -> str:
        where = f" in {self.subject!r}" if self.subject else ""
        extra = f" ({self.detail})" if self.detail else ""
        text = CHECKS.get(self.check, self.check)
        return f"{text[:1].upper()}{text[1:]}{where}{extra}."

    def as_error(self) -> PkiError:
        return PkiError(Code.CERTIFICATE_MALFORMED, self.sentence,
                        {"check": self.check, "subject": self.subject,
                         **({"detail": self.detail} if self.detail else {})})


def _who(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def serial_octets(serial: int) -> int:
    """Length of the DER INTEGER contents for ``serial`` (two's complement, minimal)."""
    if serial >= 0:
        return serial.bit_length() // 8 + 1
    return (-serial - 1).bit_length() // 8 + 1


def dns_name_ok(name: str, *, constraint: bool = False) -> bool:
    """RFC 1034 preferred syntax (LDH labels); a SAN may use ``*`` as its whole first label."""
    if not name or len(name) > 253 or name.endswith("."):
        return False
    labels = name.split(".")
    if labels[0] == "*" and not constraint and len(labels) > 2:
        labels = labels[1:]  # "*.example.gov": a wildcard only as the entire leftmost label
    return all(_LABEL.match(label) for label in labels)


def email_ok(value: str, *, constraint: bool = False) -> bool:
    """A mailbox ``local@domain``; a constraint may also be a host or ``.domain``."""
    if constraint and "@" not in value:
        return dns_name_ok(value[1:] if value.startswith(".") else value, constraint=True)
    local, sep, domain = value.rpartition("@")
    if not sep or not local or "@" in local or not _LOCAL_PART.match(local):
        return False
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    return dns_name_ok(domain, constraint=True)


def _check_general_names(names: Sequence[x509.GeneralName], subject: str,
                         *, constraint: bool) -> list[Violation]:
    out: list[Violation] = []
    for gn in names:
        if isinstance(gn, x509.DNSName) and not dns_name_ok(gn.value, constraint=constraint):
            out.append(Violation("malformed_dns_name", subject, repr(gn.value)[:80]))
        elif isinstance(gn, x509.RFC822Name) and not email_ok(gn.value, constraint=constraint):
            out.append(Violation("malformed_email", subject, repr(gn.value)[:80]))
        elif isinstance(gn, x509.IPAddress):
            value = gn.value
            if constraint and not isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
                out.append(Violation("malformed_ip_address", subject, str(value)))
            if not constraint and not isinstance(value, ipaddress.IPv4Address
                                                 | ipaddress.IPv6Address):
                out.append(Violation("malformed_ip_address", subject, str(value)))
    return out


def _raw_ip_entries_ok(cert: x509.Certificate) -> list[Violation]:
    """cryptography parses SAN/NC IP entries leniently or not at all; check their octet count
    in the DER (4/16 octets in a SAN, 8/32 with a contiguous mask in a constraint)."""
    from asn1crypto import x509 as asn1_x509

    out: list[Violation] = []
    try:
        tbs = asn1_x509.TbsCertificate.load(cert.tbs_certificate_bytes)
        exts = tbs["extensions"]
        if exts.native is None:
            return out
        for ext in exts:
            oid = ext["extn_id"].dotted
            if oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string:
                for gn in ext["extn_value"].parsed:
                    if gn.name == "ip_address" and len(gn.chosen.contents) not in (4, 16):
                        out.append(Violation("malformed_ip_address", _who(cert),
                                             f"{len(gn.chosen.contents)} octets in a SAN"))
            elif oid == ExtensionOID.NAME_CONSTRAINTS.dotted_string:
                nc = ext["extn_value"].parsed
                for part in ("permitted_subtrees", "excluded_subtrees"):
                    for sub in nc[part] or []:
                        gn = sub["base"]
                        if gn.name != "ip_address":
                            continue
                        raw = gn.chosen.contents
                        if len(raw) not in (8, 32) or not _contiguous_mask(raw[len(raw) // 2:]):
                            out.append(Violation("malformed_ip_address", _who(cert),
                                                 "bad address/mask in a name constraint"))
    except (ValueError, TypeError, KeyError):
        out.append(Violation("malformed_extension", _who(cert), "subjectAltName or "
                                                                 "nameConstraints"))
    return out


def _contiguous_mask(mask: bytes) -> bool:
    bits = "".join(f"{b:08b}" for b in mask)
    return "01" not in bits


def _ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.Extension | None:  # type: ignore[type-arg]
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def _self_signed(cert: x509.Certificate) -> bool:
    """Issued by its own key under its own name (RFC 5280 §4.2.1.1's one exception)."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
        return True
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False


CERTIFICATE_VERDICTS: FingerprintMemo[tuple[Violation, ...]] = FingerprintMemo(4096)
CRL_VERDICTS: FingerprintMemo[tuple[Violation, ...]] = FingerprintMemo(1024)


def certificate_violations(cert: x509.Certificate, *, is_ca: bool) -> list[Violation]:
    """Every RFC 5280 §4 MUST this verifier checks, for ``cert`` in the role it plays
    (``is_ca``: it issues a certificate of the path, or it is the trust anchor). Remembered per
    fingerprint and role: a CA is judged once per process, not on every login."""
    return list(CERTIFICATE_VERDICTS.get((cert_fp(cert), is_ca),
                                         lambda: tuple(_certificate_violations(cert, is_ca))))


def _certificate_violations(cert: x509.Certificate, is_ca: bool) -> list[Violation]:
    who = _who(cert)
    out: list[Violation] = []
    serial = cert.serial_number
    if serial <= 0:
        out.append(Violation("serial_not_positive", who, str(serial)))
    if serial_octets(serial) > MAX_SERIAL_OCTETS:
        out.append(Violation("serial_too_long", who, f"{serial_octets(serial)} octets"))
    try:
        exts = cert.extensions
    except MALFORMED_DER as exc:
        # cryptography refuses to decode a SAN or nameConstraints IP entry of the wrong size
        # (or a non-contiguous mask): name that rule rather than "cannot be decoded".
        raw_ip = [v for v in _raw_ip_entries_ok(cert) if v.check == "malformed_ip_address"]
        return out + (raw_ip or [Violation("malformed_extension", who, str(exc)[:100])])
    del exts
    ski = _ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    if ski is not None and ski.critical:
        out.append(Violation("subject_key_identifier_critical", who))
    if is_ca and not _self_signed(cert):
        aki = _ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
        if aki is None or aki.value.key_identifier is None:
            out.append(Violation("authority_key_identifier_missing", who))
    bc = _ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if is_ca:
        if bc is None:
            out.append(Violation("ca_basic_constraints_missing", who))
        elif not bc.critical:
            out.append(Violation("ca_basic_constraints_not_critical", who))
    elif bc is not None and bc.value.ca and not bc.critical:
        out.append(Violation("ca_basic_constraints_not_critical", who))
    nc = _ext(cert, ExtensionOID.NAME_CONSTRAINTS)
    if nc is not None:
        is_ca_cert = bc is not None and bc.value.ca
        if not is_ca_cert:
            out.append(Violation("name_constraints_in_end_entity", who))
        if not nc.critical:
            out.append(Violation("name_constraints_not_critical", who))
        permitted = nc.value.permitted_subtrees or []
        excluded = nc.value.excluded_subtrees or []
        if not permitted and not excluded:
            out.append(Violation("name_constraints_empty", who))
        out += _check_general_names(list(permitted) + list(excluded), who, constraint=True)
    pc = _ext(cert, ExtensionOID.POLICY_CONSTRAINTS)
    if pc is not None:
        if not pc.critical:
            out.append(Violation("policy_constraints_not_critical", who))
        if (pc.value.require_explicit_policy is None
                and pc.value.inhibit_policy_mapping is None):
            out.append(Violation("policy_constraints_empty", who))
    san = _ext(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    if len(cert.subject) == 0:
        if san is None:
            out.append(Violation("empty_subject_without_san", who or "(empty subject)"))
        elif not san.critical:
            out.append(Violation("empty_subject_san_not_critical", who or "(empty subject)"))
    if san is not None:
        if len(san.value) == 0:
            out.append(Violation("san_empty", who))
        out += _check_general_names(list(san.value), who, constraint=False)
    if _has_ip_entries(san, nc):
        # cryptography parsed every entry; only iPAddress ones can hide a bad octet count.
        out += _raw_ip_entries_ok(cert)
    return out


def _has_ip_entries(san: x509.Extension | None,  # type: ignore[type-arg]
                    nc: x509.Extension | None) -> bool:  # type: ignore[type-arg]
    if san is not None and (not isinstance(san.value, x509.SubjectAlternativeName)
                            or san.value.get_values_for_type(x509.IPAddress)):
        return True
    if nc is None:
        return False
    if not isinstance(nc.value, x509.NameConstraints):
        return True
    return any(isinstance(g, x509.IPAddress) for part in (nc.value.permitted_subtrees,
                                                           nc.value.excluded_subtrees)
               for g in part or [])


def crl_violations(crl: x509.CertificateRevocationList,
                   issuer: x509.Certificate | None) -> list[Violation]:
    """RFC 5280 §5 MUSTs for a CRL, and §6.3.3 (f) for its issuer (``None``: not known).
    Remembered per pair of fingerprints."""
    key = (crl_fp(crl), cert_fp(issuer) if issuer is not None else None)
    return list(CRL_VERDICTS.get(key, lambda: tuple(_crl_violations(crl, issuer))))


def _crl_violations(crl: x509.CertificateRevocationList,
                    issuer: x509.Certificate | None) -> list[Violation]:
    who = crl.issuer.rfc4514_string()
    out: list[Violation] = []
    try:
        number = crl.extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER)
        if number.critical:
            out.append(Violation("crl_number_critical", who))
    except x509.ExtensionNotFound:
        out.append(Violation("crl_number_missing", who))
    except MALFORMED_DER as exc:
        out.append(Violation("malformed_extension", who, f"CRL: {str(exc)[:80]}"))
    if issuer is not None:
        ku = _ext(issuer, ExtensionOID.KEY_USAGE)
        # No keyUsage at all is allowed (§6.3.3 (f) checks the bit only when it is present).
        if ku is not None and not ku.value.crl_sign:
            out.append(Violation("crl_issuer_without_crl_sign", _who(issuer)))
    return out


def check_path_profile(path: Sequence[x509.Certificate],
                       options: ProfileOptions = STRICT) -> list[Violation]:
    """Raise the first violation of any certificate of ``path`` (leaf → … → anchor) that
    ``options`` does not relax; return the relaxed ones, which the path is accepted with (as
    warnings in the decision's evidence)."""
    relaxed = options.relaxed()
    accepted: list[Violation] = []
    for i, cert in enumerate(path):
        found = certificate_violations(cert, is_ca=i > 0)
        refused = [v for v in found if v.check not in relaxed]
        if refused:
            raise refused[0].as_error()
        accepted += found
    return accepted


# SHOULDs: accepted at upload with a warning.
def _ca_warnings(cert: x509.Certificate) -> list[str]:
    who = _who(cert)
    warnings: list[str] = []
    if _ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER) is None:
        warnings.append(f"{who!r} has no subjectKeyIdentifier (RFC 5280 §4.2.1.2: SHOULD/MUST "
                        "for CAs); path building falls back to names")
    ku = _ext(cert, ExtensionOID.KEY_USAGE)
    if ku is None:
        warnings.append(f"{who!r} has no keyUsage (RFC 5280 §4.2.1.3: conforming CAs include "
                        "it)")
    elif not ku.critical:
        warnings.append(f"{who!r} has a non-critical keyUsage (RFC 5280 §4.2.1.3: SHOULD be "
                        "critical)")
    if serial_octets(cert.serial_number) < 8:
        warnings.append(f"{who!r} has a short serial number (CAs should use at least 64 bits "
                        "of randomness)")
    return warnings


def check_ca_upload(der: bytes, options: ProfileOptions = STRICT
                    ) -> tuple[list[str], list[str]]:
    """Judge a CA certificate an admin uploads: (errors, warnings), each a list of sentences.

    Errors are RFC 5280 MUSTs (the upload must be refused); warnings are SHOULDs (accepted, but
    shown), and the MUSTs the directory's ``options`` relax. A certificate that cannot be
    parsed, or is no CA, is an error.
    """
    try:
        cert = (x509.load_pem_x509_certificate(der) if der.lstrip().startswith(b"-----")
                else x509.load_der_x509_certificate(der))
    except MALFORMED_DER as exc:
        return [f"The certificate cannot be parsed: {str(exc)[:120]}."], []
    relaxed = options.relaxed()
    found = certificate_violations(cert, is_ca=True)
    errors = [v.sentence for v in found if v.check not in relaxed]
    allowed = [f"{v.sentence} Accepted: this directory relaxes that rule."
               for v in found if v.check in relaxed]
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            errors.append(f"{_who(cert)!r} is not a CA (basicConstraints cA is false).")
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            errors.append(f"{_who(cert)!r} may not sign certificates (keyUsage lacks "
                          "keyCertSign).")
    except x509.ExtensionNotFound:
        pass
    except MALFORMED_DER as exc:
        errors.append(f"An extension cannot be decoded: {str(exc)[:120]}.")
    warnings = allowed + _ca_warnings(cert) if not errors else []
    return errors, warnings
