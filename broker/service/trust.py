"""Verifying a card's answer for one directory: the trust snapshot, cached stores, verdicts.

:func:`load_trust` reads what a directory trusts in one transaction; :func:`verify_card_response`
then checks signature, chain, revocation and (for logins) maps the certificate to a user, outside
any transaction because OCSP and CRL fetches may block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.service.context import BrokerContext
from broker.service.wire import cert_fingerprint
from broker.store.models import Crl, Directory, TrustCertificate, User


@dataclass(frozen=True)
class TrustSnapshot:
    """What verifying a certificate for one directory needs, read in one transaction."""

    directory_id: str
    anchors: tuple[bytes, ...]
    intermediates: tuple[bytes, ...]
    crls: tuple[bytes, ...]
    crl_on: bool
    ocsp_on: bool
    fail_mode: str
    required_eku: str
    certmap: tuple[str, ...]
    users: tuple[Any, ...] = field(default=())

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.directory_id, self.anchors, self.intermediates, self.crls)


def load_trust(session: Session, d: Directory, with_users: bool = True) -> TrustSnapshot:
    from broker.pki.identity import UserRecord

    certs = list(session.scalars(select(TrustCertificate).where(
        TrustCertificate.directory_id == d.id).order_by(TrustCertificate.id)))
    crls = list(session.scalars(select(Crl).where(Crl.directory_id == d.id).order_by(Crl.id)))
    users: tuple[Any, ...] = ()
    if with_users:
        users = tuple(UserRecord(username=u.username, upn=u.upn, email=u.email,
                                 subject=u.subject, fingerprint=u.cert_fingerprint)
                      for u in session.scalars(select(User).where(
                          User.directory_id == d.id, User.disabled.is_(False))))
    return TrustSnapshot(
        directory_id=d.id,
        anchors=tuple(c.der for c in certs if c.kind == "anchor"),
        intermediates=tuple(c.der for c in certs if c.kind == "intermediate"),
        crls=tuple(c.der for c in crls), crl_on=d.revocation_crl, ocsp_on=d.revocation_ocsp,
        fail_mode=d.revocation_fail_mode, required_eku=d.required_eku,
        certmap=tuple(d.certmap or ["upn", "email"]), users=users)


def accepted_issuers(session: Session, directory_id: str) -> list[str]:
    return [c.subject for c in session.scalars(select(TrustCertificate).where(
        TrustCertificate.directory_id == directory_id).order_by(TrustCertificate.id))]


class TrustStoreCache:
    """Parsed trust stores per directory, rebuilt only when the trust material changes."""

    def __init__(self) -> None:
        self._stores: dict[str, tuple[tuple[Any, ...], Any]] = {}

    def get(self, snap: TrustSnapshot) -> Any:
        from broker.pki import TrustStore

        hit = self._stores.get(snap.directory_id)
        if hit is not None and hit[0] == snap.key:
            return hit[1]
        pem = [x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
               for d in snap.anchors]
        inter = [x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
                 for d in snap.intermediates]
        crls = [x509.load_der_x509_crl(d).public_bytes(serialization.Encoding.PEM)
                for d in snap.crls]
        store = TrustStore.from_pem(pem, intermediates=inter, crls=crls)
        self._stores[snap.directory_id] = (snap.key, store)
        return store


@dataclass(frozen=True)
class Verified:
    fingerprint: str
    cert_der: bytes
    username: str
    soft_fail: list[str]


def verify_card_response(ctx: BrokerContext, snap: TrustSnapshot, tbs: bytes, cert_der: bytes,
                         chain_der: list[bytes], signature: bytes, algorithm: str,
                         *, map_user: bool = True,
                         on_key_proven: Any = None) -> Verified:
    """Signature, chain, revocation and certmap; raises BrokerError with the stable code.

    ``cert_der`` is canonical DER (:func:`broker.service.wire.der_certificate`). Once the
    signature verifies, the presenter holds the certificate's key and ``on_key_proven()`` is
    called: later refusals are evidence against that key, earlier ones are not. Runs outside any
    transaction (OCSP and CRL fetches may block; this is a worker thread).
    """
    from broker.pki import RevocationSettings, parse_certificate, verify_certificate
    from broker.pki.identity import map_certificate
    from broker.pki.signatures import verify_signature

    leaf = parse_certificate(cert_der)
    verify_signature(leaf, tbs, signature, algorithm)
    if on_key_proven is not None:
        on_key_proven()
    result = verify_certificate(
        cert_der, chain_der, ctx.trust_stores.get(snap), at=ctx.now(),
        purpose=snap.required_eku,
        revocation=RevocationSettings(crl=snap.crl_on, ocsp=snap.ocsp_on,
                                      fail_mode=snap.fail_mode),
        cache=ctx.revocation_cache)
    username = ""
    if map_user:
        username = map_certificate(result.identity, list(snap.certmap), snap.users).username
    return Verified(cert_fingerprint(cert_der), cert_der, username,
                    list(result.soft_fail_reasons))


def default_algorithm(cert_der: bytes) -> str:
    """The signature algorithm a card uses for this certificate's key when none is named."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = x509.load_der_x509_certificate(cert_der).public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa-sha384" if key.curve.key_size >= 384 else "ecdsa-sha256"
    return "rsa-pkcs1-sha256"
