#!/usr/bin/env python3
"""Login storm: N concurrent clients run full smart-card logins against a broker.

Each login is registration + challenge + signed response (software keys, real TLS). Prints
logins/s, p50 and p99 latency and errors. By default it starts its own broker (``broker serve
--dev`` on free ports, a demo directory with one user per client), so a peer can be measured in
the same run by pointing --target at it instead (ECDSA P-256 credentials):

    python bench/login_storm.py                          # SQLite, 1 worker
    python bench/login_storm.py --workers 2 --database-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/login_storm.py --compare-workers 1,2 --database-url postgresql+psycopg://…

    python bench/login_storm.py --target HOST:PORT --cafile CA.pem --code CODE --credentials DIR

The numbers are only comparable within one run on one machine (shared, noisy machines): use
--compare-workers (or run a peer with --target right after) to get a ratio.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import secrets
import ssl
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from broker.harness import BrokerProcess, HarnessError  # noqa: E402

CLIENT = {"platform": "windows", "arch": "x86_64", "version": "3.1.1"}


@dataclass
class Target:
    host: str
    port: int
    cafile: str
    code: str
    users: list[tuple[Any, bytes]]  # (private key, certificate DER)


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def post(conn: http.client.HTTPSConnection, path: str, body: Any) -> tuple[int, Any]:
    conn.request("POST", path, body=json.dumps(body), headers={"content-type":
                                                               "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, json.loads(data) if data else None


def one_login(conn: http.client.HTTPSConnection, t: Target, key: Any, cert_der: bytes) -> None:
    status, _ = post(conn, "/v1/registrations", {"registration_code": t.code, "client": CLIENT})
    if status != 200:
        raise RuntimeError(f"registration {status}")
    status, ch = post(conn, "/v1/auth/challenges", {"registration_code": t.code,
                                                    "client": CLIENT, "card_count": 1,
                                                    "purpose": "pre_session"})
    if status != 201:
        raise RuntimeError(f"challenge {status} {ch.get('error', {}).get('code')}")
    sig = key.sign(base64.b64decode(ch["to_be_signed"]), ec.ECDSA(hashes.SHA256()))
    status, res = post(conn, f"/v1/auth/challenges/{ch['challenge_id']}/response", {
        "certificate": base64.b64encode(cert_der).decode(), "chain": [],
        "signature": base64.b64encode(sig).decode(), "algorithm": "ecdsa-sha256"})
    if status != 200:
        raise RuntimeError(f"response {status} {res.get('error', {}).get('code')}")


def worker(t: Target, idx: int, count: int, results: Results) -> None:
    ctx = ssl.create_default_context(cafile=t.cafile)
    key, cert_der = t.users[idx % len(t.users)]
    conn = http.client.HTTPSConnection(t.host, t.port, context=ctx, timeout=60)
    for _ in range(count):
        start = time.perf_counter()
        try:
            one_login(conn, t, key, cert_der)
            with results.lock:
                results.latencies.append(time.perf_counter() - start)
        except Exception as exc:  # counted and reported, the storm goes on
            name = str(exc).split()[0] if str(exc) else type(exc).__name__
            with results.lock:
                results.errors[name] = results.errors.get(name, 0) + 1
            conn.close()
            conn = http.client.HTTPSConnection(t.host, t.port, context=ctx, timeout=60)
    conn.close()


def storm(t: Target, clients: int, per_client: int) -> dict[str, Any]:
    results = Results()
    threads = [threading.Thread(target=worker, args=(t, i, per_client, results))
               for i in range(clients)]
    started = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - started
    lat = sorted(results.latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    return {"logins": len(lat), "seconds": round(elapsed, 2),
            "logins_per_s": round(len(lat) / elapsed, 1) if elapsed else 0.0,
            "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
            "p99_ms": round(pct(0.99), 1), "errors": results.errors}


# --------------------------------------------------------------------------- own broker

def start_broker(workdir: Path, database_url: str, workers: int, users: int,
                 rate_limit: int) -> tuple[BrokerProcess, Target]:
    from broker.pki import issue

    pki_dir = workdir / "pki"
    pki_dir.mkdir(parents=True)
    root = issue.make_root("Bench Root CA")
    inter = issue.make_intermediate(root, "Bench Issuing CA")
    (pki_dir / "root.pem").write_bytes(root.cert_pem())
    (pki_dir / "issuing.pem").write_bytes(inter.cert_pem())
    user_lines, creds = [], []
    for i in range(users):
        u = issue.make_user_cert(inter, f"bench user {i}", upn=f"user{i}@bench.example")
        creds.append((u.key, u.cert.public_bytes(serialization.Encoding.DER)))
        user_lines.append(f'[[directory.user]]\nusername = "user{i}"\n'
                          f'upn = "user{i}@bench.example"\n\n'
                          f'[[directory.workspace]]\nid = "ws-{i}"\nuser = "user{i}"\n'
                          f'protocol = "WSP"\nrunning_mode = "ALWAYS_ON"\nstate = "AVAILABLE"\n')
    directory = workdir / "bench.toml"
    directory.write_text(
        '[[directory]]\nid = "bench"\nname = "Bench"\nregion = "us-gov-west-1"\n'
        'smart_card = { pre_session = true, in_session = true }\n'
        'revocation = { crl = false, ocsp = false }\n'
        'trust_anchors = ["pki/root.pem"]\nintermediates = ["pki/issuing.pem"]\n'
        'certmap = ["upn"]\nregistration_codes = 1\n\n' + "\n".join(user_lines))
    bp = BrokerProcess(workdir, database_url, workers=workers, log_level="warn")
    bp.write_config(f"[login]\nchallenges_per_code_per_minute = {rate_limit}\n"
                    f"challenges_per_address_per_minute = {rate_limit}\n"
                    f"challenges_per_prefix_per_minute = {rate_limit}\n"
                    f"connects_per_address_per_minute = {rate_limit}\n")
    bp.run_cli("migrate")
    out = bp.run_cli("admin", "apply", str(directory), "--json")
    code = json.loads(out.stdout)["directories"][0]["registration_codes"][0]
    try:
        bp.start()
    except HarnessError as exc:
        raise SystemExit(f"bench: broker did not start: {exc}") from None
    return bp, Target("127.0.0.1", bp.port, str(bp.cafile), code, creds)


def reset_postgres_schema(url: str) -> str:
    """A fresh schema for this run so runs never see each other's rows."""
    from urllib.parse import quote

    from sqlalchemy import create_engine, text

    schema = "bench_" + secrets.token_hex(4)
    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


def run_once(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="login-storm-") as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        if url.startswith("postgresql"):
            url = reset_postgres_schema(url)
        bp, target = start_broker(Path(tmp), url, workers, args.users, rate_limit=10 ** 9)
        try:
            storm(target, min(args.clients, 4), 2)  # warm-up: pools, keys, caches
            result = storm(target, args.clients, args.count)
        finally:
            bp.stop(timeout=30)
    result.update(workers=workers, database="postgresql" if url.startswith("postgresql")
                  else "sqlite", clients=args.clients)
    return result


def run_target(args: argparse.Namespace) -> dict[str, Any]:
    """Storm an already running broker (e.g. a peer implementation) with given credentials."""
    if not (args.cafile and args.code and args.credentials):
        raise SystemExit("--target needs --cafile, --code and --credentials")
    host, _, port = args.target.rpartition(":")
    users = []
    for key_path in sorted(Path(args.credentials).glob("*.key.pem")):
        cert_path = key_path.with_name(key_path.name.replace(".key.pem", ".cert.pem"))
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        users.append((key, cert.public_bytes(serialization.Encoding.DER)))
    if not users:
        raise SystemExit(f"no *.key.pem in {args.credentials}")
    target = Target(host, int(port), args.cafile, args.code, users)
    result = storm(target, args.clients, args.count)
    result.update(target=args.target, clients=args.clients)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument("--count", type=int, default=10, help="logins per client (default 10)")
    p.add_argument("--users", type=int, default=50, help="distinct users/certificates")
    p.add_argument("--workers", type=int, default=1, help="broker worker processes")
    p.add_argument("--compare-workers", help="e.g. 1,2: run each and print the ratio")
    p.add_argument("--database-url", help="PostgreSQL URL (default: a temporary SQLite file)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--target", help="HOST:PORT of a running broker (or peer) to storm instead")
    p.add_argument("--cafile", help="with --target: CA file for its TLS certificate")
    p.add_argument("--code", help="with --target: the registration code to use")
    p.add_argument("--credentials", help="with --target: folder of user*.key.pem/user*.cert.pem")
    args = p.parse_args()
    if args.target:
        print(json.dumps(run_target(args), indent=2) if args.json else run_target(args))
        return
    runs = [int(w) for w in args.compare_workers.split(",")] if args.compare_workers \
        else [args.workers]
    results = [run_once(args, w) for w in runs]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'db':<11}{'workers':>8}{'clients':>8}{'logins':>8}{'logins/s':>10}"
          f"{'p50 ms':>9}{'p99 ms':>9}  errors")
    for r in results:
        print(f"{r['database']:<11}{r['workers']:>8}{r['clients']:>8}{r['logins']:>8}"
              f"{r['logins_per_s']:>10}{r['p50_ms']:>9}{r['p99_ms']:>9}  {r['errors'] or '-'}")
    if len(results) > 1 and results[0]["logins_per_s"]:
        for r in results[1:]:
            print(f"ratio workers={r['workers']} / workers={results[0]['workers']}: "
                  f"{r['logins_per_s'] / results[0]['logins_per_s']:.2f}x")


if __name__ == "__main__":
    main()
