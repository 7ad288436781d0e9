#!/usr/bin/env python3
"""How often the broker's verifier agrees with NIST PKITS (shipped in cryptography-vectors).

Every PKITS end-entity certificate's file name says the expected outcome under the default
settings (``Valid…Test<N>EE.crt`` / ``Invalid…Test<N>EE.crt``). Each is verified with
``verify_certificate`` — the login path's verifier — against the PKITS trust anchor, with all
PKITS CA certificates as the untrusted pool (so the path builder must pick among same-named CAs),
all PKITS CRLs uploaded, CRL checking in hard-fail mode, purpose "any", depth 255, at 2020-01-01.
The §4.8-4.12 tests whose outcome depends on the initial policy inputs (the 20 certificates
without a Valid/Invalid prefix, and the Valid/Invalid ones PKITS also runs with other inputs) are
run with every input combination PKITS lists (SETTINGS_CASES).

The expected outcomes come from a committed golden file, bench/pkits_golden.csv: (test, expected
validity, expected reason class), written from PKITS.pdf. A refusal of an invalid path agrees only
when its reason is of the expected class (a path refused as "revoked" where PKITS tests a name
constraint does not count); every PKITS end-entity certificate must have a golden row, and an
input that cannot be parsed fails the run unless UNPARSEABLE names it with why.

Everything runs twice:

(a) the strict default profile. PKITS (2011) uses CA certificates whose policyConstraints (16
    CAs) or basicConstraints (1 CA) is not critical; RFC 5280 §4.2.1.9/§4.2.1.11 say MUST be
    critical and issue 13 requires refusing exactly that class, so those valid paths are refused
    on purpose (KNOWN, "deliberate").
(b) with the directory setting accept_noncritical_constraints on (ProfileOptions), as a
    directory that must accept such legacy CAs would run: those two checks become warnings.

Measured: see tests/unit/pki/test_pkits.py, which guards the figures (validity and reason
class both counted).

Prints, per mode, agreement per section and in total, invalid paths accepted, crashes (never
counted as refusals), and the disagreements grouped by reason (expected class → ours), each
with why it is known.

    python bench/pkits_agreement.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# PKITS certificates are valid from 2010 to 2030; a fixed time keeps the run reproducible.
AT = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)

SECTIONS = [  # PKITS section by test-name prefix (PKITS.pdf §4)
    ("4.1 signature verification", r"(Valid|Invalid)(CertificatePath|CASignature|EESignature|DSA)"),
    ("4.2 validity periods", r"(Valid|Invalid).*(notBefore|notAfter|GeneralizedTime|UTCTime|pre2000)"),
    ("4.3 name chaining", r"(Valid|Invalid).*(NameChaining|NameChainingOrder|UIDs|RFC3280|Rollover|Uppercase|Whitespace|Capitalization)"),
    ("4.4 basic certificate revocation", r"(Valid|Invalid).*(MissingCRL|Revoked|CRL|SeparateCertificateandCRLKeys|BadCRL|UnknownCRL|BasicSelfIssued|NegativeSerialNumber|LongSerialNumber|GeneralizedTime|RevokedNotAfter|RevokedNotBefore|TwoCRLs|OldCRL|WrongCRL)"),
    ("4.5 self-issued certificates", r"(Valid|Invalid)BasicSelfIssued"),
    ("4.6 basic constraints", r"(Valid|Invalid).*(BasicConstraints|pathLenConstraint|caFalse|CA(Certificate)?NotCA|CAC?ert.*MissingbasicConstraints)"),
    ("4.7 key usage", r"(Valid|Invalid).*keyUsage"),
    ("4.8-4.12 certificate policies", r"(Valid|Invalid).*(Polic|policy|Mapping|anyPolicy|RequireExplicit|PolicyConstraints|inhibit)"),
    ("4.13 name constraints", r"(Valid|Invalid).*(NameConstraints|DN|RFC822|DNS|URI)"),
    ("4.14 distribution points", r"(Valid|Invalid).*(DistributionPoint|onlySomeReasons|indirectCRL|cRLIssuer|onlyContains|deltaCRL|IDP)"),
    ("4.15 delta-CRLs", r"(Valid|Invalid).*delta"),
    ("4.16 private certificate extensions", r"(Valid|Invalid).*(UnknownCriticalCertificateExtension|UnknownNotCriticalCertificateExtension)"),
]

PROFILE = "deliberate RFC 5280 profile refusal: "
PC = "policyConstraints not critical in a CA (§4.2.1.11)"

# Every disagreement we know of, by name prefix, with why (tests/unit/pki/test_pkits.py fails on
# any disagreement not explained here, and on an agreement rate below the recorded one).
# All refuse a path PKITS calls valid: the safe direction for a login. None accepts an invalid
# path, and a crash counts as a disagreement, never as a correct refusal.
KNOWN_IN_BOTH_MODES = {
    "ValidDSA": "DSA keys are refused for logins (weak/unsupported key type); "
                "ParameterInheritance also has DSA parameters cryptography cannot parse",
}
KNOWN = {
    **KNOWN_IN_BOTH_MODES,
    # RFC 5280 §4 MUSTs the broker enforces on purpose (issue 13); PKITS (2011) predates the
    # strictness and uses non-conforming CA certificates in these tests. Refusing is the safe
    # direction; each is guarded by tests/unit/pki/test_profile.py.
    "ValidbasicConstraintsNotCritical": PROFILE + "basicConstraints not critical in a CA "
                                                  "(§4.2.1.9)",
    "ValidPolicyMapping": PROFILE + PC,
    "ValidinhibitAnyPolicy": PROFILE + PC,
    "ValidSelfIssuedinhibitAnyPolicy": PROFILE + PC,
    "OverlappingPolicies": PROFILE + PC,
    "AllCertificatesSamePolicies": PROFILE + PC,
    "AllCertificatesanyPolicy": PROFILE + PC,
    "AnyPolicyTest14": PROFILE + PC,
    "UserNoticeQualifierTest18": PROFILE + PC,
    "inhibitAnyPolicyTest3": PROFILE + PC,
}


# Invalid paths refused for a reason of another class than the one PKITS tests: the broker
# finds an RFC 5280 MUST broken first and answers certificate_malformed. Each refusal is right;
# its code is coarser than PKITS's reason.
KNOWN_OTHER_REASON = {
    "InvalidMissingbasicConstraints": "the CA has no basicConstraints (§4.2.1.9): refused by "
                                      "the profile as certificate_malformed",
    "InvalidBasicSelfIssuedCRLSigningKeyTest8": "the CRL-signing key's self-issued certificate "
                                                "has no basicConstraints (§4.2.1.9): "
                                                "certificate_malformed",
    "InvalidNegativeSerialNumber": "serial number not positive (§4.1.2.2): refused as "
                                   "certificate_malformed before the CRL is read",
    "InvalidkeyUsageCriticalcRLSignFalse": "the CRL issuer lacks cRLSign (§6.3.3 (f)): the CRL "
                                           "is unusable, reported as certificate_malformed",
    "InvalidkeyUsageNotCriticalcRLSignFalse": "the CRL issuer lacks cRLSign (§6.3.3 (f)): the "
                                              "CRL is unusable, reported as "
                                              "certificate_malformed",
}


P1, P2, P3, P6 = (f"2.16.840.1.101.3.2.1.48.{n}" for n in (1, 2, 3, 6))
ANY = "2.5.29.32.0"
EXPLICIT, INHIBIT_MAP, INHIBIT_ANY = "explicit", "inhibit_map", "inhibit_any"

# PKITS §4.8-4.12 tests run with non-default inputs (PKITS.pdf gives each its initial policy
# set and flags): (test id, certificate, expected valid, initial policy set, flags). Rows whose
# inputs are the defaults and whose file name already says Valid/Invalid are run above.
SETTINGS_CASES: list[tuple[str, str, bool, tuple[str, ...], tuple[str, ...]]] = [
    ("4.8.1.1", "ValidCertificatePathTest1EE", True, (ANY,), (EXPLICIT,)),
    ("4.8.1.2", "ValidCertificatePathTest1EE", True, (P1,), (EXPLICIT,)),
    ("4.8.1.3", "ValidCertificatePathTest1EE", False, (P2,), (EXPLICIT,)),
    ("4.8.1.4", "ValidCertificatePathTest1EE", True, (P1, P2), (EXPLICIT,)),
    ("4.8.2.1", "AllCertificatesNoPoliciesTest2EE", True, (), ()),
    ("4.8.2.2", "AllCertificatesNoPoliciesTest2EE", False, (), (EXPLICIT,)),
    ("4.8.3.1", "DifferentPoliciesTest3EE", True, (ANY,), ()),
    ("4.8.3.2", "DifferentPoliciesTest3EE", False, (), (EXPLICIT,)),
    ("4.8.3.3", "DifferentPoliciesTest3EE", False, (P1, P2), (EXPLICIT,)),
    ("4.8.4", "DifferentPoliciesTest4EE", False, (), ()),
    ("4.8.5", "DifferentPoliciesTest5EE", False, (), ()),
    ("4.8.6.1", "OverlappingPoliciesTest6EE", True, (), ()),
    ("4.8.6.2", "OverlappingPoliciesTest6EE", True, (P1,), ()),
    ("4.8.6.3", "OverlappingPoliciesTest6EE", False, (P2,), ()),
    ("4.8.7", "DifferentPoliciesTest7EE", False, (), ()),
    ("4.8.8", "DifferentPoliciesTest8EE", False, (), ()),
    ("4.8.9", "DifferentPoliciesTest9EE", False, (), ()),
    ("4.8.10.1", "AllCertificatesSamePoliciesTest10EE", True, (), ()),
    ("4.8.10.2", "AllCertificatesSamePoliciesTest10EE", True, (P1,), ()),
    ("4.8.10.3", "AllCertificatesSamePoliciesTest10EE", True, (P2,), ()),
    ("4.8.11.1", "AllCertificatesanyPolicyTest11EE", True, (), ()),
    ("4.8.11.2", "AllCertificatesanyPolicyTest11EE", True, (P1,), ()),
    ("4.8.12", "DifferentPoliciesTest12EE", False, (), ()),
    ("4.8.13.1", "AllCertificatesSamePoliciesTest13EE", True, (P1,), ()),
    ("4.8.13.2", "AllCertificatesSamePoliciesTest13EE", True, (P2,), ()),
    ("4.8.13.3", "AllCertificatesSamePoliciesTest13EE", True, (P3,), ()),
    ("4.8.14.1", "AnyPolicyTest14EE", True, (P1,), ()),
    ("4.8.14.2", "AnyPolicyTest14EE", False, (P2,), ()),
    ("4.8.15", "UserNoticeQualifierTest15EE", True, (), ()),
    ("4.8.16", "UserNoticeQualifierTest16EE", True, (), ()),
    ("4.8.17", "UserNoticeQualifierTest17EE", True, (), ()),
    ("4.8.18.1", "UserNoticeQualifierTest18EE", True, (P1,), ()),
    ("4.8.18.2", "UserNoticeQualifierTest18EE", True, (P2,), ()),
    ("4.8.19", "UserNoticeQualifierTest19EE", True, (), ()),
    ("4.8.20", "CPSPointerQualifierTest20EE", True, (), ()),
    ("4.10.1.1", "ValidPolicyMappingTest1EE", True, (P1,), ()),
    ("4.10.1.2", "ValidPolicyMappingTest1EE", False, (P2,), ()),
    ("4.10.1.3", "ValidPolicyMappingTest1EE", False, (), (INHIBIT_MAP,)),
    ("4.10.2.2", "InvalidPolicyMappingTest2EE", False, (), (INHIBIT_MAP,)),
    ("4.10.3.1", "ValidPolicyMappingTest3EE", False, (P1,), ()),
    ("4.10.3.2", "ValidPolicyMappingTest3EE", True, (P2,), ()),
    ("4.10.5.1", "ValidPolicyMappingTest5EE", True, (P1,), ()),
    ("4.10.5.2", "ValidPolicyMappingTest5EE", False, (P6,), ()),
    ("4.10.6.1", "ValidPolicyMappingTest6EE", True, (P1,), ()),
    ("4.10.6.2", "ValidPolicyMappingTest6EE", False, (P6,), ()),
    ("4.10.12.1", "ValidPolicyMappingTest12EE", True, (P1,), ()),
    ("4.10.12.2", "ValidPolicyMappingTest12EE", True, (P2,), ()),
    ("4.12.3.1", "inhibitAnyPolicyTest3EE", True, (), ()),
    ("4.12.3.2", "inhibitAnyPolicyTest3EE", False, (), (INHIBIT_ANY,)),
]


GOLDEN = Path(__file__).resolve().with_name("pkits_golden.csv")
REASON_CLASSES = ("path", "validity", "revocation", "policy")
# The broker's refusal codes by reason class. "profile" (certificate_malformed: an RFC 5280
# MUST the certificate breaks) is never a class PKITS expects.
CODE_CLASS = {
    "certificate_untrusted": "path",
    "certificate_expired": "validity",
    "certificate_not_yet_valid": "validity",
    "certificate_revoked": "revocation",
    "certificate_revocation_unknown": "revocation",
    "certificate_policy_mismatch": "policy",
    "certificate_malformed": "profile",
}
# PKITS inputs cryptography cannot parse. Any other unparseable input fails the run.
UNPARSEABLE = {
    "DSAParametersInheritedCACert": "DSA key whose parameters are inherited from the issuer",
    "ValidDSAParameterInheritanceTest5EE": "DSA key whose parameters are inherited from the "
                                           "issuer",
}


class PkitsDataError(Exception):
    """The golden file or the PKITS data is not what this bench expects."""


@dataclass(frozen=True)
class Golden:
    test: str  # "<Test>EE", or "<PKITS id> <Test>EE" for a run with initial policy inputs
    valid: bool
    reason_class: str  # one of REASON_CLASSES, "-" for a valid path


def load_golden(path: Path = GOLDEN) -> dict[str, Golden]:
    rows: dict[str, Golden] = {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if lines[:1] != ["test,expected,reason_class"]:
        raise PkitsDataError(f"{path.name}: the header must be test,expected,reason_class")
    for n, line in enumerate(lines[1:], 2):
        parts = line.split(",")
        if len(parts) != 3 or parts[1] not in ("valid", "invalid") or parts[0] in rows:
            raise PkitsDataError(f"{path.name}: bad or repeated row {n}: {line!r}")
        test, expected, klass = parts
        if (expected == "valid") != (klass == "-") or klass not in (*REASON_CLASSES, "-"):
            raise PkitsDataError(f"{path.name}: row {n}: {expected} with class {klass!r}")
        rows[test] = Golden(test, expected == "valid", klass)
    return rows


def explain(o: Outcome, relaxed: bool, relaxed_run: dict[str, Outcome] | None = None
            ) -> str | None:
    """Why ``o`` disagrees, if known. In the strict run, an invalid path refused by the profile
    (certificate_malformed) that the relaxed run refuses for PKITS's own reason is explained by
    that comparison, not by a list."""
    why = known_reason(o.name, relaxed)
    if why is None and not relaxed and relaxed_run is not None and o.reason_class == "profile" \
            and not o.expected_valid and relaxed_run[o.name].agrees:
        why = (PROFILE + "a non-critical constraint in a CA is refused first; with "
               "accept_noncritical_constraints the path is refused for PKITS's reason")
    return why


def reason_class(code: str) -> str:
    return CODE_CLASS.get(code, "other")


def known_reason(name: str, relaxed: bool = False) -> str | None:
    """Why ``name`` ("<Test>EE" or "<id> <Test>EE" for a run with inputs) disagrees, if known.
    With ``relaxed`` (accept_noncritical_constraints on) the profile refusals explain nothing:
    those paths must then validate."""
    known = {**(KNOWN_IN_BOTH_MODES if relaxed else KNOWN), **KNOWN_OTHER_REASON}
    return next((why for prefix, why in known.items()
                 if name.startswith(prefix) or name.split()[-1].startswith(prefix)), None)


@dataclass
class Outcome:
    name: str
    section: str
    expected_valid: bool
    valid: bool
    reason: str
    crashed: bool = False
    expected_class: str = "-"

    @property
    def reason_class(self) -> str:
        return "-" if self.valid else "crash" if self.crashed else reason_class(self.reason)

    @property
    def validity_agrees(self) -> bool:
        # A crash is never a correct refusal.
        return not self.crashed and self.valid == self.expected_valid

    @property
    def agrees(self) -> bool:
        """Valid where PKITS says valid; refused for the reason PKITS tests where invalid."""
        return self.validity_agrees and self.reason_class == self.expected_class


def pkits_dir() -> Path:
    import cryptography_vectors

    return Path(os.path.dirname(cryptography_vectors.__file__)) / "x509" / "PKITS_data"


def section_of(name: str) -> str:
    for title, pattern in SECTIONS[::-1]:  # most specific patterns are listed last
        if re.match(pattern, name):
            return title
    return "other"


def run(relaxed: bool = False) -> list[Outcome]:
    """Every PKITS run under the strict profile, or (``relaxed``) with the directory setting
    accept_noncritical_constraints on, as a directory that must accept PKITS-style CAs has it."""
    from cryptography import x509

    from broker.pki import PkiError, RevocationSettings, TrustStore, verify_certificate
    from broker.pki.policies import PolicyInputs
    from broker.pki.profile import STRICT, ProfileOptions

    options = ProfileOptions(accept_noncritical_constraints=True) if relaxed else STRICT

    # The RFC 5280 engine logs every CRL-issuer path it rejects with a traceback.
    logging.getLogger("pyhanko_certvalidator").setLevel(logging.CRITICAL)

    base = pkits_dir()
    golden = load_golden()
    certs = {p.stem: p.read_bytes() for p in (base / "certs").glob("*.crt")}
    anchor = x509.load_der_x509_certificate(certs["TrustAnchorRootCertificate"])
    unparseable: list[str] = []
    pool = []
    for name, der in sorted(certs.items()):
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            unparseable.append(name)
            continue
        if not name.endswith("EE") and name != "TrustAnchorRootCertificate":
            pool.append(cert)
    crls = []
    for p in sorted((base / "crls").glob("*.crl")):
        try:
            crls.append(x509.load_der_x509_crl(p.read_bytes()))
        except ValueError:
            unparseable.append(p.stem)
    if set(unparseable) != set(UNPARSEABLE):
        raise PkitsDataError(f"PKITS inputs that do not parse: {sorted(unparseable)}; known: "
                             f"{sorted(UNPARSEABLE)}")
    covered = {g.split()[-1] for g in golden}
    ees = {n for n in certs if n.endswith("EE")}
    if covered != ees:
        raise PkitsDataError(f"golden rows without a certificate: {sorted(covered - ees)}; "
                             f"certificates without a golden row: {sorted(ees - covered)}")
    store = TrustStore([anchor], pool, crls)
    hard = RevocationSettings(crl=True, ocsp=False, fail_mode="hard")

    def no_fetch(*_: object) -> bytes:
        from broker.pki.revocation import FetchError

        raise FetchError("offline")

    def judge(name: str, section: str, expected: Golden, policy: object) -> Outcome:
        o = _judge(name, section, expected.valid, policy)
        o.expected_class = expected.reason_class
        return o

    def _judge(name: str, section: str, expected: bool, policy: object) -> Outcome:
        try:
            verify_certificate(certs[name], [], store, purpose="any", max_depth=255,
                               revocation=hard, fetch=no_fetch, at=AT,
                               policy=policy,  # type: ignore[arg-type]
                               profile_options=options)
            return Outcome(name, section, expected, True, "")
        except PkiError as exc:
            return Outcome(name, section, expected, False, exc.code)
        except Exception as exc:  # noqa: BLE001 - a crash is counted, never a refusal
            return Outcome(name, section, expected, False, f"crash: {exc!r}"[:160],
                           crashed=True)

    out = []
    for name in sorted(n for n in certs if n.endswith("EE")):
        if not name.startswith(("Valid", "Invalid")):
            continue  # settings-dependent: run below with the inputs PKITS gives
        if name not in golden or golden[name].valid != name.startswith("Valid"):
            raise PkitsDataError(f"{name}: the golden row must say what its name says")
        out.append(judge(name, section_of(name), golden[name], PolicyInputs()))
    for test_id, name, expected, policies, flags in SETTINGS_CASES:
        row = golden.get(f"{test_id} {name}")
        if row is None or row.valid != expected:
            raise PkitsDataError(f"{test_id} {name}: golden row missing or disagreeing with "
                                 "SETTINGS_CASES")
        inputs = PolicyInputs.of(policies, explicit=EXPLICIT in flags,
                                 mapping_inhibit=INHIBIT_MAP in flags,
                                 any_policy_inhibit=INHIBIT_ANY in flags)
        o = judge(name, "4.8-4.12 with initial inputs", row, inputs)
        o.name = f"{test_id} {name}"
        out.append(o)
    if len(out) != len(golden):
        raise PkitsDataError(f"{len(golden)} golden rows but {len(out)} runs")
    return out


def agreement(relaxed: bool = False) -> tuple[float, list[Outcome]]:
    """(agreement rate, disagreements) for the test that guards against regressions."""
    outcomes = run(relaxed)
    wrong = [o for o in outcomes if not o.agrees]
    return 1 - len(wrong) / len(outcomes), wrong


def is_deliberate(o: Outcome) -> bool:
    why = known_reason(o.name) or ""
    return why.startswith(PROFILE) and not o.valid and o.expected_valid


def report(outcomes: list[Outcome], title: str, relaxed: bool,
           relaxed_run: dict[str, Outcome] | None = None) -> None:
    print(f"\n== {title}")
    by_section: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_section[o.section].append(o)
    print(f"{'section':<38}{'tests':>6}{'agree':>7}{'rate':>8}")
    for section in [t for t, _ in SECTIONS] + ["other", "4.8-4.12 with initial inputs"]:
        group = by_section.get(section, [])
        if group:
            agree = sum(o.agrees for o in group)
            print(f"{section:<38}{len(group):>6}{agree:>7}{agree / len(group):>8.1%}")
    agree = sum(o.agrees for o in outcomes)
    print(f"{'total':<38}{len(outcomes):>6}{agree:>7}{agree / len(outcomes):>8.1%}")
    false_accepts = [o for o in outcomes if o.valid and not o.expected_valid]
    crashes = [o for o in outcomes if o.crashed]
    print(f"invalid paths accepted: {len(false_accepts)}; crashes: {len(crashes)}")
    if not relaxed:
        deliberate = [o for o in outcomes if is_deliberate(o)]
        print(f"refused on purpose by RFC 5280 profile MUSTs PKITS itself breaks: "
              f"{len(deliberate)}; agreement on the rest: {agree}/"
              f"{len(outcomes) - len(deliberate)} = "
              f"{agree / (len(outcomes) - len(deliberate)):.1%}")
    wrong = [o for o in outcomes if not o.agrees]
    if wrong:
        by_reason: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
        for o in wrong:
            expected = "valid" if o.expected_valid else f"invalid/{o.expected_class}"
            ours = "valid" if o.valid else f"refused/{o.reason_class}"
            by_reason[(expected, ours)].append(o)
        print("disagreements by reason (PKITS expects → we answered):")
        for (expected, ours), group in sorted(by_reason.items()):
            print(f"  {expected} → {ours}: {len(group)}")
            for o in group:
                why = explain(o, relaxed, relaxed_run)
                note = f"  [known: {why}]" if why else "  [UNEXPLAINED]"
                print(f"    {o.name}: {o.reason or 'valid'}{note}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args()
    strict, relaxed = run(), run(relaxed=True)
    report(strict, "(a) strict RFC 5280 profile (the default)", relaxed=False,
           relaxed_run={o.name: o for o in relaxed})
    report(relaxed, "(b) accept_noncritical_constraints = true", relaxed=True)
    print()
    for label, outcomes in (("(a) strict", strict), ("(b) accept_noncritical_constraints",
                                                     relaxed)):
        agree = sum(o.agrees for o in outcomes)
        print(f"{label}: {agree}/{len(outcomes)} = {agree / len(outcomes):.1%} agree; invalid "
              f"accepted {sum(o.valid and not o.expected_valid for o in outcomes)}; crashes "
              f"{sum(o.crashed for o in outcomes)}")


if __name__ == "__main__":
    main()
