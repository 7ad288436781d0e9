"""Half a minute of steady load (bench/soak.py): the broker's RSS, open file descriptors and
database connections are sampled every 1.5 s and must not keep growing. The same 120 rounds
the minute at 2 rounds/s made, at 4 rounds/s (the bench's default rate; longer soaks are
``python bench/soak.py --seconds 600``)."""

from __future__ import annotations

import sys

import pytest

from tests.support.server import REPO

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_half_a_minute_soak_shows_no_growth_in_memory_fds_or_connections() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from soak import soak

    result = soak(30.0, 4.0, sample_every=1.5)
    assert len(result.samples) >= 15
    assert not result.problems, result.problems
