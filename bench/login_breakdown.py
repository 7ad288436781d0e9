#!/usr/bin/env python3
"""Where one login's CPU goes in a RUNNING broker: py-spy samples during a login storm.

Seeds a directory and starts ``broker serve`` exactly as ``bench/compare.py`` does (SQLite or
``--database-url`` PostgreSQL, CRL revocation on, one worker), warms it, then runs a closed-loop
storm of logins (challenge + signed response) while ``py-spy record`` samples the broker's
threads (on-CPU only: idle threads are not sampled). Each sample is put in one bucket by the
innermost frame that names one:

* **TLS**: pyOpenSSL and Twisted's TLS protocol (handshakes, record encryption);
* **HTTP parsing and routing**: twisted.web (the channel, the request, headers), Klein and
  werkzeug routing, the broker's request wrapper and site;
* **JSON**: ``json`` encoding and decoding, the strict-JSON checks, pydantic validation;
* **thread hops**: handing a call to the thread pool and its result back (Twisted's thread
  pool, ``threading``/``queue``, the reactor's waker);
* **SQL**: SQLAlchemy, sqlite3, psycopg;
* **crypto**: signature and path verification, certificates, tokens (``cryptography``,
  ``broker.pki``, joserfc);
* **logging and metrics**: the access-log line and Prometheus counters;
* **reactor and sockets**: the event loop and socket reads/writes;
* **other**: the rest (Deferreds and coroutines, the use cases' own Python).

It prints the CPU-ms per login from /proc (like compare.py) and each bucket's share and
CPU-ms per login, for a kept-alive connection and for a new TLS connection per login:

    python bench/login_breakdown.py --seconds 10
    python bench/login_breakdown.py --connections new --seconds 10
    python bench/login_breakdown.py --database-url postgresql+psycopg://postgres@127.0.0.1/test

Needs ``py-spy`` (the ``test`` extra) and the permission to trace the broker (same user;
``CAP_SYS_PTRACE`` in a container). ``--top N`` adds the N hottest leaf functions;
``--raw FILE`` keeps py-spy's collapsed stacks (a flame graph's input).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import compare  # noqa: E402

from broker.harness import BrokerProcess  # noqa: E402

#: (bucket, substrings of a frame's "function (file:line)"); the innermost frame that matches
#: any rule names the sample's bucket, rules tried in this order for that frame.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("SQL", ("sqlalchemy/", "sqlite3/", "psycopg/", "psycopg_binary/", "psycopg_pool/")),
    ("JSON", ("json/", "pydantic/", "pydantic_core/", "orjson", "loads_strict",
              "parse_model", "read_json", "read_model", "write_json", "_refuse_controls",
              "_no_duplicates")),
    ("TLS", ("OpenSSL/", "twisted/protocols/tls.py", "service_identity/")),
    ("crypto", ("cryptography/", "broker/pki/", "joserfc/", "hashlib", "hmac.py", "secrets.py",
                "asn1crypto/", "pyhanko_certvalidator/")),
    ("logging and metrics", ("logging/", "prometheus_client/", "broker/logs.py",
                             "broker/metrics.py", "broker/web/access.py")),
    ("thread hops", ("twisted/python/threadpool.py", "twisted/_threads/", "threading.py",
                     "queue.py", "twisted/internet/threads.py", "callFromThread",
                     "twisted/python/context.py", "twisted/internet/_threadedselect",
                     "wakeUp", "_Waker", "twisted/python/failure.py")),
    ("HTTP parsing and routing", ("twisted/web/", "klein/", "werkzeug/",
                                  "twisted/protocols/basic.py", "broker/web/http.py",
                                  "broker/web/server.py", "broker/web/client_api.py",
                                  "urllib/", "email/", "http/")),
    ("reactor and sockets", ("twisted/internet/epollreactor.py", "twisted/internet/tcp.py",
                             "twisted/internet/abstract.py", "twisted/internet/base.py",
                             "twisted/internet/posixbase.py", "twisted/internet/selectreactor",
                             "twisted/internet/pollreactor", "twisted/python/log.py",
                             "socket.py")),
]
BUCKETS = [name for name, _ in RULES] + ["other"]
#: Leaf frames that block in the kernel (epoll, fsync, a lock, a sleep). py-spy counts a thread
#: as running when the kernel says runnable, which on a loaded machine includes a thread woken
#: from these and waiting for a core: such samples are set apart, not charged as CPU.
WAITS = ("EPollReactor.doPoll", "DefaultDialect.do_commit", "Condition.wait", "Lock.acquire",
         "Event.wait", "Queue.get", "time.sleep", "_wait_for_tstate_lock",
         "Connection.wait (psycopg/", "wait_c (", "wait (psycopg/")
WAITING = "waits (epoll, SQLite commit fsync, PostgreSQL answers, locks)"


def bucket_of(frames: list[str]) -> str:
    """The bucket of one sampled stack (outermost frame first)."""
    if frames and frames[-1].startswith(WAITS):
        return WAITING
    for frame in reversed(frames):
        for name, needles in RULES:
            if any(n in frame for n in needles):
                return name
    return "other"


def thread_of(frames: list[str]) -> str:
    """reactor (the main thread) or pool (a thread-pool worker)."""
    return "reactor" if frames and frames[0].startswith("_run_module_as_main") else "pool"


def parse_raw(text: str) -> tuple[dict[str, collections.Counter[str]], collections.Counter[str]]:
    """py-spy's collapsed stacks → (per thread kind: samples per bucket; samples per leaf)."""
    buckets: dict[str, collections.Counter[str]] = {
        "reactor": collections.Counter(), "pool": collections.Counter()}
    leaves: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        n = int(count)
        buckets[thread_of(frames)][bucket_of(frames)] += n
        if frames:
            leaves[frames[-1]] += n
    return buckets, leaves


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the broker's main (reactor) thread and of all its other threads, and of
    all of them in the kernel (``system``: system calls, context switches)."""
    out = {"reactor": 0.0, "pool": 0.0, "system": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out["reactor" if int(task.name) == pid else "pool"] += \
            (int(fields[11]) + int(fields[12])) / compare.TICKS
        out["system"] += int(fields[12]) / compare.TICKS
    return out


def profile(args: argparse.Namespace, pki: compare.Pki, workdir: Path) -> dict[str, Any]:
    seeded = compare.prepare(args.database_url, args.users, args.workspaces, pki, workdir,
                             None)
    bp = BrokerProcess(seeded.base, seeded.url, workers=1, log_level="warn",
                       env={"BROKER_" + k.upper(): v for k, _, v in
                            (item.partition("=") for item in args.set)})
    bp.write_config(compare.UNLIMITED)
    bp.start()
    raw = workdir / f"pyspy-{args.connections}.txt"
    try:
        compare.storm_broker(bp, pki, seeded.code, min(args.clients, len(pki.users)), 3, False)
        assert bp.proc is not None
        spy = subprocess.Popen(
            [args.py_spy, "record", "--pid", str(bp.proc.pid), "--subprocesses",
             "--rate", str(args.rate), "--format", "raw", "--output", str(raw),
             "--duration", str(int(args.seconds) + 2),
             *(["--native"] if args.native else ["--nonblocking"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches
        before = thread_cpu(bp.proc.pid)
        storm = compare.storm_broker(bp, pki, seeded.code, args.clients, args.seconds, False,
                                     args.connections)
        after = thread_cpu(bp.proc.pid)
        _, err = spy.communicate(timeout=args.seconds + 60)
        if spy.returncode != 0 or not raw.exists():
            raise SystemExit(f"login_breakdown: py-spy failed: {err.decode(errors='replace')}")
    finally:
        bp.stop(timeout=30)
        if seeded.dropped_schema:
            compare.drop_schema(seeded.url, seeded.dropped_schema)
    text = raw.read_text()
    if args.raw:
        Path(args.raw).write_text(text)
    buckets, leaves = parse_raw(text)
    total = sum(leaves.values())
    logins = storm["logins"] or 1
    # /proc gives each thread kind's CPU per login exactly; py-spy's samples (waits set apart)
    # apportion it among the parts.
    split: dict[str, float] = {b: 0.0 for b in BUCKETS}
    per_thread = {}
    for kind in ("reactor", "pool"):
        ms = (after[kind] - before[kind]) * 1000 / logins
        per_thread[kind] = round(ms, 3)
        counted = sum(n for b, n in buckets[kind].items() if b != WAITING)
        for b in BUCKETS:
            split[b] += ms * buckets[kind][b] / counted if counted else 0.0
    waits = sum(buckets[k][WAITING] for k in buckets)
    per_thread["system"] = round((after["system"] - before["system"]) * 1000 / logins, 3)
    return {"connections": args.connections, "logins": storm["logins"],
            "per_s": storm["per_s"], "cpu_ms_per_login": storm["cpu_ms_per_op"],
            "threads_cpu_ms_per_login": per_thread,
            "errors": storm["errors"], "samples": total, "wait_samples": waits,
            "database": "postgresql" if seeded.url.startswith("postgresql") else "sqlite",
            "postgres_cpu_ms_per_login": storm["postgres_cpu_ms_per_op"],
            "buckets": {b: round(split[b], 3) for b in BUCKETS},
            "top": [(leaf, round(n / total, 3)) for leaf, n in leaves.most_common(args.top)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", choices=["keepalive", "new"], default="keepalive")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--workspaces", type=int, default=1000)
    p.add_argument("--credentials", type=int, default=20)
    p.add_argument("--database-url", help="PostgreSQL URL (default: a SQLite file)")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=0, help="also print the N hottest leaf frames")
    p.add_argument("--raw", help="keep py-spy's collapsed stacks in this file")
    p.add_argument("--native", action="store_true", help="sample C frames too (py-spy --native)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION_KEY=VALUE",
                   help="a broker setting, as its environment variable without BROKER_")
    p.add_argument("--json", action="store_true")
    p.add_argument("--py-spy", default=shutil.which("py-spy")
                   or str(Path(sys.executable).parent / "py-spy"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="breakdown-") as tmp:
        workdir = Path(tmp)
        pki = compare.make_pki(workdir / "pki", args.credentials)
        out = profile(args, pki, workdir)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"\n{out['database']}, 1 worker, {args.clients} clients, TLS {out['connections']}: "
          f"{out['per_s']} logins/s, {out['cpu_ms_per_login']} CPU-ms per login (broker, "
          f"/proc), {out['samples']} py-spy samples"
          + (f"; PostgreSQL server {out['postgres_cpu_ms_per_login']} CPU-ms per login"
             if out["postgres_cpu_ms_per_login"] else "")
          + (f"; ERRORS {out['errors']}" if out["errors"] else ""))
    t = out["threads_cpu_ms_per_login"]
    print(f"reactor thread {t['reactor']} CPU-ms per login, thread pool {t['pool']}, of which "
          f"in the kernel {t['system']} (/proc); {out['wait_samples']} samples in waits set "
          "apart")
    total = sum(out["buckets"].values()) or 1.0
    print("| part | CPU-ms per login | share |")
    print("|---|---|---|")
    for name in BUCKETS:
        ms = out["buckets"][name]
        print(f"| {name} | {ms:.2f} | {ms / total * 100:.0f}% |")
    for leaf, share in out["top"]:
        print(f"  {share * 100:5.1f}%  {leaf}")


if __name__ == "__main__":
    main()
