"""`broker serve`: TLS listeners, health, readiness, metrics, shutdown, workers, start-up errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.databases import postgres_schema_url
from tests.support.proxy import TcpProxy
from tests.support.server import REPO, BrokerProcess, free_port


def test_healthz_answers_over_verified_tls(broker) -> None:  # type: ignore[no-untyped-def]
    r = broker.client().get("/healthz")
    assert r.status == 200 and r.body["status"] == "ok"
    assert len(r.headers["x-request-id"]) >= 16


def test_admin_listener_answers_on_loopback(broker) -> None:  # type: ignore[no-untyped-def]
    assert broker.admin().get("/healthz").status == 200


def test_request_id_is_echoed_when_sane(broker) -> None:  # type: ignore[no-untyped-def]
    r = broker.client().get("/healthz", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = broker.client().get("/healthz", headers={"x-request-id": "bad id\twith junk"})
    assert r.headers["x-request-id"] != "bad id\twith junk"


def test_unknown_path_is_a_json_404(broker) -> None:  # type: ignore[no-untyped-def]
    r = broker.client().get("/v1/nothing-here")
    assert r.status == 404 and r.code == "not_found"


def test_metrics_are_prometheus_text(broker) -> None:  # type: ignore[no-untyped-def]
    broker.client().get("/healthz")
    r = broker.admin().get("/metrics")
    assert r.status == 200
    assert b'broker_http_requests_total{api="client",method="GET",route="/healthz"' in r.body


def test_logs_are_json_lines_with_request_ids(broker) -> None:  # type: ignore[no-untyped-def]
    import json

    broker.client().get("/healthz", headers={"x-request-id": "trace-me-1"})
    deadline = time.monotonic() + 15  # the line is written after the answer: poll for it
    while "trace-me-1" not in broker.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(line) for line in broker.logs().splitlines() if line.startswith("{")]
    assert any(rec.get("request_id") == "trace-me-1" and rec.get("status") == 200
               for rec in lines)


@pytest.mark.postgres
def test_readyz_follows_the_database_without_restart(broker_factory) -> None:  # type: ignore[no-untyped-def]
    with postgres_schema_url() as url:
        from broker.store import migrate

        migrate.upgrade(url)
        parts = urlsplit(url)
        proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).start()
        via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        bp = broker_factory(via_proxy)
        try:
            assert bp.client().get("/readyz").status == 200
            proxy.stop()
            r = bp.client().get("/readyz")
            assert r.status == 503 and r.body["database"] == "unreachable"
            assert bp.client().get("/healthz").status == 200
            proxy.start()  # same port again
            deadline = time.monotonic() + 15
            while bp.client().get("/readyz").status != 200:
                assert time.monotonic() < deadline, "readyz did not recover"
                time.sleep(0.3)
        finally:
            bp.stop()
            proxy.stop()


@pytest.mark.postgres
def test_sigterm_lets_in_flight_requests_finish(broker_factory) -> None:  # type: ignore[no-untyped-def]
    with postgres_schema_url() as url:
        from broker.store import migrate

        migrate.upgrade(url)
        parts = urlsplit(url)
        proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).start()
        via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        bp = broker_factory(via_proxy)
        try:
            assert bp.client().get("/readyz").status == 200  # warm the pool
            proxy.delay_s = 0.5  # every database round trip now takes 0.5 s
            result: dict[str, object] = {}

            def call() -> None:
                try:
                    result["status"] = bp.client().get("/readyz").status
                except Exception as exc:  # reported by the assertion below
                    result["error"] = repr(exc)

            t = threading.Thread(target=call)
            t.start()
            time.sleep(0.5)
            assert bp.proc is not None
            bp.proc.send_signal(signal.SIGTERM)
            t.join(20)
            assert result.get("status") == 200, result
            assert bp.proc.wait(20) == 0
        finally:
            bp.stop()
            proxy.stop()


def test_sigterm_exits_cleanly(broker) -> None:  # type: ignore[no-untyped-def]
    assert broker.stop(signal.SIGTERM) == 0


@pytest.mark.postgres
def test_two_workers_share_one_port(broker_factory) -> None:  # type: ignore[no-untyped-def]
    with postgres_schema_url() as url:
        bp = broker_factory(url, workers=2)
        pids = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(bp.admin().get("/healthz").body["pid"])  # pid: admin listener only
        assert len(pids) == 2, "both workers should answer on the shared socket"
        assert bp.stop() == 0


def test_workers_refuse_sqlite(tmp_path: Path) -> None:
    bp = BrokerProcess(tmp_path, f"sqlite:///{tmp_path}/b.db", free_port(), free_port(),
                       workers=2)
    bp.write_config()
    proc = bp.run_cli("serve", "--dev", check=False)
    assert proc.returncode == 2 and "PostgreSQL" in proc.stderr


# ------------------------------------------------------------------ start-up errors

def run_serve(tmp_path: Path, config: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "broker.cli", "serve", *args]
    if config is not None:
        cfg = tmp_path / "config" / "broker.toml"
        cfg.parent.mkdir(exist_ok=True)
        cfg.write_text(config)
        cmd += ["--config", str(cfg)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


def test_malformed_config_file_is_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run_serve(tmp_path, "[server\n"), "not valid TOML")


def test_unknown_config_key_is_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run_serve(tmp_path, "[server]\nlisen = 'tcp:1'\n"), "server.lisen")


def test_bad_database_url_is_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run_serve(tmp_path, None, "--database-url", "oracle://x"),
                          "database.url")


def test_missing_tls_file_is_one_line_error(tmp_path: Path) -> None:
    cfg = f'[server]\ntls_cert = "{tmp_path}/nope.pem"\ntls_key = "{tmp_path}/nope.key"\n'
    assert_one_line_error(run_serve(tmp_path, cfg), "file not found")


def test_serve_without_tls_refuses_unless_dev(tmp_path: Path) -> None:
    cfg = f'[database]\nurl = "sqlite:///{tmp_path}/b.db"\n[regions]\ncatalogue = ' \
          f'"{REPO}/config/regions.toml"\n'
    assert_one_line_error(run_serve(tmp_path, cfg), "--dev")


def test_migrate_command_reports_unreachable_database(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "broker.cli", "migrate", "--database-url",
                           f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert_one_line_error(proc, "database")
