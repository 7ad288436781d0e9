"""A worker SIGKILLed during a storm (``--workers 2``): the supervisor restarts it, the shared
port never stops answering, and SIGTERM to the supervisor still drains and exits 0."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.support.databases import postgres_schema_url
from tests.support.storm import FAULT_ANSWERS, NO_RATE_LIMITS, StormLog, run_storm, summary
from tests.support.world import build_world

pytestmark = pytest.mark.postgres


def worker_pids(bp, want: int = 2, timeout: float = 20.0) -> set[int]:  # type: ignore[no-untyped-def]
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < want and time.monotonic() < deadline:
        try:
            pids.add(bp.admin().get("/healthz").body["pid"])  # pid: admin listener only
        except OSError:
            time.sleep(0.05)
    return pids


def test_a_killed_worker_is_restarted_and_the_port_keeps_answering(
        broker_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with postgres_schema_url() as url:
        bp = broker_factory(url, workers=2, **NO_RATE_LIMITS)
        w = build_world(tmp_path / "world", bp)
        before = worker_pids(bp)
        assert len(before) == 2
        victim = min(before)
        probes: list[tuple[float, int]] = []  # (time, status or 0)
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                try:
                    probes.append((time.monotonic(), bp.client().get("/healthz").status))
                except OSError:
                    probes.append((time.monotonic(), 0))
                time.sleep(0.05)

        def kill() -> None:
            time.sleep(1.5)
            os.kill(victim, signal.SIGKILL)

        log = StormLog()
        threads = [threading.Thread(target=probe), threading.Thread(target=kill)]
        for t in threads:
            t.start()
        killed_at = time.monotonic() + 1.5
        run_storm(lambda: bp.client(), w.codes["corp"], w.cards["bob"], "ws-bob", clients=3,
                  seconds=7.0, log=log)
        after = worker_pids(bp)
        stop.set()
        for t in threads:
            t.join(10)
        failed = [p for p in probes if p[1] != 200]
        print("\n", summary(log), f"probes {len(probes)}, failed {len(failed)}, "
              f"pids {sorted(before)} -> {sorted(after)}")
        assert victim not in after and len(after) == 2, "the supervisor restarts the worker"
        # only connections the dead worker had accepted may fail; the port itself answers
        assert len(failed) <= 2, failed
        assert log.unexpected(FAULT_ANSWERS) == [], "only success, 503 or a lost answer"
        assert log.crashes == []
        no_answer = [a for a in log.answers if a.status == 0]
        assert len(no_answer) <= 3, "at most the calls in flight on the killed worker"
        later = [a for a in log.answers if a.status == 201 and a.call == "logon"]
        assert later and log.logins, "logins go on after the kill"
        assert any(t > killed_at + 1 for t, s in probes if s == 200)
        assert bp.stop(signal.SIGTERM) == 0


def test_sigterm_right_after_a_worker_died_still_exits_zero(broker_factory) -> None:  # type: ignore[no-untyped-def]
    with postgres_schema_url() as url:
        bp = broker_factory(url, workers=2)
        pids = worker_pids(bp)
        os.kill(min(pids), signal.SIGKILL)
        time.sleep(0.5)  # the supervisor is in its pause before restarting
        assert bp.proc is not None
        bp.proc.send_signal(signal.SIGTERM)
        assert bp.proc.wait(20) == 0
        time.sleep(1.5)
        for pid in pids | worker_pids(bp, timeout=0.5):
            assert not os.path.exists(f"/proc/{pid}") or \
                open(f"/proc/{pid}/stat").read().split()[2] == "Z"
