"""Missing intermediates from the authorityInfoAccess caIssuers URL (RFC 5280 §4.2.2.1).

Off by default (a directory switches it on). HTTP only (an https URL would need a path to
validate the path), answers bounded in size and in total time (each fetch within AIA_TIMEOUT_S
however slowly the server trickles, all of one verification's fetches within
AIA_BUDGET_S), at most a few fetches per verification,
and each URL's certificates are cached for an hour. Fetched certificates are only candidates:
they join the untrusted pool and must still chain to one of the directory's anchors. Every
fetch is recorded so the login's audit event shows it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID

from broker.pki.errors import NO_USABLE_EXTENSION
from broker.pki.transfer import TransferError, bounded_exchange

MAX_AIA_BYTES = 256 * 1024
AIA_TIMEOUT_S = 3.0
MAX_FETCHES_PER_VERIFICATION = 4
AIA_BUDGET_S = 6.0
CACHE_TTL_S = 3600.0
CACHE_ENTRIES = 256

HttpGet = Callable[[str, float, int], bytes]


class AiaFetchError(Exception):
    """The caIssuers URL could not be fetched or held no certificate."""


def http_get(url: str, timeout: float, max_bytes: int) -> bytes:
    """Plain HTTP GET of at most ``max_bytes``, the whole exchange within ``timeout`` seconds
    (a server that trickles is cut at the deadline); AiaFetchError on anything else."""
    try:
        return bounded_exchange(url, None, None, timeout, max_bytes, schemes=("http",))
    except TransferError as exc:
        raise AiaFetchError(str(exc)) from None


def access_urls(cert: x509.Certificate, method: x509.ObjectIdentifier) -> list[str]:
    """The URIs of one access method (caIssuers, OCSP) in the certificate's AIA extension."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except NO_USABLE_EXTENSION:
        return []
    return [d.access_location.value for d in aia
            if d.access_method == method
            and isinstance(d.access_location, x509.UniformResourceIdentifier)]


def ca_issuers_urls(cert: x509.Certificate) -> list[str]:
    return access_urls(cert, AuthorityInformationAccessOID.CA_ISSUERS)


def parse_issuers(data: bytes) -> list[x509.Certificate]:
    """A DER certificate, a PEM bundle, or a certs-only PKCS#7 (what caIssuers URLs serve)."""
    for load in (lambda d: [x509.load_der_x509_certificate(d)],
                 x509.load_pem_x509_certificates,
                 pkcs7.load_der_pkcs7_certificates,
                 pkcs7.load_pem_pkcs7_certificates):
        try:
            certs = load(data)
        except ValueError:
            continue
        if certs:
            return list(certs)
    raise AiaFetchError("the answer holds no certificate")


@dataclass
class AiaFetcher:
    """Fetches (and caches) caIssuers certificates; one per process is enough."""

    get: HttpGet = http_get
    timeout_s: float = AIA_TIMEOUT_S
    max_bytes: int = MAX_AIA_BYTES
    _cache: OrderedDict[str, tuple[float, list[x509.Certificate]]] = field(
        default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    fetches: int = 0

    def issuers_of(self, cert: x509.Certificate, log: list[dict[str, object]],
                   deadline: float | None = None) -> list[x509.Certificate]:
        """Certificates from ``cert``'s caIssuers URLs; appends one record per URL to ``log``.
        No fetch starts after ``deadline`` (time.monotonic()) and none runs past it."""
        found: list[x509.Certificate] = []
        for url in ca_issuers_urls(cert):
            now = time.monotonic()
            with self._lock:
                hit = self._cache.get(url)
            if hit is not None and now - hit[0] < CACHE_TTL_S:
                log.append({"url": url, "cached": True, "certificates": len(hit[1])})
                found += hit[1]
                continue
            left = self.timeout_s if deadline is None else min(self.timeout_s, deadline - now)
            if left <= 0:
                log.append({"url": url, "error": "not fetched: the verification's AIA time "
                                                 "budget is spent"})
                continue
            try:
                certs = parse_issuers(self.get(url, left, self.max_bytes))
            except AiaFetchError as exc:
                log.append({"url": url, "error": str(exc)[:200]})
                continue
            with self._lock:
                self.fetches += 1
                self._cache[url] = (now, certs)
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
            log.append({"url": url, "cached": False, "certificates": len(certs)})
            found += certs
        return found


DEFAULT_FETCHER = AiaFetcher()
