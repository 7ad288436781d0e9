"""Rate limits and lockouts shared by every broker process (fixed windows in the database).

A counter row per key (``chal:code:<id>``, ``chal:addr:<ip>``, ``fail:cert:<fp>`` …) is locked
for update while it is read and bumped, so N processes on one PostgreSQL count together.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.codes import Code
from broker.service.errors import ServiceError
from broker.store.models import RateCounter


def _row(session: Session, key: str, now: datetime) -> RateCounter:
    row = session.scalar(select(RateCounter).where(RateCounter.key == key).with_for_update())
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = RateCounter(key=key, window_start=now, count=0)
            session.add(row)
        return row
    except IntegrityError:  # another process created it first: use theirs
        row = session.scalar(select(RateCounter).where(RateCounter.key == key).with_for_update())
        if row is None:
            raise ServiceError(Code.SERVICE_UNAVAILABLE,
                               "A rate counter vanished; try again.") from None
        return row


def hit(session: Session, key: str, limit: int, window_s: int, now: datetime) -> None:
    """Count one event for ``key``; rate_limited (with retry_after_s) past ``limit``/window."""
    row = _row(session, key, now)
    if now - row.window_start >= timedelta(seconds=window_s):
        row.window_start, row.count = now, 0
    row.count += 1
    if row.count > limit:
        retry = max(1, int(window_s - (now - row.window_start).total_seconds()) + 1)
        raise ServiceError(Code.RATE_LIMITED, "Too many requests; try again later.",
                           {"retry_after_s": retry})


def check_lockout(session: Session, key: str, now: datetime, *,
                  code: str = "locked_out") -> None:
    """``code`` (locked_out, or rate_limited for throttles) while ``key`` is locked."""
    row = session.scalar(select(RateCounter).where(RateCounter.key == key))
    if row is not None and row.locked_until is not None and row.locked_until > now:
        retry = max(1, int((row.locked_until - now).total_seconds()) + 1)
        raise ServiceError(code, "Too many failed attempts; try again later.",
                           {"retry_after_s": retry})


def record_failure(session: Session, key: str, max_failures: int, window_s: int,
                   now: datetime) -> bool:
    """Count a failure; start a lockout of ``window_s`` at ``max_failures``. True if locked."""
    row = _row(session, key, now)
    if now - row.window_start >= timedelta(seconds=window_s):
        row.window_start, row.count = now, 0
    row.count += 1
    if row.count >= max_failures:
        row.locked_until = now + timedelta(seconds=window_s)
        row.count = 0
        return True
    return False


def clear(session: Session, key: str) -> None:
    row = session.get(RateCounter, key)
    if row is not None:
        session.delete(row)
