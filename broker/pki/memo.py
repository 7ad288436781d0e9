"""Per-fingerprint memory for checks whose answer depends only on the bytes of certificates and
CRLs: a CA certificate's profile, a signature from one CA key on a certificate or CRL, a CRL's
profile. A new card under known CAs then pays only for what is new (its own certificate and the
one engine pass over its path), not again for every CA and CRL of the directory (issue 13,
item 8). Bounded (least recently used entries go first) and thread-safe; time-dependent
judgements (validity, currency of a CRL) are never memorised.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes

V = TypeVar("V")


class FingerprintMemo(Generic[V]):
    """At most ``size`` answers by key (built from fingerprints), least recently used evicted."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
        value = compute()  # outside the lock: a slow check never blocks other logins
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# Fingerprints by object: a directory's CA certificates and CRLs are the same objects on every
# login, and one verification asks for their fingerprints a dozen times. The entry holds the
# object, so its id() cannot be reused while the entry lives; bounded, cleared when full.
_BY_OBJECT: dict[int, tuple[object, bytes]] = {}
_BY_OBJECT_MAX = 1024


def _fingerprint(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    hit = _BY_OBJECT.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    fp = obj.fingerprint(hashes.SHA256())
    if len(_BY_OBJECT) >= _BY_OBJECT_MAX:
        _BY_OBJECT.clear()
    _BY_OBJECT[id(obj)] = (obj, fp)
    return fp


def cert_fp(cert: x509.Certificate) -> bytes:
    return _fingerprint(cert)


def crl_fp(crl: x509.CertificateRevocationList) -> bytes:
    return _fingerprint(crl)
