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

from bench.pkits_agreement import agreement, known_reason  # noqa: E402

RECORDED_RATE = 0.842  # measured: 171 of 203 applicable PKITS path-validation tests


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    return agreement()


def test_agreement_does_not_drop(result) -> None:  # type: ignore[no-untyped-def]
    rate, _ = result
    assert rate >= RECORDED_RATE - 0.001, f"PKITS agreement fell to {rate:.1%}"


def test_every_disagreement_is_explained(result) -> None:  # type: ignore[no-untyped-def]
    _, wrong = result
    unexplained = [o.name for o in wrong if known_reason(o.name) is None]
    assert unexplained == []


def test_only_delta_crl_cases_accept_what_pkits_rejects(result) -> None:  # type: ignore[no-untyped-def]
    _, wrong = result
    accepted_wrongly = [o.name for o in wrong if o.valid]
    assert all(name.startswith("InvaliddeltaCRL") for name in accepted_wrongly)
