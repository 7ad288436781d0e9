"""A small CA toolkit: PIV-style roots, issuing CAs, user certificates, CRLs, OCSP signers.

Used by the tests, `broker demo` and the card simulator (`broker-client card-sim` with no key
given). Everything is built with ``cryptography``; nothing here is for production issuance.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
FASC_N_OID = ObjectIdentifier("2.16.840.1.101.3.6.6")
SMART_CARD_LOGON = ObjectIdentifier("1.3.6.1.4.1.311.20.2.2")
EKUS = {
    "client-auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "smart-card-logon": SMART_CARD_LOGON,
    "email-protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "server-auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "ocsp-signing": ExtendedKeyUsageOID.OCSP_SIGNING,
}

PrivateKey = Any


def new_key(kind: str = "ec-p256") -> PrivateKey:
    """A fresh private key: ``rsa-2048``, ``rsa-3072``, ``rsa-1024`` (weak, tests only),
    ``ec-p256`` or ``ec-p384``."""
    if kind.startswith("rsa-"):
        return rsa.generate_private_key(65537, int(kind[4:]))
    curves = {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}
    if kind not in curves:
        raise ValueError(f"unknown key kind {kind!r}")
    return ec.generate_private_key(curves[kind])


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(cn: str, org: str = "Example Agency") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(key: PrivateKey, hash_alg: Any) -> Any:
    if hash_alg is not None:
        return hash_alg
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any, not_before: dt.datetime,
             not_after: dt.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False))


def _distribution(builder: x509.CertificateBuilder, crl_url: str | None,
                  ocsp_url: str | None) -> x509.CertificateBuilder:
    if crl_url:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), critical=False)
    if ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    return builder


def make_root(cn: str, key_kind: str = "ec-p256", *, not_before: dt.datetime | None = None,
              not_after: dt.datetime | None = None, path_length: int | None = None,
              name_constraints: x509.NameConstraints | None = None,
              key: PrivateKey | None = None) -> Issued:
    key = key or new_key(key_kind)
    now = _now()
    b = _builder(_name(cn), _name(cn), key.public_key(), not_before or now - dt.timedelta(days=1),
                 not_after or now + dt.timedelta(days=3650))
    b = b.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                        critical=True)
    if name_constraints is not None:
        b = b.add_extension(name_constraints, critical=True)
    return Issued(b.sign(key, _hash_for(key, None)), key)


def make_intermediate(parent: Issued, cn: str, key_kind: str = "ec-p256", *,
                      path_length: int | None = 0, not_before: dt.datetime | None = None,
                      not_after: dt.datetime | None = None, crl_url: str | None = None,
                      ocsp_url: str | None = None,
                      name_constraints: x509.NameConstraints | None = None,
                      key: PrivateKey | None = None,
                      hash_alg: hashes.HashAlgorithm | None = None) -> Issued:
    key = key or new_key(key_kind)
    now = _now()
    b = _builder(_name(cn), parent.cert.subject, key.public_key(),
                 not_before or now - dt.timedelta(days=1),
                 not_after or now + dt.timedelta(days=1825))
    b = b.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                        critical=True)
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
        parent.key.public_key()), critical=False)
    if name_constraints is not None:
        b = b.add_extension(name_constraints, critical=True)
    b = _distribution(b, crl_url, ocsp_url)
    return Issued(b.sign(parent.key, _hash_for(parent.key, hash_alg)), key)


def _other_name_utf8(oid: ObjectIdentifier, value: str) -> x509.OtherName:
    from asn1crypto.core import UTF8String

    return x509.OtherName(oid, UTF8String(value).dump())


def make_user_cert(issuer: Issued, cn: str, key_kind: str = "ec-p256", *,
                   key: PrivateKey | None = None, upn: str | None = None,
                   email: str | None = None, fasc_n: bytes | None = None,
                   card_uuid: str | None = None,
                   eku: Sequence[str] = ("client-auth", "smart-card-logon"),
                   not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
                   crl_url: str | None = None, ocsp_url: str | None = None,
                   hash_alg: hashes.HashAlgorithm | None = None,
                   key_usage_digital_signature: bool = True,
                   extra_extensions: Iterable[tuple[x509.ExtensionType, bool]] = ()) -> Issued:
    """A PIV Authentication-style certificate: digitalSignature, the EKUs asked for, and a SAN
    with the UPN (otherName), email, FASC-N (otherName) and card UUID (urn:uuid: URI)."""
    from asn1crypto.core import OctetString

    key = key or new_key(key_kind)
    now = _now()
    b = _builder(_name(cn), issuer.cert.subject, key.public_key(),
                 not_before or now - dt.timedelta(days=1),
                 not_after or now + dt.timedelta(days=365))
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    # Without digitalSignature the key is for key management only (keyEncipherment).
    b = b.add_extension(x509.KeyUsage(key_usage_digital_signature, False,
                                      not key_usage_digital_signature, False, False, False,
                                      False, False, False), critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([EKUS[e] for e in eku]), critical=False)
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
        issuer.key.public_key()), critical=False)
    names: list[x509.GeneralName] = []
    if upn:
        names.append(_other_name_utf8(UPN_OID, upn))
    if fasc_n is not None:
        names.append(x509.OtherName(FASC_N_OID, OctetString(fasc_n).dump()))
    if email:
        names.append(x509.RFC822Name(email))
    if card_uuid:
        names.append(x509.UniformResourceIdentifier(f"urn:uuid:{card_uuid}"))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    b = _distribution(b, crl_url, ocsp_url)
    for ext, critical in extra_extensions:
        b = b.add_extension(ext, critical=critical)
    return Issued(b.sign(issuer.key, _hash_for(issuer.key, hash_alg)), key)


def make_ocsp_signer(issuer: Issued, cn: str = "OCSP Responder",
                     key_kind: str = "ec-p256") -> Issued:
    """A delegated OCSP responder certificate (id-kp-OCSPSigning) issued by ``issuer``."""
    key = new_key(key_kind)
    now = _now()
    b = _builder(_name(cn), issuer.cert.subject, key.public_key(), now - dt.timedelta(days=1),
                 now + dt.timedelta(days=30))
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                      False), critical=True)
    b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]),
                        critical=False)
    return Issued(b.sign(issuer.key, _hash_for(issuer.key, None)), key)


def make_crl(issuer: Issued, revoked: Sequence[int], *, this_update: dt.datetime | None = None,
             next_update: dt.datetime | None = None) -> x509.CertificateRevocationList:
    now = _now()
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
         .last_update(this_update or now - dt.timedelta(minutes=5))
         .next_update(next_update or now + dt.timedelta(days=7))
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer.key.public_key()), critical=False)
         .add_extension(x509.CRLNumber(1), critical=False))
    for serial in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(now - dt.timedelta(minutes=1)).build())
    return b.sign(issuer.key, _hash_for(issuer.key, None))


@dataclass(frozen=True)
class DemoPki:
    root: Issued
    intermediate: Issued
    user: Issued


def make_demo_pki(key_kind: str = "ec-p256", username: str = "demo.user",
                  upn: str = "demo.user@corp.example") -> DemoPki:
    """Root → issuing CA → a PIV Authentication certificate for ``username``."""
    import uuid

    root = make_root("Demo Root CA")
    inter = make_intermediate(root, "Demo Issuing CA")
    user = make_user_cert(inter, username, key_kind, upn=upn, email=upn,
                          fasc_n=bytes.fromhex("d4e739da739ced39ce739d836858210842108421c84210c3eb"),
                          card_uuid=str(uuid.uuid4()))
    return DemoPki(root, inter, user)
