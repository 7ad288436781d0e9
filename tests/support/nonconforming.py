"""Certificates and CRLs that break one RFC 5280 MUST each, under a given (conforming) CA, for
the tests that drive them through a real login. Built with cryptography's builders; where the
builder refuses the violation (serial numbers, raw name entries) the DER is patched and signed
again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID

from broker.pki import issue

Ext = tuple[x509.ExtensionType, bool]
CA_KU = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
CERT_SIGN_ONLY_KU = x509.KeyUsage(False, False, False, False, False, True, False, False, False)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def intermediate(parent: issue.Issued, cn: str, exts: Sequence[Ext] | None = None,
                 ku: x509.KeyUsage = CA_KU) -> issue.Issued:
    """A CA under ``parent`` with ``exts`` (default: a critical basicConstraints) and ``ku``."""
    key = issue.new_key()
    now = _now()
    b = (x509.CertificateBuilder().subject_name(issue._name(cn))
         .issuer_name(parent.cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=90))
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             parent.key.public_key()), False)
         .add_extension(ku, True))
    for ext, critical in (exts if exts is not None
                          else [(x509.BasicConstraints(True, 0), True)]):
        b = b.add_extension(ext, critical)
    return issue.Issued(b.sign(parent.key, hashes.SHA256()), key)


def resign(cert: issue.Issued, signer: issue.Issued,
           mutate: Callable[[Any], None]) -> issue.Issued:
    """``cert`` with its TBS changed by ``mutate`` (asn1crypto) and signed again (EC keys)."""
    c = asn1_x509.Certificate.load(cert.cert.public_bytes(serialization.Encoding.DER))
    tbs = c["tbs_certificate"]
    mutate(tbs)
    tbs_der = tbs.dump(force=True)
    sig = signer.key.sign(tbs_der, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,union-attr]
    new = asn1_x509.Certificate({"tbs_certificate": asn1_x509.TbsCertificate.load(tbs_der),
                                 "signature_algorithm": c["signature_algorithm"],
                                 "signature_value": sig})
    return issue.Issued(x509.load_der_x509_certificate(new.dump()), cert.key)


def with_serial(cert: issue.Issued, signer: issue.Issued, serial: int) -> issue.Issued:
    def set_serial(tbs: Any) -> None:
        tbs["serial_number"] = serial

    return resign(cert, signer, set_serial)


def raw_extension(oid: x509.ObjectIdentifier, der_hex: str) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(oid, bytes.fromhex(der_hex))


# SEQUENCE { [7] 3 octets }: an iPAddress entry that is neither IPv4 nor IPv6.
BAD_IP_SAN = raw_extension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, "30058703c0a801")
# permittedSubtrees { [7] 192.168.0.0 / 255.0.255.0 }: a non-contiguous mask.
BAD_IP_NAME_CONSTRAINT = raw_extension(ExtensionOID.NAME_CONSTRAINTS,
                                       "300ea00c300a8708c0a80000ff00ff00")


def crl(signer: issue.Issued, *, number: int | None = 1, number_critical: bool = False,
        revoked: Sequence[int] = ()) -> x509.CertificateRevocationList:
    now = _now()
    b = (x509.CertificateRevocationListBuilder().issuer_name(signer.cert.subject)
         .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=1))
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             signer.key.public_key()), False))
    if number is not None:
        b = b.add_extension(x509.CRLNumber(number), number_critical)
    for serial in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(now - dt.timedelta(minutes=1)).build())
    return b.sign(signer.key, hashes.SHA256())


def leaf(issuer: issue.Issued, *, subject: x509.Name | None = None,
         upn: str = "alice@corp.example", san_critical: bool = False,
         names: Sequence[x509.GeneralName] = (), san: x509.ExtensionType | None = None,
         extra: Sequence[Ext] = (), crl_url: str | None = None) -> issue.Issued:
    """A PIV-style login certificate under ``issuer`` mapped by ``upn``; ``subject`` may be
    empty, ``names`` join the UPN in the subjectAltName (``san`` replaces it whole), ``extra``
    adds (possibly non-conforming) extensions."""
    key = issue.new_key()
    now = _now()
    b = (x509.CertificateBuilder()
         .subject_name(issue._name("Profile Card") if subject is None else subject)
         .issuer_name(issuer.cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(False, None), True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                      False), True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer.key.public_key()), False)
         .add_extension(san or x509.SubjectAlternativeName(
             [issue._other_name_utf8(issue.UPN_OID, upn), *names]), san_critical))
    if crl_url is not None:
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), False)
    for ext, critical in extra:
        b = b.add_extension(ext, critical)
    return issue.Issued(b.sign(issuer.key, hashes.SHA256()), key)
