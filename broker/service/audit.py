"""Audit events: every admin change and every login decision leaves one.

Never put a PIN, a token, a nonce or a private key in an event: identify certificates by their
SHA-256 fingerprint and tokens by their name. Every event is one Core INSERT in the caller's
transaction (it commits or rolls back with the decision it records); an ORM caller passes its
session, whose connection the INSERT runs on. A smart-card login builds its events with
:func:`event` and writes them within its own statements (:mod:`broker.store.logins`), the
same rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from broker.store.models import utcnow
from broker.store.statements import INSERT_AUDIT_EVENT

_FORBIDDEN_DETAIL_KEYS = {"pin", "password", "token", "auth_token", "nonce", "private_key",
                          "signature", "ticket"}


def event(kind: str, outcome: str, *, reason: str | None = None,
          directory_id: str | None = None, username: str | None = None,
          actor: str | None = None, client_address: str | None = None,
          cert_fingerprint: str | None = None, **details: Any) -> dict[str, Any]:
    """The column values of one audit event (refused when ``details`` would carry a secret),
    for :func:`insert_all`."""
    _check(details)
    return {"at": utcnow(), "kind": kind, "outcome": outcome, "reason": reason,
            "directory_id": directory_id, "username": username, "actor": actor,
            "client_address": client_address, "cert_fingerprint": cert_fingerprint,
            "details": details}


def insert(db: Connection | Session, kind: str, outcome: str, **fields: Any) -> None:
    """One audit event (:func:`event`'s arguments), one INSERT on ``db`` in its transaction."""
    insert_all(db, [event(kind, outcome, **fields)])


def insert_all(db: Connection | Session, events: list[dict[str, Any]]) -> None:
    """Several :func:`event` rows in one statement, in the caller's transaction."""
    conn = db.connection() if isinstance(db, Session) else db
    conn.execute(INSERT_AUDIT_EVENT, events)


def _check(details: dict[str, Any]) -> None:
    leaked = _FORBIDDEN_DETAIL_KEYS & {k.lower() for k in details}
    if leaked:
        raise ValueError(f"audit details must not carry secrets: {sorted(leaked)}")
