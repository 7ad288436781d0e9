"""Single-use PKI challenges: what the card signs, how a challenge is stored and consumed.

What the card signs (``to_be_signed``) is canonical bytes, version 1::

    b"smartcard-broker/challenge/v1\\n" + JSON

where JSON is the UTF-8 encoding of an object with exactly these keys, sorted, no whitespace
(``json.dumps(obj, sort_keys=True, separators=(",", ":"))``):

    broker      the broker_id of this deployment          "smartcard-broker"
    challenge   the challenge id                          "q3V…" (url-safe base64)
    directory   the directory id                          "corp"
    expires     expiry, UTC, RFC 3339 with "Z"            "2026-11-25T05:30:00Z"
    nonce       32 random bytes, url-safe base64, no pad  "Zm9v…"
    purpose     pre_session | logon | in_session:<kind>   "pre_session"

Binding all of them means a signature is good for exactly one challenge of one broker, one
directory and one purpose, until one instant. The challenge row stores these bytes; the client
signs them as given and never has to rebuild them.

A challenge is single-use across every broker process: the response is accepted only by the one
``UPDATE challenges SET used_at = now WHERE id = … AND used_at IS NULL AND expires_at > now``
that changes a row.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import Connection

from broker import kinds
from broker.codes import Code
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.tokens import new_id
from broker.service.wire import b64u, rfc3339
from broker.store.statements import CHALLENGE_USED_AT, CONSUME_CHALLENGE, INSERT_CHALLENGE

TBS_PREFIX = b"smartcard-broker/challenge/v1\n"
#: Longest challenge id looked up (ids are 24 characters; longer input is never a challenge).
MAX_ID = 64


def to_be_signed(broker_id: str, challenge_id: str, directory_id: str, expires: datetime,
                 nonce: bytes, purpose: str) -> bytes:
    body = {"broker": broker_id, "challenge": challenge_id, "directory": directory_id,
            "expires": rfc3339(expires), "nonce": b64u(nonce), "purpose": purpose}
    return TBS_PREFIX + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _new_challenge(ctx: BrokerContext, directory_id: str, purpose: str, detail: str | None,
                   now: datetime) -> tuple[str, bytes, datetime, str]:
    """A fresh id, what the card signs, the expiry and the signed purpose."""
    cid = new_id(18)
    expires = (now + timedelta(seconds=ctx.settings.login.challenge_ttl_s)).replace(
        microsecond=0)
    signed_purpose = f"{purpose}:{detail}" if detail else purpose
    tbs = to_be_signed(ctx.settings.server.broker_id, cid, directory_id, expires,
                       secrets.token_bytes(32), signed_purpose)
    return cid, tbs, expires, signed_purpose


def _description(cid: str, tbs: bytes, expires: datetime, signed_purpose: str,
                 issuers: list[str]) -> dict[str, Any]:
    from broker.pki.signatures import SUPPORTED_SIGNATURE_ALGORITHMS

    return {"challenge_id": cid, "to_be_signed": base64.b64encode(tbs).decode(),
            "expires_at": rfc3339(expires), "purpose": signed_purpose,
            "accepted_issuers": issuers,
            "signature_algorithms": list(SUPPORTED_SIGNATURE_ALGORITHMS)}


def challenge_row(ctx: BrokerContext, directory_id: str, purpose: kinds.Purpose,
                  detail: str | None = None, *, now: datetime, issuers: list[str],
                  address: str | None = None, registration_code_id: int | None = None,
                  cert_fingerprint: str | None = None, workspace_id: str | None = None,
                  session_id: str | None = None, auth_token_id: int | None = None,
                  valid_until: datetime | None = None,
                  client: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new single-use challenge: its row (every column of ``challenges``) and its public
    description, which lists ``issuers`` as the accepted issuers.

    ``detail`` is the in-session kind (sudo…). ``valid_until`` lets the row be answered after
    the signed expiry (a logon challenge waits for its WorkSpace to start): the later of the
    two is stored and described."""
    cid, tbs, expires, signed_purpose = _new_challenge(ctx, directory_id, purpose.value, detail,
                                                       now)
    if valid_until is not None and valid_until > expires:
        expires = valid_until
    row = {"id": cid, "directory_id": directory_id, "purpose": purpose, "detail": detail,
           "to_be_signed": tbs, "expires_at": expires, "used_at": None,
           "client_address": address, "registration_code_id": registration_code_id,
           "cert_fingerprint": cert_fingerprint, "workspace_id": workspace_id,
           "session_id": session_id, "auth_token_id": auth_token_id, "client": client,
           "created_at": now}
    return row, _description(cid, tbs, expires, signed_purpose, issuers)


def insert_challenge(ctx: BrokerContext, conn: Connection, directory_id: str,
                     directory_version: int, purpose: kinds.Purpose, detail: str | None = None,
                     *, now: datetime, **fields: Any) -> dict[str, Any]:
    """Store a new single-use challenge (one INSERT on ``conn``, a Core connection or an ORM
    session's) and return its public description (:func:`challenge_row`'s ``fields``); the
    accepted issuers come from the trust cache at ``directory_version``."""
    row, description = challenge_row(
        ctx, directory_id, purpose, detail, now=now,
        issuers=ctx.trust.issuers_at(conn, directory_id, directory_version), **fields)
    conn.execute(INSERT_CHALLENGE, row)
    return description


def check_row(used_at: datetime | None, expires_at: datetime, now: datetime) -> None:
    """challenge_used / challenge_expired for a challenge read by any means."""
    if used_at is not None:
        raise ServiceError(Code.CHALLENGE_USED, "This challenge has already been answered.")
    if expires_at <= now:
        raise ServiceError(Code.CHALLENGE_EXPIRED, "This challenge has expired; ask for a new one.")


def spend(conn: Connection, challenge_id: str, now: datetime) -> bool:
    """Mark the challenge used if it is unused and unexpired: True for exactly one caller
    across all processes (one UPDATE on ``conn``)."""
    return bool(conn.execute(CONSUME_CHALLENGE, {"challenge_id": challenge_id, "now": now})
                .rowcount == 1)


def consume(conn: Connection, challenge_id: str, now: datetime) -> None:
    """:func:`spend`, or why not (:func:`refuse_unspent`)."""
    if not spend(conn, challenge_id, now):
        refuse_unspent(conn, challenge_id)


def refuse_unspent(conn: Connection, challenge_id: str) -> NoReturn:
    """Why a challenge could not be spent, read after the attempt: challenge_used, or
    challenge_expired when it expired unanswered."""
    row = conn.execute(CHALLENGE_USED_AT, {"challenge_id": challenge_id}).first()
    if row is not None and row.used_at is None:
        raise ServiceError(Code.CHALLENGE_EXPIRED, "This challenge has expired.")
    raise ServiceError(Code.CHALLENGE_USED, "This challenge has already been answered.")
