"""Lockouts an attacker cannot aim (issue 30, item 3), against a real broker over TLS, the
attacker rotating loopback source addresses as a botnet would rotate its hosts.

* wrong passwords count per (user, address): the guessing address locks only itself;
* the per-user ceiling (all addresses) slows the guessing down exponentially (429
  rate_limited with Retry-After), never the right password from an address that has
  logged in before;
* one network prefix gets a share of a directory's challenge ceiling, not all of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.server import BrokerProcess
from tests.support.softcard import SoftClient
from tests.support.world import World, world_broker

ENV = {
    "BROKER_LOGIN_MAX_FAILURES": "3",
    "BROKER_LOGIN_FAILURES_PER_USER": "4",
    "BROKER_LOGIN_FAILURES_PER_ADDRESS": "100",
    "BROKER_LOGIN_CHALLENGES_PER_DIRECTORY_PER_MINUTE": "12",
    "BROKER_LOGIN_CHALLENGES_PER_PREFIX_PER_MINUTE": "4",
}


@dataclass
class Target:
    broker: BrokerProcess
    world: World

    def password(self, source: str, directory: str, username: str, password: str) -> Any:
        return self.broker.client(source=source).post(
            "/v1/auth/password", {"registration_code": self.world.codes[directory],
                                  "username": username, "password": password})


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with world_broker(tmp_path_factory.mktemp("lockouts"), ENV) as (bp, w):
        yield Target(bp, w)


def test_guesses_from_many_addresses_slow_down_but_never_lock_erin_out(target: Target) -> None:
    desk = "127.0.7.2"
    assert target.password(desk, "east", "erin", "erin password").status == 200
    bots = (f"127.0.8.{n}" for n in range(2, 250))
    codes = [target.password(next(bots), "east", "erin", "guess").code for _ in range(4)]
    assert codes == ["invalid_credentials"] * 4  # under the per-user ceiling
    # Past the ceiling every counted failure doubles the wait for addresses erin never used;
    # the first Retry-After seen after each failure is that wait.
    waits: list[int] = []
    first_wait: int | None = None
    counted = 0
    deadline = time.monotonic() + 60
    while counted < 4:
        assert time.monotonic() < deadline, f"no failure was counted again: {waits}"
        r = target.password(next(bots), "east", "erin", "guess")
        if r.code == "rate_limited":
            assert r.status == 429
            if first_wait is None:
                first_wait = int(r.headers["retry-after"])
            time.sleep(0.2)  # polling interval while the delay runs
            continue
        assert r.code == "invalid_credentials", r.body
        if first_wait is not None:
            waits.append(first_wait)
        first_wait, counted = None, counted + 1
    assert len(waits) == 3 and waits == sorted(waits) and waits[-1] > waits[0], waits
    # the right password from a new address is slowed too (it might be the attacker's)
    slowed = target.password(next(bots), "east", "erin", "erin password")
    assert slowed.status == 429 and slowed.code == "rate_limited"
    assert int(slowed.headers["retry-after"]) >= 1
    # … and from erin's own desk it is never refused
    assert target.password(desk, "east", "erin", "erin password").status == 200


def test_the_wait_grows_exponentially_up_to_the_window() -> None:
    """Each counted failure past the ceiling doubles the next wait: 1, 2, 4 … s, at most
    lockout_s (the arithmetic itself, on the counter the broker uses)."""
    from datetime import UTC, datetime

    from sqlalchemy import create_engine

    from broker.service.limits import record_slowdown
    from broker.store.models import Base

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine, tables=[Base.metadata.tables["rate_counters"]])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        delays = [record_slowdown(conn, "fail:user:d:erin", 4, 300, now) for _ in range(14)]
    assert delays == [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300]


def test_wrong_passwords_lock_only_the_guessing_address(target: Target) -> None:
    guesser, desk = "127.0.11.2", "127.0.12.2"
    codes = [target.password(guesser, "corp", "dave", "guess").code for _ in range(4)]
    assert codes == ["invalid_credentials"] * 3 + ["locked_out"]
    locked = target.password(guesser, "corp", "dave", "correct horse battery staple")
    assert locked.status == 429 and locked.code == "locked_out"
    assert 1 <= int(locked.headers["retry-after"]) <= 301
    assert target.password(desk, "corp", "dave", "correct horse battery staple").status == 200


def test_one_prefix_cannot_spend_a_directorys_challenges(target: Target) -> None:
    rotating = [SoftClient(target.broker.client(source=f"127.0.9.{n}"),
                           target.world.codes["corp"]) for n in range(2, 17)]
    statuses = [c.challenge().status for c in rotating]
    assert statuses == [201] * 4 + [429] * 11, "one /24 takes its share, not the directory"
    r = rotating[-1].challenge()
    assert r.code == "rate_limited" and int(r.headers["retry-after"]) >= 1
    others = [SoftClient(target.broker.client(source=f"127.0.{p}.2"),
                         target.world.codes["corp"]) for p in (20, 21)]
    assert [c.challenge().status for c in others] == [201, 201]
