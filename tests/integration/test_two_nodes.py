"""Two broker nodes behind Debian's haproxy (docs/deploy/haproxy-two-nodes.cfg, TCP mode,
PROXY protocol v2, health checks on /readyz), one PostgreSQL. Clients behind HAProxy keep
their own addresses: each is rate-limited on its own, and the audit names it. A login storm
goes through HAProxy; node 1 is
SIGKILLed mid-storm: retrying clients complete, no challenge is accepted twice, a session, a
token and a logon challenge made on the dead node keep working on the other (heartbeat,
logon, in-session), and the sessions in the database are the sessions clients saw.
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
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from broker.pki import issue
from tests.support.databases import postgres_schema_url
from tests.support.dirfile import directory, user, workspace
from tests.support.require import unavailable
from tests.support.server import REPO, ApiClient, free_port
from tests.support.softcard import SoftCard, SoftClient
from tests.support.storm import NO_RATE_LIMITS, StormLog, run_storm, summary
from tests.support.world import build_world

pytestmark = pytest.mark.postgres

CONFIG = REPO / "docs" / "deploy" / "haproxy-two-nodes.cfg"
STORM_USERS = 3
#: HAProxy reaches the nodes from 127.0.0.1, its PROXY-protocol balancer address; the tests'
#: own direct connections come from 127.0.0.2, which is not a balancer.
BEHIND_HAPROXY = {"client_source": "127.0.0.2", "BROKER_SERVER_PROXY_PROTOCOL": "v2",
                  "BROKER_SERVER_PROXY_BALANCERS": "127.0.0.1"}


def scale_directory(names: list[str]) -> str:
    return directory("scale", "Scale", smart_card={"pre_session": True, "in_session": True},
                     revocation={"crl": False}, trust_anchors=["pki/root.pem"],
                     intermediates=["pki/issuing.pem"], users=[user(n) for n in names],
                     workspaces=[workspace(n) for n in names])


def start_haproxy(front: int, node1: int, node2: int, cafile: Path, log: Path
                  ) -> subprocess.Popen[bytes]:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(exe):
        unavailable("deploy-tools", "haproxy is not installed (apt-get install haproxy)")
    env = dict(os.environ, BROKER_FRONTEND=f"127.0.0.1:{front}",
               BROKER_NODE1=f"127.0.0.1:{node1}", BROKER_NODE2=f"127.0.0.1:{node2}",
               BROKER_CA_FILE=str(cafile))
    return subprocess.Popen([exe, "-db", "-f", str(CONFIG)], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def wait_for_haproxy(lb: ApiClient, log: Path) -> None:
    """Until HAProxy answers /readyz through a node (its PROXY health checks passed)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            if lb.get("/readyz").status == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def stop_haproxy(hap: subprocess.Popen[bytes]) -> None:
    hap.send_signal(signal.SIGTERM)
    try:
        hap.wait(10)
    except subprocess.TimeoutExpired:
        hap.kill()
        hap.wait()


def test_clients_behind_haproxy_are_limited_separately(broker_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    limit = {"BROKER_LOGIN_CHALLENGES_PER_ADDRESS_PER_MINUTE": "3"}
    with postgres_schema_url() as url:
        node1 = broker_factory(url, **limit, **BEHIND_HAPROXY)
        node2 = broker_factory(url, start=False, **limit, **BEHIND_HAPROXY)
        shutil.copytree(node1.cafile.parent, node2.base / "var" / "dev-tls")
        node2.start()
        w = build_world(tmp_path / "world", node1)
        front = free_port()
        hap = start_haproxy(front, node1.port, node2.port, node1.cafile,
                            tmp_path / "haproxy.log")
        try:
            wait_for_haproxy(ApiClient("127.0.0.1", front, node1.cafile),
                             tmp_path / "haproxy.log")
            first = SoftClient(ApiClient("127.0.0.1", front, node1.cafile,
                                         source="127.0.0.3"), w.codes["corp"])
            second = SoftClient(ApiClient("127.0.0.1", front, node1.cafile,
                                          source="127.0.0.4"), w.codes["corp"])
            # HAProxy round-robins: the first client's three challenges reach both nodes,
            # which count together, by the client's address.
            assert [first.challenge().status for _ in range(3)] == [201, 201, 201]
            refused = first.challenge()
            assert refused.status == 429 and refused.code == "rate_limited", refused.body
            assert second.challenge().status == 201, "another client is not limited"

            engine = create_engine(url)
            with engine.connect() as conn:
                seen = conn.execute(text(
                    "SELECT client_address, count(*) FROM audit_events WHERE kind = "
                    "'challenge.issue' AND outcome = 'success' GROUP BY client_address")).all()
            engine.dispose()
            assert dict(seen) == {"127.0.0.3": 3, "127.0.0.4": 1}

            # Only the balancer may say who the client is: a PROXY header sent straight to a
            # node from any other address closes the connection.
            forged = ApiClient("127.0.0.1", node1.port, node1.cafile, source="127.0.0.2")
            with socket.create_connection(("127.0.0.1", node1.port), timeout=5,
                                          source_address=("127.0.0.2", 0)) as raw:
                raw.sendall(b"PROXY TCP4 127.0.0.9 127.0.0.1 5555 8443\r\n")
                assert raw.recv(100) == b"", "the node closed the connection"
            assert forged.get("/healthz").status == 200, "direct clients are still served"
            assert "not a configured balancer" in node1.logs()
        finally:
            stop_haproxy(hap)


def test_two_nodes_behind_haproxy_survive_losing_one(broker_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with postgres_schema_url() as url:
        node1 = broker_factory(url, **NO_RATE_LIMITS, **BEHIND_HAPROXY)
        node2 = broker_factory(url, start=False, **NO_RATE_LIMITS, **BEHIND_HAPROXY)
        # one TLS identity for the service: node 2 reuses node 1's (dev) certificate
        shutil.copytree(node1.cafile.parent, node2.base / "var" / "dev-tls")
        # one key sealing the signing keys in the shared database (keys.encryption_key_file)
        shutil.copytree(node1.base / "var" / "keys", node2.base / "var" / "keys")
        node2.start()
        w = build_world(tmp_path / "world", node1)
        users = {f"u{i}": issue.make_user_cert(w.pki["issuing"], f"u{i}",
                                               upn=f"u{i}@corp.example")
                 for i in range(STORM_USERS)}
        scale = tmp_path / "world" / "scale.toml"
        scale.write_text(scale_directory(list(users)))
        out = node1.run_cli("admin", "apply", str(scale), "--json")
        code = json.loads(out.stdout)["directories"][0]["registration_codes"][0]

        front = free_port()
        hap = start_haproxy(front, node1.port, node2.port, node1.cafile,
                            tmp_path / "haproxy.log")
        try:
            lb = ApiClient("127.0.0.1", front, node1.cafile)
            wait_for_haproxy(lb, tmp_path / "haproxy.log")

            # made on node 1, used on node 2 after node 1 is gone
            direct = SoftClient(node1.client(), w.codes["corp"])
            bob = direct.login(w.cards["bob"])
            assert bob.status == 200, bob.body
            bob_token = bob.body["auth_token"]
            s = direct.open_session(bob_token, "ws-bob", w.cards["bob"])
            assert s.status == 201, s.body
            bob_sid = s.body["session"]["id"]
            alice = direct.login(w.cards["alice"])
            alice_token = alice.body["auth_token"]
            starting = direct.connect(alice_token, "ws-alice")
            assert starting.status == 202, starting.body  # STOPPED: a logon challenge

            logs = [StormLog() for _ in users]
            killed = threading.Event()

            def kill() -> None:
                time.sleep(2.5)
                assert node1.proc is not None
                node1.proc.send_signal(signal.SIGKILL)
                node1.proc.wait(10)
                killed.set()

            killer = threading.Thread(target=kill)
            storms = [threading.Thread(target=run_storm, args=(
                lambda: ApiClient("127.0.0.1", front, node1.cafile), code,
                SoftCard(issued.key, issued.cert, [w.pki["issuing"].cert]), f"ws-{name}"),
                kwargs={"clients": 1, "seconds": 7.0, "log": log})
                for (name, issued), log in zip(users.items(), logs, strict=True)]
            for t in [killer, *storms]:
                t.start()
            for t in [killer, *storms]:
                t.join(60)
            assert killed.is_set()
            node1.proc = None

            answers = [a for log in logs for a in log.answers]
            print("\n", [summary(log) for log in logs],
                  f"no answer: {sum(1 for a in answers if a.status == 0)}")
            assert not any(a.status >= 500 for a in answers), \
                [a for a in answers if a.status >= 500][:3]
            for log in logs:
                assert log.logins and log.sessions, "every retrying client completes logins"
                assert log.gave_up == 0
            logins = [c for log in logs for c in log.logins]
            assert len(set(logins)) == len(logins), "no challenge accepted twice"

            # what node 1 made works on node 2, through HAProxy
            hb = lb.post(f"/v1/sessions/{bob_sid}/heartbeat", {"card_present": True},
                         token=bob_token)
            assert hb.status == 200 and hb.body["action"] == "none", hb.body
            ch = lb.post(f"/v1/sessions/{bob_sid}/in-session/challenges",
                         {"purpose": "sudo"}, token=bob_token)
            assert ch.status == 201, ch.body
            sig = w.cards["bob"].sign(base64.b64decode(ch.body["to_be_signed"]))
            r = lb.post(f"/v1/sessions/{bob_sid}/in-session/challenges/"
                        f"{ch.body['challenge_id']}/response",
                        {"signature": base64.b64encode(sig).decode(),
                         "algorithm": w.cards["bob"].algorithm}, token=bob_token)
            assert r.status == 200 and r.body["assertion"], r.body
            logon = SoftClient(lb, w.codes["corp"]).logon(
                alice_token, "ws-alice", starting.body["logon_challenge"], w.cards["alice"])
            assert logon.status == 201, logon.body
            again = SoftClient(lb, w.codes["corp"]).logon(
                alice_token, "ws-alice", starting.body["logon_challenge"], w.cards["alice"])
            assert again.status == 401 and again.code == "challenge_used"

            engine = create_engine(url)
            with engine.connect() as conn:
                in_db = conn.execute(text("SELECT id FROM sessions WHERE directory_id = "
                                          "'scale'")).scalars().all()
                tokens = conn.execute(text("SELECT count(*) FROM auth_tokens WHERE "
                                           "directory_id = 'scale'")).scalar_one()
            engine.dispose()
            seen = [s for log in logs for s in log.sessions]
            lost = sum(1 for a in answers if a.status == 0 and a.call == "logon")
            lost_logins = sum(1 for a in answers if a.status == 0 and a.call == "response")
            assert set(seen) <= set(in_db)
            assert len(seen) <= len(in_db) <= len(seen) + lost, (len(seen), len(in_db), lost)
            assert len(logins) <= tokens <= len(logins) + lost_logins
        finally:
            stop_haproxy(hap)
