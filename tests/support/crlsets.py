"""PKIs whose revocation rests on a delta CRL or an indirect CRL (RFC 5280 §5.2.4, §5.2.5),
built with cryptography's builders, for the evidence tests (unit and through a login)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from broker.pki import issue

DELTA_URL = "http://crl.invalid/issuing-delta.crl"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _crl(signer: issue.Issued, number: int, *, revoked: Sequence[int] = (),
         extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
         entry_issuer: x509.Name | None = None,
         minutes_ago: int = 5) -> x509.CertificateRevocationList:
    now = _now()
    b = (x509.CertificateRevocationListBuilder().issuer_name(signer.cert.subject)
         .last_update(now - dt.timedelta(minutes=minutes_ago))
         .next_update(now + dt.timedelta(days=1))
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             signer.key.public_key()), False)
         .add_extension(x509.CRLNumber(number), False))
    for ext, critical in extensions:
        b = b.add_extension(ext, critical)
    for serial in revoked:
        entry = (x509.RevokedCertificateBuilder().serial_number(serial)
                 .revocation_date(now - dt.timedelta(minutes=10)))
        if entry_issuer is not None:  # an indirect CRL names the issuer of its entries
            entry = entry.add_extension(x509.CertificateIssuer(
                [x509.DirectoryName(entry_issuer)]), True)
        b = b.add_revoked_certificate(entry.build())
    return b.sign(signer.key, hashes.SHA256())


@dataclass
class DeltaPki:
    """Root → Issuing → users; Issuing publishes base CRL 5 (naming a delta in freshestCRL)
    and delta CRL 6 against base 5; the root publishes a plain CRL."""

    root: issue.Issued
    inter: issue.Issued
    root_crl: x509.CertificateRevocationList

    def base(self, revoked: Sequence[int] = ()) -> x509.CertificateRevocationList:
        freshest = x509.FreshestCRL([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(DELTA_URL)], None, None, None)])
        return _crl(self.inter, 5, revoked=revoked, extensions=[(freshest, False)],
                    minutes_ago=60)

    def delta(self, revoked: Sequence[int] = ()) -> x509.CertificateRevocationList:
        return _crl(self.inter, 6, revoked=revoked,
                    extensions=[(x509.DeltaCRLIndicator(5), True)])

    def user(self, cn: str, upn: str | None = None) -> issue.Issued:
        return issue.make_user_cert(self.inter, cn, upn=upn)


def delta_pki(prefix: str = "Delta") -> DeltaPki:
    root = issue.make_root(f"{prefix} Root CA")
    inter = issue.make_intermediate(root, f"{prefix} Issuing CA")
    return DeltaPki(root, inter, _crl(root, 1))


@dataclass
class IndirectPki:
    """Root → Issuing → users whose CRL distribution point names a separate CRL issuer
    (cRLIssuer); that issuer (certified by the root) publishes an indirect CRL."""

    root: issue.Issued
    inter: issue.Issued
    crl_issuer: issue.Issued
    root_crl: x509.CertificateRevocationList

    def indirect(self, revoked: Sequence[int] = ()) -> x509.CertificateRevocationList:
        idp = x509.IssuingDistributionPoint(None, None, False, False, None, True, False)
        return _crl(self.crl_issuer, 3, revoked=revoked, extensions=[(idp, True)],
                    entry_issuer=self.inter.cert.subject)

    def user(self, cn: str, upn: str | None = None) -> issue.Issued:
        cdp = x509.CRLDistributionPoints([x509.DistributionPoint(
            None, None, None, [x509.DirectoryName(self.crl_issuer.cert.subject)])])
        return issue.make_user_cert(self.inter, cn, upn=upn, extra_extensions=[(cdp, False)])


def indirect_pki(prefix: str = "Indirect") -> IndirectPki:
    root = issue.make_root(f"{prefix} Root CA")
    inter = issue.make_intermediate(root, f"{prefix} Issuing CA")
    crl_issuer = issue.make_intermediate(root, f"{prefix} CRL Issuer")
    return IndirectPki(root, inter, crl_issuer, _crl(root, 1))
