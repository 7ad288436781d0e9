"""Periodic housekeeping run by the server's sweeper timer (each in its own transaction)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from sqlalchemy import Connection

from broker.metrics import CHALLENGES_EXPIRED
from broker.service import sessions
from broker.service.context import BrokerContext
from broker.store.statements import (
    DELETE_EXPIRED_AUTH_TOKENS,
    DELETE_EXPIRED_CHALLENGES,
    UNANSWERED_EXPIRED_CHALLENGES,
)


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


#: Every sweep, each a function of the context run in its own transaction.
SWEEPS: tuple[Callable[[BrokerContext], int], ...] = (
    expire_challenges, expire_auth_tokens, sessions.sweep_workspaces, sessions.sweep_sessions)


def sweepers(ctx: BrokerContext) -> list[Callable[[], int]]:
    """The sweeps bound to ``ctx``, for a timer to call (each keeps its sweep's name)."""
    return [functools.update_wrapper(functools.partial(sweep, ctx), sweep) for sweep in SWEEPS]
