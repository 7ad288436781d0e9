#!/usr/bin/env python3
"""Smart-card logins against LDAP-backed directories beside a local one, in one run, through a
real running broker over TLS (issue 25's Done-when).

One broker (``broker serve``, one worker, SQLite) holds three directories with the same PKI,
CRL settings and certificates: ``local`` (users in the broker's table, mapped by UPN),
``samba`` (a real Samba AD DC over LDAPS, flavour ad, mapped by UPN, with ``required_groups``
= a group the users are in only through a nested group) and ``slapd`` (a real OpenLDAP slapd
over LDAPS, flavour generic, mapped by email). Clients log in over HTTPS (challenge + signed
response), as ``bench/compare.py`` storms do. It prints:

* **first logins**: the LDAP searches each user's first login makes, counted twice — by the
  broker (its ``broker_ldap_request_duration_seconds`` count) and, for slapd, by the server
  (``SRCH`` lines of its stats log); the target is one, and none for a cache-warm login. The
  very first login of a directory also opens the pool's connection (TCP, TLS, bind: shown
  apart).
* **cache-warm CPU per login**: storms of ``--clients`` keep-alive clients for ``--seconds``
  each, the directories taking turns (the order rotates every round, so the machine's noise
  falls on all alike), ``--rounds`` times; the broker process's CPU-ms per login from /proc,
  each round's ratio LDAP/local (target ≤ 1.3) with the median and range over rounds, and the
  pooled ratio (all rounds' CPU over all rounds' logins: the least noisy figure).

    python bench/ldap_compare.py                      # both servers (Samba needs root)
    python bench/ldap_compare.py --servers slapd --rounds 5 --seconds 8

Numbers compare only within one run on one machine: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from compare import Pki, _login, storm_broker  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from broker.harness import BrokerProcess  # noqa: E402
from broker.pki import issue  # noqa: E402

HEADER = """[[directory]]
id = "{id}"
name = "{id}"
region = "us-gov-west-1"
smart_card = {{ pre_session = true, in_session = true }}
revocation = {{ crl = true, ocsp = false, fail_mode = "hard" }}
trust_anchors = ["{pki}/root.pem"]
intermediates = ["{pki}/issuing.pem"]
crls = ["{pki}/root.crl.pem", "{pki}/issuing.crl.pem"]
certmap = ["{rule}"]
registration_codes = 1
"""

LIMITS = ("[login]\nchallenges_per_code_per_minute = 1000000000\n"
          "challenges_per_address_per_minute = 1000000000\n"
          "challenges_per_directory_per_minute = 1000000000\n"
          "challenges_per_prefix_per_minute = 1000000000\n"
          "connects_per_token_per_minute = 1000000000\n"
          "connects_per_address_per_minute = 1000000000\n")


def toml(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, list) else "[" + ", ".join(map(toml, v)) + "]"


def directory_text(did: str, rule: str, pki: Path, users: int,
                   ldap: dict[str, Any] | None) -> str:
    text = HEADER.format(id=did, pki=pki, rule=rule)
    if ldap:
        text += "\n[directory.ldap]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in ldap.items())
    for i in range(users):
        if not ldap:
            text += (f'\n[[directory.user]]\nusername = "user{i}"\n'
                     f'upn = "user{i}@bench.example"\n')
        text += (f'\n[[directory.workspace]]\nid = "ws-{did}-{i}"\nuser = "user{i}"\n'
                 'protocol = "WSP"\nrunning_mode = "ALWAYS_ON"\nstate = "AVAILABLE"\n')
    return text


def searches(bp: BrokerProcess, did: str) -> int:
    """LDAP searches the broker made for ``did`` (its metric, all results)."""
    ctx = ssl.create_default_context(cafile=str(bp.cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", bp.admin_port, context=ctx, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    label = re.escape(f'directory="{did}"')
    return sum(int(float(m.group(1))) for m in re.finditer(
        r"broker_ldap_request_duration_seconds_count\{" + label + r',result="[a-z]+"\} (\S+)',
        text))


def server_searches(server: Any) -> int | None:
    """Searches the LDAP server answered (slapd's stats log); None where not counted."""
    log = server.base / "slapd.log"
    if not getattr(server, "log_stats", False) or not log.exists():
        return None
    return len(re.findall(r" SRCH base=", log.read_text(errors="replace")))


def first_logins(bp: BrokerProcess, pki: Pki, did: str, code: str, server: Any
                 ) -> dict[str, Any]:
    """Each user's first login, one at a time: searches (broker, server) and milliseconds."""
    ctx = ssl.create_default_context(cafile=str(bp.cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", bp.port, context=ctx, timeout=60)
    rows = []
    creds = [(k, c.public_bytes(serialization.Encoding.DER)) for k, c in pki.users]
    for i, (key, der) in enumerate([*creds, creds[0]]):  # and user0 again: cache-warm
        b0, s0, t0 = searches(bp, did), server_searches(server), time.perf_counter()
        _login(conn, code, key, der, False, f"ws-{did}-{i}")
        ms = (time.perf_counter() - t0) * 1000
        s1 = server_searches(server)
        rows.append({"broker": searches(bp, did) - b0,
                     "server": None if s0 is None or s1 is None else s1 - s0, "ms": ms})
    conn.close()
    return {"very_first": rows[0], "first": rows[1:-1], "warm_again": rows[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="samba,slapd", help="samba, slapd or both")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    from tests.support.ldapserver import start_samba, start_slapd

    with tempfile.TemporaryDirectory(prefix="ldap-compare-") as tmp:
        folder = Path(tmp)
        root = issue.make_root("Bench Root CA")
        inter = issue.make_intermediate(root, "Bench Issuing CA")
        certs = [issue.make_user_cert(inter, f"bench user {i}", upn=f"user{i}@bench.example",
                                      email=f"user{i}@bench.example")
                 for i in range(args.users)]
        pki = Pki(root, inter, [(c.key, c.cert) for c in certs], folder / "pki")
        pki.write()
        servers: dict[str, Any] = {}
        bp: BrokerProcess | None = None
        try:
            texts = [directory_text("local", "upn", pki.folder, args.users, None)]
            if "samba" in wanted:
                print("ldap_compare: provisioning Samba AD …", file=sys.stderr)
                dc = servers["samba"] = start_samba(folder / "samba")
                dns = [dc.user(f"user{i}", upn=f"user{i}@bench.example")
                       for i in range(args.users)]
                inner = dc.group("bench-inner", dns)
                outer = dc.group("bench-outer", [inner])
                texts.append(directory_text("samba", "upn", pki.folder, args.users, {
                    "url": dc.ldaps_url, "ca_file": str(dc.ca_file), "flavour": "ad",
                    "base_dn": dc.base_dn, "bind_dn": dc.svc_dn,
                    "bind_password_file": str(dc.write_secret(folder / "samba.secret")),
                    "required_groups": [outer]}))
            if "slapd" in wanted:
                sl = servers["slapd"] = start_slapd(folder / "slapd", log_stats=True)
                for i in range(args.users):
                    sl.person(f"user{i}", mail=f"user{i}@bench.example")
                texts.append(directory_text("slapd", "email", pki.folder, args.users, {
                    "url": sl.ldaps_url, "ca_file": str(sl.ca_file), "flavour": "generic",
                    "base_dn": sl.base_dn, "bind_dn": sl.svc_dn,
                    "bind_password_file": str(sl.write_secret(folder / "slapd.secret"))}))
            bp = BrokerProcess(folder / "broker", f"sqlite:///{folder / 'bench.db'}",
                               workers=1, log_level="warn")
            bp.write_config(LIMITS)
            bp.run_cli("migrate")
            (bp.base / "bench.toml").write_text("\n".join(texts))
            out = json.loads(bp.run_cli("admin", "apply", str(bp.base / "bench.toml"),
                                        "--json").stdout)
            codes = {d["id"]: str(d["registration_codes"][0]) for d in out["directories"]}
            bp.start()
            result: dict[str, Any] = {"users": args.users, "clients": args.clients,
                                      "seconds": args.seconds, "first": {}, "rounds": []}
            for did in codes:
                if did != "local":
                    result["first"][did] = first_logins(bp, pki, did, codes[did],
                                                        servers[did])
            order = list(codes)
            storm_broker(bp, pki, codes["local"], args.clients, 2, False)  # warm the local
            for r in range(args.rounds):
                row: dict[str, Any] = {}
                for did in order[r % len(order):] + order[:r % len(order)]:
                    b0 = searches(bp, did) if did != "local" else 0
                    got = storm_broker(bp, pki, codes[did], args.clients, args.seconds, False)
                    if got["errors"]:
                        raise SystemExit(f"ldap_compare: {did} storm errors {got['errors']}")
                    row[did] = {"cpu_ms": got["cpu_ms_per_op"], "per_s": got["per_s"],
                                "logins": got["logins"],
                                "p50_ms": got["p50_ms"],
                                "searches": (searches(bp, did) - b0) if did != "local" else 0}
                for did in codes:
                    if did != "local":
                        row[did]["ratio"] = round(row[did]["cpu_ms"] / row["local"]["cpu_ms"],
                                                  3)
                result["rounds"].append(row)
                print(f"ldap_compare: round {r + 1}: " + ", ".join(
                    f"{d} {v['cpu_ms']:.3f} CPU-ms" for d, v in row.items()), file=sys.stderr)
        finally:
            if bp is not None:
                bp.stop(timeout=30)
            for server in servers.values():
                server.stop()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    report(result)


def _pooled(result: dict[str, Any], did: str) -> float:
    """CPU-ms per login over all rounds (CPU summed, logins summed)."""
    rows = [r[did] for r in result["rounds"]]
    return sum(r["cpu_ms"] * r["logins"] for r in rows) / sum(r["logins"] for r in rows)


def report(result: dict[str, Any]) -> None:
    print(f"Cache-warm smart-card logins through `broker serve` over TLS (1 worker, SQLite, "
          f"{result['clients']} keep-alive clients, {result['seconds']:g} s per storm, "
          f"{len(result['rounds'])} rounds, directories in turn):")
    for did in result["rounds"][0]:
        cpu = [r[did]["cpu_ms"] for r in result["rounds"]]
        line = (f"  {did:6} CPU-ms/login median {statistics.median(cpu):.3f} "
                f"(range {min(cpu):.3f}–{max(cpu):.3f}), logins/s "
                f"{statistics.median(r[did]['per_s'] for r in result['rounds']):.0f}")
        if did != "local":
            ratios = [r[did]["ratio"] for r in result["rounds"]]
            pooled = _pooled(result, did) / _pooled(result, "local")
            warm = sum(r[did]["searches"] for r in result["rounds"])
            line += (f"; ratio to local pooled {pooled:.2f}, median "
                     f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}–"
                     f"{max(ratios):.2f}; target <= 1.3); "
                     f"LDAP searches during the storms {warm} (target 0)")
        print(line)
    for did, f in result["first"].items():
        brk = [r["broker"] for r in f["first"]]
        srv = [r["server"] for r in f["first"] if r["server"] is not None]
        vf = f["very_first"]
        print(f"  {did}: first login of a user: LDAP searches per login (broker's count) "
              f"{sorted(set(brk))}" + (f", server's count {sorted(set(srv))}" if srv else "")
              + f" (target [1]); {statistics.median(r['ms'] for r in f['first']):.1f} ms median; "
              f"the directory's very first login {vf['broker']} search"
              + (f" (server {vf['server']})" if vf["server"] is not None else "")
              + f" + connect/TLS/bind, {vf['ms']:.1f} ms; the same user again "
              f"{f['warm_again']['broker']} searches, {f['warm_again']['ms']:.1f} ms")


if __name__ == "__main__":
    main()
