"""A small login storm for fault tests: threads that log in with software cards, connect to an
ALWAYS_ON WorkSpace, heartbeat (Bearer token of the session owner) and end the session, while the
test breaks something. Every answer is recorded, so a test can assert what clients saw: status
codes, Retry-After, latencies, and which challenges, tokens and sessions they got.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.server import ApiClient, Response
from tests.support.softcard import SoftCard, SoftClient


@dataclass
class Answer:
    call: str
    status: int  # 0: no HTTP answer (connection refused/reset, timeout)
    code: str | None
    seconds: float
    retry_after: str | None = None
    error: str | None = None


@dataclass
class StormLog:
    answers: list[Answer] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)  # challenge ids answered 200
    sessions: list[str] = field(default_factory=list)  # session ids answered 201
    ended: list[str] = field(default_factory=list)  # sessions ended with 204
    gave_up: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, a: Answer) -> None:
        with self.lock:
            self.answers.append(a)

    def statuses(self, call: str | None = None) -> dict[int, int]:
        out: dict[int, int] = {}
        for a in self.answers:
            if call is None or a.call == call:
                out[a.status] = out.get(a.status, 0) + 1
        return dict(sorted(out.items()))


# the storm's clients share one registration code and one address: lift the per-minute
# challenge limits (they are tested elsewhere), so what is measured is the fault
NO_RATE_LIMITS = {"BROKER_LOGIN_CHALLENGES_PER_CODE_PER_MINUTE": "100000",
                  "BROKER_LOGIN_CHALLENGES_PER_ADDRESS_PER_MINUTE": "100000"}


TRANSIENT = (OSError, ssl.SSLError, http.client.HTTPException)


def call(log: StormLog, name: str, fn: Callable[[], Response]) -> Response | None:
    started = time.monotonic()
    try:
        r = fn()
    except TRANSIENT as exc:
        log.add(Answer(name, 0, None, time.monotonic() - started, error=type(exc).__name__))
        return None
    log.add(Answer(name, r.status, r.code, time.monotonic() - started,
                   r.headers.get("retry-after")))
    return r


def retrying(log: StormLog, name: str, fn: Callable[[], Response], deadline: float,
             ok: tuple[int, ...]) -> Response | None:
    """Call until an answer in ``ok`` (or a final refusal) or the deadline; 503 and
    connection failures are retried after Retry-After (at most 1 s here, to keep tests short)."""
    while time.monotonic() < deadline:
        r = call(log, name, fn)
        if r is not None and r.status in ok:
            return r
        if r is not None and r.status not in (502, 503, 504):
            return r  # a final answer: the caller decides what it means
        wait = 0.2
        if r is not None and r.headers.get("retry-after", "").isdigit():
            wait = min(1.0, float(r.headers["retry-after"]))
        time.sleep(wait)
    return None


def one_round(log: StormLog, c: SoftClient, card: SoftCard, workspace_id: str,
              heartbeats: int) -> None:
    """One client's login → connect → heartbeat(s) → end, each step retried on 503."""
    step_deadline = time.monotonic() + 20
    ch = retrying(log, "challenge", c.challenge, step_deadline, (201,))
    if ch is None or ch.status != 201:
        log.gave_up += 1
        return
    r = retrying(log, "response", lambda: c.respond(ch.body, card), step_deadline, (200,))
    if r is None or r.status != 200:
        return
    with log.lock:
        log.logins.append(ch.body["challenge_id"])
    token = r.body["auth_token"]
    r = retrying(log, "connect", lambda: c.connect(token, workspace_id), step_deadline, (201,))
    if r is None or r.status != 201:
        return
    sid = r.body["session"]["id"]
    with log.lock:
        log.sessions.append(sid)
    for _ in range(heartbeats):
        retrying(log, "heartbeat", lambda: c.api.post(
            f"/v1/sessions/{sid}/heartbeat", {"card_present": True}, token=token),
            step_deadline, (200, 410))
    r = retrying(log, "end", lambda: c.api.delete(f"/v1/sessions/{sid}", token=token),
                 step_deadline, (204,))
    if r is not None and r.status == 204:
        with log.lock:
            log.ended.append(sid)


def run_storm(api: Callable[[], ApiClient], code: str, card: SoftCard, workspace_id: str,
              *, clients: int, seconds: float, log: StormLog | None = None,
              heartbeats: int = 1, stop: threading.Event | None = None) -> StormLog:
    """``clients`` threads repeat login → connect → heartbeat(s) → end for ``seconds``. A step
    answered 503 (or not at all) is retried; a challenge refused after a retry (challenge_used:
    the first attempt did commit) starts a new login."""
    log = log or StormLog()
    stop = stop or threading.Event()
    end = time.monotonic() + seconds

    def one() -> None:
        while time.monotonic() < end and not stop.is_set():
            one_round(log, SoftClient(api(), code), card, workspace_id, heartbeats)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return log


def summary(log: StormLog) -> dict[str, Any]:
    slowest = max((a.seconds for a in log.answers), default=0.0)
    return {"answers": len(log.answers), "statuses": log.statuses(), "logins": len(log.logins),
            "sessions": len(log.sessions), "ended": len(log.ended),
            "slowest_s": round(slowest, 2)}
