"""What a verification answers (:class:`VerificationResult`) and the cache of accepted
verdicts (:class:`VerificationCache`), so a card that logs in again is not re-validated."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from broker.pki.checks import who
from broker.pki.identity import CertIdentity


@dataclass(frozen=True)
class VerificationResult:
    chain: list[x509.Certificate]
    identity: CertIdentity
    revocation_status: str
    soft_fail_reasons: list[str]
    policies: list[str] = field(default_factory=list)
    """The user-constrained policy set (RFC 5280 §6.1.6), dotted OIDs."""
    revocation_evidence: dict[str, Any] = field(default_factory=dict)
    """Plain JSON: status, and per certificate the CRL (issuer, number, thisUpdate,
    nextUpdate) or OCSP answer (responder, producedAt, status) the verdict rests on."""

    aia_fetches: list[dict[str, Any]] = field(default_factory=list)
    """caIssuers URLs fetched for missing intermediates (url, cached, certificates/error)."""

    profile_warnings: list[str] = field(default_factory=list)
    """RFC 5280 profile violations the directory's ProfileOptions relax: accepted, but said."""

    def evidence(self) -> dict[str, Any]:
        """What the decision rests on, as JSON-able data for the login's audit event."""
        out: dict[str, Any] = {"chain": [who(c) for c in self.chain],
                               "policies": list(self.policies),
                               "revocation": dict(self.revocation_evidence)}
        if self.aia_fetches:
            out["aia_fetches"] = list(self.aia_fetches)
        if self.profile_warnings:
            out["profile_warnings"] = list(self.profile_warnings)
        return out



@dataclass
class VerificationCache:
    """Accepted verdicts per (leaf fingerprint, candidate path, inputs, CRL set), so a card
    that logs in again is not re-validated. An entry lives until the first notAfter on the
    path, the first nextUpdate of the CRLs it rests on, or ``ttl`` (five minutes), whichever
    comes first; only verdicts whose revocation status was established ("good": uploaded CRLs,
    or OCSP answers until their nextUpdate) or not asked for ("not_checked") are kept, so a
    soft-failed check is retried every time."""

    ttl: dt.timedelta = dt.timedelta(minutes=5)
    max_entries: int = 10_000
    entries: dict[tuple[Any, ...], tuple[dt.datetime, dt.datetime, VerificationResult]] = field(
        default_factory=dict)
    hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    by_leaf: dict[bytes, list[tuple[Any, ...]]] = field(default_factory=dict)

    def find(self, leaf_fp: bytes, rest: tuple[Any, ...], anchors: frozenset[bytes],
             available: Any, at: dt.datetime) -> VerificationResult | None:
        """A kept verdict for this leaf and these inputs (``rest``: the key after the path)
        whose path is at hand again — its anchor among ``anchors``, its intermediates
        ``available(fp)`` in the pool or the card's chain — so a returning card is answered
        without building a path. (A card that is itself an anchor is not looked up here.)"""
        with self.lock:
            keys = list(self.by_leaf.get(leaf_fp, ()))
        for key in keys:
            path = key[0]
            if key[1:] == rest and len(path) > 1 and path[-1] in anchors and all(
                    available(fp) for fp in path[1:-1]):
                hit = self.get(key, at)
                if hit is not None:
                    return hit
        return None

    def get(self, key: tuple[Any, ...], at: dt.datetime) -> VerificationResult | None:
        with self.lock:
            hit = self.entries.get(key)
        if hit is None or not (hit[0] <= at <= hit[1]):
            return None
        with self.lock:
            self.hits += 1
        return hit[2]

    def put(self, key: tuple[Any, ...], at: dt.datetime, result: VerificationResult,
            crls: list[x509.CertificateRevocationList]) -> None:
        if result.revocation_status not in ("good", "not_checked"):
            return
        uploaded = {(c.issuer.rfc4514_string(), c.last_update_utc.isoformat()
                     .replace("+00:00", "Z")) for c in crls}
        ocsp_until: list[dt.datetime] = []
        for e in result.revocation_evidence.get("checked", []):
            # Verdicts resting on uploaded CRLs, or on OCSP "good" answers (kept no longer than
            # the answer's nextUpdate, as the OCSP cache does). Fetched CRLs change without the
            # trust material changing: such verdicts are not kept.
            if e.get("method") == "ocsp" and e.get("status") == "good" and e.get("next_update"):
                ocsp_until.append(dt.datetime.fromisoformat(
                    str(e["next_update"]).replace("Z", "+00:00")))
                continue
            if e.get("method") != "crl" or (e.get("crl_issuer"), e.get("this_update")) \
                    not in uploaded:
                return
        if result.revocation_status == "good" and not result.revocation_evidence.get("checked"):
            return
        until = min([at + self.ttl] + ocsp_until + [c.not_valid_after_utc for c in result.chain]
                    + [c.next_update_utc for c in crls if c.next_update_utc is not None])
        start = max([at - self.ttl] + [c.not_valid_before_utc for c in result.chain])
        with self.lock:
            if len(self.entries) >= self.max_entries:
                self.entries.clear()  # crude but bounded; a full cache is rebuilt by logins
                self.by_leaf.clear()
            if key not in self.entries:
                self.by_leaf.setdefault(key[0][0], []).append(key)
            self.entries[key] = (start, until, result)


