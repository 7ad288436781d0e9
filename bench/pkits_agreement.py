#!/usr/bin/env python3
"""How often the broker's verifier agrees with NIST PKITS (shipped in cryptography-vectors).

Every PKITS end-entity certificate's file name says the expected outcome under the default
settings (``Valid…Test<N>EE.crt`` / ``Invalid…Test<N>EE.crt``). Each is verified with
``verify_certificate`` — the login path's verifier — against the PKITS trust anchor, with all
PKITS CA certificates as the untrusted pool, all PKITS CRLs uploaded, CRL checking in hard-fail
mode, purpose "any" and no depth limit. Prints agreement per section and in total, and every
disagreement with the reason we gave.

    python bench/pkits_agreement.py
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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

# Every disagreement we know of, by name prefix, with why (tests/unit/pki/test_pkits.py fails on
# any disagreement not explained here, and on an agreement rate below the recorded one).
# All but one refuse a path PKITS calls valid: the safe direction for a login.
KNOWN = {
    "ValidDSA": "DSA keys are refused for logins (weak/unsupported key type)",
    "ValidPolicyMapping": "OpenSSL's policy tree (POLICY_CHECK) ends empty with these mappings: "
                          "'no explicit policy'; refused",
    "ValidinhibitPolicyMapping": "same OpenSSL policy-mapping limitation as ValidPolicyMapping",
    "ValidinhibitAnyPolicy": "same OpenSSL policy-tree limitation",
    "ValidSelfIssuedinhibit": "same OpenSSL policy-tree limitation with self-issued CAs",
    "ValidrequireExplicitPolicy": "same OpenSSL policy-tree limitation",
    "ValidBasicSelfIssued": "CRLs signed by a rolled-over self-issued key are not found: "
                            "revocation unknown (hard fail in the suite)",
    "ValidSeparateCertificateandCRLKeys": "CRL signed by a separate CRL key: revocation unknown",
    "ValidIDPwithindirectCRL": "indirect CRLs across issuers: revocation unknown",
    "ValidcRLIssuer": "cRLIssuer-named indirect CRLs: revocation unknown",
    "ValidonlySomeReasons": "reason-partitioned CRLs: OpenSSL wants full coverage, revocation "
                            "unknown",
    "ValiddeltaCRL": "delta CRLs are not applied (pyOpenSSL does not expose X509_V_FLAG_USE_DELTAS"
                     "); the base CRL lists the certificate",
    "InvaliddeltaCRL": "delta CRLs are not applied, so a revocation only in the delta is missed",
}


def known_reason(name: str) -> str | None:
    return next((why for prefix, why in KNOWN.items() if name.startswith(prefix)), None)


@dataclass
class Outcome:
    name: str
    section: str
    expected_valid: bool
    valid: bool
    reason: str


def pkits_dir() -> Path:
    import cryptography_vectors

    return Path(os.path.dirname(cryptography_vectors.__file__)) / "x509" / "PKITS_data"


def section_of(name: str) -> str:
    for title, pattern in SECTIONS[::-1]:  # most specific patterns are listed last
        if re.match(pattern, name):
            return title
    return "other"


def run() -> list[Outcome]:
    from cryptography import x509

    from broker.pki import PkiError, RevocationSettings, TrustStore, verify_certificate

    base = pkits_dir()
    certs = {p.stem: p.read_bytes() for p in (base / "certs").glob("*.crt")}
    anchor = x509.load_der_x509_certificate(certs["TrustAnchorRootCertificate"])
    pool = []
    for name, der in certs.items():
        if name.endswith("EE") or name == "TrustAnchorRootCertificate":
            continue
        try:
            pool.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    crls = []
    for p in (base / "crls").glob("*.crl"):
        try:
            crls.append(x509.load_der_x509_crl(p.read_bytes()))
        except ValueError:
            continue
    store = TrustStore([anchor], pool, crls)
    hard = RevocationSettings(crl=True, ocsp=False, fail_mode="hard")

    def no_fetch(*_: object) -> bytes:
        from broker.pki.revocation import FetchError

        raise FetchError("offline")

    out = []
    for name in sorted(n for n in certs if n.endswith("EE")):
        if not name.startswith(("Valid", "Invalid")):
            continue  # settings-dependent: PKITS gives both outcomes (counted in main)
        expected = name.startswith("Valid")
        try:
            verify_certificate(certs[name], [], store, purpose="any", max_depth=32,
                               revocation=hard, fetch=no_fetch)
            valid, reason = True, ""
        except PkiError as exc:
            valid, reason = False, exc.code
        except ValueError as exc:
            valid, reason = False, f"error: {exc}"
        out.append(Outcome(name, section_of(name), expected, valid, reason))
    return out


def agreement() -> tuple[float, list[Outcome]]:
    """(agreement rate, disagreements) for the test that guards against regressions."""
    outcomes = run()
    wrong = [o for o in outcomes if o.valid != o.expected_valid]
    return 1 - len(wrong) / len(outcomes), wrong


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args()
    outcomes = run()
    dependent = [p.stem for p in (pkits_dir() / "certs").glob("*EE.crt")
                 if not p.stem.startswith(("Valid", "Invalid"))]
    by_section: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_section[o.section].append(o)
    print(f"{'section':<38}{'tests':>6}{'agree':>7}{'rate':>8}")
    for title in [t for t, _ in SECTIONS] + ["other"]:
        group = by_section.get(title, [])
        if group:
            agree = sum(o.valid == o.expected_valid for o in group)
            print(f"{title:<38}{len(group):>6}{agree:>7}{agree / len(group):>8.1%}")
    agree = sum(o.valid == o.expected_valid for o in outcomes)
    print(f"{'total':<38}{len(outcomes):>6}{agree:>7}{agree / len(outcomes):>8.1%}")
    print(f"(not counted: {len(dependent)} settings-dependent policy tests whose expected "
          "outcome depends on initial-policy-set / explicit-policy inputs)")
    wrong = [o for o in outcomes if o.valid != o.expected_valid]
    if wrong:
        print("\ndisagreements (expected → ours):")
        for o in wrong:
            why = known_reason(o.name)
            note = f"  [known: {why}]" if why else "  [UNEXPLAINED]"
            print(f"  {o.name}: {'valid' if o.expected_valid else 'invalid'} → "
                  f"{'valid' if o.valid else o.reason}{note}")


if __name__ == "__main__":
    main()
