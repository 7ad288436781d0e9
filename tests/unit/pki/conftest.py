"""Every path a PKI unit test gets accepted is also put to cryptography's verifier
(tests/support/differential.py): a refusal there that is not listed with the RFC section that
makes the broker right fails the test that produced the path (issue 27, the differential test
over the existing corpora)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from broker.pki import chain
from tests.support.differential import second_opinion


@pytest.fixture(autouse=True)
def cryptography_second_opinion(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    judge = chain._judge
    unexplained: list[Any] = []

    def observed(leaf: Any, cand: Any, pool: Any, trust: Any, at: Any, purpose: Any,
                 max_depth: int, *args: Any, **kwargs: Any) -> Any:
        result = judge(leaf, cand, pool, trust, at, purpose, max_depth, *args, **kwargs)
        found = second_opinion(leaf, pool, trust.anchors, at, max_depth, result.chain)
        if found is not None and found.unexplained:
            unexplained.append((leaf.subject.rfc4514_string(), found.message))
        return result

    monkeypatch.setattr(chain, "_judge", observed)
    yield unexplained
    assert unexplained == [], ("cryptography's verifier refuses paths the broker accepted, "
                               "for reasons not listed in tests/support/differential.py")
