"""RFC 5280 §6 on one exact path: certificate policies (with the initial inputs) and CRLs.

Policy processing (the valid-policy tree, policy mapping through bridge CAs, inhibitPolicyMapping,
requireExplicitPolicy, inhibitAnyPolicy, self-issued exceptions) is done by
``pyhanko-certvalidator``'s RFC 5280 implementation, run on the one path our builder chose. It
is a second, independent judge of the whole path too: what it refuses, the path does not pass.
``judge_path`` runs the engine once over the path with the policy inputs and, when CRLs are
checked, the CRLs too (RFC 5280 §6.3: delta, indirect, separate CRL keys, onlySomeReasons), so a
first-time verification pays for one engine pass, not two; only a failed pass is run again to
tell a path failure from missing revocation information. The engine reports which CRL (and
delta CRL) decided each certificate's status through a recording hook (``_record_crl_use``):
that, not a guess from names, is the login's revocation evidence.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko_certvalidator import PKIXValidationParams, ValidationContext
from pyhanko_certvalidator.authority import CertTrustAnchor
from pyhanko_certvalidator.errors import PathError, RevokedError, ValidationError
from pyhanko_certvalidator.path import ValidationPath
from pyhanko_certvalidator.revinfo import validate_crl as engine_crl
from pyhanko_certvalidator.validate import async_validate_path

from broker.codes import Code
from broker.pki.errors import NO_USABLE_EXTENSION, PkiError
from broker.pki.paths import name_key
from broker.pki.revocation import crl_evidence

ANY_POLICY = "2.5.29.32.0"
# What the engine raises on input it does not support (unusual algorithms or encodings).
_ENGINE_FAULTS = (ValueError, TypeError, KeyError, IndexError, NotImplementedError,
                  AttributeError)
# The engine logs every candidate CRL-issuer path it rejects, with a traceback, at WARNING; the
# verdict we act on is its result, so only its errors are worth a log line.
logging.getLogger("pyhanko_certvalidator").setLevel(logging.ERROR)


@dataclass(frozen=True)
class PolicyInputs:
    """RFC 5280 §6.1.1 (c), (e), (f), (g). An empty ``required`` means any policy.

    A non-empty ``required`` set implies explicit policy: a directory that names the policies
    it accepts wants a path that ends in one of them (PKITS §4.8 reads the inputs so too).
    """

    required: frozenset[str] = frozenset()
    explicit: bool = False
    mapping_inhibit: bool = False
    any_policy_inhibit: bool = False

    @classmethod
    def of(cls, required: Sequence[str] = (), explicit: bool = False,
           mapping_inhibit: bool = False, any_policy_inhibit: bool = False) -> PolicyInputs:
        for oid in required:
            try:
                x509.ObjectIdentifier(oid)
            except ValueError:
                raise PkiError(Code.CERTIFICATE_POLICY_MISMATCH,
                               f"{oid!r} is not a policy OID.") from None
        return cls(frozenset(required), explicit, mapping_inhibit, any_policy_inhibit)

    @property
    def is_default(self) -> bool:
        return self == PolicyInputs()

    def pkix_params(self) -> PKIXValidationParams:
        wanted = set(self.required) - {ANY_POLICY}
        return PKIXValidationParams(
            user_initial_policy_set=frozenset(wanted) if wanted else frozenset(["any_policy"]),
            initial_explicit_policy=self.explicit or bool(wanted),
            initial_policy_mapping_inhibit=self.mapping_inhibit,
            initial_any_policy_inhibit=self.any_policy_inhibit)

    def as_dict(self) -> dict[str, object]:
        return {"required_policies": sorted(self.required), "explicit_policy": self.explicit,
                "policy_mapping_inhibit": self.mapping_inhibit,
                "any_policy_inhibit": self.any_policy_inhibit}


_PER_THREAD = threading.local()


def _asn1_crl_from_der(der: bytes) -> asn1_crl.CertificateList:
    """Parsed once per CRL and worker thread: the engine reads every entry of every CRL on each
    run. Per thread because asn1crypto parses lazily, mutating the object as it is read; logins
    verify on several worker threads at once."""
    parse = getattr(_PER_THREAD, "crls", None)
    if parse is None:
        parse = _PER_THREAD.crls = functools.lru_cache(maxsize=64)(asn1_crl.CertificateList.load)
    return parse(der)  # type: ignore[no-any-return]


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    # A fresh object per run: asn1crypto parses lazily (mutating the object on first read, so a
    # shared one would race between worker threads), and reusing parsed certificate objects
    # across engine runs made a valid PKITS path (4.3.6, non-canonical unique identifiers) fail
    # its CRL-issuer signature check. Sharing them measured no reliable gain.
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _vpath(path: Sequence[x509.Certificate]) -> tuple[ValidationPath, asn1_x509.Certificate]:
    anchor = CertTrustAnchor(_asn1(path[-1]))
    leaf = _asn1(path[0]) if len(path) > 1 else None
    # pyhanko orders a path from the anchor down.
    return (ValidationPath(anchor, [_asn1(c) for c in reversed(path[1:-1])], leaf),
            anchor.certificate)


def _crl_scope(path: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList],
               pool: Sequence[x509.Certificate]
               ) -> tuple[list[asn1_crl.CertificateList], list[asn1_x509.Certificate]]:
    """The CRLs that can speak for the path (issued by one of its CAs, indirect, or named as
    cRLIssuer by one of its certificates) and the certificates of their issuers. Keeping the
    scope to these bounds the CRL-issuer searches of the engine."""
    issuers = {name_key(c.subject) for c in path[1:]}
    for cert in path:
        try:
            cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        except NO_USABLE_EXTENSION:
            continue
        for dp in cdp:
            for gn in dp.crl_issuer or []:
                if isinstance(gn, x509.DirectoryName):
                    issuers.add(name_key(gn.value))
    # An indirect CRL speaks only for certificates whose distribution point names its issuer
    # as cRLIssuer (RFC 5280 §6.3.3 (b)(1)), and those names are in `issuers` already: passing
    # every indirect CRL let another CA's CRL vouch for a certificate whose own CRL is bad.
    chosen = [crl for crl in crls if name_key(crl.issuer) in issuers]
    crl_issuers = {name_key(c.issuer) for c in chosen} | issuers
    certs = [_asn1(c) for c in pool if name_key(c.subject) in crl_issuers]
    return [_asn1_crl_from_der(c.public_bytes(serialization.Encoding.DER)) for c in chosen], certs


def _named(text: str, path: Sequence[x509.Certificate]) -> str:
    """The engine's "intermediate certificate N" (counted from the anchor) as subject names."""
    def intermediate(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return repr(path[-1 - n].subject.rfc4514_string()) if 0 < n < len(path) else m.group(0)

    text = re.sub(r"intermediate certificate (\d+)", intermediate, text)
    return text.replace("end-entity certificate", repr(path[0].subject.rfc4514_string()))


# (certificate, CRL-signing certificate, complete CRL, delta CRL or None), asn1crypto objects,
# for every CRL the engine matched to a certificate and read its entry from (RFC 5280 §6.3.3
# (i)/(j)): the CRLs that decided. Collected per engine run through a context variable.
_CRL_USES: contextvars.ContextVar[list[tuple[Any, Any, Any, Any]] | None] = \
    contextvars.ContextVar("crl_uses", default=None)


def _install_crl_use_hook() -> bool:
    """Wrap the engine's "look the certificate up on the CRL and its delta" step so each run
    records which CRLs decided. Returns False when the engine has no such step (a different
    pyhanko-certvalidator): evidence then falls back to the CRLs that could apply."""
    original = getattr(engine_crl, "_check_cert_on_crl_and_delta", None)
    if original is None:
        return False
    if getattr(original, "broker_records_use", False):
        return True

    @functools.wraps(original)
    def recording(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        uses = _CRL_USES.get()
        if uses is not None and not args:
            delta = kwargs.get("delta_certificate_list_cont")
            uses.append((kwargs["cert"], kwargs["crl_issuer"],
                         kwargs["certificate_list_cont"].crl_data,
                         delta.crl_data if delta is not None else None))
        return result

    recording.broker_records_use = True  # type: ignore[attr-defined]
    engine_crl._check_cert_on_crl_and_delta = recording
    return True


CRL_USE_RECORDED = _install_crl_use_hook()


def _other_name_type(value: Any) -> object:
    """The type-id of an otherName as the engine holds it (asn1crypto's native dict)."""
    return value.get("type_id") if isinstance(value, dict) else None


def _install_other_name_constraints() -> bool:
    """The engine keeps every otherName constraint as one name type and cannot hash its value
    (a TypeError, so the path was refused as unprocessable). RFC 5280 §4.2.1.10: a constraint
    on a name form the certificate does not use does not apply. So otherName constraints are
    told apart by type-id: one whose type-id none of the certificate's otherNames carries is
    passed over; one whose type-id it carries cannot be evaluated (RFC 5280 defines no matching
    rule for otherName) and refuses, as OpenSSL does. Returns False when the engine's
    internals differ (then such paths are refused as before: fail closed)."""
    from pyhanko_certvalidator import name_trees as nt

    needed = ("_StringOrName", "PermittedSubtrees", "ExcludedSubtrees", "GeneralNameType")
    if not all(hasattr(nt, n) for n in needed):
        return False
    if getattr(nt.PermittedSubtrees.accept_name, "broker_other_names", False):
        return True
    other = nt.GeneralNameType.OTHER_NAME

    def code(self: Any) -> tuple[int, Any]:
        val = self.value
        if isinstance(val, asn1_x509.Name):
            return 0, val.dump()
        if isinstance(val, dict):
            return 2, repr(sorted(val.items(), key=lambda kv: str(kv[0])))
        return 1, val

    nt._StringOrName._code = property(code)  # type: ignore[method-assign,assignment]
    permitted_accept = nt.PermittedSubtrees.accept_name
    excluded_reject = nt.ExcludedSubtrees.reject_name

    def same_type(tree: Any, name: Any) -> bool:
        return tree.tree_base is None or _other_name_type(tree.tree_base.value) == \
            _other_name_type(name)

    def accept_name(self: Any, name_type: Any, name: Any) -> bool:
        if name_type != other:
            return bool(permitted_accept(self, name_type, name))
        for generation in self._trees[name_type]:
            relevant = [t for t in generation if same_type(t, name)]
            if not generation or not relevant:
                continue  # no constraint on this otherName type in that generation
            if not any(t.tree_base is None for t in relevant):
                return False  # a constraint on this very type: not evaluable, refuse
        return True

    def reject_name(self: Any, name_type: Any, name: Any) -> bool:
        if name_type != other:
            return bool(excluded_reject(self, name_type, name))
        return any(t.tree_base is not None and same_type(t, name)
                   for t in self._trees.get(name_type, ()))

    accept_name.broker_other_names = True  # type: ignore[attr-defined]
    nt.PermittedSubtrees.accept_name = accept_name  # type: ignore[method-assign]
    nt.ExcludedSubtrees.reject_name = reject_name  # type: ignore[method-assign]
    return True


OTHER_NAME_CONSTRAINTS = _install_other_name_constraints()


@dataclass(frozen=True)
class PathVerdict:
    """One engine pass over a path: the user-constrained policy set and, when CRLs were given,
    their verdict ("good" | "revoked" | "unknown", why) and the evidence of the CRLs that
    decided (plain JSON, one dict per certificate and CRL; delta CRLs have ``delta`` true)."""

    policies: list[str]
    crl_state: str | None = None
    crl_why: str = ""
    crl_used: list[dict[str, object]] = field(default_factory=list)


def _der(obj: Any) -> bytes:
    return bytes(obj.dump())


def _crl_use_evidence(uses: list[tuple[Any, Any, Any, Any]],
                      path: Sequence[x509.Certificate]) -> list[dict[str, object]]:
    """The recorded uses as evidence dicts, one per (certificate, CRL), in path order."""
    out: list[dict[str, object]] = []
    seen: set[tuple[bytes, bytes]] = set()
    for cert_asn1, signer_asn1, base_asn1, delta_asn1 in uses:
        cert_der = _der(cert_asn1)
        cert = x509.load_der_x509_certificate(cert_der)
        signer = signer_asn1.subject.human_friendly if signer_asn1 is not None else None
        try:
            signer = x509.load_der_x509_certificate(_der(signer_asn1)).subject.rfc4514_string()
        except (ValueError, TypeError, AttributeError):
            pass
        for crl_asn1, is_delta in ((base_asn1, False), (delta_asn1, True)):
            if crl_asn1 is None:
                continue
            crl_der = _der(crl_asn1)
            if (cert_der, crl_der) in seen:
                continue
            seen.add((cert_der, crl_der))
            crl = x509.load_der_x509_crl(crl_der)
            entry = crl_evidence(cert, crl)
            entry["crl_signed_by"] = signer
            entry["indirect"] = name_key(crl.issuer) != name_key(cert.issuer)
            entry["delta"] = is_delta
            if is_delta:
                entry["base_crl_number"] = _delta_base(crl)
            out.append(entry)
    index = {c.subject.rfc4514_string(): i for i, c in reversed(list(enumerate(path)))}
    return sorted(out, key=lambda e: index.get(str(e["certificate"]), len(path)))


def _delta_base(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return int(crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value
                   .crl_number)
    except NO_USABLE_EXTENSION:
        return None


def _run(path: Sequence[x509.Certificate], at: dt.datetime, *, mode: str,
         inputs: PolicyInputs | None = None,
         crls: list[asn1_crl.CertificateList] | None = None,
         others: list[asn1_x509.Certificate] | None = None,
         uses: list[tuple[Any, Any, Any, Any]] | None = None) -> ValidationPath:
    """One engine pass; raises what the engine raises."""
    vpath, root = _vpath(path)
    ctx = ValidationContext(trust_roots=[root], other_certs=others or [], crls=crls or [],
                            moment=at, revocation_mode=mode, weak_hash_algos=set(),
                            time_tolerance=dt.timedelta(minutes=5))
    token = _CRL_USES.set(uses)
    try:
        if inputs is None:
            asyncio.run(async_validate_path(ctx, vpath))
        else:
            asyncio.run(async_validate_path(ctx, vpath, inputs.pkix_params()))
    finally:
        _CRL_USES.reset(token)
    return vpath


def judge_path(path: Sequence[x509.Certificate], inputs: PolicyInputs, at: dt.datetime,
               crls: Sequence[x509.CertificateRevocationList] | None = None,
               pool: Sequence[x509.Certificate] = ()) -> PathVerdict:
    """Policies (RFC 5280 §6.1 with ``inputs``) and, with ``crls``, CRL status of every
    certificate of ``path`` (§6.3), in one engine pass when the path is good.

    Raises PkiError as :func:`check_path` does when the path itself fails. A revoked
    certificate is a verdict (crl_state "revoked"), not an exception; so is "unknown".
    """
    if crls is None:
        return PathVerdict(check_path(path, inputs, at))
    scoped, certs = _crl_scope(path, crls, pool)
    uses: list[tuple[Any, Any, Any, Any]] = []
    try:
        vpath = _run(path, at, mode="require", inputs=inputs, crls=scoped, others=certs,
                     uses=uses)
    except RevokedError as exc:
        return PathVerdict([], "revoked", _named(str(exc), path)[:300],
                           _crl_use_evidence(uses, path))
    except (ValidationError, PathError, *_ENGINE_FAULTS) as exc:
        # The path failed, or a certificate's revocation could not be established: the path
        # alone decides which (and raises when it is the path), then a tolerant pass still
        # finds a revocation another certificate's CRL states.
        policies = check_path(path, inputs, at)
        why = (_named(str(exc), path) if isinstance(exc, ValidationError | PathError)
               else f"the RFC 5280 engine cannot process the CRLs: {exc!r}")[:300]
        uses = []
        try:
            _run(path, at, mode="soft-fail", crls=scoped, others=certs, uses=uses)
        except RevokedError as revoked:
            return PathVerdict(policies, "revoked", _named(str(revoked), path)[:300],
                               _crl_use_evidence(uses, path))
        except (ValidationError, PathError, *_ENGINE_FAULTS):
            pass
        return PathVerdict(policies, "unknown", why, _crl_use_evidence(uses, path))
    qualified = vpath.qualified_policies() or frozenset()
    return PathVerdict(sorted({q.user_domain_policy_id for q in qualified} - {"any_policy"}),
                       "good", "", _crl_use_evidence(uses, path))


def check_path(path: Sequence[x509.Certificate], inputs: PolicyInputs,
               at: dt.datetime) -> list[str]:
    """Judge ``path`` (leaf → … → anchor) by RFC 5280 §6.1 with ``inputs``.

    Returns the user-constrained policy set (dotted OIDs; empty when no policy was required and
    none asserted). Raises PkiError certificate_policy_mismatch when policy processing fails,
    certificate_untrusted when the independent validator refuses the path for another reason.
    """
    try:
        vpath = _run(path, at, mode="soft-fail", inputs=inputs)
    except (ValidationError, PathError) as exc:
        text = str(exc)
        text = _named(text, path)
        if "polic" in text.lower():
            raise PkiError(Code.CERTIFICATE_POLICY_MISMATCH,
                           "The path does not satisfy the directory's certificate policies: "
                           f"{text[:200]}", {"policy_inputs": inputs.as_dict()}) from None
        raise PkiError(Code.CERTIFICATE_UNTRUSTED, f"The path does not validate: {text[:200]}",
                       {"engine": "rfc5280"}) from None
    except _ENGINE_FAULTS as exc:
        # A certificate the engine cannot process is refused, with a sentence, not a traceback.
        raise PkiError(Code.CERTIFICATE_MALFORMED, "A certificate of the path cannot be "
                                                f"processed: {exc!r}"[:240],
                       {"engine": "rfc5280", "check": "unprocessable"}) from None
    # The engine records the user-constrained policy set on the path it was handed.
    qualified = vpath.qualified_policies() or frozenset()
    return sorted({q.user_domain_policy_id for q in qualified} - {"any_policy"})
