"""Periodic housekeeping: expired challenges and auth tokens are deleted."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete

from broker.service.context import BrokerContext
from broker.store.models import AuthToken, Challenge


def sweepers(ctx: BrokerContext) -> list[Callable[[], object]]:
    def expire_challenges() -> int:
        def work(s) -> int:  # type: ignore[no-untyped-def]
            cutoff = ctx.now()
            return s.execute(delete(Challenge).where(Challenge.expires_at < cutoff)).rowcount
        return ctx.db.transaction(work)

    def expire_auth_tokens() -> int:
        def work(s) -> int:  # type: ignore[no-untyped-def]
            return s.execute(delete(AuthToken).where(AuthToken.expires_at < ctx.now())).rowcount
        return ctx.db.transaction(work)

    return [expire_challenges, expire_auth_tokens]
