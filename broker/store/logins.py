"""The writes of a smart-card login, in as few round trips as each database allows.

A login's writes are fixed sets of rows: the challenge with its rate counters and audit event,
then the spent challenge with the auth token, the audit event and the certificate's failure
counter cleared. PostgreSQL runs each set as ONE statement with data-modifying CTEs (a statement
is atomic, and each round trip costs the broker ~0.1–0.2 CPU-ms of SQLAlchemy and psycopg plus
the server's work); SQLite has no DML in CTEs and runs the same rows as several statements of
its write transaction (in process, cheap). The use cases in :mod:`broker.service.login` call
these functions and never ask which database they have.

Statements are built once (per number of counter keys) so SQLAlchemy's compiled cache serves
every login after the first.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Delete,
    Insert,
    Select,
    TypeDecorator,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql

from broker.store.statements import (
    CLEAR_COUNTER,
    CONSUME_CHALLENGE,
    INSERT_AUDIT_EVENT,
    INSERT_AUTH_TOKEN,
    INSERT_CHALLENGE,
    _audit,
    _challenges,
    _counters,
    _tokens,
    count_hits,
)

#: The columns a login writes, and the prefixes of their parameters in the combined statements.
CHALLENGE_COLUMNS = ("id", "directory_id", "purpose", "detail", "to_be_signed", "expires_at",
                     "used_at", "client_address", "registration_code_id", "cert_fingerprint",
                     "workspace_id", "session_id", "auth_token_id", "client", "created_at")
TOKEN_COLUMNS = ("token_hash", "user_id", "directory_id", "method", "cert_fingerprint",
                 "cert_der", "client", "expires_at", "revoked_at", "created_at")
AUDIT_COLUMNS = ("at", "kind", "outcome", "reason", "directory_id", "username", "actor",
                 "client_address", "cert_fingerprint", "details")


def _prefixed(prefix: str, row: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    return {f"{prefix}{c}": row[c] for c in columns}


def _typed(table: Any, prefix: str, columns: Sequence[str]) -> list[Any]:
    """Parameters for the columns of an INSERT … SELECT: there PostgreSQL reads an untyped
    parameter (a NULL, say) as text, which a bytea column refuses. psycopg's dialect types most
    parameters itself (``%(x)s::VARCHAR``); the others get a CAST."""
    out = []
    for c in columns:
        kind = table.c[c].type
        param: Any = bindparam(f"{prefix}{c}", type_=kind)
        impl = kind.load_dialect_impl(_PG) if isinstance(kind, TypeDecorator) else kind
        if not _PG.type_descriptor(impl).render_bind_cast:
            param = cast(param, kind)
        out.append(param.label(c))
    return out


_PG = postgresql.psycopg.dialect()


@functools.cache
def _challenge_statement(keys: int) -> Select[Any]:
    """PostgreSQL: count the ``keys`` rate counters, insert the challenge and its audit event;
    returns each counter's ``key, count, window_start`` (:func:`broker.store.statements
    .count_hits`'s parameters beside ``c_<column>`` and ``a_<column>``)."""
    hits = count_hits("postgresql", keys).cte("counted")
    challenge = insert(_challenges).values(
        {c: bindparam(f"c_{c}", type_=_challenges.c[c].type) for c in CHALLENGE_COLUMNS}
    ).cte("challenge")
    event = insert(_audit).values(
        {c: bindparam(f"a_{c}", type_=_audit.c[c].type) for c in AUDIT_COLUMNS}).cte("event")
    return select(hits.c.key, hits.c.count, hits.c.window_start).add_cte(challenge, event)


def record_challenge(conn: Connection, keys: Sequence[str], cutoff: datetime,
                     now: datetime, challenge: Mapping[str, Any],
                     event: Mapping[str, Any]) -> dict[str, tuple[int, datetime]]:
    """Count one hit on each rate counter of ``keys`` (at least one; a window that started at
    or before ``cutoff`` restarts at ``now``), store the ``challenge`` row and its audit
    ``event`` row: ``{key: (count, window_start)}``. The caller decides the limits and raises
    to roll its transaction back (a refused call moves no counter and stores nothing): one
    statement on PostgreSQL, three on SQLite."""
    params: dict[str, Any] = {f"key_{i}": key for i, key in enumerate(keys)}
    params.update(now=now, cutoff=cutoff)
    if conn.dialect.name == "postgresql":
        params.update(_prefixed("c_", challenge, CHALLENGE_COLUMNS))
        params.update(_prefixed("a_", event, AUDIT_COLUMNS))
        rows = conn.execute(_challenge_statement(len(keys)), params).all()
    else:
        rows = conn.execute(count_hits(conn.dialect.name, len(keys)), params).all()
        conn.execute(INSERT_CHALLENGE, dict(challenge))
        conn.execute(INSERT_AUDIT_EVENT, [dict(event)])
    return {key: (count, started) for key, count, started in rows}


def _grant_statement() -> Select[Any]:
    """PostgreSQL: spend the challenge (:data:`CONSUME_CHALLENGE`) and, only if this statement
    spent it, insert the auth token (``t_<column>``) and the audit event (``a_<column>``) and
    delete the counter ``clear_key`` (NULL: none); returns how many challenges it spent (0
    or 1)."""
    spent = CONSUME_CHALLENGE.returning(_challenges.c.id).cte("spent")
    token: Insert = insert(_tokens).from_select(
        list(TOKEN_COLUMNS), select(*_typed(_tokens, "t_", TOKEN_COLUMNS)).select_from(spent))
    event: Insert = insert(_audit).from_select(
        list(AUDIT_COLUMNS), select(*_typed(_audit, "a_", AUDIT_COLUMNS)).select_from(spent))
    cleared: Delete = delete(_counters).where(
        _counters.c.key == bindparam("clear_key", type_=_counters.c.key.type),
        exists(select(spent.c.id)))
    return select(func.count()).select_from(spent).add_cte(
        token.cte("token"), event.cte("event"), cleared.cte("cleared"))


GRANT: Select[Any] = _grant_statement()


def spend_and_grant(conn: Connection, challenge_id: str, now: datetime,
                    token: Mapping[str, Any], event: Mapping[str, Any],
                    clear_key: str | None) -> bool:
    """Spend the challenge if it is unused and unexpired, and only then store the ``token`` and
    ``event`` rows and delete the counter ``clear_key`` (None: none). True if this call spent
    it (exactly one caller across all processes); False: nothing was written.

    One statement on PostgreSQL (run it in autocommit: it is atomic by itself); on SQLite the
    statements of the caller's write transaction."""
    if conn.dialect.name == "postgresql":
        params = {"challenge_id": challenge_id, "now": now, "clear_key": clear_key}
        params.update(_prefixed("t_", token, TOKEN_COLUMNS))
        params.update(_prefixed("a_", event, AUDIT_COLUMNS))
        return bool(conn.execute(GRANT, params).scalar_one() == 1)
    if conn.execute(CONSUME_CHALLENGE, {"challenge_id": challenge_id, "now": now}).rowcount != 1:
        return False
    conn.execute(INSERT_AUTH_TOKEN, dict(token))
    if clear_key is not None:
        conn.execute(CLEAR_COUNTER, {"key": clear_key})
    conn.execute(INSERT_AUDIT_EVENT, [dict(event)])
    return True
