"""TLS terminated at HAProxy (docs/deploy/haproxy-tls-termination.cfg), the supported route for
TLS session resumption across broker workers and nodes: two HAProxy nodes sharing one
ticket-key file in front of two brokers (PROXY protocol v2, re-encrypted and verified hops).
A client's session resumes on either HAProxy whichever broker answers; a HAProxy with other
keys does not resume it; the brokers still see the client's own address."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_two_nodes import stop_haproxy
from tests.support.databases import postgres_schema_url
from tests.support.require import unavailable
from tests.support.server import REPO, free_port

pytestmark = pytest.mark.postgres

CONFIG = REPO / "docs" / "deploy" / "haproxy-tls-termination.cfg"
BEHIND_HAPROXY = {"client_source": "127.0.0.2", "BROKER_SERVER_PROXY_PROTOCOL": "v2",
                  "BROKER_SERVER_PROXY_BALANCERS": "127.0.0.1"}


def ticket_keys(path: Path) -> Path:
    path.write_text("".join(base64.b64encode(secrets.token_bytes(80)).decode() + "\n"
                            for _ in range(3)))
    path.chmod(0o600)
    return path


def start_haproxy(front: int, node1: int, node2: int, cafile: Path, pem: Path, keys: Path,
                  log: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(exe):
        unavailable("deploy-tools", "haproxy is not installed (apt-get install haproxy)")
    env = dict(os.environ, BROKER_FRONTEND=f"127.0.0.1:{front}", BROKER_FRONT_PEM=str(pem),
               BROKER_TICKET_KEYS=str(keys), BROKER_NODE1=f"127.0.0.1:{node1}",
               BROKER_NODE2=f"127.0.0.1:{node2}", BROKER_CA_FILE=str(cafile))
    return subprocess.Popen([exe, "-db", "-f", str(CONFIG)], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def get(ctx: ssl.SSLContext, port: int, path: str, session: ssl.SSLSession | None = None,
        source: str = "127.0.0.3") -> tuple[bytes, ssl.SSLSession | None, bool]:
    """One HTTPS GET on a new connection: (response, the session to resume, resumed?)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10,
                                   source_address=(source, 0))
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n"
                    .encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        return answer, tls.session, tls.session_reused


def wait_ready(ctx: ssl.SSLContext, port: int, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            if get(ctx, port, "/readyz")[0].startswith(b"HTTP/1.1 200"):
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def test_sessions_resume_across_haproxy_nodes_and_brokers(broker_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with postgres_schema_url() as url:
        node1 = broker_factory(url, **BEHIND_HAPROXY)
        node2 = broker_factory(url, start=False, **BEHIND_HAPROXY)
        shutil.copytree(node1.cafile.parent, node2.base / "var" / "dev-tls")
        node2.start()
        # HAProxy presents the same certificate clients already trust (cert + key, 0600).
        pem = tmp_path / "front.pem"
        pem.write_bytes(node1.cafile.read_bytes()
                        + (node1.cafile.parent / "dev-key.pem").read_bytes())
        pem.chmod(0o600)
        shared = ticket_keys(tmp_path / "shared.keys")
        fronts = [free_port(), free_port(), free_port()]
        haps = [start_haproxy(port, node1.port, node2.port, node1.cafile, pem, keys,
                              tmp_path / f"haproxy{i}.log")
                for i, (port, keys) in enumerate(zip(
                    fronts, [shared, shared, ticket_keys(tmp_path / "other.keys")],
                    strict=True))]
        try:
            ctx = ssl.create_default_context(cafile=str(node1.cafile))
            for i, port in enumerate(fronts):
                wait_ready(ctx, port, tmp_path / f"haproxy{i}.log")
            for tls_max in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                ctx = ssl.create_default_context(cafile=str(node1.cafile))
                ctx.maximum_version = tls_max
                _, session, resumed = get(ctx, fronts[0], "/healthz")
                assert not resumed
                # Alternating HAProxy nodes, round-robin brokers behind them: every new
                # connection resumes the first one's session.
                resumes = []
                for n in range(6):
                    answer, _, resumed = get(ctx, fronts[n % 2], "/healthz", session)
                    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
                    resumes.append(resumed)
                assert resumes == [True] * 6, f"{tls_max.name}: {resumes}"
                # A HAProxy with other ticket keys cannot read the ticket: a full handshake.
                assert get(ctx, fronts[2], "/healthz", session)[2] is False
            # Both brokers answered, and neither saw HAProxy as the client.
            logs = node1.logs() + node2.logs()
            assert '"client": "127.0.0.3"' in node1.logs() and '"client": "127.0.0.3"' in \
                node2.logs(), logs[-2000:]
        finally:
            for hap in haps:
                stop_haproxy(hap)
