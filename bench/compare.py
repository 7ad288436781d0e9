#!/usr/bin/env python3
"""The broker's cost per smart-card login beside nginx's cost per mTLS handshake, in one run.

Both sides get the same ECDSA P-256 three-level PKI (root → issuing CA → user certificates)
with CRL revocation on:

* **nginx** (Debian nginx-light): full TLS handshakes with client-certificate verification
  (``ssl_verify_client on``, ``ssl_crl``, no session cache or tickets), driven by
  ``openssl s_time -new`` clients; handshakes/s and nginx's CPU-ms per handshake from /proc.
* **the broker**: the same number of clients storm logins (challenge + signed response, or with
  ``--flow full`` registration + challenge + response + connect) for the same time; logins/s,
  p50/p99 and the CPU-ms per login of all broker processes from /proc.

It prints both and the ratio broker-CPU-per-login / nginx-CPU-per-handshake (the issue's target
is ≤ 10×, the aim ≤ 3×), the SQL statements each client call makes, and the query plans of the
hot lookups. Directories of any size are seeded by bulk insert (``--users 1000000``), and
``--keep DIR`` keeps the seeded SQLite database between runs.

    python bench/compare.py                                   # SQLite, 20 clients, 1k users
    python bench/compare.py --workers 2 --clients 200 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/compare.py --users 1000000 --keep /tmp/bench-1m --skip-nginx

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


def make_pki(folder: Path, credentials: int) -> Pki:
    root = issue.make_root("Bench Root CA")
    inter = issue.make_intermediate(root, "Bench Issuing CA")
    users = []
    for i in range(credentials):
        u = issue.make_user_cert(inter, f"bench user {i}", upn=f"user{i}@bench.example")
        users.append((u.key, u.cert))
    pki = Pki(root, inter, users, folder)
    pki.write()
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
  access_log off;
  client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};
  uwsgi_temp_path {folder}; scgi_temp_path {folder};
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_client_certificate {pki.folder / "ca-bundle.pem"};
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
        runs = [subprocess.Popen(
            ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time",
             str(int(seconds)), "-cert", str(pki.folder / "client.pem"), "-key",
             str(pki.folder / "client.key")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True) for _ in range(clients)]
        outs = [r.communicate()[0] for r in runs]
        used = cpu_seconds(pids) - before
    finally:
        proc.terminate()
        proc.wait(10)
    done = sum(int(m.group(1)) for o in outs
               for m in [re.search(r"(\d+) connections in [\d.]+s", o)] if m)
    if not done:
        raise SystemExit("compare: openssl s_time completed no handshake with nginx:\n"
                         + "\n".join(outs)[-2000:])
    return {"handshakes": done, "per_s": round(done / seconds, 1),
            "cpu_ms_per_op": round(used * 1000 / done, 3)}


# --------------------------------------------------------------------------- broker

DIRECTORY = """[[directory]]
id = "bench"
name = "Bench"
region = "us-gov-west-1"
smart_card = {{ pre_session = true, in_session = true }}
revocation = {{ crl = true, ocsp = false, fail_mode = "hard" }}
trust_anchors = ["pki/root.pem"]
intermediates = ["pki/issuing.pem"]
crls = ["pki/root.crl.pem", "pki/issuing.crl.pem"]
certmap = ["upn"]
registration_codes = 1
{users}
"""


def seed(bp: BrokerProcess, pki: Pki, users: int, workspaces: int) -> str:
    """The bench directory with ``users`` users (credentials first) and WSP WorkSpaces."""
    from sqlalchemy import create_engine, func, insert, select

    from broker.store.models import User, WorkSpace

    lines = [f'[[directory.user]]\nusername = "user{i}"\nupn = "user{i}@bench.example"\n\n'
             f'[[directory.workspace]]\nid = "ws-{i}"\nuser = "user{i}"\nprotocol = "WSP"\n'
             f'running_mode = "ALWAYS_ON"\nstate = "AVAILABLE"\n'
             for i in range(len(pki.users))]
    (bp.base / "bench.toml").write_text(DIRECTORY.format(users="\n".join(lines)))
    out = bp.run_cli("admin", "apply", str(bp.base / "bench.toml"), "--json")
    code = json.loads(out.stdout)["directories"][0]["registration_codes"][0]
    engine = create_engine(bp.db_url)
    with engine.begin() as conn:
        have = conn.scalar(select(func.count()).select_from(User))
    started, chunk = time.monotonic(), 20000
    for lo in range(have, users, chunk):
        rows = [{"directory_id": "bench", "username": f"u{i}", "upn": f"u{i}@bench.example",
                 "email": f"u{i}@bench.example", "disabled": False,
                 "created_at": dt.datetime.now(dt.UTC)}
                for i in range(lo, min(users, lo + chunk))]
        with engine.begin() as conn:
            conn.execute(insert(User), rows)
        print(f"  seeded {min(users, lo + chunk):,} / {users:,} users "
              f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    with engine.begin() as conn:
        have_ws = conn.scalar(select(func.count()).select_from(WorkSpace))
        ids = list(conn.scalars(select(User.id).where(User.username.like("u%"))
                                .limit(max(0, workspaces - have_ws))))
        if ids:
            conn.execute(insert(WorkSpace), [
                {"id": f"wsx-{uid}", "directory_id": "bench", "user_id": uid, "name": "",
                 "bundle": "standard", "protocol": "WSP", "running_mode": "AUTO_STOP",
                 "state": "STOPPED", "created_at": dt.datetime.now(dt.UTC)} for uid in ids])
    engine.dispose()
    return str(code)


@dataclass
class Storm:
    latencies: list[float] = field(default_factory=list)
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
        status, _ = _post(conn, f"/v1/workspaces/{ws}/connect", {}, res["auth_token"])
        if status != 201:
            raise RuntimeError(f"connect_{status}")


def storm_broker(bp: BrokerProcess, pki: Pki, code: str, clients: int, seconds: float,
                 full: bool) -> dict[str, Any]:
    result = Storm()
    stop_at = time.monotonic() + seconds
    creds = [(k, c.public_bytes(serialization.Encoding.DER)) for k, c in pki.users]

    def client(idx: int) -> None:
        ctx = ssl.create_default_context(cafile=str(bp.cafile))
        key, der = creds[idx % len(creds)]
        conn = http.client.HTTPSConnection("127.0.0.1", bp.port, context=ctx, timeout=60)
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                _login(conn, code, key, der, full, f"ws-{idx % len(creds)}")
                with result.lock:
                    result.latencies.append(time.perf_counter() - t0)
            except Exception as exc:  # counted and reported; the storm goes on
                name = str(exc).split()[0] if str(exc) else type(exc).__name__
                with result.lock:
                    result.errors[name] = result.errors.get(name, 0) + 1
                conn.close()
                conn = http.client.HTTPSConnection("127.0.0.1", bp.port, context=ctx,
                                                   timeout=60)
        conn.close()

    assert bp.proc is not None
    pids = process_tree(bp.proc.pid)
    before = cpu_seconds(pids)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    used = cpu_seconds(pids) - before
    lat = sorted(result.latencies)
    n = len(lat)
    return {"logins": n, "per_s": round(n / elapsed, 1),
            "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
            "p99_ms": round(lat[min(n - 1, int(0.99 * n))] * 1000, 1) if lat else None,
            "cpu_ms_per_op": round(used * 1000 / n, 3) if n else None,
            "errors": result.errors}


def statement_counts(db_url: str, code: str, pki: Pki) -> dict[str, int]:
    """SQL statements per client call, counted in process on the seeded database."""
    from sqlalchemy import event

    from broker.config import Settings
    from broker.service import login, registrations
    from broker.service.context import BrokerContext

    ctx = BrokerContext(Settings(base_dir=REPO).replace("database", url=db_url))
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
        login.respond_to_challenge(ctx, ch["challenge_id"], der, [],
                                   base64.b64encode(sig).decode(), "ecdsa-sha256", "127.0.0.2")
        counts["response"] = len(seen)
    ctx.db.dispose()
    return counts


def query_plans(db_url: str) -> list[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    sql = ("SELECT id FROM users WHERE directory_id = 'bench' AND disabled = false "
           "AND lower(upn) = 'user0@bench.example'")
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = [r[3] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql))]
        else:
            rows = [r[0] for r in conn.execute(text("EXPLAIN " + sql))]
    engine.dispose()
    return [f"certmap upn lookup: {r}" for r in rows]


def run_broker(args: argparse.Namespace, pki: Pki, workdir: Path) -> dict[str, Any]:
    from broker.store import migrate

    base = Path(args.keep) if args.keep else workdir / "broker"
    base.mkdir(parents=True, exist_ok=True)
    url = args.database_url or f"sqlite:///{base / 'bench.db'}"
    if url.startswith("postgresql") and not args.keep:
        url = reset_postgres_schema(url)
    bp = BrokerProcess(base, url, workers=args.workers, log_level="warn")
    bp.write_config("[login]\nchallenges_per_code_per_minute = 1000000000\n"
                    "challenges_per_address_per_minute = 1000000000\n"
                    "challenges_per_directory_per_minute = 1000000000\n")
    migrate.upgrade(url)
    code = seed(bp, pki, args.users, args.workspaces)
    counts = statement_counts(url, code, pki)
    plans = query_plans(url)
    bp.start()
    try:
        storm_broker(bp, pki, code, min(args.clients, 4), 2, args.flow == "full")  # warm-up
        result = storm_broker(bp, pki, code, args.clients, args.seconds, args.flow == "full")
    finally:
        bp.stop(timeout=30)
    result.update(statements=counts, plans=plans,
                  database="postgresql" if url.startswith("postgresql") else "sqlite")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    p.add_argument("--seconds", type=float, default=15, help="length of each storm (default 15)")
    p.add_argument("--workers", type=int, default=1, help="broker and nginx worker processes")
    p.add_argument("--database-url", help="PostgreSQL URL (default: a SQLite file)")
    p.add_argument("--users", type=int, default=1000, help="users in the directory (default 1k)")
    p.add_argument("--workspaces", type=int, default=10000, help="WorkSpaces (default 10k)")
    p.add_argument("--credentials", type=int, default=50,
                   help="users with a software card that log in (default 50)")
    p.add_argument("--flow", choices=["login", "full"], default="login",
                   help="login = challenge + response; full = + registration and connect")
    p.add_argument("--keep", help="folder to keep the seeded broker in between runs")
    p.add_argument("--skip-nginx", action="store_true", help="measure the broker only")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        workdir = Path(tmp)
        pki_dir = Path(args.keep) / "pki" if args.keep else workdir / "broker" / "pki"
        print(f"compare: making the PKI ({args.credentials} software cards)", file=sys.stderr)
        pki = make_pki(pki_dir, args.credentials)
        nginx = None
        if not args.skip_nginx:
            print("compare: nginx mTLS handshakes", file=sys.stderr)
            nginx = run_nginx(pki, workdir, args.workers, min(args.clients, 8), args.seconds)
        print(f"compare: broker, {args.users:,} users, {args.clients} clients", file=sys.stderr)
        broker = run_broker(args, pki, workdir)
    out = {"date": dt.date.today().isoformat(), "workers": args.workers,
           "clients": args.clients, "users": args.users, "flow": args.flow,
           "nginx": nginx, "broker": broker}
    if nginx and broker["cpu_ms_per_op"]:
        out["cpu_ratio"] = round(broker["cpu_ms_per_op"] / nginx["cpu_ms_per_op"], 1)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"\n{out['date']}  workers={args.workers} clients={args.clients} "
          f"users={args.users:,} flow={args.flow} db={broker['database']} revocation=CRL")
    print(f"{'':<8}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU-ms/op':>11}")
    if nginx:
        print(f"{'nginx':<8}{nginx['per_s']:>9}{'-':>9}{'-':>9}{nginx['cpu_ms_per_op']:>11}")
    print(f"{'broker':<8}{broker['per_s']:>9}{broker['p50_ms']:>9}{broker['p99_ms']:>9}"
          f"{broker['cpu_ms_per_op']:>11}")
    if "cpu_ratio" in out:
        print(f"broker CPU per login / nginx CPU per handshake: {out['cpu_ratio']}x "
              "(target ≤ 10x, aim ≤ 3x)")
    print("SQL statements per call:", broker["statements"])
    for line in broker["plans"]:
        print(line)
    if broker["errors"]:
        print("errors:", broker["errors"])


if __name__ == "__main__":
    main()
