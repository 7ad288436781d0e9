"""Periodic housekeeping run by the server's sweeper timer (each in its own transaction)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from broker.metrics import CHALLENGES_EXPIRED
from broker.service import sessions
from broker.service.context import BrokerContext
from broker.store.models import AuthToken, Challenge


def sweepers(ctx: BrokerContext) -> list[Callable[[], object]]:
    def expire_challenges() -> int:
        def work(s: Session) -> tuple[int, int]:
            now = ctx.now()
            unanswered = s.scalar(select(func.count()).select_from(Challenge).where(
                Challenge.expires_at < now, Challenge.used_at.is_(None))) or 0
            deleted = s.execute(delete(Challenge).where(Challenge.expires_at < now)).rowcount  # type: ignore[attr-defined]
            return deleted, unanswered
        deleted, unanswered = ctx.db.transaction(work)
        # Counted once, by the process whose sweep deleted them (workers sweep the same table).
        CHALLENGES_EXPIRED.inc(unanswered)
        return int(deleted)

    def expire_auth_tokens() -> int:
        def work(s: Session) -> int:
            return s.execute(delete(AuthToken).where(AuthToken.expires_at < ctx.now())).rowcount  # type: ignore[attr-defined]
        return ctx.db.transaction(work)

    def workspaces() -> int:
        return sessions.sweep_workspaces(ctx)

    def heartbeats() -> int:
        return sessions.sweep_sessions(ctx)

    return [expire_challenges, expire_auth_tokens, workspaces, heartbeats]
