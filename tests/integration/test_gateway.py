"""A real gateway accepts the broker's session tickets (issue 28, item 8).

Debian's HAProxy 2.6 runs docs/deploy/haproxy-gateway.cfg on loopback in front of a stand-in
desktop (a tiny HTTP server this module starts), with the keys `broker keys export-gateway`
wrote. The tickets come from a real broker: a card login and a WorkSpace connect; the ones with
a wrong claim are signed with the broker's own current key (read from its database and sealing
key), so only the gateway's claim checks can refuse them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from broker.service.tickets import KeyRing, verify
from tests.support.require import unavailable
from tests.support.server import REPO, ApiClient, Response, free_port
from tests.support.softcard import SoftClient
from tests.support.world import world_broker

CONFIG = REPO / "docs" / "deploy" / "haproxy-gateway.cfg"


def haproxy_exe() -> str:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(exe):
        unavailable("deploy-tools", "haproxy is not installed (apt-get install haproxy)")
    return exe


class _Desktop(BaseHTTPRequestHandler):
    """The stand-in WorkSpace desktop: answers what reached it, as JSON."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def desktop() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Desktop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    haproxy_exe()
    # The broker reads its key table every 2 s (keys.ring_recheck_s; 30 by default), so
    # the rotation test waits seconds, not half a minute, for it to follow `keys rotate`.
    with world_broker(tmp_path_factory.mktemp("gateway"), {"BROKER_KEYS_RING_RECHECK_S": "2"}) \
            as (bp, w):
        yield bp, w


class Gateway:
    """HAProxy with the shipped configuration, its keys exported from ``bp`` into ``keys``."""

    def __init__(self, bp: Any, folder: Path, desktop: int) -> None:
        from broker.web.server import dev_certificate

        self.bp, self.keys, self.desktop = bp, folder / "ticket-keys", desktop
        tls = dev_certificate(folder / "tls")
        self.front_pem = folder / "gateway.pem"
        self.front_pem.write_bytes(tls.cert.read_bytes() + tls.key.read_bytes())
        self.cafile = tls.cert
        self.log = folder / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def export(self) -> dict[str, Any]:
        out = self.bp.run_cli("keys", "export-gateway", "--out", str(self.keys), "--json")
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def env(self) -> dict[str, str]:
        return dict(os.environ, GATEWAY_FRONTEND=f"127.0.0.1:{self.port}",
                    GATEWAY_FRONT_PEM=str(self.front_pem), GATEWAY_TICKET_KEYS=str(self.keys),
                    GATEWAY_DESKTOP=f"127.0.0.1:{self.desktop}")

    def start(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([haproxy_exe(), "-db", "-f", str(CONFIG)], env=self.env(),
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, self.log.read_text()
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def reload(self) -> None:
        self.stop()
        self.start()

    def get(self, path: str, ticket: str | None, headers: dict[str, str] | None = None
            ) -> Response:
        return ApiClient("127.0.0.1", self.port, self.cafile, timeout=10).get(
            path, token=ticket, headers=headers)


@contextmanager
def gateway(bp: Any, folder: Path, desktop: int) -> Iterator[Gateway]:
    gw = Gateway(bp, folder, desktop)
    gw.export()
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def fresh_ticket(bp: Any, w: Any, who: str = "bob") -> str:
    """A ticket from a real card login and connect to ``ws-<who>``."""
    client = SoftClient(bp.client(), w.codes["corp"])
    r = client.login(w.cards[who])
    assert r.status == 200, r.body
    s = client.open_session(r.body["auth_token"], f"ws-{who}", w.cards[who])
    assert s.status == 201, s.body
    return s.body["session"]["ticket"]  # type: ignore[no-any-return]


def claims_of(bp: Any, ticket: str) -> dict[str, Any]:
    return verify(ticket, bp.client().get("/v1/jwks.json").body)


def kid_of(ticket: str) -> str:
    head = ticket.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]


def signed_by_broker(bp: Any, claims: dict[str, Any]) -> str:
    """``claims`` signed with the broker's current key, taken from its database."""
    from broker.keys_at_rest import read_key
    from broker.store.db import Database

    key_file = bp.base / "var" / "keys" / "signing-keys.key"
    ring = KeyRing(timedelta(days=30), timedelta(minutes=10),
                   sealing_key=lambda: read_key(key_file))
    db = Database(bp.db_url)
    try:
        return db.transaction(lambda s: ring.sign(s, claims, datetime.now(UTC)))
    finally:
        db.engine.dispose()


def test_a_fresh_ticket_reaches_the_desktop_with_its_verified_claims(world, desktop,  # type: ignore[no-untyped-def]
                                                                     tmp_path: Path) -> None:
    bp, w = world
    with gateway(bp, tmp_path, desktop) as gw:
        ticket = fresh_ticket(bp, w)
        claims = claims_of(bp, ticket)
        r = gw.get("/workspaces/ws-bob/stream", ticket,
                   headers={"X-WorkSpace-User": "alice"})  # a client's copy never passes
        assert r.status == 200, (r.status, r.body, gw.log.read_text())
        seen = r.body["headers"]
        assert r.body["path"] == "/workspaces/ws-bob/stream"
        assert seen["x-workspace-user"] == "bob" and seen["x-workspace-id"] == "ws-bob"
        assert seen["x-workspace-session"] == claims["sid"]
        assert seen["x-smart-card-redirection"] == "1"
        assert "authorization" not in seen, "the bearer ticket is not handed to the desktop"
        # no ticket at all
        assert gw.get("/workspaces/ws-bob/stream", None).status == 401


def test_expired_tampered_foreign_and_misdirected_tickets_are_refused(world, desktop,  # type: ignore[no-untyped-def]
                                                                      tmp_path: Path) -> None:
    bp, w = world
    with gateway(bp, tmp_path, desktop) as gw:
        ticket = fresh_ticket(bp, w)
        claims = claims_of(bp, ticket)
        now = int(time.time())
        # the broker's key, every claim right: passes (the refusals below are the claims')
        resigned = signed_by_broker(bp, claims)
        assert gw.get("/workspaces/ws-bob/", resigned).status == 200, gw.log.read_text()

        expired = signed_by_broker(bp, {**claims, "iat": now - 600, "exp": now - 1})
        assert gw.get("/workspaces/ws-bob/", expired).status == 401
        no_exp = signed_by_broker(bp, {k: v for k, v in claims.items() if k != "exp"})
        assert gw.get("/workspaces/ws-bob/", no_exp).status == 401

        other_audience = signed_by_broker(bp, {**claims, "aud": "another-service"})
        assert gw.get("/workspaces/ws-bob/", other_audience).status == 403
        other_issuer = signed_by_broker(bp, {**claims, "iss": "another-broker"})
        assert gw.get("/workspaces/ws-bob/", other_issuer).status == 403

        # bob's real ticket for another WorkSpace, and a ticket for alice's at bob's
        assert gw.get("/workspaces/ws-alice/", ticket).status == 403
        assert gw.get("/", ticket).status == 403
        for_alice = signed_by_broker(bp, {**claims, "ws": "ws-alice"})
        assert gw.get("/workspaces/ws-bob/", for_alice).status == 403
        assert gw.get("/workspaces/ws-alice/", for_alice).status == 200

        # tampered: the payload says ws-alice, the signature is bob's ticket's
        head, _, sig = ticket.split(".")
        body = base64.urlsafe_b64encode(json.dumps({**claims, "ws": "ws-alice"}).encode())
        tampered = f"{head}.{body.decode().rstrip('=')}.{sig}"
        assert gw.get("/workspaces/ws-alice/", tampered).status == 401
        flipped = ticket[:-3] + ("A" if ticket[-3] != "A" else "B") + ticket[-2:]
        assert gw.get("/workspaces/ws-bob/", flipped).status == 401
        # a key the broker never had, under the current key's kid
        from joserfc import jwt
        from joserfc.jwk import ECKey

        forged = jwt.encode({"alg": "ES256", "kid": kid_of(ticket), "typ": "JWT"}, claims,
                            ECKey.generate_key("P-256"))
        assert gw.get("/workspaces/ws-bob/", forged).status == 401
        assert gw.get("/workspaces/ws-bob/", "not.a.ticket").status == 401
        # "alg": "none" under the current kid, no signature (jwt_verify would accept it were
        # the algorithm taken from the token: the configuration names ES256)
        none = base64.urlsafe_b64encode(json.dumps(
            {"alg": "none", "kid": kid_of(ticket)}).encode()).decode().rstrip("=")
        assert gw.get("/workspaces/ws-bob/", f"{none}.{ticket.split('.')[1]}.").status == 401
        # and the real ticket still passes after all that
        assert gw.get("/workspaces/ws-bob/", ticket).status == 200


def test_tickets_signed_before_and_after_a_rotation_pass(world, desktop,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    bp, w = world
    with gateway(bp, tmp_path, desktop) as gw:
        first = json.loads(bp.run_cli("keys", "list", "--json").stdout)
        before = fresh_ticket(bp, w)
        assert kid_of(before) == first["current"]["kid"]
        assert gw.get("/workspaces/ws-bob/", before).status == 200

        rotated = json.loads(bp.run_cli("keys", "rotate", "--json").stdout)
        assert rotated["was_published"] is True
        assert rotated["current"]["kid"] == first["next"]["kid"]
        assert rotated["previous"]["kid"] == first["current"]["kid"]
        # the running broker follows within keys.ring_recheck_s (it reads the key table that
        # often);
        # meanwhile it signs with the old key, which the gateway accepts as well
        deadline = time.monotonic() + 2 + 15
        while kid_of(after := fresh_ticket(bp, w)) != rotated["current"]["kid"]:
            assert kid_of(after) == first["current"]["kid"]
            assert gw.get("/workspaces/ws-bob/", after).status == 200
            assert time.monotonic() < deadline, "the broker never signed with the new key"
            time.sleep(0.5)
        # The gateway still runs with the export made before the rotation: the new key was
        # in it as the next one.
        assert gw.get("/workspaces/ws-bob/", after).status == 200, gw.log.read_text()
        assert gw.get("/workspaces/ws-bob/", before).status == 200

        # export again and reload: the old key is now the previous one, both still pass
        exported = gw.export()
        assert exported["previous"]["kid"] == first["current"]["kid"]
        assert sorted(exported["files"]) == ["current.pem", "issuer.lst", "kids.map",
                                             "next.pem", "previous.pem"]
        gw.reload()
        assert gw.get("/workspaces/ws-bob/", before).status == 200
        assert gw.get("/workspaces/ws-bob/", after).status == 200

        # a second rotation and export: the first key leaves the export and its (unexpired)
        # ticket is refused; the second key's ticket still passes as the previous one
        bp.run_cli("keys", "rotate")
        gw.export()
        gw.reload()
        assert gw.get("/workspaces/ws-bob/", before).status == 401
        assert gw.get("/workspaces/ws-bob/", after).status == 200


def test_the_shipped_configuration_checks_with_an_export(world, desktop,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    bp, _ = world
    gw = Gateway(bp, tmp_path, desktop)
    gw.export()
    gw.port = free_port()
    out = subprocess.run([haproxy_exe(), "-c", "-f", str(CONFIG)], env=gw.env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Configuration file is valid" in out.stdout
