"""Rate limits and lockouts shared by every broker process (fixed windows in the database).

A counter row per key (``chal:code:<id>``, ``chal:addr:<ip>``, ``fail:cert:<fp>`` …) is locked
for update while it is read and bumped, so N processes on one PostgreSQL count together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, select
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
    """Count one event for ``key``; rate_limited (with retry_after_s) past ``limit``/window.

    One statement, no read-modify-write: ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (both
    PostgreSQL and SQLite ≥ 3.35), so concurrent processes count together without a lock."""
    cutoff = now - timedelta(seconds=window_s)
    stale = RateCounter.window_start <= cutoff
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
    stmt = upsert(RateCounter).values(key=key, window_start=now, count=1)
    counted = stmt.on_conflict_do_update(index_elements=[RateCounter.key], set_={
        "count": case((stale, 1), else_=RateCounter.count + 1),
        "window_start": case((stale, now), else_=RateCounter.window_start)},
    ).returning(RateCounter.count, RateCounter.window_start)
    count, started = session.execute(counted).one()
    if count > limit:
        if started.tzinfo is None:  # SQLite hands back what it stored
            started = started.replace(tzinfo=now.tzinfo)
        retry = max(1, int(window_s - (now - started).total_seconds()) + 1)
        raise ServiceError(Code.RATE_LIMITED, "Too many requests; try again later.",
                           {"retry_after_s": retry})


def hit_many(conn: Connection, hits: Sequence[tuple[str, int]], window_s: int,
             now: datetime) -> None:
    """:func:`hit` for several ``(key, limit)`` pairs of one window, in one statement on the
    Core hot path; rate_limited for the first pair (in the order given) past its limit. A
    refusal rolls the caller's transaction back, so no counter moves for a refused call."""
    from broker.store.statements import count_hits

    if not hits:
        return
    params: dict[str, Any] = {f"key_{i}": key for i, (key, _) in enumerate(hits)}
    params.update(now=now, cutoff=now - timedelta(seconds=window_s))
    counted = {key: (count, started) for key, count, started in
               conn.execute(count_hits(conn.dialect.name, len(hits)), params)}
    for key, limit in hits:
        count, started = counted[key]
        if count > limit:
            if started.tzinfo is None:
                started = started.replace(tzinfo=now.tzinfo)
            retry = max(1, int(window_s - (now - started).total_seconds()) + 1)
            raise ServiceError(Code.RATE_LIMITED, "Too many requests; try again later.",
                               {"retry_after_s": retry})


def locked(locks: Mapping[str, str], found: Mapping[str, datetime | None],
           now: datetime) -> None:
    """Raise the code of the first key of ``locks`` whose ``found`` lock is still in force."""
    for key, code in locks.items():
        until = found.get(key)
        if until is not None and until > now:
            retry = max(1, int((until - now).total_seconds()) + 1)
            raise ServiceError(code, "Too many failed attempts; try again later.",
                               {"retry_after_s": retry})


def check_lockout(session: Session, key: str, now: datetime, *,
                  code: str = "locked_out") -> None:
    """``code`` (locked_out, or rate_limited for throttles) while ``key`` is locked."""
    row = session.scalar(select(RateCounter).where(RateCounter.key == key))
    if row is not None and row.locked_until is not None and row.locked_until > now:
        retry = max(1, int((row.locked_until - now).total_seconds()) + 1)
        raise ServiceError(code, "Too many failed attempts; try again later.",
                           {"retry_after_s": retry})


def check_locks(session: Session, locks: Mapping[str, str], now: datetime) -> None:
    """Like :func:`check_lockout` for several keys at once (one query): ``{key: code}``."""
    if not locks:
        return
    rows = session.scalars(select(RateCounter).where(RateCounter.key.in_(list(locks)),
                                                     RateCounter.locked_until > now))
    for row in rows:
        retry = max(1, int((row.locked_until - now).total_seconds()) + 1)  # type: ignore[operator]
        raise ServiceError(locks[row.key], "Too many failed attempts; try again later.",
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


def record_slowdown(session: Session, key: str, free: int, window_s: int,
                    now: datetime) -> float:
    """Count a failure for ``key``; past ``free`` failures within ``window_s`` the key is held
    for an exponential delay (1, 2, 4 … s, at most ``window_s``) from now, never a lockout
    that outlasts the window. The delay set, 0 while under ``free``."""
    row = _row(session, key, now)
    if now - row.window_start >= timedelta(seconds=window_s):
        row.window_start, row.count = now, 0
    row.count += 1
    over = row.count - free
    if over <= 0:
        return 0.0
    delay = float(min(window_s, 2 ** min(over - 1, 30)))
    row.locked_until = now + timedelta(seconds=delay)
    return delay


def is_marked(session: Session, key: str, now: datetime) -> bool:
    """Whether ``key`` was :func:`mark`-ed and is still remembered."""
    until = session.scalar(select(RateCounter.locked_until).where(RateCounter.key == key))
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=now.tzinfo)
    return until is not None and until > now


def mark(session: Session, key: str, until: datetime, now: datetime) -> None:
    """Remember ``key`` (a fact, not a failure) until ``until``."""
    row = _row(session, key, now)
    row.window_start, row.count, row.locked_until = now, 0, until


def clear(session: Session, key: str) -> None:
    session.execute(delete(RateCounter).where(RateCounter.key == key)
                    .execution_options(synchronize_session=False))
