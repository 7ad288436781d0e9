"""Periodic housekeeping run by the server's sweeper timer (each in its own transaction)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete
from sqlalchemy.orm import Session

from broker.service import sessions
from broker.service.context import BrokerContext
from broker.store.models import AuthToken, Challenge


def sweepers(ctx: BrokerContext) -> list[Callable[[], object]]:
    def expire_challenges() -> int:
        def work(s: Session) -> int:
            return s.execute(delete(Challenge).where(Challenge.expires_at < ctx.now())).rowcount  # type: ignore[attr-defined]
        return ctx.db.transaction(work)

    def expire_auth_tokens() -> int:
        def work(s: Session) -> int:
            return s.execute(delete(AuthToken).where(AuthToken.expires_at < ctx.now())).rowcount  # type: ignore[attr-defined]
        return ctx.db.transaction(work)

    def workspaces() -> int:
        return sessions.sweep_workspaces(ctx)

    def heartbeats() -> int:
        return sessions.sweep_sessions(ctx)

    return [expire_challenges, expire_auth_tokens, workspaces, heartbeats]
