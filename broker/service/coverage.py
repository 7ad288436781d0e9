"""Revocation coverage of a directory as stored (broker.pki.coverage), for apply, uploads,
doctor and the console: the same warning everywhere."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.kinds import TrustKind
from broker.pki import coverage
from broker.pki.revocation import RevocationSettings
from broker.store.models import Crl, Directory, TrustCertificate

CODE = "revocation_coverage_gap"


def directory_gaps(session: Session, directory_id: str, now: datetime) -> list[dict[str, Any]]:
    """Warnings (``{"code", "field", "message"}``) for the directory's CA certificates that
    no hard-fail login could check; empty when the directory is soft-fail or unknown."""
    d = session.get(Directory, directory_id)
    if d is None or d.revocation_fail_mode != "hard":
        return []
    anchors: list[x509.Certificate] = []
    intermediates: list[x509.Certificate] = []
    for kind, der in session.execute(select(TrustCertificate.kind, TrustCertificate.der)
                                     .where(TrustCertificate.directory_id == directory_id)):
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        (anchors if kind == TrustKind.ANCHOR else intermediates).append(cert)
    crls = []
    for der in session.scalars(select(Crl.der).where(Crl.directory_id == directory_id)):
        try:
            crls.append(x509.load_der_x509_crl(der))
        except ValueError:
            continue
    settings = RevocationSettings(crl=d.revocation_crl, ocsp=d.revocation_ocsp,
                                  fail_mode=d.revocation_fail_mode)
    return [{"code": CODE, "field": "revocation", "message": gap.message()}
            for gap in coverage.gaps(anchors, intermediates, crls, settings, now)]
