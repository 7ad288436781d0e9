"""Two broker nodes behind Debian's haproxy (docs/deploy/haproxy-two-nodes.cfg, TCP mode,
health checks on /readyz), one PostgreSQL. A login storm goes through HAProxy; node 1 is
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


def test_two_nodes_behind_haproxy_survive_losing_one(broker_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with postgres_schema_url() as url:
        node1 = broker_factory(url, **NO_RATE_LIMITS)
        node2 = broker_factory(url, start=False, **NO_RATE_LIMITS)
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
            deadline = time.monotonic() + 15
            while True:
                try:
                    if lb.get("/readyz").status == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
                time.sleep(0.2)

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
            hap.send_signal(signal.SIGTERM)
            try:
                hap.wait(10)
            except subprocess.TimeoutExpired:
                hap.kill()
                hap.wait()
