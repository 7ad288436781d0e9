"""The verifier against NIST PKITS: agreement may not drop, and every miss is explained."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

try:
    import cryptography_vectors  # noqa: F401
except ImportError:
    from tests.support.require import unavailable

    unavailable("pkits", "PKITS ships in cryptography-vectors (pip install cryptography-vectors)")

from bench.pkits_agreement import (  # noqa: E402
    SETTINGS_CASES,
    is_deliberate,
    known_reason,
    run,
)

# Measured: 217 of 252 (203 default-settings tests + 49 runs with PKITS's initial policy inputs).
# 32 of the 35 misses are deliberate RFC 5280 profile refusals (non-critical policyConstraints or
# basicConstraints in PKITS CAs), 3 are DSA.
RECORDED_RATE = 0.861
RECORDED_RATE_WITHOUT_DELIBERATE = 0.98


@pytest.fixture(scope="module")
def outcomes():  # type: ignore[no-untyped-def]
    return run()


@pytest.fixture(scope="module")
def result(outcomes):  # type: ignore[no-untyped-def]
    wrong = [o for o in outcomes if not o.agrees]
    return 1 - len(wrong) / len(outcomes), wrong


def test_agreement_does_not_drop(result) -> None:  # type: ignore[no-untyped-def]
    rate, _ = result
    assert rate >= RECORDED_RATE - 0.001, f"PKITS agreement fell to {rate:.1%}"


def test_every_disagreement_is_explained(result) -> None:  # type: ignore[no-untyped-def]
    _, wrong = result
    unexplained = [o.name for o in wrong if known_reason(o.name) is None]
    assert unexplained == []


def test_deliberate_refusals_name_the_profile_rule(outcomes) -> None:  # type: ignore[no-untyped-def]
    # A "deliberate" miss must be refused as certificate_malformed (the profile check), not
    # for some other reason hiding behind the explanation.
    assert all(o.reason == "certificate_malformed" for o in outcomes if is_deliberate(o))


def test_no_invalid_path_is_accepted(result) -> None:  # type: ignore[no-untyped-def]
    _, wrong = result
    assert [o.name for o in wrong if o.valid] == []


def test_nothing_crashes(result) -> None:  # type: ignore[no-untyped-def]
    _, wrong = result
    assert [o.name for o in wrong if o.crashed] == []


def test_settings_dependent_tests_are_run(outcomes) -> None:  # type: ignore[no-untyped-def]
    names = {name for _, name, *_ in SETTINGS_CASES}
    assert len([n for n in names if not n.startswith(("Valid", "Invalid"))]) == 20
    assert len(outcomes) == 203 + len(SETTINGS_CASES)


def test_agreement_without_deliberate_refusals_is_at_least_98_percent(outcomes) -> None:  # type: ignore[no-untyped-def]
    counted = [o for o in outcomes if not is_deliberate(o)]
    rate = sum(o.agrees for o in counted) / len(counted)
    assert rate >= RECORDED_RATE_WITHOUT_DELIBERATE
