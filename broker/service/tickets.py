"""Signed session tickets and in-session assertions (compact JWS, ES256) and the JWKS.

Signing keys live in the database so every broker process signs with the same current key and
publishes the same set; their private halves are sealed with the key of
:mod:`broker.keys_at_rest`, kept outside the database. The JWS work is joserfc's; nothing here
hand-rolls JOSE.

The key ring holds, at any time:

* the **current** key, which signs;
* the **next** key, made one rotation period ahead and published at once (JWKS and
  ``broker keys export-gateway``) so that a gateway knows it before it signs anything;
* **retired** keys, published until everything they could have signed has expired.

A key's ``created_at`` is the time it starts signing: the current key is the newest one whose
time has come, the next one's lies ``sessions.signing_key_rotation_days`` ahead. When that time
comes (or ``broker keys rotate`` brings it forward) the next key signs, the one before retires
and a new next key is made. Each process caches the current key and looks at the table again
every :data:`RECHECK` (and when the next key's time comes), so a rotation reaches every process
within 30 seconds. A database from before next keys holds one live key: it gets a next key one
rotation period ahead, or, when it is older than that period, is replaced at once as it was
then. No schema change: the states follow from ``created_at``, ``retired_at`` and
``expires_at``.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import Connection, or_, select
from sqlalchemy.orm import Session

from broker.store.models import SigningKey

TICKET_AUDIENCE = "workspaces-gateway"
ALG = "ES256"
#: How long a process signs with its cached current key before looking at the table again (a
#: `broker keys rotate` reaches every process within this; the scheduled rotation is exact).
RECHECK = timedelta(seconds=30)


@dataclass(frozen=True)
class RingState:
    """The key ring at one moment: the key that signs, the one after it (pre-published), and
    the newest retired key still published (its tickets may still be valid)."""

    current: SigningKey
    next: SigningKey
    previous: SigningKey | None


class KeyRing:
    """Current signing key (cached per process) backed by the signing_keys table."""

    def __init__(self, rotation: timedelta, max_token_lifetime: timedelta,
                 sealing_key: Callable[[], bytes] | None = None,
                 recheck: timedelta = RECHECK) -> None:
        """``sealing_key`` gives the key that encrypts the private keys at rest (None: keys
        are stored as plain PEM — tests of one layer only)."""
        self.rotation = rotation
        self._sealing_key = sealing_key
        self.max_lifetime = max_token_lifetime
        self.recheck = recheck  # keys.ring_recheck_s
        self._lock = threading.Lock()
        #: (kid, key, loaded at, valid until: RECHECK later or the next key's start)
        self._current: tuple[str, ECKey, datetime, datetime] | None = None

    def current(self, db: Session | Connection, now: datetime) -> tuple[str, ECKey]:
        """The current key, from this process's cache for :data:`RECHECK` (never past the
        next key's start); else read (and, when due, rotated) in the caller's transaction on
        ``db``, an ORM session or a Core connection."""
        with self._lock:
            cur = self._current
            if cur is not None and cur[2] <= now < cur[3]:
                return cur[0], cur[1]
        if isinstance(db, Connection):
            with Session(bind=db) as session:  # joins db's transaction, never ends it
                return self._load(session, now)
        return self._load(db, now)

    def _load(self, session: Session, now: datetime) -> tuple[str, ECKey]:
        state = self.state(session, now)
        row = state.current
        key = ECKey.import_key(self._unseal(row), parameters={"kid": row.kid})
        with self._lock:
            self._current = (row.kid, key, now, min(now + self.recheck, state.next.created_at))
        return row.kid, key

    def state(self, session: Session, now: datetime) -> RingState:
        """The ring at ``now``, after the rotation that is due (if any) and with a next key:
        made in ``session``'s transaction when missing."""
        live = list(session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))
                                    .order_by(SigningKey.created_at, SigningKey.kid)))
        started = [k for k in live if k.created_at <= now]
        waiting = [k for k in live if k.created_at > now]
        if not started:
            if waiting:  # a next key but no current one (should not happen): bring it in
                waiting[0].created_at = now
                started, waiting = [waiting[0]], waiting[1:]
            else:
                started = [self._create(session, now)]
        current = started[-1]
        for old in started[:-1]:  # the next key's time came: the ones before it retire
            self._retire(old, now)
        if not waiting and len(started) == 1 and now - current.created_at >= self.rotation:
            # a database from before next keys, its only key overdue: replaced now, as then
            self._retire(current, now)
            current = self._create(session, now)
        for extra in waiting[1:]:  # two processes made a next key at once: keep the first
            extra.retired_at = extra.expires_at = now  # (it never signed: unpublished at once)
        if not waiting:
            waiting = [self._create(session, now, now + self.rotation)]
        previous = session.scalar(
            select(SigningKey).where(SigningKey.retired_at.is_not(None),
                                     or_(SigningKey.expires_at.is_(None),
                                         SigningKey.expires_at > now))
            .order_by(SigningKey.retired_at.desc(), SigningKey.created_at.desc()).limit(1))
        session.flush()
        return RingState(current, waiting[0], previous)

    def rotate(self, session: Session, now: datetime) -> tuple[RingState, bool]:
        """Bring the next key in now: it signs, the keys before it retire (published until
        their tokens have expired), and a new next key is made. Returns the new state and
        whether the key that now signs had been published as the next key before (False when
        the ring had none: an empty database, or one from before next keys)."""
        had_next = session.scalar(select(SigningKey.kid).where(
            SigningKey.retired_at.is_(None), SigningKey.created_at > now).limit(1)) is not None
        before = self.state(session, now)
        for row in session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None),
                                                            SigningKey.kid != before.next.kid)):
            self._retire(row, now)
        before.next.created_at = now
        session.flush()
        after = self.state(session, now)
        with self._lock:
            self._current = None
        return after, had_next

    def _retire(self, row: SigningKey, now: datetime) -> None:
        row.retired_at = now
        row.expires_at = now + self.max_lifetime + timedelta(minutes=5)

    def _create(self, session: Session, now: datetime, starts: datetime | None = None
                ) -> SigningKey:
        """A new key made ``now`` (its kid names the day) that signs from ``starts``."""
        kid = now.strftime("%Y%m%d") + "-" + secrets.token_hex(4)
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": ALG})
        row = SigningKey(kid=kid, private_pem=self._seal(kid, key.as_pem(private=True)),
                         public_jwk=key.as_dict(private=False), created_at=starts or now)
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


def public_pem(row: SigningKey) -> bytes:
    """The public half of a stored key as a PEM SubjectPublicKeyInfo ("BEGIN PUBLIC KEY"),
    the form HAProxy's jwt_verify reads."""
    return ECKey.import_key(dict(row.public_jwk)).as_pem(private=False)


def verify(token: str, jwks_doc: dict[str, Any]) -> dict[str, Any]:
    """Verify a ticket or assertion with only a JWKS, as a gateway or relying party would.

    Returns the claims; raises joserfc errors when the signature or the expiry is wrong.
    """
    from joserfc.jwt import JWTClaimsRegistry

    decoded = jwt.decode(token, KeySet.import_key_set(jwks_doc),  # type: ignore[arg-type]
                         algorithms=[ALG])
    JWTClaimsRegistry(exp={"essential": True}).validate(decoded.claims)
    return decoded.claims
