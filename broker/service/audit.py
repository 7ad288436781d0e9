"""Audit events: every admin change and every login decision leaves one.

Never put a PIN, a token, a nonce or a private key in an event: identify certificates by their
SHA-256 fingerprint and tokens by their name.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from broker.store.models import AuditEvent, utcnow

_FORBIDDEN_DETAIL_KEYS = {"pin", "password", "token", "auth_token", "nonce", "private_key",
                          "signature", "ticket"}


def event(kind: str, outcome: str, *, reason: str | None = None,
          directory_id: str | None = None, username: str | None = None,
          actor: str | None = None, client_address: str | None = None,
          cert_fingerprint: str | None = None, **details: Any) -> dict[str, Any]:
    """The column values of one audit event (refused when ``details`` would carry a secret),
    for :func:`record` or :func:`insert_all`."""
    _check(details)
    return {"at": utcnow(), "kind": kind, "outcome": outcome, "reason": reason,
            "directory_id": directory_id, "username": username, "actor": actor,
            "client_address": client_address, "cert_fingerprint": cert_fingerprint,
            "details": details}


def record(session: Session, kind: str, outcome: str, **fields: Any) -> AuditEvent:
    """Add an audit event to ``session`` (committed with the caller's transaction); the
    arguments are :func:`event`'s."""
    added = AuditEvent(**event(kind, outcome, **fields))
    session.add(added)
    return added


def insert(conn: Connection, kind: str, outcome: str, **fields: Any) -> None:
    """:func:`record` for the Core hot path: one INSERT on ``conn``, in the caller's
    transaction (the event commits or rolls back with the decision it records)."""
    insert_all(conn, [event(kind, outcome, **fields)])


def insert_all(conn: Connection, events: list[dict[str, Any]]) -> None:
    """Several :func:`event` rows in one statement, in the caller's transaction."""
    from broker.store.statements import INSERT_AUDIT_EVENT

    conn.execute(INSERT_AUDIT_EVENT, events)


def _check(details: dict[str, Any]) -> None:
    leaked = _FORBIDDEN_DETAIL_KEYS & {k.lower() for k in details}
    if leaked:
        raise ValueError(f"audit details must not carry secrets: {sorted(leaked)}")
