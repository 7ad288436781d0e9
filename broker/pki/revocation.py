"""Revocation: CRLs (uploaded or fetched from distribution points) and OCSP, with caching.

Pure apart from the injectable ``fetch`` (the broker calls verification from a worker thread,
so the default blocking urllib fetch never runs on the reactor). Every answer is checked before
it counts: a CRL must be signed by the certificate's issuer and current at the validation time;
an OCSP response must be signed by the issuer or by a responder certificate the issuer gave
id-kp-OCSPSigning, must be about this certificate, and current. Cached answers live until their
nextUpdate.

With OCSP on, a certificate that names no OCSP responder (usually an issuing CA) is checked
against CRLs instead, so "OCSP for users, CRLs for CAs" works with OCSP alone switched on.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from broker.codes import Code
from broker.pki.aia import access_urls
from broker.pki.errors import MALFORMED_DER, NO_USABLE_EXTENSION, PkiError
from broker.pki.memo import FingerprintMemo, cert_fp, crl_fp
from broker.pki.transfer import TransferError, bounded_exchange

Fetch = Callable[[str, bytes | None, str | None, float], bytes]
MAX_FETCH_BYTES = 4 * 1024 * 1024
CLOCK_SKEW = dt.timedelta(minutes=5)
#: A source that failed is not asked again for this long: one dead responder costs one timeout,
#: not one per login (soft fail stays soft, hard fail refuses at once meanwhile).
DOWN_FOR_S = 30.0


@dataclass(frozen=True)
class RevocationSettings:
    crl: bool = True
    ocsp: bool = False
    fail_mode: str = "soft"  # "soft": unreachable sources allow (and are reported); "hard"
    timeout_s: float = 5.0


class FetchError(Exception):
    """A revocation source could not be reached or answered nonsense."""


_NO_ANSWER: tuple[type[Exception], ...] = (FetchError, OSError, *MALFORMED_DER)
_UNREADABLE_CRL: tuple[type[Exception], ...] = (TypeError, *MALFORMED_DER)


def urllib_fetch(url: str, body: bytes | None, content_type: str | None,
                 timeout: float) -> bytes:
    """HTTP GET (body None) or POST; FetchError on any failure. ``timeout`` bounds the whole
    exchange (a trickling responder is cut at the deadline), answers are at most
    MAX_FETCH_BYTES, redirects are not followed (broker.pki.transfer)."""
    try:
        return bounded_exchange(url, body, content_type, timeout, MAX_FETCH_BYTES)
    except TransferError as exc:
        raise FetchError(str(exc)) from None


@dataclass
class RevocationCache:
    """Fetched CRLs by URL and OCSP answers by (issuer key hash, serial), until nextUpdate."""

    crls: dict[str, x509.CertificateRevocationList] = field(default_factory=dict)
    ocsp: dict[tuple[bytes, int], tuple[str, dt.datetime, dict[str, object]]] = field(
        default_factory=dict)
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: URL → time.monotonic() until which it counts as down (it failed or answered nonsense)
    down: dict[str, float] = field(default_factory=dict)

    def is_down(self, url: str) -> bool:
        with self.lock:
            until = self.down.get(url)
        return until is not None and time.monotonic() < until

    def mark_down(self, url: str) -> None:
        with self.lock:
            self.down[url] = time.monotonic() + DOWN_FOR_S


def _signed_by(issuer: x509.Certificate, tbs: bytes, signature: bytes,
               hash_alg: hashes.HashAlgorithm | None) -> bool:
    key = issuer.public_key()
    if hash_alg is None:  # e.g. Ed25519 or an unknown algorithm: not a signature we accept
        return False
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, tbs, ec.ECDSA(hash_alg))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, tbs, padding.PKCS1v15(), hash_alg)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


CRL_SIGNERS: FingerprintMemo[bool] = FingerprintMemo(2048)


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        # cryptography parses CRL fields lazily: a malformed issuer name raises ValueError here
        return crl.issuer == issuer.subject and bool(
            crl.is_signature_valid(issuer.public_key()))  # type: ignore[arg-type]
    except _UNREADABLE_CRL:
        return False


def crl_applies(crl: x509.CertificateRevocationList, issuer: x509.Certificate,
                at: dt.datetime) -> bool:
    """``crl`` is the issuer's, signed by it (remembered per pair of fingerprints), and current
    at ``at`` (judged every time)."""
    try:
        if not CRL_SIGNERS.get((crl_fp(crl), cert_fp(issuer)),
                               lambda: _crl_signed_by(crl, issuer)):
            return False
        if crl.last_update_utc - CLOCK_SKEW > at:
            return False
        nu = crl.next_update_utc
    except _UNREADABLE_CRL:
        return False
    return nu is None or at <= nu + CLOCK_SKEW


def crl_urls(cert: x509.Certificate) -> list[str]:
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except NO_USABLE_EXTENSION:
        return []
    return [n.value for dp in cdp for n in (dp.full_name or [])
            if isinstance(n, x509.UniformResourceIdentifier)]


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    return access_urls(cert, AuthorityInformationAccessOID.OCSP)


@dataclass(frozen=True)
class Status:
    state: str  # "good" | "revoked" | "unknown"
    why: str = ""
    evidence: dict[str, object] | None = None


def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if t is not None else None


def crl_evidence(cert: x509.Certificate,
                 crl: x509.CertificateRevocationList) -> dict[str, object]:
    """What a CRL verdict rests on, as plain JSON (for the login's audit event)."""
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value \
            .crl_number
    except NO_USABLE_EXTENSION:
        number = None
    try:
        delta = crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator) is not None
    except NO_USABLE_EXTENSION:
        delta = False
    return {"certificate": cert.subject.rfc4514_string(), "serial": hex(cert.serial_number),
            "method": "crl", "crl_issuer": crl.issuer.rfc4514_string(), "crl_number": number,
            "delta": delta, "this_update": _iso(crl.last_update_utc),
            "next_update": _iso(crl.next_update_utc)}


def _crl_status(cert: x509.Certificate, issuer: x509.Certificate,
                local: list[x509.CertificateRevocationList], at: dt.datetime,
                fetch: Fetch, cache: RevocationCache, timeout: float) -> Status:
    candidates = [c for c in local if crl_applies(c, issuer, at)]
    if not candidates:
        fetched = _fetch_crl(cert, issuer, at, fetch, cache, timeout)
        candidates = [fetched] if fetched is not None else []
    if not candidates:
        return Status("unknown", f"no current CRL for {issuer.subject.rfc4514_string()}")
    for crl in candidates:
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None and entry.revocation_date_utc <= at + CLOCK_SKEW:
            return Status("revoked", f"listed on the CRL of {crl.issuer.rfc4514_string()}")
    return Status("good")


def _responder_ok(resp: ocsp.OCSPResponse, issuer: x509.Certificate,
                  at: dt.datetime) -> bool:
    """The response is signed by the issuer or by a delegated responder the issuer authorised."""
    tbs, sig, alg = resp.tbs_response_bytes, resp.signature, resp.signature_hash_algorithm
    if _signed_by(issuer, tbs, sig, alg):
        return True
    for responder in resp.certificates:
        if responder.issuer != issuer.subject:
            continue
        if not _signed_by(issuer, responder.tbs_certificate_bytes, responder.signature,
                          responder.signature_hash_algorithm):
            continue
        try:
            eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except NO_USABLE_EXTENSION:
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            continue
        if not (responder.not_valid_before_utc - CLOCK_SKEW <= at
                <= responder.not_valid_after_utc + CLOCK_SKEW):
            continue
        if _signed_by(responder, tbs, sig, alg):
            return True
    return False


def _ocsp_status(cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime,
                 fetch: Fetch, cache: RevocationCache, timeout: float) -> Status:
    key_hash = hashes.Hash(hashes.SHA1())  # noqa: S303 (OCSP CertID hashing, not a signature)
    key_hash.update(issuer.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    ck = (key_hash.finalize(), cert.serial_number)
    with cache.lock:
        hit = cache.ocsp.get(ck)
    if hit is not None and at <= hit[1]:
        return Status(hit[0], "cached OCSP answer", {**hit[2], "cached": True})
    urls = ocsp_urls(cert)
    if not urls:
        return Status("unknown", "no OCSP responder named in the certificate")
    request = (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
               .build().public_bytes(serialization.Encoding.DER))
    last_why = "OCSP responder unreachable"
    for url in urls:
        if cache.is_down(url):
            last_why = f"OCSP: {url} failed less than {DOWN_FOR_S:g} s ago"
            continue
        try:
            data = fetch(url, request, "application/ocsp-request", timeout)
            cache.fetches += 1
            resp = ocsp.load_der_ocsp_response(data)
        except _NO_ANSWER as exc:
            cache.mark_down(url)
            last_why = f"OCSP: {exc}"
            continue
        if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            last_why = f"OCSP responder said {resp.response_status.name}"
            continue
        try:  # the response's fields are parsed lazily: nonsense inside raises ValueError
            authorised = (resp.serial_number == cert.serial_number
                          and _responder_ok(resp, issuer, at))
        except MALFORMED_DER as exc:
            last_why = f"OCSP: {exc}"
            continue
        if not authorised:
            last_why = "OCSP response not signed by an authorised responder"
            continue
        if resp.this_update_utc - CLOCK_SKEW > at or (
                resp.next_update_utc is not None and at > resp.next_update_utc + CLOCK_SKEW):
            last_why = "OCSP response is not current"
            continue
        state = {ocsp.OCSPCertStatus.GOOD: "good", ocsp.OCSPCertStatus.REVOKED: "revoked",
                 ocsp.OCSPCertStatus.UNKNOWN: "unknown"}[resp.certificate_status]
        until = resp.next_update_utc or (at + dt.timedelta(minutes=5))
        evidence: dict[str, object] = {
            "certificate": cert.subject.rfc4514_string(), "serial": hex(cert.serial_number),
            "method": "ocsp", "responder": url, "produced_at": _iso(resp.produced_at_utc),
            "this_update": _iso(resp.this_update_utc),
            "next_update": _iso(resp.next_update_utc), "status": state}
        if state != "unknown":
            with cache.lock:
                cache.ocsp[ck] = (state, until, evidence)
        return Status(state, "OCSP responder does not know the certificate"
                      if state == "unknown" else "OCSP", evidence)
    return Status("unknown", last_why)


def _fetch_missing_crls(chain: list[x509.Certificate],
                        local: list[x509.CertificateRevocationList], at: dt.datetime,
                        fetch: Fetch, cache: RevocationCache,
                        timeout: float) -> list[x509.CertificateRevocationList]:
    """CRLs from distribution points for certificates whose issuer has no current local CRL."""
    fetched: list[x509.CertificateRevocationList] = []
    for cert, issuer in zip(chain, chain[1:], strict=False):
        if any(crl_applies(c, issuer, at) for c in local + fetched):
            continue
        crl = _fetch_crl(cert, issuer, at, fetch, cache, timeout)
        if crl is not None:
            fetched.append(crl)
    return fetched


def _fetch_crl(cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime,
               fetch: Fetch, cache: RevocationCache,
               timeout: float) -> x509.CertificateRevocationList | None:
    """The issuer's current CRL from ``cert``'s distribution points (cached until nextUpdate)."""
    for url in crl_urls(cert):
        with cache.lock:
            cached = cache.crls.get(url)
        if cached is not None and crl_applies(cached, issuer, at):
            return cached
        if cache.is_down(url):
            continue
        try:
            data = fetch(url, None, None, timeout)
            cache.fetches += 1
            crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
                   else x509.load_der_x509_crl(data))
        except _NO_ANSWER:
            cache.mark_down(url)
            continue
        if crl_applies(crl, issuer, at):
            with cache.lock:
                cache.crls[url] = crl
            return crl
    return None


#: Whole-path CRL verdict: (state, why, evidence of the CRLs that decided).
CrlVerdict = Callable[[list[x509.CertificateRevocationList]],
                      tuple[str, str, list[dict[str, object]]]]


def check_chain(chain: list[x509.Certificate], settings: RevocationSettings,
                crls: list[x509.CertificateRevocationList], at: dt.datetime,
                fetch: Fetch | None, cache: RevocationCache | None,
                crl_verdict: CrlVerdict | None = None,
                evidence: list[dict[str, object]] | None = None) -> tuple[str, list[str]]:
    """Check every certificate but the trust anchor. Returns ("good" | "not_checked" |
    "soft_fail", reasons); raises PkiError certificate_revoked, or
    certificate_revocation_unknown in hard-fail mode.

    OCSP answers per certificate. CRL status is decided by ``crl_verdict`` (the RFC 5280 engine
    over the whole path, with the uploaded and fetched CRLs) when given, else per certificate
    here.
    ``evidence``, when given, receives one plain dict per certificate and source the verdict
    rests on (CRL issuer, number, thisUpdate/nextUpdate; or OCSP responder, producedAt, status).
    """
    evidence = evidence if evidence is not None else []
    if not (settings.crl or settings.ocsp):
        return "not_checked", []
    fetch = fetch or urllib_fetch
    cache = cache if cache is not None else RevocationCache()
    subjects = [c.subject.rfc4514_string() for c in chain[:-1]]
    ocsp_status: list[Status | None] = [None] * len(subjects)
    if settings.ocsp:
        for i, (cert, issuer) in enumerate(zip(chain, chain[1:], strict=False)):
            ocsp_status[i] = _ocsp_status(cert, issuer, at, fetch, cache, settings.timeout_s)
            if ocsp_status[i].evidence:  # type: ignore[union-attr]
                evidence.append(ocsp_status[i].evidence)  # type: ignore[union-attr,arg-type]
            if ocsp_status[i].state == "revoked":  # type: ignore[union-attr]
                raise PkiError(Code.CERTIFICATE_REVOKED, f"The certificate {subjects[i]!r} is "
                                                      "revoked (OCSP).", {"subject": subjects[i]})
    # Certificates OCSP did not vouch for need CRLs (with OCSP on, those naming no responder).
    need_crl = [i for i, st in enumerate(ocsp_status)
                if st is None or st.state != "good"]
    problems: list[str] = []
    if not settings.crl:
        # CRLs only stand in for certificates that name no OCSP responder.
        for i in [i for i in need_crl if ocsp_urls(chain[i])]:
            st = ocsp_status[i]
            problems.append(f"{subjects[i]}: {st.why if st else 'not checked'}")
        need_crl = [i for i in need_crl if not ocsp_urls(chain[i])]
    use_crl = settings.crl or settings.ocsp
    if need_crl and use_crl:
        all_crls = list(crls) + _fetch_missing_crls(chain, list(crls), at, fetch, cache,
                                                    settings.timeout_s)
        # The whole-path verdict covers every certificate, so use it only when no certificate
        # is already vouched for by OCSP (else a leaf with no CRL would fail the path).
        if crl_verdict is not None and len(need_crl) == len(subjects):
            state, why, used = crl_verdict(all_crls)
            # The CRLs the engine matched and read (base and delta, indirect ones by their
            # issuer); a certificate it could not decide is listed with the CRLs that applied.
            decided = {e["certificate"] for e in used}
            evidence.extend(used)
            for i in need_crl:
                if subjects[i] not in decided:
                    evidence.extend(crl_evidence(chain[i], c) for c in all_crls
                                    if crl_applies(c, chain[i + 1], at))
            if state == "revoked":
                raise PkiError(Code.CERTIFICATE_REVOKED, why)
            if state != "good":
                # The whole-path verdict stopped at the first certificate without a CRL; a
                # listing on another certificate's own CRL still revokes it.
                for i in need_crl:
                    st = _crl_status(chain[i], chain[i + 1], all_crls, at, fetch, cache,
                                     settings.timeout_s)
                    if st.state == "revoked":
                        raise PkiError(Code.CERTIFICATE_REVOKED, f"The certificate "
                                                              f"{subjects[i]!r} is revoked.",
                                       {"subject": subjects[i]})
                problems.append(why)
        else:
            for i in need_crl:
                evidence.extend(crl_evidence(chain[i], c) for c in all_crls
                                if crl_applies(c, chain[i + 1], at))
                st = _crl_status(chain[i], chain[i + 1], all_crls, at, fetch, cache,
                                 settings.timeout_s)
                if st.state == "revoked":
                    raise PkiError(Code.CERTIFICATE_REVOKED, f"The certificate {subjects[i]!r} "
                                                          "is revoked.", {"subject": subjects[i]})
                if st.state != "good":
                    problems.append(f"{subjects[i]}: {st.why}")
    elif need_crl:
        for i in need_crl:
            st = ocsp_status[i]
            problems.append(f"{subjects[i]}: {st.why if st else 'not checked'}")
    if problems:
        if settings.fail_mode == "hard":
            raise PkiError(Code.CERTIFICATE_REVOCATION_UNKNOWN,
                           "The revocation status cannot be established: "
                           + "; ".join(problems)[:400])
        return "soft_fail", problems
    return "good", []
