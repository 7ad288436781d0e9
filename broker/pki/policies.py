"""RFC 5280 §6 on one exact path: certificate policies (with the initial inputs) and CRLs.

Policy processing (the valid-policy tree, policy mapping through bridge CAs, inhibitPolicyMapping,
requireExplicitPolicy, inhibitAnyPolicy, self-issued exceptions) is done by
``pyhanko-certvalidator``'s RFC 5280 implementation, run on the one path our builder chose, with
revocation switched off there (revocation is ours). It is a second, independent judge of the
whole path too: what it refuses, the path does not pass. ``crl_verdict`` runs the same engine
with CRLs (RFC 5280 §6.3: delta, indirect, separate CRL keys, onlySomeReasons).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko_certvalidator import PKIXValidationParams, ValidationContext
from pyhanko_certvalidator.authority import CertTrustAnchor
from pyhanko_certvalidator.errors import PathError, RevokedError, ValidationError
from pyhanko_certvalidator.path import ValidationPath
from pyhanko_certvalidator.validate import async_validate_path

from broker.codes import Code
from broker.pki.errors import NO_USABLE_EXTENSION, PkiError
from broker.pki.paths import name_key

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


@functools.lru_cache(maxsize=1024)
def _asn1_crl_from_der(der: bytes) -> asn1_crl.CertificateList:
    # Parsed once per CRL: the engine reads every entry of every CRL on each run.
    return asn1_crl.CertificateList.load(der)


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    # A fresh object per run: reusing parsed certificate objects across engine runs made a
    # valid PKITS path (4.3.6, UIDs) fail its CRL-issuer signature check.
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
    chosen = []
    for crl in crls:
        indirect = False
        try:
            idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
            indirect = idp.indirect_crl
        except NO_USABLE_EXTENSION:
            pass
        if indirect or name_key(crl.issuer) in issuers:
            chosen.append(crl)
    crl_issuers = {name_key(c.issuer) for c in chosen} | issuers
    certs = [_asn1(c) for c in pool if name_key(c.subject) in crl_issuers]
    return [_asn1_crl_from_der(c.public_bytes(serialization.Encoding.DER)) for c in chosen], certs


def crl_verdict(path: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList],
                pool: Sequence[x509.Certificate], at: dt.datetime) -> tuple[str, str]:
    """CRL status of every certificate of ``path`` by RFC 5280 §6.3: ("good" | "revoked" |
    "unknown", why). Complete CRLs and delta CRLs, indirect CRLs (cRLIssuer), CRLs signed by a
    separate CRL key (its own path validated), and reason-partitioned CRLs combined until every
    reason is covered."""
    scoped, certs = _crl_scope(path, crls, pool)
    # "require": every certificate needs a CRL verdict. When one is missing, a second pass
    # ("soft-fail") still finds a revocation that another certificate's CRL states: a missing
    # CRL for one CA must never hide a revoked leaf.
    unknown = ""
    for mode in ("require", "soft-fail"):
        vpath, root = _vpath(path)
        ctx = ValidationContext(trust_roots=[root], other_certs=certs, crls=scoped, moment=at,
                                revocation_mode=mode, weak_hash_algos=set(),
                                time_tolerance=dt.timedelta(minutes=5))
        try:
            asyncio.run(async_validate_path(ctx, vpath))
        except RevokedError as exc:
            return "revoked", _named(str(exc), path)[:300]
        except (ValidationError, PathError) as exc:
            unknown = unknown or _named(str(exc), path)[:300]
            continue
        except _ENGINE_FAULTS as exc:
            # Input the engine cannot process is no verdict: unknown, never "good".
            unknown = unknown or f"the RFC 5280 engine cannot process the CRLs: {exc!r}"[:300]
            continue
        if not unknown:
            return "good", ""
    return "unknown", unknown


def _named(text: str, path: Sequence[x509.Certificate]) -> str:
    """The engine's "intermediate certificate N" (counted from the anchor) as subject names."""
    def intermediate(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return repr(path[-1 - n].subject.rfc4514_string()) if 0 < n < len(path) else m.group(0)

    text = re.sub(r"intermediate certificate (\d+)", intermediate, text)
    return text.replace("end-entity certificate", repr(path[0].subject.rfc4514_string()))


def check_path(path: Sequence[x509.Certificate], inputs: PolicyInputs,
               at: dt.datetime) -> list[str]:
    """Judge ``path`` (leaf → … → anchor) by RFC 5280 §6.1 with ``inputs``.

    Returns the user-constrained policy set (dotted OIDs; empty when no policy was required and
    none asserted). Raises PkiError certificate_policy_mismatch when policy processing fails,
    certificate_untrusted when the independent validator refuses the path for another reason.
    """
    vpath, root = _vpath(path)
    ctx = ValidationContext(trust_roots=[root], moment=at,
                            revocation_mode="soft-fail", weak_hash_algos=set(),
                            time_tolerance=dt.timedelta(minutes=5))
    try:
        asyncio.run(async_validate_path(ctx, vpath, inputs.pkix_params()))
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
