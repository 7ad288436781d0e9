"""Who a certificate names, and which directory user that is (certmap).

Extracts the UPN (SAN otherName 1.3.6.1.4.1.311.20.2.3), RFC 822 emails, the subject DN
(RFC 4514), the FASC-N (SAN otherName 2.16.840.1.101.3.6.6) and the PIV card UUID (SAN URI
``urn:uuid:…``) and a SHA-256 fingerprint. ASN.1 inside otherNames is decoded with asn1crypto.

Certmap rules are tried in order ("upn", "email", "subject", "fingerprint"): the first rule that
matches anybody decides, and it must match exactly one user (``user_ambiguous`` otherwise); no
match under any rule is ``user_not_found``. UPN and email compare case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ObjectIdentifier

from broker.codes import Code
from broker.kinds import LOCAL_CERTMAP_RULES, CertmapRule
from broker.pki.errors import NO_USABLE_EXTENSION, PkiError

UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
FASC_N_OID = ObjectIdentifier("2.16.840.1.101.3.6.6")
#: The certmap rules of the broker's own users (:class:`broker.kinds.CertmapRule` owns each).
CERTMAP_RULES = tuple(r.value for r in LOCAL_CERTMAP_RULES)


@dataclass(frozen=True)
class CertIdentity:
    subject: str
    upn: str | None
    emails: tuple[str, ...]
    fasc_n: str | None  # hex of the 25-byte FASC-N
    card_uuid: str | None
    fingerprint: str  # SHA-256 hex of the DER certificate

    def as_dict(self) -> dict[str, object]:
        return {"subject": self.subject, "upn": self.upn, "emails": list(self.emails),
                "fasc_n": self.fasc_n, "fasc_n_digits": fasc_n_digits(self.fasc_n),
                "card_uuid": self.card_uuid, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class UserRecord:
    username: str
    upn: str | None = None
    email: str | None = None
    subject: str | None = None
    fingerprint: str | None = None


def _decode_other_name(value: bytes, kind: str) -> str | bytes | None:
    from asn1crypto.core import Asn1Value, OctetString, UTF8String

    try:
        parsed = Asn1Value.load(value, strict=True)
        if kind == "utf8":
            return str(UTF8String.load(value, strict=True).native) \
                if parsed.tag == 12 else None
        return bytes(OctetString.load(value, strict=True).native) if parsed.tag == 4 else None
    except (ValueError, TypeError):
        return None


def identity_of(cert: x509.Certificate) -> CertIdentity:
    """Everything the broker maps users by; malformed SAN parts are skipped, not fatal."""
    from cryptography.hazmat.primitives import serialization

    upn: str | None = None
    emails: list[str] = []
    fasc_n: str | None = None
    card_uuid: str | None = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except NO_USABLE_EXTENSION:
        san = None
    if san is not None:
        for name in san:
            if isinstance(name, x509.OtherName) and name.type_id == UPN_OID and upn is None:
                got = _decode_other_name(name.value, "utf8")
                upn = got if isinstance(got, str) else None
            elif isinstance(name, x509.OtherName) and name.type_id == FASC_N_OID:
                raw = _decode_other_name(name.value, "octets")
                fasc_n = raw.hex() if isinstance(raw, bytes) else None
            elif isinstance(name, x509.RFC822Name):
                emails.append(name.value)
            elif isinstance(name, x509.UniformResourceIdentifier) and \
                    name.value.lower().startswith("urn:uuid:"):
                card_uuid = name.value[9:].lower()
    der = cert.public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return CertIdentity(subject=cert.subject.rfc4514_string(), upn=upn, emails=tuple(emails),
                        fasc_n=fasc_n, card_uuid=card_uuid,
                        fingerprint=digest.finalize().hex())


def fasc_n_digits(fasc_n_hex: str | None) -> str | None:
    """The FASC-N's digits (agency, system, credential, CS, ICI, PI, OC, OI, POA) from its
    25-byte 5-bit BCD encoding (4 data bits + odd parity, LSB first, per the TIG SCEPACS);
    None when it does not decode."""
    if not fasc_n_hex:
        return None
    try:
        raw = bytes.fromhex(fasc_n_hex)
    except ValueError:
        return None
    if len(raw) != 25:
        return None
    bits = "".join(f"{b:08b}" for b in raw)
    out = []
    for i in range(0, 200, 5):
        chunk = bits[i:i + 5]
        if chunk.count("1") % 2 != 1:
            return None  # parity error
        value = int(chunk[3::-1], 2)  # data bits are sent least significant first
        symbols = {11: "S", 13: "F", 15: "E"}
        out.append(symbols.get(value, str(value) if value < 10 else "?"))
    return "".join(out)


def _matches(rule: CertmapRule, ident: CertIdentity, user: UserRecord) -> bool:
    column = rule.column
    if column is None:
        raise ValueError(f"certmap rule {rule.value} needs an LDAP directory")
    # UserRecord names the users column cert_fingerprint "fingerprint".
    value = user.fingerprint if column == "cert_fingerprint" else getattr(user, column)
    return rule.matches(ident, value)


def map_certificate(ident: CertIdentity, rules: Sequence[str],
                    users: Iterable[UserRecord]) -> UserRecord:
    """The one user the certificate maps to; PkiError user_not_found / user_ambiguous."""
    pool = list(users)
    for rule in map(CertmapRule, rules):
        found = [u for u in pool if _matches(rule, ident, u)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise PkiError(Code.USER_AMBIGUOUS, f"The certificate matches {len(found)} users by "
                                             f"{rule}; ask an administrator to fix the mapping.",
                           {"rule": rule.value})
    raise PkiError(Code.USER_NOT_FOUND, "No user of this directory matches the certificate.",
                   {"rules": list(rules)})
