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


def record(session: Session, kind: str, outcome: str, *, reason: str | None = None,
           directory_id: str | None = None, username: str | None = None,
           actor: str | None = None, client_address: str | None = None,
           cert_fingerprint: str | None = None, **details: Any) -> AuditEvent:
    """Add an audit event to ``session`` (committed with the caller's transaction)."""
    _check(details)
    event = AuditEvent(at=utcnow(), kind=kind, outcome=outcome, reason=reason,
                       directory_id=directory_id, username=username, actor=actor,
                       client_address=client_address, cert_fingerprint=cert_fingerprint,
                       details=details)
    session.add(event)
    return event


def insert(conn: Connection, kind: str, outcome: str, *, reason: str | None = None,
           directory_id: str | None = None, username: str | None = None,
           actor: str | None = None, client_address: str | None = None,
           cert_fingerprint: str | None = None, **details: Any) -> None:
    """:func:`record` for the Core hot path: one INSERT on ``conn``, in the caller's
    transaction (the event commits or rolls back with the decision it records)."""
    from broker.store.statements import INSERT_AUDIT_EVENT

    _check(details)
    conn.execute(INSERT_AUDIT_EVENT, {
        "at": utcnow(), "kind": kind, "outcome": outcome, "reason": reason,
        "directory_id": directory_id, "username": username, "actor": actor,
        "client_address": client_address, "cert_fingerprint": cert_fingerprint,
        "details": details})


def _check(details: dict[str, Any]) -> None:
    leaked = _FORBIDDEN_DETAIL_KEYS & {k.lower() for k in details}
    if leaked:
        raise ValueError(f"audit details must not carry secrets: {sorted(leaked)}")
