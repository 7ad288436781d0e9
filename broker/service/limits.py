"""Rate limits and lockouts shared by every broker process (fixed windows in the database).

A counter row per key (``chal:code:<id>``, ``chal:addr:<ip>``, ``fail:cert:<fp>`` …) is counted
with one ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (PostgreSQL and SQLite ≥ 3.35), so N
processes on one PostgreSQL count together without a read-modify-write. Every function runs on
the caller's Core connection, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from broker.codes import Code
from broker.service.errors import ServiceError
from broker.store.statements import (
    CLEAR_COUNTER,
    HOLD_COUNTER,
    LOCK_COUNTER,
    LOCKS,
    count_hits,
    mark_counter,
)


def _aware(at: datetime, now: datetime) -> datetime:
    return at.replace(tzinfo=now.tzinfo) if at.tzinfo is None else at  # SQLite: as stored


def _count(conn: Connection, keys: Sequence[str], window_s: int,
           now: datetime) -> dict[str, tuple[int, datetime]]:
    """Count one event for each key (a window that started ``window_s`` ago restarts):
    ``{key: (count, window_start)}``."""
    params: dict[str, Any] = {f"key_{i}": key for i, key in enumerate(keys)}
    params.update(now=now, cutoff=now - timedelta(seconds=window_s))
    return {key: (count, _aware(started, now)) for key, count, started in
            conn.execute(count_hits(conn.dialect.name, len(keys)), params)}


def hit_many(conn: Connection, hits: Sequence[tuple[str, int]], window_s: int,
             now: datetime) -> None:
    """Count one event for each ``(key, limit)`` pair of one window, in one statement;
    rate_limited (with retry_after_s) for the first pair (in the order given) past its limit.
    A refusal rolls the caller's transaction back, so no counter moves for a refused call."""
    if not hits:
        return
    over_limit(hits, _count(conn, [key for key, _ in hits], window_s, now), window_s, now)


def over_limit(hits: Sequence[tuple[str, int]], counted: Mapping[str, tuple[int, datetime]],
               window_s: int, now: datetime) -> None:
    """:func:`hit_many`'s verdict on counts made elsewhere (``{key: (count, window_start)}``,
    the counter upsert of :func:`broker.store.logins.record_challenge`): rate_limited for the
    first pair past its limit. The caller's transaction must roll back on it, as there."""
    for key, limit in hits:
        count, started = counted[key]
        started = _aware(started, now)
        if count > limit:
            retry = max(1, int(window_s - (now - started).total_seconds()) + 1)
            raise ServiceError(Code.RATE_LIMITED, "Too many requests; try again later.",
                               {"retry_after_s": retry})


def locked(locks: Mapping[str, str], found: Mapping[str, datetime | None],
           now: datetime) -> None:
    """Raise the code of the first key of ``locks`` whose ``found`` lock is still in force."""
    for key, code in locks.items():
        until = found.get(key)
        if until is not None and _aware(until, now) > now:
            retry = max(1, int((_aware(until, now) - now).total_seconds()) + 1)
            raise ServiceError(code, "Too many failed attempts; try again later.",
                               {"retry_after_s": retry})


def read_locks(conn: Connection, keys: Sequence[str], now: datetime) -> dict[str, datetime]:
    """The locks (and marks) of ``keys`` still in force, in one read: ``{key: until}``."""
    if not keys:
        return {}
    return {key: _aware(until, now) for key, until in
            conn.execute(LOCKS, {"keys": list(keys), "now": now})}


def check_locks(conn: Connection, locks: Mapping[str, str], now: datetime) -> None:
    """:func:`locked` for ``{key: code}`` read in one statement."""
    locked(locks, read_locks(conn, list(locks), now), now)


def record_failure(conn: Connection, key: str, max_failures: int, window_s: int,
                   now: datetime) -> bool:
    """Count a failure; start a lockout of ``window_s`` at ``max_failures``. True if locked."""
    count, _ = _count(conn, [key], window_s, now)[key]
    if count >= max_failures:
        conn.execute(LOCK_COUNTER, {"counter_key": key, "until": now + timedelta(seconds=window_s)})
        return True
    return False


def record_slowdown(conn: Connection, key: str, free: int, window_s: int,
                    now: datetime) -> float:
    """Count a failure for ``key``; past ``free`` failures within ``window_s`` the key is held
    for an exponential delay (1, 2, 4 … s, at most ``window_s``) from now, never a lockout
    that outlasts the window. The delay set, 0 while under ``free``."""
    count, _ = _count(conn, [key], window_s, now)[key]
    over = count - free
    if over <= 0:
        return 0.0
    delay = float(min(window_s, 2 ** min(over - 1, 30)))
    conn.execute(HOLD_COUNTER, {"counter_key": key, "until": now + timedelta(seconds=delay)})
    return delay


def mark(conn: Connection, key: str, until: datetime, now: datetime) -> None:
    """Remember ``key`` (a fact, not a failure) until ``until``; :func:`read_locks` finds it."""
    conn.execute(mark_counter(conn.dialect.name), {"counter_key": key, "now": now, "until": until})


def clear(conn: Connection, key: str) -> None:
    conn.execute(CLEAR_COUNTER, {"key": key})
