"""Signed session tickets and in-session assertions (compact JWS, ES256) and the JWKS.

Signing keys live in the database so every broker process signs with the same current key and
publishes the same set; their private halves are sealed with the key of
:mod:`broker.keys_at_rest`, kept outside the database. A key signs for
``sessions.signing_key_rotation_days``; then a new one is made and the old one stays published
(so tickets it signed still verify) until everything it could have signed has expired. The JWS
work is joserfc's; nothing here hand-rolls JOSE.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import Connection, or_, select
from sqlalchemy.orm import Session

from broker.store.models import SigningKey

TICKET_AUDIENCE = "workspaces-gateway"
ALG = "ES256"


class KeyRing:
    """Current signing key (cached per process) backed by the signing_keys table."""

    def __init__(self, rotation: timedelta, max_token_lifetime: timedelta,
                 sealing_key: Callable[[], bytes] | None = None) -> None:
        """``sealing_key`` gives the key that encrypts the private keys at rest (None: keys
        are stored as plain PEM — tests of one layer only)."""
        self.rotation = rotation
        self._sealing_key = sealing_key
        self.max_lifetime = max_token_lifetime
        self._lock = threading.Lock()
        self._current: tuple[str, ECKey, datetime] | None = None

    def current(self, db: Session | Connection, now: datetime) -> tuple[str, ECKey]:
        """The current key, from this process's cache while it is younger than the rotation
        period; else read (and, when due, rotated) in the caller's transaction on ``db``, an
        ORM session or a Core connection."""
        with self._lock:
            cur = self._current
            if cur is not None and now - cur[2] < self.rotation:
                return cur[0], cur[1]
        if isinstance(db, Connection):
            with Session(bind=db) as session:  # joins db's transaction, never ends it
                return self._load(session, now)
        return self._load(db, now)

    def _load(self, session: Session, now: datetime) -> tuple[str, ECKey]:
        row = session.scalar(select(SigningKey).where(SigningKey.retired_at.is_(None))
                             .order_by(SigningKey.created_at.desc()).limit(1))
        if row is None or now - row.created_at >= self.rotation:
            if row is not None:
                row.retired_at = now
                row.expires_at = now + self.max_lifetime + timedelta(minutes=5)
            row = self._create(session, now)
        key = ECKey.import_key(self._unseal(row), parameters={"kid": row.kid})
        with self._lock:
            self._current = (row.kid, key, row.created_at)
        return row.kid, key

    def _create(self, session: Session, now: datetime) -> SigningKey:
        kid = now.strftime("%Y%m%d") + "-" + secrets.token_hex(4)
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": ALG})
        row = SigningKey(kid=kid, private_pem=self._seal(kid, key.as_pem(private=True)),
                         public_jwk=key.as_dict(private=False), created_at=now)
        session.add(row)
        session.flush()
        return row

    def _seal(self, kid: str, pem: bytes) -> bytes:
        from broker.keys_at_rest import seal

        return seal(self._sealing_key(), kid, pem) if self._sealing_key else pem

    def _unseal(self, row: SigningKey) -> bytes:
        from broker.keys_at_rest import is_sealed, unseal

        if self._sealing_key is None:
            if is_sealed(row.private_pem):
                raise ValueError("a sealed signing key needs the sealing key")
            return bytes(row.private_pem)
        return unseal(self._sealing_key(), row.kid, row.private_pem)

    def sign(self, db: Session | Connection, claims: dict[str, Any], now: datetime) -> str:
        kid, key = self.current(db, now)
        return jwt.encode({"alg": ALG, "kid": kid, "typ": "JWT"}, claims, key)


def jwks(session: Session, now: datetime) -> dict[str, Any]:
    """Every key that may have signed a still-valid token."""
    rows = session.scalars(select(SigningKey).where(
        or_(SigningKey.expires_at.is_(None), SigningKey.expires_at > now))
        .order_by(SigningKey.created_at))
    keys = []
    for row in rows:
        jwk = dict(row.public_jwk)
        jwk.setdefault("kid", row.kid)
        jwk.setdefault("use", "sig")
        jwk.setdefault("alg", ALG)
        keys.append(jwk)
    return {"keys": keys}


def verify(token: str, jwks_doc: dict[str, Any]) -> dict[str, Any]:
    """Verify a ticket or assertion with only a JWKS, as a gateway or relying party would.

    Returns the claims; raises joserfc errors when the signature or the expiry is wrong.
    """
    from joserfc.jwt import JWTClaimsRegistry

    decoded = jwt.decode(token, KeySet.import_key_set(jwks_doc),  # type: ignore[arg-type]
                         algorithms=[ALG])
    JWTClaimsRegistry(exp={"essential": True}).validate(decoded.claims)
    return decoded.claims
