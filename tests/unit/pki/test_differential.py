"""Differential test (issue 27): the broker's verifier against cryptography's ``ClientVerifier``
on the same inputs. Any path the broker accepts and cryptography refuses fails unless
tests/support/differential.py lists cryptography's refusal with the RFC section that makes the
broker right. The other unit tests of this package get the same check on every path they get
accepted (tests/unit/pki/conftest.py); here: issue 27's cases and every PKITS path.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.pki import PkiError, RevocationSettings, TrustStore, chain, verify_certificate
from tests.support import rfc5280_gaps as gaps
from tests.support.differential import second_opinion

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


@pytest.mark.parametrize("case_id", sorted(gaps.CASES))
def test_issue_27_cases(case_id: str) -> None:
    case = gaps.CASES[case_id]()
    now = dt.datetime.now(dt.UTC)
    try:
        result = verify_certificate(case.leaf, case.chain, TrustStore(case.anchors), at=now,
                                    max_depth=case.max_depth,
                                    revocation=RevocationSettings(crl=False))
    except PkiError:
        return  # refused by the broker: the safe direction, whatever cryptography says
    found = second_opinion(case.leaf, case.chain, case.anchors, now, case.max_depth,
                           result.chain)
    assert found is None or not found.unexplained, found


def test_every_accepted_pkits_path() -> None:
    try:
        import cryptography_vectors  # noqa: F401
    except ImportError:
        from tests.support.require import unavailable

        unavailable("pkits", "PKITS ships in cryptography-vectors")
    from bench.pkits_agreement import run

    seen: list[tuple[str, Any]] = []
    judge = chain._judge

    def observed(leaf: Any, cand: Any, pool: Any, trust: Any, at: Any, purpose: Any,
                 max_depth: int, *args: Any, **kwargs: Any) -> Any:
        result = judge(leaf, cand, pool, trust, at, purpose, max_depth, *args, **kwargs)
        seen.append((leaf.subject.rfc4514_string(),
                     second_opinion(leaf, pool, trust.anchors, at, max_depth, result.chain)))
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chain, "_judge", observed)
        outcomes = run(relaxed=True)  # the setting that accepts the most PKITS paths
    accepted = sum(o.valid for o in outcomes)
    assert len(seen) == accepted >= 100
    unexplained = [(who, d.message) for who, d in seen if d is not None and d.unexplained]
    assert unexplained == []
    # cryptography really disagrees on some (so the comparison runs): each one is listed.
    assert sum(d is not None for _, d in seen) >= 10


def test_an_unlisted_refusal_is_reported() -> None:
    """cryptography refuses a critical subjectKeyIdentifier in a CA; that reason is not listed
    (the broker refuses it too), so a broker accepting it would fail the comparison."""
    case = gaps.CASES["critical-ski-intermediate"]()
    found = second_opinion(case.leaf, case.chain, case.anchors, dt.datetime.now(dt.UTC), 6)
    assert found is not None and found.unexplained, found
    control = gaps.CASES["critical-ski-nowhere"]()
    assert second_opinion(control.leaf, control.chain, control.anchors,
                          dt.datetime.now(dt.UTC), 6) is None
