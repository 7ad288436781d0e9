"""`broker doctor`'s pure checks: expiry thresholds and clock sanity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.doctor import check_clock, expiry_check

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("left,status", [
    (timedelta(days=-1), "fail"), (timedelta(days=3), "warn"), (timedelta(days=90), "ok")])
def test_expiry_is_ok_then_warns_then_fails(left: timedelta, status: str) -> None:
    assert expiry_check("tls", "", NOW + left, NOW, 14, "expires").status == status


def test_clock_behind_the_newest_audit_event_fails() -> None:
    assert check_clock(NOW, None, NOW + timedelta(hours=1)).status == "fail"
    assert check_clock(NOW, None, NOW - timedelta(hours=1)).status == "ok"


def test_clock_far_from_the_database_servers_fails() -> None:
    assert check_clock(NOW, NOW + timedelta(minutes=5)).status == "fail"
    assert check_clock(NOW, NOW + timedelta(seconds=2)).status == "ok"
