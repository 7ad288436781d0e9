"""The deployment examples in docs/deploy/ are checked by the tools that will read them:
systemd-analyze, haproxy and promtool (skipped, with the package to install, where absent).
The HAProxy example also runs: two brokers on one PostgreSQL behind it, one loses its
database, and HAProxy's /readyz health checks take it out of the pool."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.databases import postgres_schema_url
from tests.support.proxy import TcpProxy
from tests.support.require import unavailable
from tests.support.server import REPO, ApiClient, free_port

DEPLOY = REPO / "docs" / "deploy"


def need(tool: str, package: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists()
                                  else None)
    if path is None:
        unavailable("deploy-tools",
                    f"{tool} not installed (Debian package {package}; .ci/setup installs it)")
    return path


def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    tool = need("systemd-analyze", "systemd")
    broker = str(Path(sys.executable).parent / "broker")
    unit = tmp_path / "smartcard-broker.service"
    # verify insists that ExecStart exists: point it at this checkout's broker.
    unit.write_text((DEPLOY / "smartcard-broker.service").read_text().replace(
        "/opt/smartcard-broker/bin/broker", broker))
    out = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    security = subprocess.run([tool, "security", "--offline=yes", str(unit)],
                              capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    assert level is not None, security.stdout + security.stderr
    assert float(level.group(1)) <= 2.0, security.stdout


def test_prometheus_alert_rules_check_and_fire(tmp_path: Path) -> None:
    promtool = need("promtool", "prometheus")
    check = subprocess.run([promtool, "check", "rules", "prometheus-alerts.yml"], cwd=DEPLOY,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([promtool, "test", "rules", "prometheus-alerts.test.yml"],
                          cwd=DEPLOY, capture_output=True, text=True, timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def haproxy_config(ca_file: Path, port: int, servers: list[int]) -> str:
    text = (DEPLOY / "haproxy.cfg").read_text()
    text = text.replace("/etc/haproxy/smartcard-broker-ca.pem", str(ca_file))
    text = text.replace("check-sni broker.example", "check-sni localhost")
    text = text.replace("bind :8443", f"bind 127.0.0.1:{port}")
    text = re.sub(r"(\n    server [^\n]*)+\n", "\n" + "".join(
        f"    server broker{i} 127.0.0.1:{p}\n" for i, p in enumerate(servers, 1)), text)
    return text.replace("log stdout format raw local0", "log stderr format raw local0")


def test_haproxy_example_is_valid(tmp_path: Path) -> None:
    haproxy = need("haproxy", "haproxy")
    from broker.web.server import dev_certificate

    ca = dev_certificate(tmp_path / "tls").cert
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text((DEPLOY / "haproxy.cfg").read_text().replace(
        "/etc/haproxy/smartcard-broker-ca.pem", str(ca)))
    out = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.postgres
def test_haproxy_takes_a_broker_without_database_out_of_the_pool(broker_factory,
                                                                 tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    haproxy = need("haproxy", "haproxy")
    with postgres_schema_url() as url:
        from broker.store import migrate

        migrate.upgrade(url)
        parts = urlsplit(url)
        proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).start()
        via_proxy = urlunsplit(parts._replace(
            netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        # HAProxy sends PROXY v2 from 127.0.0.1; the test's own connections come from 127.0.0.2
        behind = {"client_source": "127.0.0.2", "BROKER_SERVER_PROXY_PROTOCOL": "v2",
                  "BROKER_SERVER_PROXY_BALANCERS": "127.0.0.1"}
        healthy = broker_factory(url, **behind)
        doomed = broker_factory(via_proxy, start=False, **behind)
        # One certificate for the pool, as behind a real load balancer.
        shutil.copytree(healthy.cafile.parent, doomed.cafile.parent)
        shutil.copytree(healthy.base / "var" / "keys", doomed.base / "var" / "keys")
        doomed.start()
        ca = healthy.cafile
        port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(haproxy_config(ca, port, [healthy.port, doomed.port]))
        proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            front = ApiClient("127.0.0.1", port, ca, timeout=5)
            deadline = time.monotonic() + 20
            # Which broker answered: its log holds the request id (no pid on the client port).
            n = 0
            while not all("via-haproxy-" in b.logs() for b in (healthy, doomed)):
                if time.monotonic() > deadline:
                    proc.terminate()
                    raise AssertionError("HAProxy never used both brokers:\n"
                                         + proc.communicate(timeout=10)[1].decode())
                try:
                    n += 1
                    front.get("/healthz", headers={"x-request-id": f"via-haproxy-{n}"})
                except OSError:
                    time.sleep(0.2)
            proxy.stop()  # the second broker loses its database
            assert doomed.client().get("/readyz").status == 503
            time.sleep(2 * 2 + 3)  # inter 2s × fall 2, and a margin
            answers = [front.get("/readyz").status for _ in range(12)]
            assert answers == [200] * 12, answers
        finally:
            proc.terminate()
            proc.wait(10)
            proxy.stop()
