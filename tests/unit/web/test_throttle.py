"""The web edge's per-address failure throttle (console sign-in), driven by a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from broker.web.http import AddressThrottle


def test_an_address_waits_after_its_failures_and_others_do_not() -> None:
    clock = Clock()
    throttle = AddressThrottle(3, 60.0, clock.seconds)
    for _ in range(3):
        assert throttle.retry_after("127.0.0.10") == 0
        throttle.failed("127.0.0.10")
        clock.advance(1)
    assert throttle.retry_after("127.0.0.10") == 57.0  # the first failure (t=0) leaves at t=60
    assert throttle.retry_after("127.0.0.11") == 0
    clock.advance(56.5)
    assert throttle.retry_after("127.0.0.10") > 0
    clock.advance(0.5)
    assert throttle.retry_after("127.0.0.10") == 0


def test_a_flood_of_addresses_is_bounded() -> None:
    clock = Clock()
    throttle = AddressThrottle(1, 60.0, clock.seconds, max_addresses=100)
    for i in range(1000):
        throttle.failed(f"127.0.{i // 250}.{i % 250}")
    assert len(throttle._failures) == 100
    assert throttle.retry_after("127.0.3.249") > 0  # the newest are the ones kept
