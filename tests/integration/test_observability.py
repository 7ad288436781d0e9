"""Logs and metrics an operator can use: one JSON line per request by route template (never the
raw path), one line per start-up fact, Prometheus metrics on the admin listener that N workers
report as one."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine
from sqlalchemy import text as sql

from tests.support.databases import postgres_schema_url
from tests.support.server import BrokerProcess
from tests.support.softcard import SoftClient

SECRET_ID = "SeCrEtChallengeId0123456789abcdef"
RESPONSE_ROUTE = "/v1/auth/challenges/{challenge_id}/response"


def json_lines(bp: BrokerProcess, until: Callable[[list[dict[str, object]]], bool],
               timeout: float = 15.0) -> list[dict[str, object]]:
    """The broker's JSON log lines, once ``until`` holds for them (it writes a request's line
    after answering): polled, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        text = bp.logs()
        lines = [line for line in text.splitlines() if line.strip()]
        bad = [line for line in lines if not line.startswith("{")]
        assert not bad, f"plain lines inside the JSON stream: {bad}"
        records = [json.loads(line) for line in lines]
        if until(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def with_ids(*ids: str) -> Callable[[list[dict[str, object]]], bool]:
    return lambda records: set(ids) <= {rec.get("request_id") for rec in records}


def refused_response(bp: BrokerProcess, world, rid: str) -> None:  # type: ignore[no-untyped-def]
    bp.client().request("POST", f"/v1/auth/challenges/{SECRET_ID}/response",
                     {"certificate": world.cards["alice"].cert_b64(), "chain": [],
                      "signature": base64.b64encode(b"sig").decode(), "algorithm": "ES256"},
                     headers={"x-request-id": rid})


def test_one_line_per_request_by_route_template_never_the_path(broker, world) -> None:  # type: ignore[no-untyped-def]
    refused_response(broker, world, "trace-refused-1")
    broker.client().get(f"/v1/no-such/{SECRET_ID}", headers={"x-request-id": "trace-404-1"})
    lines = json_lines(broker, with_ids("trace-refused-1", "trace-404-1"))
    mine = [rec for rec in lines if rec.get("request_id") == "trace-refused-1"]
    assert len(mine) == 1, mine
    assert mine[0]["route"] == RESPONSE_ROUTE
    assert mine[0]["status"] >= 400 and mine[0]["code"] not in ("", "ok")  # type: ignore[operator]
    assert isinstance(mine[0]["duration_ms"], float)
    unknown = [rec for rec in lines if rec.get("request_id") == "trace-404-1"]
    assert len(unknown) == 1 and unknown[0]["status"] == 404, unknown
    assert SECRET_ID not in broker.logs()


def test_start_up_facts_are_logged_once(broker) -> None:  # type: ignore[no-untyped-def]
    broker.client().get("/healthz", headers={"x-request-id": "trace-start-1"})
    lines = json_lines(broker, with_ids("trace-start-1"))  # everything before it is written
    listening = [rec for rec in lines if rec["msg"] == "listening"]
    assert sorted(rec["api"] for rec in listening) == ["admin", "client"]  # type: ignore[type-var]
    assert not [rec for rec in lines if "starting on" in str(rec["msg"])]
    assert not [rec for rec in lines if rec["logger"] == "twisted"], "Twisted's own access log"


def test_text_format_keeps_the_fields(broker_factory, migrated_url: str) -> None:  # type: ignore[no-untyped-def]
    bp = broker_factory(migrated_url, BROKER_LOG_FORMAT="text", BROKER_LOG_LEVEL="Info")
    bp.client().get("/healthz", headers={"x-request-id": "trace-text-1"})
    deadline = time.monotonic() + 15
    while "trace-text-1" not in bp.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in bp.logs().splitlines() if "trace-text-1" in line)
    assert "request_id=trace-text-1" in line and "route=/healthz" in line
    assert "status=200" in line and "duration_ms=" in line


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.rsplit(" ", 1)[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_live_on_the_admin_listener_with_openapi_route_labels(broker, world) -> None:  # type: ignore[no-untyped-def]
    assert broker.client().get("/metrics").status == 404
    refused_response(broker, world, "trace-m-1")
    soft = SoftClient(broker.client(), world.codes["corp"])
    login = soft.login(world.cards["bob"])
    assert login.status == 200
    ws = next(w for w in login.body["workspaces"] if w["state"] == "AVAILABLE"
              and w["protocol"] == "WSP")
    assert soft.open_session(login.body["auth_token"], ws["id"],
                             world.cards["bob"]).status == 201
    text = broker.admin().get("/metrics").body.decode()
    assert metric(text, "broker_http_requests_total", route=RESPONSE_ROUTE, status="200")
    assert "{id}" not in text and SECRET_ID not in text
    assert metric(text, "broker_logins_total", method="smart_card", result="ok") == 1
    assert metric(text, "broker_logins_total", method="smart_card", result="refused") == 1
    assert sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("broker_refusals_total{")) >= 1
    # key series exist from the start at 0, so rate() sees their first event
    assert metric(text, "broker_refusals_total", code="certificate_revoked") == 0
    assert metric(text, "broker_challenges_issued_total", purpose="pre_session") == 1
    assert metric(text, "broker_active_sessions", directory="corp") == 1
    assert (metric(text, "broker_workspaces", state="AVAILABLE") or 0) >= 1
    assert (metric(text, "broker_ca_expiry_seconds", directory="corp") or 0) > 86400
    assert metric(text, "broker_crl_next_update_seconds", directory="corp") is not None
    assert metric(text, "broker_db_pool_connections_in_use") is not None
    assert metric(text, "broker_ready") == 1


def test_unanswered_challenges_are_counted_as_expired(broker_factory, migrated_url: str,
                                                      tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.world import build_world

    bp = broker_factory(migrated_url, BROKER_LOGIN_CHALLENGE_TTL_S="3",
                        BROKER_SESSIONS_SWEEP_INTERVAL_S="0.5")
    world = build_world(tmp_path / "world", bp)
    soft = SoftClient(bp.client(), world.codes["corp"])
    assert soft.challenge().status == 201
    answered = soft.login(world.cards["bob"])
    assert answered.status == 200, answered.body
    deadline = time.monotonic() + 15
    while True:
        text = bp.admin().get("/metrics").body.decode()
        if metric(text, "broker_challenges_expired_total") == 1:
            break
        assert time.monotonic() < deadline, "the unanswered challenge was never counted"
        time.sleep(0.5)
    # Wait until the sweeper has deleted both challenges (polling the table): only the
    # unanswered one counts.
    engine = create_engine(migrated_url)
    try:
        while True:
            with engine.connect() as conn:
                left = conn.execute(sql("SELECT count(*) FROM challenges")).scalar_one()
            if left == 0:
                break
            assert time.monotonic() < deadline + 15, f"{left} challenges never swept"
            time.sleep(0.2)
    finally:
        engine.dispose()
    text = bp.admin().get("/metrics").body.decode()
    assert metric(text, "broker_challenges_expired_total") == 1
    assert metric(text, "broker_challenges_issued_total", purpose="pre_session") == 2


def test_client_listener_metrics_when_enabled(broker_factory, migrated_url: str) -> None:  # type: ignore[no-untyped-def]
    bp = broker_factory(migrated_url, BROKER_SERVER_METRICS_ON_CLIENT="true")
    assert bp.client().get("/metrics").status == 200


@pytest.mark.postgres
def test_workers_report_as_one(broker_factory) -> None:  # type: ignore[no-untyped-def]
    with postgres_schema_url() as url:
        bp = broker_factory(url, workers=2)
        before = metric(bp.admin().get("/metrics").body.decode(), "broker_http_requests_total",
                        api="client", route="/healthz", status="200") or 0
        n = 40
        for _ in range(n):
            assert bp.client().get("/healthz").status == 200
        for _ in range(4):  # whichever worker answers the scrape, it reports both
            text = bp.admin().get("/metrics").body.decode()
            assert metric(text, "broker_http_requests_total", api="client", route="/healthz",
                          status="200") == before + n


def test_revocation_fetch_failures_and_latency_are_counted(broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json as jsonlib
    import socket

    from broker.pki import issue
    from tests.support.softcard import SoftCard

    with socket.socket() as s:  # a port nobody listens on: the responder is down
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    root = issue.make_root("Fetch Root")
    inter = issue.make_intermediate(root, "Fetch Issuing")
    user = issue.make_user_cert(inter, "Fay", upn="fay@corp.example", ocsp_url=dead)
    (tmp_path / "root.pem").write_bytes(root.cert_pem())
    (tmp_path / "issuing.pem").write_bytes(inter.cert_pem())
    (tmp_path / "d.toml").write_text(
        '[[directory]]\nid = "fetch"\nname = "F"\nregion = "us-gov-west-1"\n'
        'smart_card = { pre_session = true }\n'
        'revocation = { crl = false, ocsp = true, fail_mode = "soft" }\n'
        'trust_anchors = ["root.pem"]\nintermediates = ["issuing.pem"]\n'
        'certmap = ["upn"]\nregistration_codes = 1\n'
        '[[directory.user]]\nusername = "fay"\nupn = "fay@corp.example"\n'
        '[[directory.workspace]]\nid = "ws-fay"\nuser = "fay"\nprotocol = "WSP"\n'
        'running_mode = "ALWAYS_ON"\nstate = "AVAILABLE"\n')
    out = broker.run_cli("admin", "apply", str(tmp_path / "d.toml"), "--json")
    code = jsonlib.loads(out.stdout)["directories"][0]["registration_codes"][0]
    card = SoftCard(user.key, user.cert, [inter.cert])
    r = SoftClient(broker.client(), code).login(card)
    assert r.status == 200, r.body  # soft fail: allowed, and counted
    text = broker.admin().get("/metrics").body.decode()
    assert (metric(text, "broker_revocation_fetch_failures_total", kind="ocsp") or 0) >= 1
    assert (metric(text, "broker_revocation_fetch_duration_seconds_count", kind="ocsp")
            or 0) >= 1
