"""Certificate path validation for smart-card logins (pure: no Twisted, no database).

Two independent engines must both accept a path:

1. OpenSSL through pyOpenSSL (``X509Store`` + ``X509StoreContext``, ``X509_STRICT``, the
   validation time): builds the path from the directory's trust anchors and the intermediates
   (the directory's and the client's), checks signatures, validity, basic constraints, path
   length, name constraints and critical extensions.
2. Our own checks on the verified path (broker.pki.checks), for what OpenSSL leaves to the
   caller (shared/notes):
   maximum depth, weak algorithms (MD5/SHA-1 signatures, RSA under 2048 bits, unknown curves),
   key usage (digitalSignature on the login key, keyCertSign on CAs), extended key usage
   (clientAuth, smart-card logon or anyExtendedKeyUsage for purpose "client-auth"), and
   revocation (broker.pki.revocation).

Every rejection is a PkiError with a stable reason code and names the certificate at fault.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from OpenSSL import crypto

from broker.codes import Code
from broker.pki import native, profile
from broker.pki.aia import (
    AIA_BUDGET_S,
    DEFAULT_FETCHER,
    MAX_FETCHES_PER_VERIFICATION,
    AiaFetcher,
)
from broker.pki.checks import (
    check_crl_profile,
    check_excluded_wildcards,
    check_path_usage,
    check_unknown_critical,
    counted_intermediates,
    extension,
    who,
)
from broker.pki.errors import MALFORMED_DER, PkiError
from broker.pki.identity import identity_of
from broker.pki.memo import FingerprintMemo, cert_fp, crl_fp
from broker.pki.parsing import load_crl, load_pem_certificates, parse_certificate
from broker.pki.paths import (
    Candidate,
    PathIndex,
    candidate_paths,
    fingerprint,
    name_key,
    signed_by,
)
from broker.pki.policies import ANY_POLICY, PolicyInputs, judge_path
from broker.pki.policies import check_path as check_policies
from broker.pki.revocation import (
    Fetch,
    RevocationCache,
    RevocationSettings,
    check_chain,
    crl_applies,
    crl_evidence,
)
from broker.pki.verdicts import VerificationCache, VerificationResult

MAX_CHAIN = 10

# OpenSSL X509_V_ERR_* codes → our reasons.
_OPENSSL_REASONS = {
    9: "certificate_not_yet_valid", 10: "certificate_expired",
    13: "certificate_malformed", 14: "certificate_malformed",
    23: "certificate_revoked", 22: "chain_too_long", 43: "certificate_untrusted",
    66: "certificate_weak_algorithm", 67: "certificate_weak_algorithm",
    68: "certificate_weak_algorithm",
    26: "certificate_not_for_client_auth",  # X509_V_ERR_INVALID_PURPOSE
}


@dataclass
class TrustStore:
    """A directory's trust material: anchors, known intermediates, uploaded CRLs."""

    anchors: list[x509.Certificate]
    intermediates: list[x509.Certificate] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    #: Accepted verdicts for this trust material (None: no caching).
    verdicts: VerificationCache | None = field(default_factory=lambda: VerificationCache(),
                                               compare=False, repr=False)
    _native: tuple[tuple[bytes, ...], Any] | None = field(default=None, compare=False,
                                                         repr=False)

    _fps: tuple[tuple[int, ...], frozenset[bytes], frozenset[bytes]] | None = field(
        default=None, compare=False, repr=False)

    def fingerprints(self) -> tuple[frozenset[bytes], frozenset[bytes]]:
        """(anchor, intermediate) fingerprints, computed again only when the lists change."""
        ids = tuple(map(id, self.anchors)) + (0,) + tuple(map(id, self.intermediates))
        memo = self._fps
        if memo is None or memo[0] != ids:
            memo = self._fps = (ids, frozenset(fingerprint(a) for a in self.anchors),
                                frozenset(fingerprint(c) for c in self.intermediates))
        return memo[1], memo[2]

    def native_store(self) -> Any:
        """cryptography's ``Store`` of the anchors, built once per set of anchors."""
        fps = tuple(fingerprint(a) for a in self.anchors)
        cached = self._native
        if cached is None or cached[0] != fps:
            cached = self._native = (fps, native.native_store(self.anchors))
        return cached[1]

    @classmethod
    def from_pem(cls, anchors: Sequence[bytes], intermediates: Sequence[bytes] = (),
                 crls: Sequence[bytes] = ()) -> TrustStore:
        """Each item PEM (possibly several certificates) or DER."""
        return cls([c for a in anchors for c in load_pem_certificates(a)],
                   [c for i in intermediates for c in load_pem_certificates(i)],
                   [load_crl(c) for c in crls])

    def accepted_issuer_dns(self) -> list[str]:
        return [c.subject.rfc4514_string() for c in self.anchors + self.intermediates]


def _openssl_path(leaf: x509.Certificate, untrusted: list[x509.Certificate], trust: TrustStore,
                  at: dt.datetime,
                  crls: list[x509.CertificateRevocationList] | None = None,
                  strict: bool = True) -> list[x509.Certificate]:
    """OpenSSL's verdict; with ``crls`` it also checks every certificate against them."""
    store = crypto.X509Store()
    for anchor in trust.anchors:
        store.add_cert(crypto.X509.from_cryptography(anchor))
    # Policies are processed by the RFC 5280 engine (broker.pki.policies) with the directory's
    # inputs, which OpenSSL's flags cannot carry.
    flags = crypto.X509StoreFlags.X509_STRICT if strict else 0
    if crls is not None:
        for crl in crls:
            store.add_crl(crl)
        flags |= crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL
    store.set_flags(flags)
    store.set_time(at.astimezone(dt.UTC).replace(tzinfo=None))
    try:
        # cryptography parses lazily: a bad name or string inside a certificate first shows
        # when OpenSSL re-reads it here
        chain = [crypto.X509.from_cryptography(c) for c in untrusted]
        ctx = crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf), chain)
        verified = ctx.get_verified_chain()
    except crypto.X509StoreContextError as exc:
        code = exc.errors[0] if exc.errors else -1
        try:
            bad = exc.certificate.to_cryptography() if exc.certificate is not None else leaf
        except (crypto.Error, ValueError):  # a certificate cryptography cannot represent
            bad = leaf
        reason = _OPENSSL_REASONS.get(code, "certificate_untrusted")
        text = exc.errors[2] if len(exc.errors) > 2 else str(exc)
        raise PkiError(reason, f"The certificate path does not validate: {text} "
                               f"(at {who(bad)!r}).",
                       {"openssl_error": code, "subject": who(bad)}) from None
    except crypto.Error as exc:
        raise PkiError(Code.CERTIFICATE_MALFORMED, f"OpenSSL cannot process the path: "
                                                f"{str(exc)[:120]}") from None
    try:
        return [c.to_cryptography() for c in verified]
    except (crypto.Error, ValueError) as exc:
        raise PkiError(Code.CERTIFICATE_MALFORMED, f"A certificate of the path cannot be read: "
                                                f"{str(exc)[:120]}") from None


# OpenSSL could not assemble the exact candidate path (it builds its own and does not
# backtrack, e.g. across self-issued key-rollover certificates): the RFC 5280 engine, which is
# handed exactly that path, judges it alone.
_OPENSSL_BUILD_FAILURES = {2, 20}
# OpenSSL's own verify depth (100, which pyOpenSSL cannot raise) is not ours: depth is the
# directory's max_depth (0-255), enforced by check_path_usage on every path, so a deeper path that
# max_depth allows is judged by the RFC 5280 engine alone.
_OPENSSL_DEPTH_LIMIT = 22
# X509_STRICT checks RFC 5280 does not make: a CA without keyUsage (allowed: "if present",
# §4.2.1.9 and §6.3.3 (f)) and pathLenConstraint beside an absent keyUsage. The exact path is
# checked again without X509_STRICT when OpenSSL refuses for one of these alone.
_STRICTER_THAN_RFC5280 = {81, 92}
# Refusal codes, most telling first: the reason reported when every candidate path fails.
_SPECIFICITY = ("certificate_revoked", "certificate_malformed", "certificate_expired",
                "certificate_not_yet_valid", "certificate_policy_mismatch",
                "certificate_not_for_client_auth", "certificate_weak_algorithm",
                "certificate_revocation_unknown", "chain_too_long", "certificate_untrusted")


def _best_failure(failures: list[PkiError]) -> PkiError:
    """The refusal to report: from a path whose signatures chain if there is one, the most
    specific code, from the best-ranked path with it."""
    rank = {code: i for i, code in enumerate(_SPECIFICITY)}
    best = min(failures, key=lambda e: (bool(e.details.get("broken_signature")),
                                        rank.get(e.code, len(rank))))
    best.details.setdefault("paths_tried", len(failures))
    return best


def _judge(leaf: x509.Certificate, cand: Candidate, pool: list[x509.Certificate],
           trust: TrustStore, at: dt.datetime,
           purpose: str, max_depth: int, policy: PolicyInputs, revocation: RevocationSettings,
           fetch: Fetch | None, cache: RevocationCache | None,
           options: profile.ProfileOptions = profile.STRICT) -> VerificationResult:
    """Every check on one candidate path; raises the first PkiError."""
    path = list(cand.certs)
    anchor_only = TrustStore([cand.anchor])
    for cert, issuer in zip(path, path[1:], strict=False):
        if not signed_by(cert, issuer):
            raise PkiError(Code.CERTIFICATE_UNTRUSTED,
                           f"The signature on {who(cert)!r} was not made by the key of "
                           f"{who(issuer)!r}.", {"subject": who(cert),
                                                  "broken_signature": True})
    # The profile first: a non-conforming certificate is refused as malformed, whatever
    # OpenSSL would have made of it.
    warnings = [f"{v.sentence} Accepted: this directory relaxes that rule."
                for v in profile.check_path_profile(path, options)]
    check_excluded_wildcards(path)  # before OpenSSL, which refuses some of these without a name
    try:
        try:
            _openssl_path(leaf, cand.intermediates, anchor_only, at)
        except PkiError as exc:
            if exc.details.get("openssl_error") not in _STRICTER_THAN_RFC5280:
                raise
            _openssl_path(leaf, cand.intermediates, anchor_only, at, strict=False)
    except PkiError as exc:
        code = exc.details.get("openssl_error")
        if code not in _OPENSSL_BUILD_FAILURES and not (
                code == _OPENSSL_DEPTH_LIMIT and counted_intermediates(path) <= max_depth):
            raise
    check_unknown_critical(path)
    check_path_usage(path, purpose, max_depth)
    # With CRLs alone, the RFC 5280 engine judges policies and CRL status in one pass (inside
    # check_chain, once the CRLs are gathered); otherwise it judges policies here.
    one_pass = revocation.crl and not revocation.ocsp and len(path) > 1
    policies: list[str] | None = None if one_pass else check_policies(path, policy, at)
    return _with_revocation(leaf, path, pool, trust, at, policy, revocation, fetch, cache,
                            policies, warnings)


def _with_revocation(leaf: x509.Certificate, path: list[x509.Certificate],
                     pool: list[x509.Certificate], trust: TrustStore, at: dt.datetime,
                     policy: PolicyInputs, revocation: RevocationSettings,
                     fetch: Fetch | None, cache: RevocationCache | None,
                     policies: list[str] | None, warnings: list[str], *,
                     plain_crls: bool = False) -> VerificationResult:
    """Revocation of a path that passed every other check, and the result. ``policies`` None:
    the RFC 5280 engine judges policies together with the CRLs (one pass). ``plain_crls``:
    plain complete CRLs that list nothing of the path are judged without the engine."""

    def crl_verdict(crls: list[x509.CertificateRevocationList]
                    ) -> tuple[str, str, list[dict[str, object]]]:
        """The RFC 5280 engine decides CRL status over the whole path (delta and indirect CRLs,
        separate CRL keys, reason partitions, key rollover)."""
        nonlocal policies
        check_crl_profile(path, crls, at)
        if plain_crls and policies is not None:
            simple = _simple_crl_verdict(path, crls, at)
            if simple is not None:
                return simple
        if policies is None:
            verdict = judge_path(path, policy, at, crls, pool)
            policies = verdict.policies
        else:
            verdict = judge_path(path, PolicyInputs(), at, crls, pool)
        return verdict.crl_state or "unknown", verdict.crl_why, verdict.crl_used

    evidence: list[dict[str, object]] = []
    if revocation.crl:
        check_crl_profile(path, list(trust.crls), at)
    status, soft = check_chain(path, revocation, trust.crls, at, fetch, cache, crl_verdict,
                               evidence)
    if policies is None:  # the engine was not asked about CRLs after all
        policies = check_policies(path, policy, at)
    return VerificationResult(path, identity_of(leaf), status, soft, policies,
                              {"status": status, "checked": evidence,
                               "not_established": list(soft)}, profile_warnings=warnings)


# Extensions that make policy processing more than an intersection of certificatePolicies:
# a path carrying one is judged by the RFC 5280 engine (broker.pki.policies).
_POLICY_PROCESSING = {"2.5.29.33", "2.5.29.36", "2.5.29.54"}
#: Off: every path goes through OpenSSL and the RFC 5280 engine (the tests compare both ways).
NATIVE_FAST_PATH = True


def _simple_policies(path: Sequence[x509.Certificate]) -> list[str]:
    """RFC 5280 §6.1 policy processing with the default inputs (any policy, no explicit
    policy, no inhibit flags) on a path without policyMappings, policyConstraints or
    inhibitAnyPolicy: the valid policy tree is then a set of policies per level. With
    neither mapping nor requireExplicitPolicy the path is always valid (explicit_policy never
    reaches 0); a certificate without certificatePolicies empties the tree. Returns the
    user-constrained policy set as the engine does (dotted OIDs, anyPolicy left out)."""
    valid: set[str] = {ANY_POLICY}
    for cert in reversed(path[:-1]):  # the anchor is an input, not part of the path
        cps = extension(cert, x509.CertificatePolicies)
        if cps is None:
            return []
        asserted = {p.policy_identifier.dotted_string for p in cps}
        nxt = {p for p in asserted - {ANY_POLICY} if p in valid or ANY_POLICY in valid}
        if ANY_POLICY in asserted:  # inhibit_anyPolicy is never 0 with these inputs
            nxt |= valid
        if not nxt:
            return []
        valid = nxt
    return sorted(valid - {ANY_POLICY})


# CRL extensions a plain, complete, direct CRL carries (cRLNumber, authorityKeyIdentifier);
# any other one (issuingDistributionPoint, deltaCRLIndicator, freshestCRL…) goes to the engine.
_PLAIN_CRL_EXTENSIONS = {"2.5.29.20", "2.5.29.35"}
_FRESHEST_CRL = "2.5.29.46"


_PLAIN_CRLS: FingerprintMemo[bool] = FingerprintMemo(1024)
_CERTIFICATE_ISSUER = "2.5.29.29"


def _plain_crl(crl: x509.CertificateRevocationList) -> bool:
    """No CRL extension but cRLNumber and AKI, and no entry with a critical extension or a
    certificateIssuer (RFC 5280 §5.3: such a CRL is for the engine to judge). Remembered per
    fingerprint: the entries are read once per CRL, not per login."""
    return _PLAIN_CRLS.get(crl_fp(crl), lambda: _read_plain_crl(crl))


def _read_plain_crl(crl: x509.CertificateRevocationList) -> bool:
    try:
        if not all(e.oid.dotted_string in _PLAIN_CRL_EXTENSIONS for e in crl.extensions):
            return False
        return not any(e.critical or e.oid.dotted_string == _CERTIFICATE_ISSUER
                       for entry in crl for e in entry.extensions)
    except MALFORMED_DER:
        return False


_NAME_KEYS: FingerprintMemo[object] = FingerprintMemo(4096)


def _crl_issuer_key(obj: x509.Certificate | x509.CertificateRevocationList) -> object:
    """The RFC 5280 §7.1 key of a CRL's issuer or a certificate's subject, remembered."""
    if isinstance(obj, x509.Certificate):
        return _NAME_KEYS.get(("subject", cert_fp(obj)), lambda: name_key(obj.subject))
    return _NAME_KEYS.get(("crl", crl_fp(obj)), lambda: name_key(obj.issuer))


def _simple_crl_verdict(path: Sequence[x509.Certificate],
                        crls: Sequence[x509.CertificateRevocationList], at: dt.datetime
                        ) -> tuple[str, str, list[dict[str, object]]] | None:
    """RFC 5280 §6.3 for the common case, at native speed: every certificate of the path has
    exactly one CRL under its issuer's name, complete and direct (no IDP, delta or other
    extensions), signed by the issuer and current, and its serial is not on it: "good", with
    the evidence the engine gives. Anything else (a listing, several or no CRLs, delta or
    indirect CRLs, cRLIssuer or reasons in a distribution point, freshestCRL, a CRL at the
    edge of its validity) returns None: the RFC 5280 engine decides."""
    if not all(_plain_crl(c) for c in crls):
        return None
    used: list[dict[str, object]] = []
    for cert, issuer in zip(path, path[1:], strict=False):
        try:
            for ext in cert.extensions:
                if ext.oid.dotted_string == _FRESHEST_CRL:
                    return None
                if isinstance(ext.value, x509.CRLDistributionPoints) and any(
                        dp.crl_issuer or dp.reasons for dp in ext.value):
                    return None
            wanted = _crl_issuer_key(issuer)
            named = [c for c in crls if _crl_issuer_key(c) == wanted]
            if len(named) != 1:
                return None
            crl = named[0]
            next_update = crl.next_update_utc
            if (next_update is None or not crl_applies(crl, issuer, at)
                    or not crl.last_update_utc <= at <= next_update):
                return None
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                return None  # a listing: the engine says revoked, with its words
        except MALFORMED_DER:
            return None
        entry = crl_evidence(cert, crl)
        entry.update(crl_signed_by=issuer.subject.rfc4514_string(), indirect=False,
                     delta=False)
        used.append(entry)
    return "good", "", used


def _names_beyond_the_san_under_constraints(path: Sequence[x509.Certificate]) -> bool:
    """A CA of the path has nameConstraints and a certificate below has names outside its
    subjectAltName that the constraints may reach: a legacy emailAddress in the subject
    (RFC 5280 §4.2.1.10 applies rfc822Name constraints to it) or no subjectAltName at all
    (OpenSSL then checks a host-like common name against dNSName constraints). cryptography's
    verifier checks neither, so such paths are left to the engines."""
    if not any(extension(c, x509.NameConstraints) is not None for c in path[1:]):
        return False
    return any(c.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
               or extension(c, x509.SubjectAlternativeName) is None for c in path[:-1])


def _native_result(leaf: x509.Certificate, untrusted: list[x509.Certificate],
                   trust: TrustStore, at: dt.datetime, purpose: str, max_depth: int,
                   policy: PolicyInputs, revocation: RevocationSettings,
                   fetch: Fetch | None, cache: RevocationCache | None,
                   options: profile.ProfileOptions) -> VerificationResult | None:
    """A first-time path at native speed: cryptography's Rust verifier builds the path and
    checks signatures, validity, basic constraints, path length, name constraints and key
    usage; the broker's own cheap checks (profile, excluded wildcards, unknown critical
    extensions, depth, algorithms, usage) and policies follow, then revocation as always.

    Only where the verifier's policy is the directory's: default policy inputs, the strict
    profile, no policy-processing extension on the path. It only ever accepts: None (any
    refusal, or a case it does not cover: directoryName/URI/otherName constraints, self-issued
    certificates, relaxed constraints, delta or indirect CRLs judged later by the engine…)
    sends the verification to the full engines, which give the refusal its reason."""
    if not NATIVE_FAST_PATH or not policy.is_default or options != profile.STRICT:
        return None
    try:
        path = native.native_chain(leaf, untrusted, trust.native_store(), at, max_depth)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException:  # noqa: BLE001 - VerificationError, an input it cannot take, or a
        return None       # Rust panic (pyo3's PanicException is a BaseException)
    try:
        if any(ext.oid.dotted_string in _POLICY_PROCESSING
               for cert in path for ext in cert.extensions):
            return None
        if _names_beyond_the_san_under_constraints(path):
            return None  # subject names under name constraints: OpenSSL and the engine judge
        anchor = path[-1]
        if not anchor.not_valid_before_utc <= at <= anchor.not_valid_after_utc:
            return None  # OpenSSL refuses an expired anchor; let it say so
        warnings = [f"{v.sentence} Accepted: this directory relaxes that rule."
                    for v in profile.check_path_profile(path, options)]
        check_excluded_wildcards(path)
        check_unknown_critical(path)
        check_path_usage(path, purpose, max_depth)
        policies = _simple_policies(path)
        return _with_revocation(leaf, path, untrusted, trust, at, policy, revocation, fetch,
                                cache, policies, warnings, plain_crls=True)
    except PkiError:
        return None
    except MALFORMED_DER:
        return None


def _cache_key(cand: Candidate, trust: TrustStore, purpose: str, max_depth: int,
               policy: PolicyInputs, revocation: RevocationSettings,
               options: profile.ProfileOptions) -> tuple[Any, ...]:
    return (tuple(fingerprint(c) for c in cand.certs),
            tuple(sorted(c.fingerprint(hashes.SHA256()) for c in trust.crls)),
            purpose, max_depth, policy, revocation, options)


def _complete_with_aia(leaf: x509.Certificate, untrusted: list[x509.Certificate],
                       trust: TrustStore, index: PathIndex, aia: AiaFetcher,
                       log: list[dict[str, Any]]) -> PathIndex:
    """Fetch caIssuers certificates while no path reaches an anchor (bounded); adds them to
    ``untrusted`` and returns the index over the larger pool. All fetches of one verification
    end within AIA_BUDGET_S."""
    deadline = time.monotonic() + AIA_BUDGET_S
    for _ in range(MAX_FETCHES_PER_VERIFICATION):
        if next(candidate_paths(leaf, index, max_paths=1), None) is not None:
            break
        top, seen = leaf, {fingerprint(leaf)}
        while True:  # climb to the highest certificate whose issuer we have
            issuers = [i for i, _ in index.issuers(top) if fingerprint(i) not in seen]
            if not issuers:
                break
            top = issuers[0]
            seen.add(fingerprint(top))
        fetched = [c for c in aia.issuers_of(top, log, deadline) if fingerprint(c) not in seen]
        if not fetched:
            break
        untrusted.extend(fetched)
        index = PathIndex(trust.anchors, untrusted)
    return index


def verify_certificate(leaf_der: bytes | x509.Certificate,
                       chain_der: Sequence[bytes | x509.Certificate], trust: TrustStore, *,
                       at: dt.datetime | None = None, purpose: str = "client-auth",
                       max_depth: int = 6,
                       revocation: RevocationSettings = RevocationSettings(),
                       fetch: Fetch | None = None,
                       cache: RevocationCache | None = None,
                       policy: PolicyInputs = PolicyInputs(),
                       aia_fetch: bool = False,
                       aia: AiaFetcher | None = None,
                       verdicts: VerificationCache | None = None,
                       profile_options: profile.ProfileOptions = profile.STRICT
                       ) -> VerificationResult:
    """Validate ``leaf_der`` for ``purpose`` ("client-auth" or "any") at time ``at``.

    Every candidate path to an anchor (broker.pki.paths) is judged in turn until one passes:
    OpenSSL and the RFC 5280 engine (with the ``policy`` inputs) on that exact path, the RFC 5280
    profile checks (broker.pki.profile), depth (``max_depth`` intermediates), algorithms, usage
    and revocation. When all fail, the most specific refusal is raised. With ``aia_fetch``,
    intermediates missing from the pool are fetched from caIssuers URLs first (``aia``, default
    the process-wide cached fetcher) and recorded in the result's evidence. With
    ``verdicts``, an accepted path is remembered (VerificationCache) and not re-validated.
    ``profile_options`` are the directory's relaxations of the RFC 5280 profile (default none).

    Raises PkiError with one of: certificate_malformed (details.check names the RFC 5280 rule),
    chain_too_long, certificate_untrusted, certificate_expired, certificate_not_yet_valid,
    certificate_weak_algorithm, certificate_not_for_client_auth, certificate_policy_mismatch,
    certificate_revoked, certificate_revocation_unknown.
    """
    if purpose not in ("client-auth", "any"):
        raise ValueError(f"purpose must be client-auth or any, not {purpose!r}")
    if len(chain_der) > MAX_CHAIN:
        raise PkiError(Code.CHAIN_TOO_LONG, f"At most {MAX_CHAIN} chain certificates are "
                                         "accepted.")
    leaf = parse_certificate(leaf_der)
    untrusted = [parse_certificate(c) for c in chain_der] + list(trust.intermediates)
    at = at or dt.datetime.now(dt.UTC)
    if not trust.anchors:
        raise PkiError(Code.CERTIFICATE_UNTRUSTED, "This directory has no trust anchors.")
    aia_log: list[dict[str, Any]] = []
    index: PathIndex | None = None
    if aia_fetch:
        index = _complete_with_aia(leaf, untrusted, trust, PathIndex(trust.anchors, untrusted),
                                   aia or DEFAULT_FETCHER, aia_log)
    failures: list[PkiError] = []
    verdicts = verdicts if verdicts is not None else trust.verdicts
    if verdicts is not None:
        rest = _cache_key(Candidate(()), trust, purpose, max_depth, policy, revocation,
                          profile_options)[1:]
        anchors, pool = trust.fingerprints()
        chain_fps = {fingerprint(c) for c in untrusted[:len(chain_der)]}
        hit = verdicts.find(fingerprint(leaf), rest, anchors,
                            lambda fp: fp in pool or fp in chain_fps, at)
        if hit is not None:
            return hit
    if not aia_log:
        fast = _native_result(leaf, untrusted, trust, at, purpose, max_depth, policy,
                              revocation, fetch, cache, profile_options)
        if fast is not None:
            if verdicts is not None:
                verdicts.put(_cache_key(Candidate(tuple(fast.chain)), trust, purpose, max_depth,
                                        policy, revocation, profile_options),
                             at, fast, list(trust.crls))
            return fast
    if index is None:
        index = PathIndex(trust.anchors, untrusted)
    for cand in candidate_paths(leaf, index):
        key = _cache_key(cand, trust, purpose, max_depth, policy, revocation, profile_options)
        if verdicts is not None and (hit := verdicts.get(key, at)) is not None:
            return hit
        try:
            result = _judge(leaf, cand, untrusted, trust, at, purpose, max_depth, policy,
                            revocation, fetch, cache, profile_options)
            if verdicts is not None:
                verdicts.put(key, at, result, list(trust.crls))
            return replace(result, aia_fetches=aia_log) if aia_log else result
        except PkiError as exc:
            exc.details.setdefault("path", [who(c) for c in cand.certs])
            failures.append(exc)
    if not failures:
        raise PkiError(Code.CERTIFICATE_UNTRUSTED,
                       f"No chain of issuers leads from {who(leaf)!r} to a trust anchor of "
                       "this directory (missing intermediate or untrusted root).",
                       {"subject": who(leaf), "issuer": leaf.issuer.rfc4514_string(),
                        **({"aia_fetches": aia_log} if aia_log else {})})
    raise _best_failure(failures)
