"""Admin tokens: created by `broker admin token create`, stored hashed, scoped read or write."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker import kinds
from broker.codes import Code
from broker.service import audit
from broker.service.errors import ServiceError
from broker.service.tokens import hashes_match, new_token, token_hash
from broker.store.models import AdminToken, utcnow

SCOPES = kinds.values(kinds.Scope)


@dataclass(frozen=True)
class AdminIdentity:
    token_id: int
    name: str
    scope: str

    @property
    def can_write(self) -> bool:
        return self.scope == "write"


def create(session: Session, name: str, scope: str, actor: str) -> tuple[AdminToken, str]:
    """Create a token; returns the row and the secret (shown once, never stored)."""
    if scope not in SCOPES:
        raise ServiceError(Code.VALIDATION_FAILED, f"scope must be read or write, not {scope!r}")
    if not name or len(name) > 100:
        raise ServiceError(Code.VALIDATION_FAILED, "token name must be 1 to 100 characters")
    if session.scalar(select(AdminToken).where(AdminToken.name == name)) is not None:
        raise ServiceError(Code.CONFLICT, f"an admin token named {name!r} already exists",
                           {"name": name})
    secret = new_token("sba")
    row = AdminToken(name=name, token_hash=token_hash(secret), scope=scope, created_at=utcnow())
    session.add(row)
    session.flush()
    audit.insert(session, "admin_token.create", "change", actor=actor, token_name=name,
                 scope=scope)
    return row, secret


def revoke(session: Session, name: str, actor: str) -> AdminToken:
    row = session.scalar(select(AdminToken).where(AdminToken.name == name))
    if row is None:
        raise ServiceError(Code.RESOURCE_NOT_FOUND, f"no admin token named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.insert(session, "admin_token.revoke", "change", actor=actor, token_name=name)
    return row


def list_tokens(session: Session) -> list[AdminToken]:
    return list(session.scalars(select(AdminToken).order_by(AdminToken.id)))


def authenticate(session: Session, presented: str | None, now: datetime) -> AdminIdentity:
    """The identity behind a Bearer admin token, or admin_token_invalid."""
    if not presented:
        raise ServiceError(Code.ADMIN_TOKEN_INVALID, "An admin Bearer token is required.")
    row = session.scalar(select(AdminToken).where(AdminToken.token_hash == token_hash(presented)))
    if row is None or not hashes_match(presented, row.token_hash) or row.revoked_at is not None:
        raise ServiceError(Code.ADMIN_TOKEN_INVALID, "The admin token is unknown or revoked.")
    row.last_used_at = now
    return AdminIdentity(row.id, row.name, row.scope)
