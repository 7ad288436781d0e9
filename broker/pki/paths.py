"""Candidate certification paths, best first, for the validators to judge one by one.

A leaf may reach a trust anchor through several issuers: a CA re-keyed under the same name, a
cross-certificate from a bridge, a root handed over both as anchor and inside the chain, or
certificates in any order. ``candidate_paths`` enumerates every chain of issuers (matched by
name, ranked by authorityKeyIdentifier/subjectKeyIdentifier and signature) that ends at an
anchor, without reusing a certificate (loops) and within a bound on the number of paths and on
time. Judging a path (signatures, validity, constraints, policies, revocation) is the caller's.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from broker.pki.errors import NO_USABLE_EXTENSION
from broker.pki.memo import FingerprintMemo, cert_fp

MAX_PATHS = 32          # candidate paths judged before giving up
MAX_BUILD_SECONDS = 2.0  # wall time for building (judging is bounded by MAX_PATHS)
# leaf + 256 intermediates + anchor: one past --max-depth 255, so such a path is still built
# and refused as chain_too_long rather than as having no path at all.
MAX_LENGTH = 258


@dataclass(frozen=True)
class Candidate:
    """``certs`` runs leaf → … → anchor; ``certs[-1]`` is the trust anchor."""

    certs: tuple[x509.Certificate, ...]

    @property
    def anchor(self) -> x509.Certificate:
        return self.certs[-1]

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return list(self.certs[1:-1])


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert_fp(cert)


def name_key(name: x509.Name) -> tuple[tuple[tuple[str, str], ...], ...]:
    """RFC 5280 §7.1 name comparison, simplified: case-folded, whitespace-collapsed values."""
    out = []
    for rdn in name.rdns:
        attrs = []
        for attr in rdn:
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            value = " ".join(unicodedata.normalize("NFKC", value).casefold().split())
            attrs.append((attr.oid.dotted_string, value))
        out.append(tuple(sorted(attrs)))
    return tuple(out)


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except NO_USABLE_EXTENSION:
        return None


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier).value.key_identifier
    except NO_USABLE_EXTENSION:
        return None


SIGNATURES: FingerprintMemo[bool] = FingerprintMemo(8192)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``issuer``'s key made ``cert``'s signature (names are not compared here). Remembered
    per pair of fingerprints: a CA-to-CA link is checked once per process, not per login."""
    return SIGNATURES.get((cert_fp(cert), cert_fp(issuer)), lambda: _signed_by(cert, issuer))


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except ValueError:
        # verify_directly_issued_by also insists on byte-equal names; fall back to the key.
        pass
    except (InvalidSignature, TypeError, UnsupportedAlgorithm):
        return False
    try:
        key = issuer.public_key()
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

        alg = cert.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and alg is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), alg)
            return True
        if isinstance(key, ec.EllipticCurvePublicKey) and alg is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(alg))
            return True
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return False


class PathIndex:
    """Certificates by normalised subject name, for issuer look-ups."""

    def __init__(self, anchors: Sequence[x509.Certificate],
                 intermediates: Sequence[x509.Certificate]) -> None:
        self.anchors = list(anchors)
        self._anchor_fps = {fingerprint(a) for a in anchors}
        self._by_subject: dict[object, list[tuple[x509.Certificate, bool]]] = {}
        seen: set[bytes] = set()
        for cert, is_anchor in [(a, True) for a in anchors] + [(c, False) for c in intermediates]:
            fp = fingerprint(cert)
            if fp in seen:
                continue
            seen.add(fp)
            self._by_subject.setdefault(name_key(cert.subject), []).append((cert, is_anchor))

    def is_anchor(self, cert: x509.Certificate) -> bool:
        return fingerprint(cert) in self._anchor_fps

    def issuers(self, cert: x509.Certificate) -> list[tuple[x509.Certificate, bool]]:
        """Candidate issuers of ``cert``, most likely first: AKI=SKI match, then verified
        signature, anchors before intermediates."""
        found = self._by_subject.get(name_key(cert.issuer), [])
        aki = _aki(cert)

        def rank(item: tuple[x509.Certificate, bool]) -> tuple[int, int, int]:
            issuer, is_anchor = item
            ski = _ski(issuer)
            key_match = 0 if aki is not None and ski == aki else (1 if aki is None or ski is None
                                                                  else 2)
            return (key_match, 0 if signed_by(cert, issuer) else 1, 0 if is_anchor else 1)

        return sorted(found, key=rank)


def candidate_paths(leaf: x509.Certificate, index: PathIndex, *,
                    max_paths: int = MAX_PATHS,
                    max_seconds: float = MAX_BUILD_SECONDS) -> Iterator[Candidate]:
    """Every path from ``leaf`` to an anchor (depth first, best issuer first), bounded.

    A leaf that is itself an anchor yields the one-certificate path. Certificates never repeat
    in a path (loop detection); at most ``max_paths`` paths are yielded and building stops after
    ``max_seconds``.
    """
    deadline = time.monotonic() + max_seconds
    yielded = 0
    if index.is_anchor(leaf):
        yield Candidate((leaf,))
        return
    stack: list[tuple[tuple[x509.Certificate, ...], frozenset[bytes]]] = [
        ((leaf,), frozenset({fingerprint(leaf)}))]
    while stack and yielded < max_paths and time.monotonic() < deadline:
        path, used = stack.pop()
        if len(path) >= MAX_LENGTH:
            continue
        children: list[tuple[tuple[x509.Certificate, ...], frozenset[bytes]]] = []
        for issuer, is_anchor in index.issuers(path[-1]):
            fp = fingerprint(issuer)
            if fp in used:
                continue  # a loop: this certificate is already in the path
            if is_anchor:
                yield Candidate(path + (issuer,))
                yielded += 1
                if yielded >= max_paths:
                    return
                continue
            children.append((path + (issuer,), used | {fp}))
        stack.extend(reversed(children))  # keep best-first order on the LIFO stack
