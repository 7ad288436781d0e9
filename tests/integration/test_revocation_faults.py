"""Slow or dead revocation servers on loopback: an OCSP responder or CRL distribution point that
hangs, trickles, answers garbage or answers too much.

Promises: a verification takes at most the revocation timeout (the whole exchange, not each
read), reads at most MAX_FETCH_BYTES, honours the directory's soft/hard fail mode, and a source
that failed is skipped for DOWN_FOR_S so later logins do not each wait again. In a running broker,
logins of another directory are served while logins wait on a hung responder, and the soft-fail
reason is in the audit event.

No wall-time thresholds: the servers count facts. A client that honours its timeout hangs up on
a hung or trickling server by itself (``hung_up``); one that does not is still connected when the
server's GUARD_S (many times the timeout) runs out (``outwaited``). A skipped source gets no new
connection (``hits``). Durations are printed, never compared.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from broker.pki import PkiError, RevocationCache, RevocationSettings, TrustStore, issue
from broker.pki.chain import verify_certificate
from tests.support.dirfile import directory, render, user, workspace

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
TIMEOUT = 1.0
GUARD_S = 20.0  # a misbehaving server gives up on its client after this: far beyond any timeout


@dataclass
class BadServer:
    """A raw TCP HTTP server on 127.0.0.1 that misbehaves in one chosen way."""

    mode: str  # hang | trickle | garbage | oversized | slow_ok
    good_answer: bytes = b""
    port: int = 0
    hits: int = 0  # connections accepted
    open_now: int = 0  # connections still open
    hung_up: int = 0  # the client closed the connection before the server was done
    outwaited: int = 0  # the client was still there when GUARD_S ran out

    def settled(self, deadline_s: float = GUARD_S + 10) -> BadServer:
        """Wait until every accepted connection has ended (polling, with a deadline)."""
        deadline = time.monotonic() + deadline_s
        while self.open_now and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def start(self) -> BadServer:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(32)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.hits += 1
                self.open_now += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        guard = time.monotonic() + GUARD_S
        try:
            conn.settimeout(GUARD_S)
            conn.recv(65536)
            if self.mode == "hang":
                conn.settimeout(0.05)
                while time.monotonic() < guard and not self._stop.is_set():
                    try:
                        if not conn.recv(65536):
                            self.hung_up += 1
                            return
                    except TimeoutError:
                        continue
                self.outwaited += 1
            elif self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not self._stop.wait(0.1):
                    if time.monotonic() > guard:
                        self.outwaited += 1
                        return
                    try:
                        conn.sendall(b"\x30")
                    except OSError:
                        self.hung_up += 1
                        return
            elif self.mode == "garbage":
                body = bytes(range(256)) * 4
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif self.mode == "oversized":
                conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                chunk = b"\x30" * 65536  # without end: only a size limit stops the client
                try:
                    while time.monotonic() < guard and not self._stop.is_set():
                        conn.sendall(chunk)
                    self.outwaited += 1
                except OSError:
                    self.hung_up += 1  # the client stopped reading at its limit
            elif self.mode == "slow_ok":
                self._stop.wait(TIMEOUT / 3)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                             % len(self.good_answer) + self.good_answer)
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self.open_now -= 1


@pytest.fixture(scope="module")
def ca() -> issue.Issued:
    return issue.make_root("Revocation Faults Root")


def ocsp_good(ca: issue.Issued, user: issue.Issued) -> bytes:
    return (ocsp.OCSPResponseBuilder()
            .add_response(cert=user.cert, issuer=ca.cert, algorithm=hashes.SHA1(),
                          cert_status=ocsp.OCSPCertStatus.GOOD,
                          this_update=NOW - dt.timedelta(minutes=1),
                          next_update=NOW + dt.timedelta(hours=1),
                          revocation_time=None, revocation_reason=None)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.cert)
            .sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[BadServer]:
    srv = BadServer(request.param).start()
    yield srv
    srv.stop()


def verify(ca: issue.Issued, user: issue.Issued, settings: RevocationSettings,
           cache: RevocationCache) -> tuple[float, object]:
    trust = TrustStore.from_pem([ca.cert_pem()])
    started = time.monotonic()
    try:
        outcome: object = verify_certificate(
            user.cert.public_bytes(serialization.Encoding.DER), [], trust, at=NOW,
            revocation=settings, cache=cache)
    except PkiError as exc:
        outcome = exc
    return time.monotonic() - started, outcome


BAD = ["hang", "trickle", "garbage", "oversized"]


@pytest.mark.parametrize("server", BAD, indirect=True)
@pytest.mark.parametrize("source", ["ocsp", "crl"])
def test_a_bad_source_costs_one_timeout_then_is_skipped_and_soft_fail_allows(
        server: BadServer, source: str, ca: issue.Issued) -> None:
    url = f"http://127.0.0.1:{server.port}/{source}"
    user = issue.make_user_cert(ca, "u", **{f"{source}_url": url})  # type: ignore[arg-type]
    settings = RevocationSettings(crl=source == "crl", ocsp=source == "ocsp",
                                  fail_mode="soft", timeout_s=TIMEOUT)
    cache = RevocationCache()
    took, outcome = verify(ca, user, settings, cache)
    print(f"{server.mode}: {took:.2f} s")
    assert getattr(outcome, "revocation_status", None) == "soft_fail", outcome
    assert outcome.soft_fail_reasons  # type: ignore[attr-defined]
    assert_client_gave_up(server)
    took, outcome = verify(ca, user, settings, cache)
    assert server.hits == 1, "a failed source is not asked again at once"
    assert getattr(outcome, "revocation_status", None) == "soft_fail"


def assert_client_gave_up(server: BadServer) -> None:
    """One connection, ended by the client's timeout or size limit, not by the server's guard."""
    server.settled()
    assert server.hits == 1 and server.outwaited == 0, (server.hits, server.outwaited)
    if server.mode in ("hang", "trickle", "oversized"):
        assert server.hung_up == 1, f"{server.mode}: the client did not hang up by itself"


@pytest.mark.parametrize("server", BAD, indirect=True)
def test_a_bad_responder_in_hard_fail_refuses_within_the_timeout(
        server: BadServer, ca: issue.Issued) -> None:
    user = issue.make_user_cert(ca, "u", ocsp_url=f"http://127.0.0.1:{server.port}/ocsp")
    settings = RevocationSettings(crl=False, ocsp=True, fail_mode="hard", timeout_s=TIMEOUT)
    cache = RevocationCache()
    for _ in range(2):  # the second one from the down-cache, without a new connection
        took, outcome = verify(ca, user, settings, cache)
        assert isinstance(outcome, PkiError) and \
            outcome.code == "certificate_revocation_unknown", outcome
        assert_client_gave_up(server)


@pytest.mark.parametrize("server", ["slow_ok"], indirect=True)
def test_a_slow_responder_within_the_timeout_is_believed(server: BadServer,
                                                         ca: issue.Issued) -> None:
    user = issue.make_user_cert(ca, "u", ocsp_url=f"http://127.0.0.1:{server.port}/ocsp")
    server.good_answer = ocsp_good(ca, user)
    took, outcome = verify(ca, user, RevocationSettings(crl=False, ocsp=True, fail_mode="hard",
                                                        timeout_s=TIMEOUT), RevocationCache())
    assert getattr(outcome, "revocation_status", None) == "good", outcome
    assert server.settled().hits == 1 and server.outwaited == 0


# --------------------------------------------------------------------------- in a broker

def _directory(id: str, ocsp: bool, mode: str, *names: str) -> str:
    return directory(id, id, smart_card={"pre_session": True, "in_session": True},
                     revocation={"crl": False, "ocsp": ocsp, "fail_mode": mode},
                     trust_anchors=["root.pem"], users=[user(n) for n in names],
                     workspaces=[workspace(n) for n in names])


def test_logins_elsewhere_are_served_while_a_responder_hangs(
        broker_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Four logins wait on a hung OCSP responder (hard and soft fail) while another
    directory's logins run: those are all served while the four still wait (counted at the
    responder); the latencies are printed."""
    from tests.support.softcard import SoftCard, SoftClient

    hung = BadServer("hang").start()
    try:
        root = issue.make_root("Broker Faults Root")
        (tmp_path / "root.pem").write_bytes(root.cert_pem())
        ocsp_url = f"http://127.0.0.1:{hung.port}/ocsp"
        slow_users = [issue.make_user_cert(root, f"s{i}", upn=f"s{i}@corp.example",
                                           ocsp_url=ocsp_url) for i in range(4)]
        fast_user = issue.make_user_cert(root, "f", upn="f@corp.example")
        text = render(_directory("hard", True, "hard", "s0", "s1"),
                      _directory("soft", True, "soft", "s2", "s3"),
                      _directory("fast", False, "soft", "f"))
        (tmp_path / "dirs.toml").write_text(text)
        bp = broker_factory(f"sqlite:///{tmp_path}/broker.db")
        out = bp.run_cli("admin", "apply", str(tmp_path / "dirs.toml"), "--json")
        codes = {d["id"]: d["registration_codes"][0] for d in json.loads(out.stdout)["directories"]}

        def login(directory: str, who: issue.Issued) -> tuple[float, int, str | None]:
            client = SoftClient(bp.client(), codes[directory])
            started = time.monotonic()
            r = client.login(SoftCard(who.key, who.cert))
            return time.monotonic() - started, r.status, r.code

        def fast_round(n: int) -> list[float]:
            return [login("fast", fast_user)[0] for _ in range(n)]

        fast_round(1)  # warm caches and connections
        baseline = fast_round(3)
        with ThreadPoolExecutor(4) as pool:
            slow = [pool.submit(login, d, u) for d, u in
                    (("hard", slow_users[0]), ("hard", slow_users[1]),
                     ("soft", slow_users[2]), ("soft", slow_users[3]))]
            deadline = time.monotonic() + 30
            while hung.hits < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert hung.hits == 4, "all four logins reach the hung responder"
            during = [login("fast", fast_user) for _ in range(3)]
            # Served while all four still waited on the responder: nothing serialises behind
            # a hung fetch. (3 fast logins against the broker's 5 s revocation timeout.)
            waiting = (hung.open_now, sum(not f.done() for f in slow))
            results = [f.result(timeout=60) for f in slow]
        print(f"\nfast-directory login p50 {statistics.median(baseline) * 1000:.0f} ms quiet, "
              f"{statistics.median(d[0] for d in during) * 1000:.0f} ms while 4 logins wait on "
              f"a hung responder; slow logins {[round(r[0], 2) for r in results]} s")
        assert [d[1] for d in during] == [200, 200, 200], during
        assert waiting == (4, 4), waiting
        for _, status, code in results[:2]:
            assert (status, code) == (401, "certificate_revocation_unknown")
        for _, status, _ in results[2:]:
            assert status == 200
        # the broker's revocation timeout ended each wait, not the responder's guard
        assert hung.settled().hung_up == 4 and hung.outwaited == 0
        # the next hard-fail login does not wait again: the responder is known to be down
        took, status, code = login("hard", slow_users[0])
        assert (status, code) == (401, "certificate_revocation_unknown") and hung.hits == 4

        from sqlalchemy import create_engine
        from sqlalchemy import text as sql

        engine = create_engine(f"sqlite:///{tmp_path}/broker.db")
        with engine.connect() as conn:
            rows = conn.execute(sql("SELECT outcome, reason, directory_id, details FROM "
                                    "audit_events WHERE kind = 'login.smart_card'")).all()
        engine.dispose()
        soft = [r for r in rows if r.directory_id == "soft" and r.outcome == "success"]
        assert len(soft) == 2
        for r in soft:
            details = r.details if isinstance(r.details, dict) else json.loads(r.details)
            assert any("OCSP" in reason for reason in details["revocation_soft_fail"]), details
        hard = [r for r in rows if r.directory_id == "hard"]
        assert {r.reason for r in hard} == {"certificate_revocation_unknown"}
    finally:
        hung.stop()
