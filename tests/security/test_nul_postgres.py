"""NUL and other control characters are refused at the edge (400 malformed_request) before
any database work. The 500s they gave were PostgreSQL's (its text type cannot hold NUL), so
this runs against the real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.softcard import SoftClient
from tests.support.world import build_world

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def pg_broker(broker_factory: Any, tmp_path: Path) -> Any:
    from tests.support.databases import postgres_schema_url

    with postgres_schema_url() as url:
        bp = broker_factory(url)
        yield bp, build_world(tmp_path / "world", bp)


def test_control_characters_never_reach_postgresql(pg_broker: Any) -> None:
    bp, world = pg_broker
    east = world.codes["east"]
    out = bp.run_cli("admin", "token", "create", "--name", "nul", "--scope", "write", "--json")
    admin = bp.admin(json.loads(out.stdout)["token"])
    token = SoftClient(bp.client(), world.codes["corp"]).login(world.cards["bob"]).body[
        "auth_token"]
    client = bp.client(token)
    refused = [
        bp.client().post("/v1/auth/password", {"registration_code": east,
                                               "username": "er\u0000in", "password": "x"}),
        bp.client().post("/v1/auth/password", {"registration_code": east,
                                               "username": "er\nin", "password": "x"}),
        bp.client().post("/v1/auth/password", {"registration_code": east, "username": "erin",
                                               "password": "erin\u0000password"}),
        bp.client().post("/v1/auth/password", {"registration_code": east + "\u0000",
                                               "username": "erin", "password": "x"}),
        client.post("/v1/workspaces/ws-bob%00/connect", {}),
        client.post("/v1/sessions/s%00/heartbeat", {"card_present": True}),
        client.post("/v1/workspaces/ws-bob/logon", {"challenge_id": "c\u0000",
                                                    "signature": "AA=="}),
        admin.get("/admin/v1/directories/corp%00"),
        admin.get("/admin/v1/audit-events?actor=x%00"),
        admin.post("/admin/v1/directories", {"id": "nul\u0000dir", "name": "x"}),
        admin.request("PATCH", "/admin/v1/directories/corp", {"name": "Corp\u0000"}),
    ]
    for i, r in enumerate(refused):
        assert (r.status, r.code) == (400, "malformed_request"), (i, r.status, r.body)
    assert "unhandled error" not in bp.logs()
    ok = bp.client().post("/v1/auth/password", {"registration_code": east,
                                                "username": "erin", "password": "erin password"})
    assert ok.status == 200, "the broker and its database are fine"
