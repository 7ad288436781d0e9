"""Who is calling: client auth tokens and admin tokens, resolved before a route's body is read.

The web layer declares per route which credential it needs and calls one of these in the thread
pool; the use case then receives the principal and checks ownership of whatever the path names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, cast

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from broker.codes import Code
from broker.kinds import AuthMethod
from broker.service import admin_tokens
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.tokens import hashes_match, token_hash
from broker.store.statements import AUTH_TOKEN_BY_HASH


@dataclass(frozen=True)
class ClientPrincipal:
    """The login behind a client auth token."""

    token_id: int
    user_id: int
    directory_id: str
    method: AuthMethod
    cert_fingerprint: str | None
    cert_der: bytes | None
    #: The client the login stated ({platform, arch, version}); None: it did not say.
    client: dict[str, str] | None = None


def _required(presented: str | None) -> str:
    if not presented:
        raise ServiceError(Code.AUTH_REQUIRED, "This call needs the auth token from login "
                                            "(Authorization: Bearer …).")
    return presented


class _TokenRow(Protocol):
    """What :data:`broker.store.statements.AUTH_TOKEN_BY_HASH` reads."""

    id: int
    token_hash: str
    user_id: int
    directory_id: str
    method: AuthMethod
    cert_fingerprint: str | None
    cert_der: bytes | None
    expires_at: datetime
    revoked_at: datetime | None
    client: dict[str, str] | None


def _live(presented: str, row: _TokenRow | None, now: datetime) -> _TokenRow:
    """``row`` if it is the presented token and still live."""
    if row is None or not hashes_match(presented, row.token_hash) or row.revoked_at is not None:
        raise ServiceError(Code.AUTH_TOKEN_INVALID, "The auth token is not valid; log in again.")
    if row.expires_at <= now:
        raise ServiceError(Code.AUTH_TOKEN_EXPIRED, "The auth token has expired; log in again.")
    return row


def client_principal(ctx: BrokerContext, presented: str | None) -> ClientPrincipal:
    """Resolve a client Bearer token: one Core read (every authenticated client call makes
    it): auth_required, auth_token_invalid or auth_token_expired."""
    token = _required(presented)

    def principal(conn: Connection) -> ClientPrincipal:
        found = conn.execute(AUTH_TOKEN_BY_HASH, {"token_hash": token_hash(token)}).first()
        row = _live(token, cast(_TokenRow | None, found), ctx.now())
        return ClientPrincipal(row.id, row.user_id, row.directory_id, row.method,
                               row.cert_fingerprint, row.cert_der, row.client)

    return ctx.db.run(principal, read_only=True)


def admin_principal(ctx: BrokerContext, presented: str | None,
                    write: bool) -> admin_tokens.AdminIdentity:
    """Resolve an admin Bearer token; admin_scope_insufficient when ``write`` needs more."""

    def work(session: Session) -> admin_tokens.AdminIdentity:
        identity = admin_tokens.authenticate(session, presented, ctx.now())
        if write and not identity.can_write:
            raise ServiceError(Code.ADMIN_SCOPE_INSUFFICIENT,
                               "This admin token may only read; changes need a write token.",
                               {"scope": identity.scope})
        return identity

    return ctx.db.transaction(work)
