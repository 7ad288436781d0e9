"""What a certificate is looked up by: the certmap rules' values, escaped filter clauses
(RFC 4515), the answers (LdapUser) and refusals (LdapRefusal) of a lookup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.codes import Code
from broker.kinds import CertmapRule
from broker.service.errors import ServiceError
from broker.service.ldapdir.settings import LdapSettings

# --------------------------------------------------------------------------- escaping

def escape(value: str | bytes) -> str:
    """An assertion value escaped as RFC 4515 requires (``*``, ``(``, ``)``, ``\\``, NUL, and
    every byte outside printable ASCII), so no certificate value can change a filter."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return "".join(chr(b) if 0x20 <= b < 0x7F and chr(b) not in "*()\\" else f"\\{b:02x}"
                   for b in raw)


# --------------------------------------------------------------------------- certificate values

def _ad_dn(name: Any) -> str:
    """A certificate Name as AD writes it in altSecurityIdentities: the RDNs in encoded order
    (``C=US,O=Example,CN=Issuing CA``, the reverse of RFC 4514's string)."""
    return ",".join(rdn.rfc4514_string() for rdn in name.rdns)


def alt_security_identities(cert_der: bytes, *, weak: bool) -> list[str]:
    """The altSecurityIdentities values that map ``cert_der`` (Microsoft KB5014754).

    Strong: ``X509:<I>issuer<SR>serial`` (serial bytes reversed, hex), ``X509:<SKI>ski``,
    ``X509:<SHA1-PUKEY>sha1``. Weak (only when asked): ``X509:<I>issuer<S>subject``,
    ``X509:<S>subject``, ``X509:<RFC822>email``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_der_x509_certificate(cert_der)
    out: list[str] = []
    if weak:
        out.append(f"X509:<I>{_ad_dn(cert.issuer)}<S>{_ad_dn(cert.subject)}")
        out.append(f"X509:<S>{_ad_dn(cert.subject)}")
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            out.extend(f"X509:<RFC822>{e}" for e in san.get_values_for_type(x509.RFC822Name))
        except x509.ExtensionNotFound:
            pass
        return out
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big")
    out.append(f"X509:<I>{_ad_dn(cert.issuer)}<SR>{serial[::-1].hex()}")
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        out.append(f"X509:<SKI>{ski.hex()}")
    except x509.ExtensionNotFound:
        pass
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - the name AD gives this mapping
    from cryptography.hazmat.primitives import serialization
    digest.update(cert.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    out.append(f"X509:<SHA1-PUKEY>{digest.finalize().hex()}")
    return out


def rule_values(rule: str, ident: Any, cert_der: bytes) -> list[str | bytes]:
    """What one certmap rule looks for in its attribute (empty: nothing to look up): the
    local rules' values as :class:`~broker.kinds.CertmapRule` folds them, the LDAP-only ones
    read from the certificate's DER. ValueError for an unknown rule."""
    r = CertmapRule(rule)
    if not r.ldap_only:
        return list(r.cert_values(ident))
    if r is CertmapRule.CERTIFICATE:
        return [cert_der]
    weak = r is CertmapRule.ALT_SECURITY_IDENTITIES_WEAK
    return list(alt_security_identities(cert_der, weak=weak))


def _same(rule: str, wanted: str | bytes, got: bytes) -> bool:
    if isinstance(wanted, bytes):
        return wanted == got
    return wanted.lower() == got.decode("utf-8", "replace").lower()


# --------------------------------------------------------------------------- answers

@dataclass(frozen=True)
class LdapUser:
    """The directory entry a login found, and why."""

    username: str
    dn: str
    rule: str
    upn: str | None = None
    email: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.username, "rule": self.rule, "dn": self.dn, "upn": self.upn,
                "email": self.email}


class LdapRefusal(ServiceError):
    """A refusal decided by the directory (user_not_found, account_disabled, …): carries the
    rule and entry DN for the audit event."""


def _refuse(code: Code, message: str, rule: str | None = None, dn: str | None = None,
            **more: Any) -> LdapRefusal:
    details = {k: v for k, v in {"rule": rule, "dn": dn, **more}.items() if v is not None}
    return LdapRefusal(code, message, details)


def unavailable(s: LdapSettings, why: str) -> ServiceError:
    return ServiceError(Code.DIRECTORY_UNAVAILABLE,
                        f"The directory server of {s.directory_id!r} cannot be reached "
                        f"({why}); try again shortly.",
                        {"directory": s.directory_id, "retry_after_s": s.timeout_s})



def _clause(s: LdapSettings, rule: str, value: str | bytes) -> str:
    """One rule's filter clause. OpenLDAP matches userCertificate by (serial, issuer) in the
    certificateExactMatch assertion form (RFC 4523), AD by the exact DER octets; either way
    the entries found are then compared with the DER exactly."""
    attr = s.attribute(rule) or ""
    if rule == "certificate" and s.flavour == "generic" and isinstance(value, bytes):
        from cryptography import x509

        cert = x509.load_der_x509_certificate(value)
        issuer = cert.issuer.rfc4514_string().replace('"', '""')
        gser = f'{{ serialNumber {cert.serial_number}, issuer "{issuer}" }}'
        return f"({attr.split(';')[0]}:certificateExactMatch:={escape(gser)})"
    return f"({attr}={escape(value)})"


def _sizelimited(run: Callable[[], Any]) -> Any:
    """A search that hits its size limit returned more than we can judge: ambiguous."""
    import ldap

    try:
        return run()
    except ldap.SIZELIMIT_EXCEEDED:
        raise _refuse(Code.USER_AMBIGUOUS, "The certificate matches several directory "
                      "entries; ask an administrator to fix the mapping.") from None


def _values(attrs: dict[str, list[bytes]], attr: str) -> list[bytes]:
    want = attr.lower()
    for k, v in attrs.items():
        if k.lower() == want or k.lower().split(";")[0] == want.split(";")[0]:
            return list(v)
    return []


def _first(attrs: dict[str, list[bytes]], attr: str) -> str | None:
    got = _values(attrs, attr)
    return got[0].decode("utf-8", "replace") if got else None


