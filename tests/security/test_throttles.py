"""Throttles on connects and in-session challenges (issue 30, item 7), per login (auth token)
and per client address, against a real broker over TLS: past them 429 rate_limited with
Retry-After, each refusal counted in broker_throttled_total, and a refused call counts
against nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from broker.client.flow import WINDOWS_CLIENT
from tests.integration.test_observability import metric
from tests.support.server import BrokerProcess
from tests.support.world import World, world_broker

ENV = {
    "BROKER_LOGIN_CONNECTS_PER_TOKEN_PER_MINUTE": "3",
    "BROKER_LOGIN_CONNECTS_PER_ADDRESS_PER_MINUTE": "5",
    "BROKER_LOGIN_IN_SESSION_CHALLENGES_PER_TOKEN_PER_MINUTE": "3",
    "BROKER_LOGIN_IN_SESSION_CHALLENGES_PER_ADDRESS_PER_MINUTE": "5",
}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, World]]:
    with world_broker(tmp_path_factory.mktemp("throttles"), ENV) as (bp, w):
        yield bp, w


def _token(bp: BrokerProcess, w: World, source: str) -> str:
    r = bp.client(source=source).post("/v1/auth/password", {
        "registration_code": w.codes["east"], "username": "erin", "password": "erin password",
        # the supported client: its sessions may use the card in-session (DESIGN §1)
        "client": WINDOWS_CLIENT})
    assert r.status == 200, r.body
    return str(r.body["auth_token"])


def _throttled(bp: BrokerProcess, what: str) -> float:
    return metric(bp.admin().get("/metrics").body.decode(), "broker_throttled_total",
                  what=what) or 0.0


def _limited(r: Any) -> bool:
    return r.status == 429 and r.code == "rate_limited" and int(r.headers["retry-after"]) >= 1


def test_connects_are_throttled_per_token_and_per_address(target: Any) -> None:
    bp, w = target
    a, b = "127.0.31.2", "127.0.32.2"
    first = _token(bp, w, a)
    connect = "/v1/workspaces/ws-erin/connect"
    statuses = [bp.client(first, source=a).post(connect).status for _ in range(3)]
    assert statuses == [201] * 3
    assert _limited(bp.client(first, source=a).post(connect)), "per token"
    second = _token(bp, w, a)  # a new login from the same address: 2 left for the address
    assert [bp.client(second, source=a).post(connect).status for _ in range(2)] == [201] * 2
    assert _limited(bp.client(second, source=a).post(connect)), "per address"
    # the refused call counted nowhere: the second login has one connect left, elsewhere
    assert bp.client(second, source=b).post(connect).status == 201
    assert _throttled(bp, "connect") == 2


def test_in_session_challenges_are_throttled_per_token(target: Any) -> None:
    bp, w = target
    source = "127.0.33.2"
    token = _token(bp, w, source)
    api = bp.client(token, source=source)
    sid = api.post("/v1/workspaces/ws-erin/connect").body["session"]["id"]
    ask = f"/v1/sessions/{sid}/in-session/challenges"
    assert [api.post(ask, {"purpose": "sudo"}).status for _ in range(3)] == [201] * 3
    assert _limited(api.post(ask, {"purpose": "sudo"}))
    assert _throttled(bp, "in_session_challenge") == 1
