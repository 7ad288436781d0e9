"""A small login storm for fault tests: threads that log in with software cards, connect to an
ALWAYS_ON WorkSpace, heartbeat (Bearer token of the session owner) and end the session, while the
test breaks something. Every answer is recorded, so a test can assert what clients saw: status
codes, Retry-After, latencies, and which challenges, tokens and sessions they got. A round that
ends early is counted too: on a final refusal (``refusals``), at its deadline (``gave_up``) or on
an exception in the client itself (``crashes``); ``unexpected()`` lists every answer outside the
allowed set, e.g. ``FAULT_ANSWERS``.
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
    refusals: list[Answer] = field(default_factory=list)  # final non-success answers
    gave_up: int = 0  # steps still failing at their deadline
    crashes: list[str] = field(default_factory=list)  # exceptions in the storm's clients
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, a: Answer) -> None:
        with self.lock:
            self.answers.append(a)

    def unexpected(self, allowed: dict[str, set[tuple[int, str | None]]]) -> list[Answer]:
        """Answers whose (status, code) the ``allowed`` set of their call does not name."""
        return [a for a in self.answers if (a.status, a.code) not in allowed.get(a.call, set())]

    def statuses(self, call: str | None = None) -> dict[int, int]:
        out: dict[int, int] = {}
        for a in self.answers:
            if call is None or a.call == call:
                out[a.status] = out.get(a.status, 0) + 1
        return dict(sorted(out.items()))


# the storm's clients share one registration code and one address: lift the per-minute
# challenge limits (they are tested elsewhere), so what is measured is the fault
NO_RATE_LIMITS = {"BROKER_LOGIN_CHALLENGES_PER_CODE_PER_MINUTE": "100000",
                  "BROKER_LOGIN_CHALLENGES_PER_ADDRESS_PER_MINUTE": "100000",
                  "BROKER_LOGIN_CHALLENGES_PER_PREFIX_PER_MINUTE": "100000",
                  "BROKER_LOGIN_CONNECTS_PER_TOKEN_PER_MINUTE": "100000",
                  "BROKER_LOGIN_CONNECTS_PER_ADDRESS_PER_MINUTE": "100000",
                  "BROKER_LOGIN_IN_SESSION_CHALLENGES_PER_TOKEN_PER_MINUTE": "100000",
                  "BROKER_LOGIN_IN_SESSION_CHALLENGES_PER_ADDRESS_PER_MINUTE": "100000"}


TRANSIENT = (OSError, ssl.SSLError, http.client.HTTPException)

# What a client may see while the database or a worker fails under it: success, 503 with its
# code, no answer (status 0) — and, when a commit happened but its answer was lost, the refusal
# of the retried call: the challenge was used, the session already ended.
_FAULTS: set[tuple[int, str | None]] = {(503, "service_unavailable"), (0, None)}
FAULT_ANSWERS: dict[str, set[tuple[int, str | None]]] = {
    "challenge": {(201, None)} | _FAULTS,
    "response": {(200, None), (401, "challenge_used")} | _FAULTS,
    "connect": {(202, None)} | _FAULTS,  # a card login: always a logon challenge
    "logon": {(201, None), (401, "challenge_used")} | _FAULTS,
    "heartbeat": {(200, None), (410, "session_ended")} | _FAULTS,
    "end": {(204, None), (410, "session_ended")} | _FAULTS,
}


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


def ended_early(log: StormLog, name: str, r: Response | None, ok: int) -> bool:
    """Whether a step's outcome ends the round; counts the refusal or the give-up."""
    if r is not None and r.status == ok:
        return False
    with log.lock:
        if r is None:
            log.gave_up += 1
        else:
            log.refusals.append(Answer(name, r.status, r.code, 0.0))
    return True


def one_round(log: StormLog, c: SoftClient, card: SoftCard, workspace_id: str,
              heartbeats: int) -> None:
    """One client's login → connect → logon → heartbeat(s) → end, each step retried on 503."""
    step_deadline = time.monotonic() + 20
    ch = retrying(log, "challenge", c.challenge, step_deadline, (201,))
    if ended_early(log, "challenge", ch, 201):
        return
    assert ch is not None
    r = retrying(log, "response", lambda: c.respond(ch.body, card), step_deadline, (200,))
    if ended_early(log, "response", r, 200):
        return
    assert r is not None
    with log.lock:
        log.logins.append(ch.body["challenge_id"])
    token = r.body["auth_token"]
    r = retrying(log, "connect", lambda: c.connect(token, workspace_id), step_deadline, (202,))
    if ended_early(log, "connect", r, 202):
        return
    assert r is not None
    logon = r.body["logon_challenge"]  # a card login: the PIN again at "Starting WorkSpace"
    r = retrying(log, "logon", lambda: c.logon(token, workspace_id, logon, card), step_deadline,
                 (201,))
    if ended_early(log, "logon", r, 201):
        return
    assert r is not None
    sid = r.body["session"]["id"]
    with log.lock:
        log.sessions.append(sid)
    for _ in range(heartbeats):
        retrying(log, "heartbeat", lambda: c.api.post(
            f"/v1/sessions/{sid}/heartbeat", {"card_present": True}, token=token),
            step_deadline, (200, 410))
    r = retrying(log, "end", lambda: c.api.delete(f"/v1/sessions/{sid}", token=token),
                 step_deadline, (204,))
    if not ended_early(log, "end", r, 204):
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
            try:
                one_round(log, SoftClient(api(), code), card, workspace_id, heartbeats)
            except Exception as exc:  # noqa: BLE001 — counted, never a silently dead thread
                with log.lock:
                    log.crashes.append(f"{type(exc).__name__}: {exc}")

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
            "refusals": [(a.call, a.status, a.code) for a in log.refusals], "gave_up": log.gave_up,
            "crashes": log.crashes, "slowest_s": round(slowest, 2)}
