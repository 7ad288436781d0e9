"""Periodic housekeeping run by the server's sweeper timer (each in its own transaction)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Connection

from broker.kinds import SessionEndReason
from broker.metrics import CHALLENGES_EXPIRED
from broker.service import audit
from broker.service.context import BrokerContext
from broker.service.sessions import WorkSpaceLifecycle
from broker.store.statements import (
    DELETE_EXPIRED_AUTH_TOKENS,
    DELETE_EXPIRED_CHALLENGES,
    DUE_WORKSPACES,
    END_STALE_SESSIONS,
    IDLE_WORKSPACES,
    UNANSWERED_EXPIRED_CHALLENGES,
)
from broker.workspaces.backend import backend_from_settings


def expire_challenges(ctx: BrokerContext) -> int:
    """Delete expired challenges (one transaction: count the unanswered, delete)."""

    def work(conn: Connection) -> tuple[int, int]:
        now = {"now": ctx.now()}
        unanswered = conn.execute(UNANSWERED_EXPIRED_CHALLENGES, now).scalar() or 0
        return conn.execute(DELETE_EXPIRED_CHALLENGES, now).rowcount, unanswered

    deleted, unanswered = ctx.db.run(work, name="expire_challenges")
    # Counted once, by the process whose sweep deleted them (workers sweep the same table).
    CHALLENGES_EXPIRED.inc(unanswered)
    return deleted


def expire_auth_tokens(ctx: BrokerContext) -> int:
    """Delete expired auth tokens (one DELETE)."""
    return ctx.db.run(lambda conn: conn.execute(DELETE_EXPIRED_AUTH_TOKENS,
                                                {"now": ctx.now()}).rowcount,
                      name="expire_auth_tokens")


def sweep_workspaces(ctx: BrokerContext) -> int:
    """Complete due transitions; stop idle AUTO_STOP WorkSpaces that have no session. One
    transaction on Core: the due WorkSpaces, the idle ones, one UPDATE per WorkSpace moved and
    one INSERT of the stops' audit events."""
    backend = backend_from_settings(ctx.settings)
    idle = timedelta(seconds=ctx.settings.workspaces.auto_stop_idle_s)

    def complete_and_stop(conn: Connection) -> int:
        now = ctx.now()
        changed = 0
        for row in conn.execute(DUE_WORKSPACES, {"now": now}).all():
            ws, read = WorkSpaceLifecycle.of(row), WorkSpaceLifecycle.of(row)
            changed += backend.refresh(ws, now)
            ws.save(conn, read)
        events = []
        for row in conn.execute(IDLE_WORKSPACES, {"idle_before": now - idle}).all():
            ws, read = WorkSpaceLifecycle.of(row), WorkSpaceLifecycle.of(row)
            backend.stop(ws, now)
            ws.save(conn, read)
            events.append(audit.event("workspace.auto_stop", "change",
                                      directory_id=ws.directory_id, workspace_id=ws.id))
        if events:
            audit.insert_all(conn, events)
        return changed + len(events)

    return ctx.db.run(complete_and_stop, name="sweep_workspaces")


def sweep_sessions(ctx: BrokerContext) -> int:
    """End sessions whose heartbeats stopped: one UPDATE … RETURNING and one INSERT of their
    audit events (a session another sweeper ended first is no longer live: never twice)."""
    timeout = timedelta(seconds=ctx.settings.sessions.heartbeat_timeout_s)

    def end_stale(conn: Connection) -> int:
        now = ctx.now()
        ended = conn.execute(END_STALE_SESSIONS, {"stale_before": now - timeout,
                                                  "now": now}).all()
        if ended:
            audit.insert_all(conn, [audit.event(
                "session.end", "change", directory_id=row.directory_id, session_id=row.id,
                reason=SessionEndReason.HEARTBEAT_TIMEOUT.value) for row in ended])
        return len(ended)

    return ctx.db.run(end_stale, name="sweep_sessions")


#: Every sweep, each a function of the context run in its own transaction.
SWEEPS: tuple[Callable[[BrokerContext], int], ...] = (
    expire_challenges, expire_auth_tokens, sweep_workspaces, sweep_sessions)


def sweepers(ctx: BrokerContext) -> list[Callable[[], int]]:
    """The sweeps bound to ``ctx``, for a timer to call (each keeps its sweep's name)."""
    return [functools.update_wrapper(functools.partial(sweep, ctx), sweep) for sweep in SWEEPS]
