"""One minute of steady load (bench/soak.py): the broker's RSS, open file descriptors and
database connections are sampled every few seconds and must not keep growing."""

from __future__ import annotations

import sys

import pytest

from tests.support.server import REPO

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_one_minute_soak_shows_no_growth_in_memory_fds_or_connections() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from soak import soak

    result = soak(60.0, 2.0, sample_every=3.0)
    assert len(result.samples) >= 15
    assert not result.problems, result.problems
