#!/usr/bin/env python3
"""Soak: logins, connects, heartbeats and session ends at a steady rate against one broker
(``broker serve --dev`` on PostgreSQL), sampling the broker's RSS, open file descriptors and
database connections every few seconds; fails when any of them keeps growing.

    python bench/soak.py                      # 10 minutes, 4 rounds/s
    python bench/soak.py --seconds 60 --rate 2

One round is challenge → signed response → connect → 2 heartbeats (Bearer token) → DELETE.
Prints one line per sample and a verdict. The check: after a warm-up (the first fifth), the
highest value in the last half may exceed the highest in the first half by at most
--rss-slack-mb (RSS), 5 descriptors and 2 database connections. tests/integration/test_soak.py
runs the same for one minute in CI.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    db_conns: int
    rounds: int


@dataclass
class SoakResult:
    samples: list[Sample] = field(default_factory=list)
    rounds: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def db_connections(admin_url: str, app: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE "
                                         "application_name = :a"), {"a": app}).scalar_one())
    finally:
        engine.dispose()


def judge(samples: list[Sample], rss_slack_mb: float) -> list[str]:
    """Growth without bound shows as a last half above the first half (after warm-up)."""
    steady = samples[max(1, len(samples) // 5):]
    if len(steady) < 4:
        return ["too few samples to judge growth"]
    half = len(steady) // 2
    first, last = steady[:half], steady[half:]
    problems = []
    for name, slack in (("rss_mb", rss_slack_mb), ("fds", 5), ("db_conns", 2)):
        a = max(getattr(s, name) for s in first)
        b = max(getattr(s, name) for s in last)
        if b > a + slack:
            problems.append(f"{name} grew from {a:g} to {b:g} (allowed +{slack:g})")
    return problems


def soak(seconds: float, rate: float, *, sample_every: float = 3.0, rss_slack_mb: float = 12.0,
         out: object = sys.stdout) -> SoakResult:
    """Start a broker and a world, run the steady load, return the samples and the verdict."""
    from tests.support.databases import POSTGRES_URL, postgres_schema_url
    from tests.support.server import BrokerProcess, free_port
    from tests.support.softcard import SoftClient
    from tests.support.storm import NO_RATE_LIMITS, StormLog, one_round
    from tests.support.world import build_world

    def say(text: str) -> None:
        print(text, file=out, flush=True)  # type: ignore[call-overload]

    result = SoakResult()
    app = "soak_" + secrets.token_hex(4)
    with tempfile.TemporaryDirectory() as tmp, postgres_schema_url() as url:
        from broker.store import migrate

        migrate.upgrade(url)
        db_url = f"{url}&application_name={app}"
        # one code and one address carry the whole load: lift the per-minute challenge limits
        bp = BrokerProcess(Path(tmp), db_url, free_port(), free_port(), env=NO_RATE_LIMITS)
        bp.write_config()
        bp.start()
        try:
            world = build_world(Path(tmp) / "world", bp)
            assert bp.proc is not None
            pid = bp.proc.pid
            log = StormLog()
            stop = threading.Event()
            started = time.monotonic()
            rounds = 0
            lock = threading.Lock()

            def client() -> None:
                nonlocal rounds
                # waits for its next slot: a steady rate, not as fast as possible (one client:
                # a second one on the same WorkSpace would take the session over)
                interval = 1 / rate
                next_at = time.monotonic()
                while not stop.is_set():
                    one_round(log, SoftClient(bp.client(), world.codes["corp"]),
                              world.cards["bob"], "ws-bob", heartbeats=2)
                    with lock:
                        rounds += 1
                    next_at += interval
                    stop.wait(max(0.0, next_at - time.monotonic()))

            workers = [threading.Thread(target=client, daemon=True)]
            for t in workers:
                t.start()
            say(f"soak: {seconds:g} s at {rate:g} rounds/s against pid {pid}")
            say("     t   rss_mb  fds  db_conns  rounds")
            while time.monotonic() - started < seconds:
                stop.wait(sample_every)
                s = Sample(time.monotonic() - started, rss_mb(pid), open_fds(pid),
                           db_connections(POSTGRES_URL, app), rounds)
                result.samples.append(s)
                say(f"{s.t:6.0f} {s.rss_mb:8.1f} {s.fds:4d} {s.db_conns:9d} {s.rounds:7d}")
            stop.set()
            for t in workers:
                t.join(30)
            result.rounds = rounds
            for a in log.answers:
                if a.status >= 400 or a.status == 0:
                    result.errors[a.status] = result.errors.get(a.status, 0) + 1
        finally:
            bp.stop()
    result.problems = judge(result.samples, rss_slack_mb)
    if result.errors:
        result.problems.append(f"error answers: {result.errors}")
    expected = rate * seconds
    if result.rounds < 0.6 * expected:
        result.problems.append(f"only {result.rounds} rounds of {expected:.0f} expected")
    say(f"soak: {result.rounds} rounds in {seconds:g} s; "
        + ("OK" if not result.problems else "FAIL: " + "; ".join(result.problems)))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=4.0, help="rounds per second (default 4)")
    ap.add_argument("--sample-every", type=float, default=5.0)
    ap.add_argument("--rss-slack-mb", type=float, default=12.0)
    args = ap.parse_args()
    result = soak(args.seconds, args.rate, sample_every=args.sample_every,
                  rss_slack_mb=args.rss_slack_mb)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
