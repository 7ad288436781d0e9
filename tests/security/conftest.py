"""One real broker over TLS (SQLite) with three directories, shared by the security suite.

Each test that counts failures or rate limits talks from its own loopback source address
(127.0.0.x), so the suite's tests cannot throttle one another. Every secret the suite sees
(tokens, session and challenge ids, nonces) is remembered, and the last test checks that none
of it reached the broker's log.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.server import BrokerProcess
from tests.support.world import World, world_broker

_addresses = itertools.count(10)

#: Tight limits so each throttle shows within a few requests.
ENV = {
    "BROKER_LOGIN_CHALLENGES_PER_CODE_PER_MINUTE": "3",
    "BROKER_LOGIN_FAILURES_PER_ADDRESS": "4",
    "BROKER_LOGIN_FAILURES_PER_CHALLENGE": "2",
    "BROKER_LOGIN_MAX_FAILURES": "3",
    "BROKER_SERVER_REQUEST_HEAD_TIMEOUT_S": "2",
    "BROKER_SERVER_REQUEST_BODY_TIMEOUT_S": "2",
}


@dataclass
class Secured:
    broker: BrokerProcess
    world: World
    #: Values that must never appear in the broker's log.
    secrets: set[str] = field(default_factory=set)

    def address(self) -> str:
        """A loopback source address no other test of the suite uses."""
        n = next(_addresses)
        return f"127.0.{n // 250}.{n % 250 + 2}"

    def client(self, token: str | None = None, source: str | None = None) -> Any:
        return self.broker.client(token, source=source or self.address())

    def remember(self, *values: Any) -> None:
        self.secrets.update(str(v) for v in values if v)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    with world_broker(tmp_path_factory.mktemp("secured"), ENV) as (bp, w):
        yield Secured(bp, w)
