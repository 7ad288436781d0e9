"""Prometheus metrics for operators, one process or many.

Counters and histograms are updated where things happen (requests, logins, revocation fetches,
database pool checkouts). With ``broker serve --workers N`` the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start, prometheus_client then keeps each
worker's values in files there, and a scrape of any worker sums them (:func:`render`), so N
workers report as one broker.

What lives in the database (active sessions, WorkSpace states, CA and CRL expiry) is read at
scrape time by :class:`StoreCollector`, never counted per process: every worker would report
the same rows.

Labels are closed sets (route templates as in OpenAPI, error codes, directory ids): never a raw
path, which carries session and challenge ids, and never a client's free text. A method outside
:data:`METHODS` is counted as ``other``, a route the request did not match as ``unmatched``, a
code outside :class:`~broker.codes.Code` as ``other``: whatever a client sends, the number of
series stays bounded (a scanner cannot grow the exposition or the process's memory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from broker.codes import ACTIONABLE, NOT_YET, Code, RefusalClass, refusal_class
from broker.kinds import SessionState

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

disable_created_metrics()  # no *_created series: they double the output and nobody alerts on them

HTTP_REQUESTS = Counter("broker_http_requests_total", "HTTP requests answered",
                        ["api", "route", "method", "status"])
HTTP_LATENCY = Histogram("broker_http_request_duration_seconds",
                         "HTTP request latency by route template", ["api", "route", "method"])
LOGINS = Counter("broker_logins_total", "Login attempts by method and result (ok or refused)",
                 ["method", "result"])
REFUSALS = Counter("broker_refusals_total",
                   "Client API requests refused, by error code", ["code"])
ACTIONABLE_REFUSALS = Counter(
    "broker_actionable_refusals_total",
    "Client API refusals a person must act on (PKI set-up, directory, broker), by error code; "
    "the classification is broker.codes.ACTIONABLE", ["code"])
CHALLENGES_ISSUED = Counter("broker_challenges_issued_total", "PKI challenges handed out",
                            ["purpose"])
CHALLENGES_EXPIRED = Counter("broker_challenges_expired_total",
                             "Challenges that expired unanswered (counted when swept)")
REVOCATION_FETCH = Histogram("broker_revocation_fetch_duration_seconds",
                             "OCSP and CRL fetch latency", ["kind"],
                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
REVOCATION_FETCH_FAILURES = Counter("broker_revocation_fetch_failures_total",
                                    "OCSP and CRL fetches that failed", ["kind"])
TRANSACTION_RETRIES = Counter("broker_db_transaction_retries_total",
                              "Transactions retried after a transient failure (serialization, "
                              "deadlock, SQLite busy), by transaction name", ["transaction"])
DB_POOL_IN_USE = Gauge("broker_db_pool_connections_in_use",
                       "Database connections checked out of the pool",
                       multiprocess_mode="livesum")
LDAP_REQUESTS = Histogram("broker_ldap_request_duration_seconds",
                          "LDAP searches and binds of LDAP-backed directories, by result",
                          ["directory", "result"], buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 3, 10))
LDAP_UP = Gauge("broker_ldap_directory_up", "1 when the last LDAP call of a directory worked, "
                "0 when its server was unreachable or slow (logins answer "
                "directory_unavailable)", ["directory"], multiprocess_mode="livemin")


def observe_ldap(directory: str, result: str, seconds: float) -> None:
    LDAP_REQUESTS.labels(directory, result).observe(seconds)


def set_directory_up(directory: str, up: bool) -> None:
    LDAP_UP.labels(directory).set(1 if up else 0)

THROTTLED = Counter("broker_throttled_total",
                    "Requests refused by a throttle (429: the client API's per address, token, "
                    "prefix or user; console sign-in), by what was throttled", ["what"])

#: The HTTP methods counted by name; any other is counted as ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: API labels (listeners and the console).
APIS = frozenset({"client", "admin", "console"})
_CODES = frozenset(c.value for c in Code) | {"ok", "error", "not_found", "method_not_allowed",
                                             "internal_error"}


def method_label(method: str | bytes) -> str:
    """``method`` if it is one of :data:`METHODS`, else ``other`` (a closed set)."""
    text = method.decode("ascii", "replace") if isinstance(method, bytes) else method
    return text if text in METHODS else "other"


def code_label(code: str) -> str:
    return code if code in _CODES else "other"


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


#: Client API routes whose answer is a login outcome, with the login method.
LOGIN_ROUTES = {
    "/v1/auth/challenges/{challenge_id}/response": "smart_card",
    "/v1/auth/password": "password",
}
#: Routes whose success hands out a challenge, with its purpose.
CHALLENGE_ROUTES = {
    "/v1/auth/challenges": "pre_session",
    "/v1/workspaces/{workspace_id}/connect": "logon",
    "/v1/sessions/{session_id}/in-session/challenges": "in_session",
}

#: Routes with a throttle, with the name broker_throttled_total counts them under.
THROTTLE_ROUTES = {
    "/v1/auth/challenges": "login_challenge",
    "/v1/auth/challenges/{challenge_id}/response": "login_response",
    "/v1/auth/password": "password",
    "/v1/workspaces/{workspace_id}/connect": "connect",
    "/v1/workspaces/{workspace_id}/logon": "logon",
    "/v1/sessions/{session_id}/in-session/challenges": "in_session_challenge",
    "/v1/sessions/{session_id}/in-session/challenges/{challenge_id}/response":
        "in_session_response",
}


#: Answers that mean "not yet, ask again" (a client polling a starting WorkSpace): normal
#: traffic, never a refusal (one start polls ~10 times and would feed the refusal-spike alert).
#: Classified once, in broker.codes.
NOT_REFUSALS = frozenset(str(c) for c in NOT_YET)
#: Refusal codes whose series exist from the start at 0, so rate() and the alerts see the
#: first one (a counter born at 1 has no increase to show).
KEY_REFUSALS = ("certificate_untrusted", "certificate_expired", "certificate_revoked",
                "certificate_revocation_unknown", "signature_invalid", "user_not_found",
                "rate_limited", "locked_out")


def start_series_at_zero() -> None:
    """Create the key label sets now, at 0 (also in each worker's multiprocess file)."""
    for method in set(LOGIN_ROUTES.values()):
        for result in ("ok", "refused"):
            LOGINS.labels(method, result)
    for code in KEY_REFUSALS:
        REFUSALS.labels(code)
    for code in sorted(ACTIONABLE):  # a closed set: every one exists at 0 from the start
        ACTIONABLE_REFUSALS.labels(str(code))
    for purpose in CHALLENGE_ROUTES.values():
        CHALLENGES_ISSUED.labels(purpose)
    for kind in ("crl", "ocsp"):
        REVOCATION_FETCH_FAILURES.labels(kind)


def record_request(api: str, route: str, method: str, status: int, code: str,
                   elapsed_s: float) -> None:
    """Count one answered request and what it meant (login outcome, refusal, challenge).

    ``route`` must be a declared template (or ``unmatched``); the method, status and code are
    folded into closed sets here."""
    method, code = method_label(method), code_label(code)
    api = api if api in APIS else "other"
    HTTP_REQUESTS.labels(api, route, method, status_label(status)).inc()
    HTTP_LATENCY.labels(api, route, method).observe(elapsed_s)
    if api != "client":
        return
    if route in LOGIN_ROUTES and method == "POST":
        LOGINS.labels(LOGIN_ROUTES[route], "ok" if status < 400 else "refused").inc()
    # Unrouted paths (scanners) are not refusals of anything the broker offers.
    if 400 <= status < 500 and code and code != "ok" and route != "unmatched" \
            and code not in NOT_REFUSALS:
        REFUSALS.labels(code).inc()
    # A person must act on these whatever the status (directory_unavailable is a 503).
    if status >= 400 and route != "unmatched" \
            and refusal_class(code) is RefusalClass.ACTIONABLE:
        ACTIONABLE_REFUSALS.labels(code).inc()
    if status == 429 and route in THROTTLE_ROUTES:
        THROTTLED.labels(THROTTLE_ROUTES[route]).inc()
    # connect answers 201 (a session) or 202 (WorkSpace starting: a logon challenge).
    purpose = CHALLENGE_ROUTES.get(route)
    if purpose and method == "POST" and (status == 202 if purpose == "logon"
                                         else 200 <= status < 300):
        CHALLENGES_ISSUED.labels(purpose).inc()


def observed_fetch(fetch: Callable[[str, bytes | None, str | None, float], bytes]
                   ) -> Callable[[str, bytes | None, str | None, float], bytes]:
    """Wrap a revocation fetch (see broker.pki.revocation.Fetch) to time it and count failures."""

    def timed(url: str, body: bytes | None, content_type: str | None, timeout: float) -> bytes:
        kind = "ocsp" if content_type == "application/ocsp-request" else "crl"
        started = time.monotonic()
        try:
            return fetch(url, body, content_type, timeout)
        except Exception:
            REVOCATION_FETCH_FAILURES.labels(kind).inc()
            raise
        finally:
            REVOCATION_FETCH.labels(kind).observe(time.monotonic() - started)

    return timed


def watch_pool(engine: Any) -> None:
    """Keep broker_db_pool_connections_in_use current from the engine's pool events."""
    from sqlalchemy import event

    @event.listens_for(engine, "checkout")
    def _checkout(*_: Any) -> None:
        DB_POOL_IN_USE.inc()

    @event.listens_for(engine, "checkin")
    def _checkin(*_: Any) -> None:
        DB_POOL_IN_USE.dec()


class StoreCollector(Collector):
    """Gauges read from the database at scrape time (call :meth:`refresh` off the reactor)."""

    def __init__(self, read: Callable[[], dict[str, Any]],
                 readiness: Callable[[], str | None]) -> None:
        self._read = read
        self._readiness = readiness
        self._snapshot: dict[str, Any] = {}

    def refresh(self) -> None:
        """Read readiness, then (when ready) the database gauges; never raises for a database
        that is down: that is what broker_ready reports."""
        reason = self._readiness()
        snapshot: dict[str, Any] = {"not_ready": reason}
        if reason is None:
            snapshot.update(self._read())
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._snapshot
        ready = GaugeMetricFamily("broker_ready", "1 when /readyz would answer 200; 0 with the "
                                  "reason otherwise", labels=["reason"])
        reason = snap.get("not_ready")
        ready.add_metric([reason or ""], 0 if reason else 1)
        yield ready
        sessions = GaugeMetricFamily("broker_active_sessions",
                                     "Sessions not ended, by directory", labels=["directory"])
        for directory, n in sorted(snap.get("sessions", {}).items()):
            sessions.add_metric([directory], n)
        yield sessions
        states = GaugeMetricFamily("broker_workspaces", "WorkSpaces by state",
                                   labels=["state"])
        for state, n in sorted(snap.get("workspaces", {}).items()):
            states.add_metric([state], n)
        yield states
        ca = GaugeMetricFamily("broker_ca_expiry_seconds",
                               "Seconds until the first trust certificate of a directory expires",
                               labels=["directory"])
        for directory, s in sorted(snap.get("ca_expiry", {}).items()):
            ca.add_metric([directory], s)
        yield ca
        crl = GaugeMetricFamily("broker_crl_next_update_seconds",
                                "Seconds until the earliest uploaded CRL of a directory is due "
                                "for renewal (negative: stale)", labels=["directory"])
        for directory, s in sorted(snap.get("crl_next_update", {}).items()):
            crl.add_metric([directory], s)
        yield crl


def read_store(session: Any, now: datetime) -> dict[str, Any]:
    """The database-backed gauge values: four grouped queries, whatever the data size."""
    from sqlalchemy import func, select

    from broker.store.models import Crl, Session, TrustCertificate, WorkSpace

    sessions = dict(session.execute(
        select(Session.directory_id, func.count()).where(Session.state != SessionState.ENDED)
        .group_by(Session.directory_id)).all())
    workspaces = dict(session.execute(
        select(WorkSpace.state, func.count()).group_by(WorkSpace.state)).all())
    ca = {d: (t - now).total_seconds() for d, t in session.execute(
        select(TrustCertificate.directory_id, func.min(TrustCertificate.not_after))
        .group_by(TrustCertificate.directory_id)).all() if t is not None}
    crl = {d: (t - now).total_seconds() for d, t in session.execute(
        select(Crl.directory_id, func.min(Crl.next_update))
        .group_by(Crl.directory_id)).all() if t is not None}
    return {"sessions": sessions, "workspaces": workspaces, "ca_expiry": ca,
            "crl_next_update": crl}


def render(store: StoreCollector | None = None) -> tuple[bytes, str]:
    """The exposition text of this broker (all workers in multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    if store is not None:
        extra = CollectorRegistry()
        extra.register(store)
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST


def prepare_multiprocess_dir(folder: str) -> None:
    """Empty ``folder`` (stale files of dead workers would be summed) and point the workers at it.

    Must run in the supervisor before any worker imports prometheus_client.
    """
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, mode=0o700)
    os.environ[MULTIPROC_ENV] = folder


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay in the sum)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
