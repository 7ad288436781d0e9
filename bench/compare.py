#!/usr/bin/env python3
"""The broker's cost per smart-card login beside nginx's cost per mTLS handshake, in one run.

Both sides get the same ECDSA P-256 three-level PKI (root → issuing CA → user certificates)
with CRL revocation on:

* **nginx** (Debian nginx-light): full TLS handshakes with client-certificate verification
  (``ssl_verify_client on``, ``ssl_crl``, the root as the only trust anchor, no session cache or
  tickets), driven by as many ``openssl s_time -new -www /`` clients as the broker gets, each
  sending its chain (leaf + issuing CA); only requests nginx answered 200 count (from its
  access log: under TLS 1.3 a refused client certificate still completes the client's side of
  the handshake, so s_time's own count includes refusals); handshakes/s and nginx's CPU-ms per
  handshake from /proc.
* **the broker**: the same number of clients storm logins (challenge + signed response, or with
  ``--flow full`` registration + challenge + response + connect + logon) for the same time;
  logins/s, p50/p99 and the CPU-ms per login of all broker processes from /proc.

It prints both and the ratio broker-CPU-per-login / nginx-CPU-per-handshake (the issue's target
is ≤ 10×, the aim ≤ 3×), with and without the PostgreSQL server's CPU per login added to the
broker's (nginx has no database), marks a row whose storm had errors INVALID (no ratio),
the SQL statements each client call makes, and the query plan of the certmap lookup.
Directories of any size are seeded by bulk insert (PostgreSQL ``COPY``; ``--users 1000000``),
and ``--keep DIR`` keeps seeded databases between runs (SQLite files in
DIR, PostgreSQL schemas ``bench_keep_<users>``). ``--connections`` compares TLS keep-alive, a
full handshake per login and session resumption; the bench process's own CPU per login is
printed too (the clients share the machine's cores with the broker).

``--suite`` runs every variant in one go (PostgreSQL and SQLite; 1 and 2 workers; 20 and 200
clients; login and full flow; keep-alive, new and resumed TLS; 1k, 100k and 1M users with 10k
WorkSpaces) after one nginx measurement, and prints a Markdown table and the issue's Done-when
ratios.

    python bench/compare.py                                   # SQLite, 20 clients, 1k users
    python bench/compare.py --workers 2 --clients 200 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/compare.py --users 1000000 --keep /tmp/bench-1m --skip-nginx
    python bench/compare.py --suite --keep /var/tmp/bench-keep --seconds 10 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1/test

``--goals`` prints issue 27's goals from one run: after one nginx measurement, on SQLite (and
on PostgreSQL with ``--database-url``/``--database``, its server's CPU shown apart), 1 worker,
the broker's CPU per login ÷ nginx's per handshake on kept-alive connections and with a new TLS
connection per login, and the p99 of an open loop at ``--open-rate`` logins/s (100) after the
warm-up and the first seconds of the storm, on 1 worker and, on PostgreSQL, again on
``--open-workers`` (one per core by default, as ``broker serve --workers`` is deployed):

    python bench/compare.py --goals --seconds 10 --clients 20 --users 1000 --credentials 20 \\
        --database postgresql://postgres@127.0.0.1/test

Numbers compare only within one run on one machine: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from broker.harness import BrokerProcess, free_port  # noqa: E402
from broker.pki import issue  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from login_storm import reset_postgres_schema  # noqa: E402

CLIENT = {"platform": "windows", "arch": "x86_64", "version": "3.1.1"}
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- /proc

def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICKS


def process_tree(pid: int) -> list[int]:
    return [pid, *children(pid)]


def postgres_pids() -> list[int]:
    """The local PostgreSQL server's processes (shared: other users of it count too)."""
    out = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


# --------------------------------------------------------------------------- PKI

@dataclass
class Pki:
    root: Any
    inter: Any
    users: list[tuple[Any, Any]]  # (key, cert)
    folder: Path

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "root.pem").write_bytes(self.root.cert_pem())
        (self.folder / "issuing.pem").write_bytes(self.inter.cert_pem())
        (self.folder / "ca-bundle.pem").write_bytes(self.root.cert_pem() + self.inter.cert_pem())
        crls = [issue.make_crl(self.root, []), issue.make_crl(self.inter, [])]
        (self.folder / "root.crl.pem").write_bytes(crls[0].public_bytes(serialization.Encoding.PEM))
        (self.folder / "issuing.crl.pem").write_bytes(
            crls[1].public_bytes(serialization.Encoding.PEM))
        (self.folder / "crls.pem").write_bytes(b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in crls))
        key, cert = self.users[0]
        (self.folder / "client.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.folder / "client.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki(folder: Path, credentials: int, *, reuse: bool = False) -> Pki:
    """The bench PKI; with ``reuse``, the one a previous run saved in ``folder`` (so databases
    kept between runs still trust it and need no re-seeding)."""
    from cryptography import x509

    saved = folder / "keys"
    if reuse and (saved / f"user{credentials - 1}.key.pem").exists() \
            and not (saved / f"user{credentials}.key.pem").exists():
        def load(name: str) -> issue.Issued:
            return issue.Issued(
                x509.load_pem_x509_certificate((saved / f"{name}.cert.pem").read_bytes()),
                serialization.load_pem_private_key((saved / f"{name}.key.pem").read_bytes(),
                                                   None))  # type: ignore[arg-type]

        root, inter = load("root"), load("issuing")
        users = [(u.key, u.cert) for u in (load(f"user{i}") for i in range(credentials))]
        pki = Pki(root, inter, users, folder)
        pki.write()
        return pki
    root = issue.make_root("Bench Root CA")
    inter = issue.make_intermediate(root, "Bench Issuing CA")
    users = []
    for i in range(credentials):
        u = issue.make_user_cert(inter, f"bench user {i}", upn=f"user{i}@bench.example")
        users.append((u.key, u.cert))
    pki = Pki(root, inter, users, folder)
    pki.write()
    if reuse:
        if saved.exists():
            shutil.rmtree(saved)
        saved.mkdir(parents=True)
        for name, key, cert in [("root", root.key, root.cert), ("issuing", inter.key, inter.cert),
                                *((f"user{i}", k, c) for i, (k, c) in enumerate(users))]:
            (saved / f"{name}.key.pem").write_bytes(_pem_key(key))
            (saved / f"{name}.cert.pem").write_bytes(cert.public_bytes(
                serialization.Encoding.PEM))
    return pki


# --------------------------------------------------------------------------- nginx

def server_certificate(folder: Path) -> tuple[Path, Path]:
    """nginx gets the same kind of self-signed P-256 certificate as `broker serve --dev`."""
    from broker.web.server import dev_certificate

    files = dev_certificate(folder)
    return files.cert, files.key


def run_nginx(pki: Pki, workdir: Path, workers: int, clients: int,
              seconds: float) -> dict[str, Any]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("compare: nginx is not installed (apt-get install nginx-light), "
                         "or run with --skip-nginx")
    folder = workdir / "nginx"
    folder.mkdir()
    cert, key = server_certificate(folder)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(f"""
worker_processes {workers};
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  log_format status_only $status;
  access_log {folder}/access.log status_only buffer=64k;
  client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};
  uwsgi_temp_path {folder}; scgi_temp_path {folder};
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_client_certificate {pki.folder / "root.pem"};
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_crl {pki.folder / "crls.pem"};
    ssl_session_cache off;
    ssl_session_tickets off;
    location / {{ return 200 "ok"; }}
  }}
}}
""")
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with ssl.create_default_context().wrap_socket(
                        __import__("socket").create_connection(("127.0.0.1", port), 1),
                        server_hostname="x") as _:
                    pass
            except ssl.SSLError:
                break  # it answers TLS (and refuses us: no client certificate)
            except OSError:
                time.sleep(0.1)
        pids = process_tree(proc.pid)
        before = cpu_seconds(pids)
        # -CAfile puts root and issuing CA in the client's store, from which OpenSSL builds the
        # chain it sends (s_time has no -cert_chain); -www makes each connection one request.
        runs = [subprocess.Popen(
            ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-www", "/",
             "-time", str(int(seconds)), "-cert", str(pki.folder / "client.pem"), "-key",
             str(pki.folder / "client.key"), "-CAfile", str(pki.folder / "ca-bundle.pem")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for _ in range(clients)]
        outs = [r.communicate()[0] for r in runs]
        used = cpu_seconds(pids) - before
    finally:
        proc.terminate()
        proc.wait(10)
    statuses: dict[str, int] = {}
    log = folder / "access.log"
    for line in (log.read_text().split() if log.exists() else []):
        statuses[line] = statuses.get(line, 0) + 1
    done = statuses.pop("200", 0)
    attempted = sum(int(m.group(1)) for o in outs
                    for m in [re.search(r"(\d+) connections in [\d.]+s", o)] if m)
    if not done:
        raise SystemExit(f"compare: nginx answered no request 200 (statuses {statuses}; s_time "
                         f"connections {attempted}):\n" + "\n".join(outs)[-2000:])
    return {"handshakes": done, "per_s": round(done / seconds, 1),
            "cpu_ms_per_op": round(used * 1000 / done, 3), "clients": clients,
            "refused": statuses, "s_time_connections": attempted}


# --------------------------------------------------------------------------- broker

DIRECTORY = """[[directory]]
id = "bench"
name = "Bench"
region = "us-gov-west-1"
smart_card = {{ pre_session = true, in_session = true }}
revocation = {{ crl = true, ocsp = false, fail_mode = "hard" }}
trust_anchors = ["{pki}/root.pem"]
intermediates = ["{pki}/issuing.pem"]
crls = ["{pki}/root.crl.pem", "{pki}/issuing.crl.pem"]
certmap = ["upn"]
registration_codes = 1
{users}
"""


def seed(bp: BrokerProcess, pki: Pki, users: int, workspaces: int) -> str:
    """The bench directory with ``users`` users (credentials first) and WSP WorkSpaces.

    A database seeded before for the same PKI and sizes (a marker file in its folder) is used
    as it is: `admin apply` of the credentials' file would read every user of a 1M directory."""
    from sqlalchemy import create_engine, func, insert, select, text

    from broker.store.models import User, WorkSpace

    marker = bp.base / "seeded.json"
    want = {"root": pki.root.cert.fingerprint(hashes.SHA256()).hex(), "users": users,
            "workspaces": workspaces, "credentials": len(pki.users), "url": bp.db_url}
    if marker.exists():
        have = json.loads(marker.read_text())
        if {k: have.get(k) for k in want} == want:
            print(f"  kept seed: {users:,} users", file=sys.stderr)
            return str(have["code"])

    lines = [f'[[directory.user]]\nusername = "user{i}"\nupn = "user{i}@bench.example"\n\n'
             f'[[directory.workspace]]\nid = "ws-{i}"\nuser = "user{i}"\nprotocol = "WSP"\n'
             f'running_mode = "ALWAYS_ON"\nstate = "AVAILABLE"\n'
             for i in range(len(pki.users))]
    (bp.base / "bench.toml").write_text(DIRECTORY.format(users="\n".join(lines),
                                                         pki=pki.folder))
    out = bp.run_cli("admin", "apply", str(bp.base / "bench.toml"), "--json")
    code = json.loads(out.stdout)["directories"][0]["registration_codes"][0]
    engine = create_engine(bp.db_url)
    with engine.begin() as conn:
        have = conn.scalar(select(func.count()).select_from(User))
    started, chunk = time.monotonic(), 100000
    now = dt.datetime.now(dt.UTC)
    for lo in range(have, users, chunk):
        hi = min(users, lo + chunk)
        if engine.dialect.name == "postgresql":
            raw = engine.raw_connection()
            try:
                with raw.cursor() as cur, cur.copy(  # type: ignore[attr-defined]
                        "COPY users (directory_id, username, upn, email, disabled, created_at) "
                        "FROM STDIN") as copy:
                    for i in range(lo, hi):
                        copy.write_row(("bench", f"u{i}", f"u{i}@bench.example",
                                        f"u{i}@bench.example", False, now))
                raw.commit()
            finally:
                raw.close()
        else:
            with engine.begin() as conn:
                conn.execute(insert(User), [
                    {"directory_id": "bench", "username": f"u{i}", "upn": f"u{i}@bench.example",
                     "email": f"u{i}@bench.example", "disabled": False, "created_at": now}
                    for i in range(lo, hi)])
        print(f"  seeded {hi:,} / {users:,} users ({time.monotonic() - started:.0f} s)",
              file=sys.stderr)
    with engine.begin() as conn:
        have_ws = conn.scalar(select(func.count()).select_from(WorkSpace))
        ids = list(conn.scalars(select(User.id).where(User.username.like("u%"))
                                .limit(max(0, workspaces - have_ws))))
        if ids:
            conn.execute(insert(WorkSpace), [
                {"id": f"wsx-{uid}", "directory_id": "bench", "user_id": uid, "name": "",
                 "bundle": "standard", "protocol": "WSP", "running_mode": "AUTO_STOP",
                 "state": "STOPPED", "created_at": dt.datetime.now(dt.UTC)} for uid in ids])
        # Fresh statistics, as autovacuum would make them: plans of a bulk-loaded table are
        # otherwise guesses.
        conn.execute(text("ANALYZE users"))
        conn.execute(text("ANALYZE workspaces"))
    engine.dispose()
    marker.write_text(json.dumps({**want, "code": str(code)}))
    return str(code)


@dataclass
class Storm:
    latencies: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)  # seconds after the storm's start
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _post(conn: http.client.HTTPSConnection, path: str, body: Any,
          token: str | None = None) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, json.loads(data) if data else None


def _login(conn: http.client.HTTPSConnection, code: str, key: Any, cert_der: bytes,
           full: bool, ws: str) -> None:
    if full:
        status, _ = _post(conn, "/v1/registrations", {"registration_code": code,
                                                      "client": CLIENT})
        if status != 200:
            raise RuntimeError(f"registration_{status}")
    status, ch = _post(conn, "/v1/auth/challenges", {"registration_code": code,
                                                     "client": CLIENT, "card_count": 1})
    if status != 201:
        raise RuntimeError(f"challenge_{status}_{ch['error']['code']}")
    sig = key.sign(base64.b64decode(ch["to_be_signed"]), ec.ECDSA(hashes.SHA256()))
    status, res = _post(conn, f"/v1/auth/challenges/{ch['challenge_id']}/response", {
        "certificate": base64.b64encode(cert_der).decode(),
        "signature": base64.b64encode(sig).decode(), "algorithm": "ecdsa-sha256"})
    if status != 200:
        raise RuntimeError(f"response_{status}_{res['error']['code']}")
    if full:
        status, body = _post(conn, f"/v1/workspaces/{ws}/connect", {}, res["auth_token"])
        if status != 202:
            raise RuntimeError(f"connect_{status}")
        logon = body["logon_challenge"]  # "Starting WorkSpace": the card signs again
        sig = key.sign(base64.b64decode(logon["to_be_signed"]), ec.ECDSA(hashes.SHA256()))
        status, _ = _post(conn, f"/v1/workspaces/{ws}/logon", {
            "challenge_id": logon["challenge_id"], "signature": base64.b64encode(sig).decode(),
            "algorithm": "ecdsa-sha256"}, res["auth_token"])
        if status != 201:
            raise RuntimeError(f"logon_{status}")


class TlsClient(http.client.HTTPSConnection):
    """An HTTPS connection that offers a saved TLS session when it connects (resumption)."""

    def __init__(self, port: int, context: ssl.SSLContext,
                 session: ssl.SSLSession | None = None) -> None:
        super().__init__("127.0.0.1", port, context=context, timeout=60)
        self.offer = session

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(  # type: ignore[attr-defined]
            self.sock, server_hostname=self.host, session=self.offer)

    @property
    def reused(self) -> bool:
        return bool(self.sock is not None and self.sock.session_reused)

    @property
    def session(self) -> ssl.SSLSession | None:
        return self.sock.session if self.sock is not None else None


#: Seconds at the start of a storm left out of its steady-state p99 (``p99_steady_ms``).
RAMP_S = 3.0


def _p99_ms(ordered: list[float]) -> float | None:
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1) \
        if ordered else None


def storm_broker(bp: BrokerProcess, pki: Pki, code: str, clients: int, seconds: float,
                 full: bool, connections: str = "keepalive",
                 rate: float | None = None) -> dict[str, Any]:
    """``connections``: keepalive (one connection per client for the whole storm), new (a new
    TLS connection, full handshake, for every login) or resume (a new connection for every
    login offering the previous connection's TLS session).

    Without ``rate`` the storm is a closed loop: each client starts its next login the moment
    the last one ends, so latency grows with the queue (mean = clients / throughput). With
    ``rate`` (logins per second in all) it is an open loop: client ``i`` logs in at fixed
    times ``i/rate, i/rate + clients/rate, …`` whatever the broker's speed, as users arriving
    at their desks do, and each latency counts from the scheduled start (a login that starts
    late because the previous one of that client was slow is charged the wait: no coordinated
    omission)."""
    result = Storm()
    resumed = [0, 0]  # connections resumed, connections made
    # Open loop with keep-alive: every client connects first (its TLS handshake is not a
    # login), then the schedule starts.
    start = time.monotonic() + (min(10.0, 0.5 + clients * 0.01) if rate else 0.0)
    stop_at = start + seconds
    storm_t0 = time.perf_counter() + (start - time.monotonic())  # start, on perf_counter
    creds = [(k, c.public_bytes(serialization.Encoding.DER)) for k, c in pki.users]

    def client(idx: int) -> None:
        ctx = ssl.create_default_context(cafile=str(bp.cafile))
        key, der = creds[idx % len(creds)]
        conn = TlsClient(bp.port, ctx)
        if rate and connections == "keepalive":
            conn.connect()
        due = start + idx / rate if rate else start
        while time.monotonic() < stop_at:
            if rate:
                if due >= stop_at:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                t0 = time.perf_counter() - max(0.0, time.monotonic() - due)
                due += clients / rate
            else:
                t0 = time.perf_counter()
            if connections != "keepalive":
                session = conn.session if connections == "resume" else None
                conn.close()
                conn = TlsClient(bp.port, ctx, session)
            try:
                _login(conn, code, key, der, full, f"ws-{idx % len(creds)}")
                with result.lock:
                    result.latencies.append(time.perf_counter() - t0)
                    result.started.append(t0 - storm_t0)
                    if connections != "keepalive":
                        resumed[0] += conn.reused
                        resumed[1] += 1
            except Exception as exc:  # counted and reported; the storm goes on
                name = str(exc).split()[0] if str(exc) else type(exc).__name__
                with result.lock:
                    result.errors[name] = result.errors.get(name, 0) + 1
                conn.close()
                conn = TlsClient(bp.port, ctx)
        conn.close()

    assert bp.proc is not None
    pids = process_tree(bp.proc.pid)
    pg = bp.db_url.startswith("postgresql")
    before, client_before = cpu_seconds(pids), time.process_time()
    # Backends born during the storm count from zero; ones that exit during it are lost.
    pg_before = {p: cpu_seconds([p]) for p in postgres_pids()} if pg else {}
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    wait = start - time.monotonic()
    if wait > 0:  # open loop: the handshakes before the schedule are not measured
        time.sleep(wait)
        before, client_before = cpu_seconds(pids), time.process_time()
        pg_before = {p: cpu_seconds([p]) for p in postgres_pids()} if pg else {}
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    used = cpu_seconds(pids) - before
    client_used = time.process_time() - client_before
    pg_used = sum(cpu_seconds([p]) - pg_before.get(p, 0.0) for p in postgres_pids()) if pg \
        else 0.0
    lat = sorted(result.latencies)
    n = len(lat)
    # Steady state: logins that started after the first RAMP_S seconds of the storm (new
    # connections' first requests, pools and thread pools growing to the load, the first
    # login of a card on a worker that has not seen it all fall in the ramp).
    steady = sorted(x for x, t in zip(result.latencies, result.started, strict=True)
                    if t >= RAMP_S)
    return {"logins": n, "per_s": round(n / elapsed, 1), "rate": rate,
            "client_cpu_ms_per_op": round(client_used * 1000 / n, 3) if n else None,
            "postgres_cpu_ms_per_op": round(pg_used * 1000 / n, 3) if n and pg else None,
            "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
            "p99_ms": _p99_ms(lat),
            "p99_steady_ms": _p99_ms(steady),
            "cpu_ms_per_op": round(used * 1000 / n, 3) if n else None,
            "connections": connections,
            "resumed": round(resumed[0] / resumed[1], 2) if resumed[1] else None,
            "errors": result.errors}


def statement_counts(db_url: str, code: str, pki: Pki) -> dict[str, int]:
    """SQL statements per client call, counted in process on the seeded database.

    The session calls run on the first credential's WorkSpace (``ws-0``, AVAILABLE): connect
    (a card login: a logon challenge), the logon that opens the session
    (``logon_available``), heartbeat, then — stopped for the purpose — connect again
    (``connect_start``: STARTING with a logon challenge) and the logon that opens the session
    once the start is due (the clock is moved past the start delay). ``bearer`` is the
    auth-token lookup the web layer makes before each session call, not counted in theirs."""
    from sqlalchemy import event, update

    from broker.config import Settings
    from broker.service import auth, login, registrations, sessions
    from broker.service.context import BrokerContext
    from broker.store.models import WorkSpace

    skew = [dt.timedelta()]
    # its own state folder (the key sealing the signing keys), never /var/lib/smartcard-broker
    ctx = BrokerContext(Settings(base_dir=REPO).replace("database", url=db_url).replace(
                            "server", state_dir=tempfile.mkdtemp(prefix="bench-state-")),
                        clock=lambda: dt.datetime.now(dt.UTC) + skew[0])
    seen: list[str] = []
    event.listen(ctx.db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    key, cert = pki.users[0]
    der = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    counts: dict[str, int] = {}
    for _round in range(2):  # the second, warm round is the one reported
        seen.clear()
        registrations.register(ctx, code, registrations.ClientSpec(**CLIENT), "127.0.0.2")
        counts["registration"] = len(seen)
        seen.clear()
        ch = login.issue_login_challenge(ctx, code, registrations.ClientSpec(**CLIENT), 1,
                                         "127.0.0.2")
        counts["challenge"] = len(seen)
        sig = key.sign(base64.b64decode(ch["to_be_signed"]), ec.ECDSA(hashes.SHA256()))
        seen.clear()
        token = login.respond_to_challenge(ctx, ch["challenge_id"], der, [],
                                           base64.b64encode(sig).decode(), "ecdsa-sha256",
                                           "127.0.0.2")["auth_token"]
        counts["response"] = len(seen)
        seen.clear()
        principal = auth.client_principal(ctx, token)
        counts["bearer"] = len(seen)
        seen.clear()
        started = sessions.connect(ctx, principal, "ws-0", "127.0.0.2")
        body = started.body
        counts["connect"] = len(seen)
        logon = body["logon_challenge"]  # a card login: the PIN again, also when AVAILABLE
        sig = key.sign(base64.b64decode(logon["to_be_signed"]), ec.ECDSA(hashes.SHA256()))
        seen.clear()
        body = sessions.logon(ctx, principal, "ws-0", logon["challenge_id"],
                              base64.b64encode(sig).decode(), "ecdsa-sha256", "127.0.0.2")
        counts["logon_available"] = len(seen)
        seen.clear()
        sessions.heartbeat(ctx, principal, body["session"]["id"], True)
        counts["heartbeat"] = len(seen)
        ctx.db.transaction(lambda s: s.execute(update(WorkSpace).where(WorkSpace.id == "ws-0")
                                               .values(state="STOPPED", transition_due_at=None)))
        seen.clear()
        started = sessions.connect(ctx, principal, "ws-0", "127.0.0.2")
        body = started.body
        counts["connect_start"] = len(seen)
        skew[0] += dt.timedelta(seconds=ctx.settings.workspaces.start_delay_s + 1)
        logon = body["logon_challenge"]
        sig = key.sign(base64.b64decode(logon["to_be_signed"]), ec.ECDSA(hashes.SHA256()))
        seen.clear()
        sessions.logon(ctx, principal, "ws-0", logon["challenge_id"],
                       base64.b64encode(sig).decode(), "ecdsa-sha256", "127.0.0.2")
        counts["logon"] = len(seen)
    ctx.db.dispose()
    return counts


def query_plans(db_url: str) -> list[str]:
    """The plans of the login hot path's lookups, one line each: the access path of every
    table it touches (a sequential scan of a large table would show here), then the whole plan
    of the certmap statement (user by UPN, with WorkSpaces)."""
    from datetime import UTC, datetime

    from broker.store import statements as st
    from broker.store.db import create_broker_engine

    now = datetime.now(UTC)
    lookups: list[tuple[str, Any, dict[str, Any]]] = [
        ("registration code + directory + address lock", st.CODE_AND_DIRECTORY,
         {"code": "ABCD-EFGH", "address_key": "addr:127.0.0.1"}),
        ("challenge + directory version + locks", st.CHALLENGE_FOR_RESPONSE,
         {"challenge_id": "c", "cert_key": "cert:x", "address_key": "addr:127.0.0.1"}),
        ("single-use consume", st.CONSUME_CHALLENGE, {"challenge_id": "c", "now": now}),
        ("Bearer token by hash", st.AUTH_TOKEN_BY_HASH, {"token_hash": "00" * 32}),
        ("rate counters upsert", st.count_hits("postgresql" if db_url.startswith("postgres")
                                               else "sqlite", 3),
         {"key_0": "a", "key_1": "b", "key_2": "c", "now": now, "cutoff": now}),
    ] + [(f"user by {rule} with WorkSpaces", st.USER_WITH_WORKSPACES[rule],
          {"directory_id": "bench", "value": "user0@bench.example",
           "values": ["user0@bench.example"]})
         for rule in ("upn", "email", "subject", "fingerprint")]
    engine = create_broker_engine(db_url)  # the broker's own (on SQLite it renders hints)
    sqlite = engine.dialect.name == "sqlite"
    out: list[str] = []
    full: list[str] = []
    with engine.connect() as conn:
        for name, stmt, params in lookups:
            state = stmt.compile(dialect=engine.dialect).construct_expanded_state(params)
            bound: Any = state.parameters
            if state.positiontup is not None:  # sqlite3's ? parameters take a tuple
                bound = tuple(bound[k] for k in state.positiontup)
            sql = ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + state.statement
            rows = [r[3] if sqlite else r[0]
                    for r in conn.exec_driver_sql(sql, bound)]
            access = [r.strip().lstrip("-> ").split("  (cost")[0] for r in rows
                      if any(w in r for w in ("Scan", "SCAN", "SEARCH"))]
            out.append(f"plan, {name}: {'; '.join(access) or rows[0].strip()}")
            if name == "user by upn with WorkSpaces":
                full = [f"  {r}" for r in rows]
        conn.rollback()
    engine.dispose()
    return out + ["plan of user by upn with WorkSpaces:", *full]


@dataclass
class Seeded:
    """A migrated, seeded broker database and the folder its broker runs in."""

    base: Path
    url: str
    code: str
    users: int
    counts: dict[str, int]
    plans: list[str]
    dropped_schema: str | None = None  # a throw-away PostgreSQL schema, dropped at the end


def pg_url(url: str, users: int, keep: bool) -> tuple[str, str | None]:
    """A PostgreSQL URL for this run: a kept schema per directory size (bench_keep_<users>,
    reused by later runs) or a fresh throw-away one (returned second, to drop at the end)."""
    from urllib.parse import quote

    from sqlalchemy import create_engine, text

    if not keep:
        fresh = reset_postgres_schema(url)
        return fresh, fresh.rsplit("search_path%3D", 1)[-1]
    schema = f"bench_keep_{users}"
    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    eng.dispose()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}", None


def drop_schema(url: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(url.split("?", 1)[0], isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    eng.dispose()


def prepare(database_url: str | None, users: int, workspaces: int, pki: Pki, workdir: Path,
            keep: str | None) -> Seeded:
    """Migrate and seed a database of ``users`` users (kept under ``keep`` when given)."""
    from broker.store import migrate

    kind = "pg" if database_url else "sqlite"
    base = (Path(keep) if keep else workdir) / f"broker-{kind}-{users}"
    base.mkdir(parents=True, exist_ok=True)
    dropped = None
    if database_url:
        url, dropped = pg_url(database_url, users, keep is not None)
    else:
        url = f"sqlite:///{base / 'bench.db'}"
    bp = BrokerProcess(base, url, log_level="warn")
    bp.write_config()
    migrate.upgrade(url)
    print(f"compare: seeding {users:,} users ({kind})", file=sys.stderr)
    code = seed(bp, pki, users, workspaces)
    return Seeded(base, url, code, users, statement_counts(url, code, pki), query_plans(url),
                  dropped)


#: The broker's config for a storm: no login or connect limit gets in the way.
UNLIMITED = ("[login]\nchallenges_per_code_per_minute = 1000000000\n"
             "challenges_per_address_per_minute = 1000000000\n"
             "challenges_per_directory_per_minute = 1000000000\n"
             "challenges_per_prefix_per_minute = 1000000000\n"
             "connects_per_token_per_minute = 1000000000\n"
             "connects_per_address_per_minute = 1000000000\n")


#: Settings given to every benchmarked broker as BROKER_<SECTION>_<KEY> (--set).
BROKER_ENV: dict[str, str] = {}


def measure(seeded: Seeded, pki: Pki, *, workers: int, clients: int, seconds: float,
            flow: str, connections: str = "keepalive",
            rate: float | None = None) -> dict[str, Any]:
    """Start a broker on a seeded database, warm it, storm it, stop it."""
    bp = BrokerProcess(seeded.base, seeded.url, workers=workers, log_level="warn",
                       env=dict(BROKER_ENV))
    bp.write_config(UNLIMITED)
    bp.start()
    try:
        # Warm-up: every card logs in (closed loop, one client per card, up to the storm's
        # clients), as in a broker that has been serving a while; the ramp of the storm itself
        # is shown apart (p99_steady_ms leaves out its first RAMP_S seconds).
        storm_broker(bp, pki, seeded.code, min(clients, max(4, len(pki.users))), 3,
                     flow == "full")
        result = storm_broker(bp, pki, seeded.code, clients, seconds, flow == "full",
                              connections, rate)
    finally:
        bp.stop(timeout=30)
    result.update(statements=seeded.counts, plans=seeded.plans, users=seeded.users,
                  workers=workers, clients=clients, flow=flow,
                  database="postgresql" if seeded.url.startswith("postgresql") else "sqlite")
    return result


def run_broker(args: argparse.Namespace, pki: Pki, workdir: Path) -> dict[str, Any]:
    seeded = prepare(args.database_url, args.users, args.workspaces, pki, workdir, args.keep)
    try:
        return measure(seeded, pki, workers=args.workers, clients=args.clients,
                       seconds=args.seconds, flow=args.flow, connections=args.connections,
                       rate=args.rate)
    finally:
        if seeded.dropped_schema:
            drop_schema(seeded.url, seeded.dropped_schema)


# --------------------------------------------------------------------------- the suite

#: (name, database, users, workers, clients, flow, connections[, open-loop rate]);
#: "pg"/"sqlite". L and M: 200 clients arriving at a fixed 100 logins/s in all (one login per
#: client every 2 s), 2 workers and 1: latency of a realistic crowd rather than of a queue.
SUITE: list[tuple[Any, ...]] = [
    ("A", "pg", "small", 1, 20, "login", "keepalive"),
    ("B", "pg", "small", 2, 20, "login", "keepalive"),
    ("C", "pg", "small", 2, 200, "login", "keepalive"),
    ("D", "pg", "large", 1, 20, "login", "keepalive"),
    ("E", "pg", "medium", 1, 20, "login", "keepalive"),
    ("F", "pg", "small", 1, 20, "full", "keepalive"),
    ("G", "pg", "small", 1, 20, "login", "new"),
    ("H", "pg", "small", 1, 20, "login", "resume"),
    ("I", "pg", "small", 2, 20, "login", "resume"),
    ("J", "sqlite", "small", 1, 20, "login", "keepalive"),
    ("K", "sqlite", "small", 1, 200, "login", "keepalive"),
    ("L", "pg", "small", 2, 200, "login", "keepalive", 100.0),
    ("M", "pg", "small", 1, 200, "login", "keepalive", 100.0),
]


def with_postgres_ratio(row: dict[str, Any], nginx: dict[str, Any]) -> float | None:
    """(broker + PostgreSQL server CPU-ms per login) / nginx CPU-ms per handshake."""
    pg = row.get("postgres_cpu_ms_per_op")
    if pg is None:
        return None
    return round((row["cpu_ms_per_op"] + pg) / nginx["cpu_ms_per_op"], 1)


def run_suite(args: argparse.Namespace, pki: Pki, workdir: Path,
              nginx: dict[str, Any] | None) -> dict[str, Any]:
    """Every variant of the issue in one run, and the ratios its Done-when asks for."""
    if not args.database_url:
        raise SystemExit("compare: --suite needs --database-url (PostgreSQL)")
    sizes = {"small": args.users, "medium": args.suite_medium, "large": args.suite_large}
    seeded: dict[tuple[str, int], Seeded] = {}
    rows: dict[str, dict[str, Any]] = {}
    try:
        for name, db, size, workers, clients, flow, connections, *open_loop in SUITE:
            rate = open_loop[0] if open_loop else None
            users = sizes[size]
            if not users:
                continue
            key = (db, users)
            if key not in seeded:
                seeded[key] = prepare(args.database_url if db == "pg" else None, users,
                                      args.workspaces, pki, workdir, args.keep)
            print(f"compare: {name}: {db} {users:,} users, {workers} worker(s), {clients} "
                  f"clients, {flow}, {connections}"
                  + (f", open loop at {rate:g} logins/s" if rate else ""), file=sys.stderr)
            rows[name] = measure(seeded[key], pki, workers=workers, clients=clients,
                                 seconds=args.seconds, flow=flow, connections=connections,
                                 rate=rate)
    finally:
        for sd in seeded.values():
            if sd.dropped_schema:
                drop_schema(sd.url, sd.dropped_schema)
    all_rows = dict(rows)
    done: dict[str, Any] = {}
    # A row whose storm had errors is invalid: it enters no Done-when figure.
    rows_ok = {name: r for name, r in rows.items() if not r["errors"]}
    done["invalid_rows"] = sorted(set(rows) - set(rows_ok))
    if nginx and "A" in rows_ok:
        done["cpu_ratio"] = round(rows["A"]["cpu_ms_per_op"] / nginx["cpu_ms_per_op"], 1)
        done["cpu_ratio_with_postgres"] = with_postgres_ratio(rows["A"], nginx)
    rows = rows_ok
    if "A" in rows and "D" in rows:
        done["p50_large_over_small"] = round(rows["D"]["p50_ms"] / rows["A"]["p50_ms"], 2)
    if "C" in rows:
        done["p99_200_clients_2_workers_ms"] = rows["C"]["p99_ms"]
        done["p99_200_clients_2_workers_steady_ms"] = rows["C"]["p99_steady_ms"]
    if "L" in rows:
        done["p99_200_clients_2_workers_open_loop_ms"] = rows["L"]["p99_ms"]
        done["p99_200_clients_2_workers_open_loop_steady_ms"] = rows["L"]["p99_steady_ms"]
    if "A" in rows and "B" in rows:
        done["workers_2_over_1"] = round(rows["B"]["per_s"] / rows["A"]["per_s"], 2)
    return {"rows": all_rows, "done_when": done}


# --------------------------------------------------------------------------- the goals

#: Issue 27's goals: broker CPU per login ÷ nginx CPU per full mTLS handshake, and p99 at a
#: fixed arrival rate after warm-up.
GOAL_KEEPALIVE_RATIO = 4.0
GOAL_NEW_RATIO = 7.0
GOAL_OPEN_P99_MS = 100.0


def run_goals(args: argparse.Namespace, pki: Pki, workdir: Path,
              nginx: dict[str, Any] | None) -> dict[str, Any]:
    """On SQLite (and PostgreSQL with --database-url), 1 worker: a closed-loop storm on kept-alive
    connections, one with a new TLS connection per login, and an open loop at --open-rate
    logins/s; each row with its CPU per login ÷ nginx's per handshake measured in this run."""
    out: dict[str, Any] = {}
    for db in (None, args.database_url) if args.database_url else (None,):
        kind = "postgresql" if db else "sqlite"
        seeded = prepare(db, args.users, args.workspaces, pki, workdir, args.keep)
        try:
            rows = {}
            plan = [("keepalive", "keepalive", args.clients, None, 1),
                    ("new", "new", args.clients, None, 1),
                    ("open", "keepalive", args.open_clients, args.open_rate, 1)]
            # the same open loop on a broker with a worker per core (PostgreSQL: serve refuses
            # --workers > 1 on SQLite, a database for one process)
            if args.open_workers > 1 and db:
                plan.append(("open_workers", "keepalive", args.open_clients, args.open_rate,
                             args.open_workers))
            for name, connections, clients, rate, workers in plan:
                print(f"compare: goals, {kind}, {name}", file=sys.stderr)
                rows[name] = measure(seeded, pki, workers=workers, clients=clients,
                                     seconds=args.seconds, flow="login",
                                     connections=connections, rate=rate)
        finally:
            if seeded.dropped_schema:
                drop_schema(seeded.url, seeded.dropped_schema)
        for row in rows.values():
            ok = nginx and row["cpu_ms_per_op"] and not row["errors"]
            row["ratio"] = round(row["cpu_ms_per_op"] / nginx["cpu_ms_per_op"], 2) \
                if ok else None
            row["ratio_with_postgres"] = with_postgres_ratio(row, nginx) if ok else None
        out[kind] = rows
    return out


def print_goals(out: dict[str, Any], nginx: dict[str, Any] | None,
                args: argparse.Namespace) -> None:
    print(f"\n{out['date']}  load average at start {out['load']}  revocation=CRL  1 worker  "
          f"{args.users:,} users  storms of {args.seconds:g} s")
    if nginx:
        print(f"nginx, full mTLS handshake, {args.clients} clients: {nginx['per_s']}/s, "
              f"{nginx['cpu_ms_per_op']} CPU-ms per handshake")
    print("| db | TLS | workers | clients | logins/s | p50 ms | p99 ms "
          f"| p99 after {RAMP_S:g} s | CPU-ms/login | ÷ nginx | PostgreSQL CPU-ms/login "
          "| ÷ nginx with PostgreSQL | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, rows in out["goals"].items():
        for r in rows.values():
            clients = f"{r['clients']} @ {r['rate']:g}/s" if r.get("rate") else r["clients"]
            print(f"| {kind} | {r['connections']}{' (open loop)' if r.get('rate') else ''} "
                  f"| {r['workers']} | {clients} | {r['per_s']} | {r['p50_ms']} | {r['p99_ms']} "
                  f"| {r['p99_steady_ms']} | {r['cpu_ms_per_op']} "
                  f"| {'INVALID' if r['errors'] else (r['ratio'] or '-')} "
                  f"| {r['postgres_cpu_ms_per_op'] or '-'} | {r['ratio_with_postgres'] or '-'} "
                  f"| {sum(r['errors'].values()) or 0} |")
    print("\nGoals (issue 27):")
    for kind, rows in out["goals"].items():
        ka, new, op = rows["keepalive"], rows["new"], rows["open"]

        def verdict(value: float | None, limit: float) -> str:
            return "-" if value is None else ("met" if value <= limit else "NOT met")

        pg = kind == "postgresql"
        print(f"  {kind}: keep-alive {ka['ratio']}× (≤ {GOAL_KEEPALIVE_RATIO:g}×: "
              f"{verdict(ka['ratio'], GOAL_KEEPALIVE_RATIO)})"
              + (f", with PostgreSQL's CPU {ka['ratio_with_postgres']}×" if pg else "")
              + f"; new TLS connection per login {new['ratio']}× (≤ {GOAL_NEW_RATIO:g}×: "
              f"{verdict(new['ratio'], GOAL_NEW_RATIO)})"
              + (f", with PostgreSQL's CPU {new['ratio_with_postgres']}×" if pg else "")
              + f"; p99 at {op['rate']:g} logins/s open loop after {RAMP_S:g} s "
              f"{op['p99_steady_ms']} ms (< {GOAL_OPEN_P99_MS:g} ms: "
              f"{verdict(op['p99_steady_ms'] if not op['errors'] else None, GOAL_OPEN_P99_MS)})"
              + "".join(f"; with {w['workers']} workers {w['p99_steady_ms']} ms ("
                        + verdict(w["p99_steady_ms"] if not w["errors"] else None,
                                  GOAL_OPEN_P99_MS) + ")"
                        for w in [rows.get("open_workers")] if w))


def print_suite(out: dict[str, Any]) -> None:
    nginx, suite = out["nginx"], out["suite"]
    print(f"\n{out['date']}  load average at start {out['load']}  revocation=CRL  "
          f"storms of {out['seconds']} s")
    if nginx:
        print(f"nginx mTLS full handshakes: {nginx['per_s']}/s, {nginx['cpu_ms_per_op']} CPU-ms "
              "per handshake")
    print(f"| | db | users | workers | clients | flow | TLS | logins/s | p50 ms | p99 ms "
          f"| p99 after {RAMP_S:g} s | CPU-ms/login | ÷ nginx (+ PostgreSQL) "
          "| client CPU-ms/login "
          "| PostgreSQL CPU-ms/login | resumed | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in suite["rows"].items():
        ratio = f"{round(r['cpu_ms_per_op'] / nginx['cpu_ms_per_op'], 1)}× " \
            f"({with_postgres_ratio(r, nginx) or '-'}×)" \
            if nginx and r["cpu_ms_per_op"] else "-"
        if r["errors"]:
            ratio = "INVALID (errors)"
        clients = f"{r['clients']} @ {r['rate']:g}/s" if r.get("rate") else r["clients"]
        print(f"| {name} | {r['database']} | {r['users']:,} | {r['workers']} | {clients} "
              f"| {r['flow']} | {r['connections']} | {r['per_s']} | {r['p50_ms']} "
              f"| {r['p99_ms']} | {r['p99_steady_ms']} | {r['cpu_ms_per_op']} | {ratio} "
              f"| {r['client_cpu_ms_per_op']} "
              f"| {r['postgres_cpu_ms_per_op'] or '-'} "
              f"| {'-' if r['resumed'] is None else r['resumed']} "
              f"| {sum(r['errors'].values()) or 0} |")
    d = suite["done_when"]
    print("\nDone-when:")
    if d.get("invalid_rows"):
        print(f"  INVALID rows (their storms had errors; left out): {d['invalid_rows']}")
    if "cpu_ratio" in d:
        print(f"  broker CPU-ms per login (A) / nginx CPU-ms per handshake: {d['cpu_ratio']}× "
              f"(≤ 10×: {'met' if d['cpu_ratio'] <= 10 else 'NOT met'}); with PostgreSQL's "
              f"CPU per login added: {d['cpu_ratio_with_postgres'] or '-'}×")
    if "p50_large_over_small" in d:
        print(f"  p50 at the large directory (D) / p50 at the small one (A): "
              f"{d['p50_large_over_small']}× "
              f"(≤ 1.2×: {'met' if d['p50_large_over_small'] <= 1.2 else 'NOT met'})")
    if "p99_200_clients_2_workers_ms" in d:
        p99 = d["p99_200_clients_2_workers_ms"]
        print(f"  p99 at 200 clients, 2 workers, PostgreSQL, closed loop (C): {p99} ms, "
              f"{d['p99_200_clients_2_workers_steady_ms']} ms after the first {RAMP_S:g} s "
              f"(≤ 250 ms: {'met' if p99 is not None and p99 <= 250 else 'NOT met'})")
    if "p99_200_clients_2_workers_open_loop_ms" in d:
        p99 = d["p99_200_clients_2_workers_open_loop_ms"]
        steady = d["p99_200_clients_2_workers_open_loop_steady_ms"]
        print(f"  p99 at 200 clients, 2 workers, PostgreSQL, open loop at 100 logins/s (L): "
              f"{p99} ms (≤ 250 ms: {'met' if p99 is not None and p99 <= 250 else 'NOT met'}); "
              f"after the first {RAMP_S:g} s {steady} ms "
              f"({'met' if steady is not None and steady <= 250 else 'NOT met'})")
    if "workers_2_over_1" in d:
        print(f"  logins/s 2 workers (B) / 1 worker (A): {d['workers_2_over_1']}× "
              f"(≥ 1.6×: {'met' if d['workers_2_over_1'] >= 1.6 else 'NOT met'})")
    shown = set()
    for r in suite["rows"].values():
        key = (r["database"], r["users"])
        if key not in shown:
            shown.add(key)
            print(f"SQL statements per call ({r['database']}, {r['users']:,} users): "
                  f"{r['statements']}")
            for line in r["plans"]:
                print(f"  {line}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    p.add_argument("--seconds", type=float, default=15, help="length of each storm (default 15)")
    p.add_argument("--workers", type=int, default=1, help="broker and nginx worker processes")
    p.add_argument("--database-url", "--database",
                   help="PostgreSQL URL (default: a SQLite file); postgresql:// means psycopg 3")
    p.add_argument("--users", type=int, default=1000, help="users in the directory (default 1k)")
    p.add_argument("--workspaces", type=int, default=10000, help="WorkSpaces (default 10k)")
    p.add_argument("--credentials", type=int, default=50,
                   help="users with a software card that log in (default 50)")
    p.add_argument("--flow", choices=["login", "full"], default="login",
                   help="login = challenge + response; full = + registration and connect")
    p.add_argument("--connections", choices=["keepalive", "new", "resume"], default="keepalive",
                   help="keepalive: one TLS connection per client; new: a full handshake per "
                        "login; resume: a new connection per login resuming the last session")
    p.add_argument("--rate", type=float,
                   help="open loop: logins per second in all, spread over --clients arriving "
                        "at fixed times (latency counted from the scheduled start); default: "
                        "closed loop, each client logs in again as soon as it is answered")
    p.add_argument("--keep", help="folder (and PostgreSQL schemas bench_keep_<users>) to keep "
                                  "seeded databases in between runs")
    p.add_argument("--suite", action="store_true",
                   help="run every variant (PostgreSQL and SQLite, 1 and 2 workers, 20 and 200 "
                        "clients, login and full flow, TLS keep-alive/new/resumed, --users, "
                        "--suite-medium and --suite-large users) and print the Done-when ratios")
    p.add_argument("--suite-medium", type=int, default=100000,
                   help="with --suite: the medium directory (default 100k; 0 skips)")
    p.add_argument("--suite-large", type=int, default=1000000,
                   help="with --suite: the large directory (default 1M; 0 skips)")
    p.add_argument("--goals", action="store_true",
                   help="issue 27's goals in one run: nginx, then on SQLite (and on PostgreSQL "
                        "with --database-url) kept-alive and new-connection CPU ratios and the "
                        "p99 of an open loop at --open-rate")
    p.add_argument("--open-rate", type=float, default=100.0,
                   help="with --goals: the open loop's logins per second (default 100)")
    p.add_argument("--open-clients", type=int, default=100,
                   help="with --goals: the open loop's clients (default 100)")
    p.add_argument("--open-workers", type=int, default=os.cpu_count() or 1,
                   help="with --goals: on PostgreSQL, also run the open loop on a broker with "
                        "this many workers (default: one per core; 1 runs it on 1 worker only)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION_KEY=VALUE",
                   help="a broker setting for every storm, as its environment variable without "
                        "BROKER_ (e.g. --set SERVER_THREADPOOL_SIZE=4)")
    p.add_argument("--skip-nginx", action="store_true", help="measure the broker only")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        BROKER_ENV["BROKER_" + key.upper()] = value
    if args.database_url and args.database_url.startswith("postgresql://"):
        args.database_url = "postgresql+psycopg://" + args.database_url[len("postgresql://"):]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        workdir = Path(tmp)
        pki_dir = Path(args.keep) / "pki" if args.keep else workdir / "pki"
        print(f"compare: the PKI ({args.credentials} software cards)", file=sys.stderr)
        pki = make_pki(pki_dir, args.credentials, reuse=args.keep is not None)
        nginx = None
        if not args.skip_nginx:
            print("compare: nginx mTLS handshakes", file=sys.stderr)
            # as many clients as the broker gets (in --suite: row A's)
            nginx = run_nginx(pki, workdir, 1 if args.suite else args.workers,
                              args.clients, args.seconds)
        if args.goals:
            out = {"date": dt.date.today().isoformat(), "load": round(load, 2),
                   "seconds": args.seconds, "nginx": nginx,
                   "goals": run_goals(args, pki, workdir, nginx)}
            print(json.dumps(out, indent=2) if args.json else "", end="")
            if not args.json:
                print_goals(out, nginx, args)
            return
        if args.suite:
            out = {"date": dt.date.today().isoformat(), "load": round(load, 2),
                   "seconds": args.seconds, "nginx": nginx,
                   "suite": run_suite(args, pki, workdir, nginx)}
            print(json.dumps(out, indent=2) if args.json else "", end="")
            if not args.json:
                print_suite(out)
            return
        print(f"compare: broker, {args.users:,} users, {args.clients} clients", file=sys.stderr)
        broker = run_broker(args, pki, workdir)
    out = {"date": dt.date.today().isoformat(), "workers": args.workers,
           "clients": args.clients, "users": args.users, "flow": args.flow,
           "load": round(load, 2), "nginx": nginx, "broker": broker}
    if nginx and broker["cpu_ms_per_op"] and not broker["errors"]:
        out["cpu_ratio"] = round(broker["cpu_ms_per_op"] / nginx["cpu_ms_per_op"], 1)
        out["cpu_ratio_with_postgres"] = with_postgres_ratio(broker, nginx)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"\n{out['date']}  workers={args.workers} clients={args.clients} "
          f"users={args.users:,} flow={args.flow} TLS={args.connections} "
          f"db={broker['database']} revocation=CRL load={out['load']}")
    steady = f"p99 >{RAMP_S:g}s"
    print(f"{'':<8}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{steady:>11}{'CPU-ms/op':>11}")
    if nginx:
        print(f"{'nginx':<8}{nginx['per_s']:>9}{'-':>9}{'-':>9}{'-':>11}"
              f"{nginx['cpu_ms_per_op']:>11}")
    print(f"{'broker':<8}{broker['per_s']:>9}{broker['p50_ms']:>9}{broker['p99_ms']:>9}"
          f"{str(broker['p99_steady_ms']):>11}{broker['cpu_ms_per_op']:>11}")
    print(f"bench clients: {broker['client_cpu_ms_per_op']} CPU-ms per login"
          + (f"; PostgreSQL server (all its users): {broker['postgres_cpu_ms_per_op']} CPU-ms "
             "per login" if broker["postgres_cpu_ms_per_op"] else ""))
    if broker["resumed"] is not None:
        print(f"TLS sessions resumed: {broker['resumed'] * 100:.0f}% of connections")
    if "cpu_ratio" in out:
        print(f"broker CPU per login / nginx CPU per handshake: {out['cpu_ratio']}x "
              "(target ≤ 10x, aim ≤ 3x)"
              + (f"; with PostgreSQL's CPU per login added: {out['cpu_ratio_with_postgres']}x"
                 if out["cpu_ratio_with_postgres"] is not None else ""))
    elif broker["errors"]:
        print("INVALID: the storm had errors, so no ratio is given")
    print("SQL statements per call:", broker["statements"])
    for line in broker["plans"]:
        print(line)
    if broker["errors"]:
        print("errors:", broker["errors"])


if __name__ == "__main__":
    main()
