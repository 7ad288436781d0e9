"""Revocation coverage: which CA certificates of a trust store no login could check.

In hard-fail mode a login is refused (``certificate_revocation_unknown``) when any certificate
of its path but the anchor has no revocation answer. For the CA certificates the store holds,
that is known before any card arrives: an intermediate needs a current CRL from its issuer
(uploaded, or fetchable from its own CRL distribution points) or, with OCSP on, a responder in
its AIA. Leaves bring their own distribution points and responders, so only the store's CAs
are judged here. Pure: certificates, CRLs and settings in, gaps out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from broker.pki.revocation import RevocationSettings, crl_applies, crl_urls, ocsp_urls


@dataclass(frozen=True)
class CoverageGap:
    """A CA certificate whose revocation status no login can establish."""

    subject: str
    issuer: str

    def message(self) -> str:
        return (f"no revocation source for CA {self.subject}: no current CRL from {self.issuer} "
                "is uploaded, and its certificate names no CRL distribution point and no OCSP "
                "responder; with fail_mode = \"hard\" every card whose path runs through it is "
                "refused (certificate_revocation_unknown). Upload the issuer's CRL, or use "
                "fail_mode = \"soft\"")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def gaps(anchors: Sequence[x509.Certificate], intermediates: Sequence[x509.Certificate],
         crls: Sequence[x509.CertificateRevocationList], settings: RevocationSettings,
         at: dt.datetime) -> list[CoverageGap]:
    """The store's intermediates that a hard-fail directory could never check (empty in
    soft-fail mode or with revocation off)."""
    if settings.fail_mode != "hard" or not (settings.crl or settings.ocsp):
        return []
    cas = [*anchors, *intermediates]
    out: list[CoverageGap] = []
    for cert in intermediates:
        issuers = [c for c in cas if c is not cert and _issued_by(cert, c)]
        if not issuers:
            continue  # not in any path the store can build: chain checks say so elsewhere
        if settings.ocsp and ocsp_urls(cert):
            continue
        # CRLs also stand in, with OCSP alone on, for certificates naming no responder.
        if crl_urls(cert) or any(crl_applies(crl, i, at) for crl in crls for i in issuers):
            continue
        out.append(CoverageGap(cert.subject.rfc4514_string(),
                               issuers[0].subject.rfc4514_string()))
    return out
