"""In-session use of the card (sudo, browsers): a challenge bound to a live session, and its
signed answer turned into an assertion (JWS) verifiable with the JWKS.

Whether the card may be used inside a session is :func:`broker.service.sessions.
in_session_decision` (the same rule that set the session's ``smart_card_redirection``). Both
calls run on SQLAlchemy Core statements (broker/store/statements.py), as the rest of the client
API does; a refusal is audited and counted by :func:`broker.service.attempts.audited`.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Row

from broker import kinds
from broker.codes import Code
from broker.kinds import CertmapRule, Purpose, SessionState
from broker.service import audit, limits
from broker.service.attempts import Attempt, audited
from broker.service.auth import ClientPrincipal
from broker.service.challenges import check_row, consume, insert_challenge
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.registrations import Toggles, code_settings
from broker.service.sessions import (
    bounded_id,
    check_session,
    directory_gone,
    in_session_decision,
    throttles,
)
from broker.service.trust import (
    TrustSnapshot,
    Verified,
    default_algorithm,
    map_user,
    verify_card_response,
)
from broker.service.wire import cert_fingerprint, decode_b64, der_certificate, rfc3339
from broker.store.statements import SESSION_AND_CHALLENGE, SESSION_FOR_IN_SESSION

ASSERTION_TTL = timedelta(minutes=2)


class _InSessionRow(Toggles, Protocol):
    """What :data:`broker.store.statements.SESSION_FOR_IN_SESSION` reads."""

    id: str
    user_id: int
    directory_id: str
    workspace_id: str
    protocol: kinds.Protocol
    state: SessionState
    end_reason: kinds.SessionEndReason | None
    client: dict[str, str] | None
    cert_fingerprint: str | None
    region: str | None
    version: int | None
    os: kinds.WorkSpaceOs | None
    username: str | None


class _InSessionChallengeRow(_InSessionRow, Protocol):
    """:class:`_InSessionRow` with the challenge of :data:`SESSION_AND_CHALLENGE`."""

    challenge_id: str | None
    challenge_purpose: Purpose | None
    challenge_session_id: str | None
    detail: str | None
    to_be_signed: bytes
    used_at: datetime | None
    challenge_expires_at: datetime


def _active_in_session(row: Row[Any] | None, principal: ClientPrincipal) -> _InSessionRow:
    """The caller's live session (read with its directory), else session_unknown (404),
    session_ended, or directory_unknown when its directory went."""
    found = cast(_InSessionRow, check_session(row, principal))
    if found.state == SessionState.ENDED:
        raise ServiceError(Code.SESSION_ENDED, "This session has ended.",
                           {"reason": found.end_reason})
    if found.version is None:
        raise directory_gone()
    return found


def in_session_challenge(ctx: BrokerContext, principal: ClientPrincipal, session_id: str,
                         purpose: str, address: str | None) -> dict[str, Any]:
    """POST /v1/sessions/{id}/in-session/challenges.

    One write transaction on Core: the throttle counters, the session with its directory and
    WorkSpace, the challenge, its audit event."""
    attempt = Attempt("in_session.challenge", address, directory_id=principal.directory_id,
                      details={"purpose": purpose})

    def issue(conn: Connection) -> dict[str, Any]:
        now = ctx.now()
        lim = ctx.settings.login
        limits.hit_many(conn, throttles(
            "isc", principal, address, lim.in_session_challenges_per_token_per_minute,
            lim.in_session_challenges_per_address_per_minute), 60, now)
        row = _active_in_session(conn.execute(SESSION_FOR_IN_SESSION, {
            "session_id": bounded_id(session_id)}).first(), principal)
        assert row.region is not None and row.version is not None
        decision = in_session_decision(ctx, row.region, code_settings(row), row.protocol,
                                       row.client, row.os, purpose)
        if not decision.allowed:
            reasons = [r.value for r in decision.reasons]
            raise ServiceError(Code.IN_SESSION_NOT_ALLOWED,
                               "In-session smart-card use is not allowed for this session: "
                               + ", ".join(reasons), {"reasons": reasons})
        body = insert_challenge(ctx, conn, row.directory_id, row.version,
                                Purpose.IN_SESSION, purpose, now=now, address=address,
                                cert_fingerprint=row.cert_fingerprint, session_id=row.id)
        audit.insert(conn, "in_session.challenge", "success", directory_id=row.directory_id,
                     session_id=row.id, purpose=purpose, challenge_id=body["challenge_id"])
        return body

    return audited(ctx, attempt, lambda: ctx.db.run(issue, name="in_session_challenge"))


def in_session_response(ctx: BrokerContext, principal: ClientPrincipal, session_id: str,
                        challenge_id: str, signature_b64: str, algorithm: str | None,
                        certificate_b64: str | None, chain_b64: list[str],
                        address: str | None) -> dict[str, Any]:
    """POST /v1/sessions/{id}/in-session/challenges/{cid}/response → {assertion (JWS)}.

    On Core: one read (the session with its directory and the challenge), the verification
    outside any transaction, then one write transaction (the session again, the user the
    certificate maps to, the single-use consume, the assertion, its audit event)."""
    attempt = Attempt("in_session.auth", address, challenge_id=challenge_id,
                      directory_id=principal.directory_id)

    def read_challenge(conn: Connection, cert_der: bytes | None
                       ) -> tuple[bytes, bytes, TrustSnapshot, str | None]:
        now = ctx.now()
        row = cast(_InSessionChallengeRow, _active_in_session(conn.execute(
            SESSION_AND_CHALLENGE, {"session_id": bounded_id(session_id),
                                    "challenge_id": bounded_id(challenge_id)}).first(), principal))
        if row.challenge_id is None:
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "There is no such challenge.")
        check_row(row.used_at, row.challenge_expires_at, now)
        if row.challenge_purpose != Purpose.IN_SESSION or row.challenge_session_id != row.id:
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "This is not a challenge of this session.")
        if row.detail:
            attempt.details["purpose"] = row.detail
        if cert_der is None:
            cert_der = principal.cert_der if principal.cert_fingerprint == row.cert_fingerprint \
                else None
        if cert_der is None:
            raise ServiceError(Code.CERTIFICATE_MALFORMED, "Send the certificate to verify with.")
        if row.cert_fingerprint and cert_fingerprint(cert_der) != row.cert_fingerprint:
            raise ServiceError(Code.CERTIFICATE_MISMATCH, "Sign with the certificate of the login.")
        assert row.version is not None
        return (row.to_be_signed, cert_der,
                ctx.trust.snapshot_at(conn, row.directory_id, row.version), row.detail)

    def assert_user(conn: Connection, verified: Verified, certmap: tuple[CertmapRule, ...],
                    detail: str | None) -> dict[str, Any]:
        now = ctx.now()
        row = _active_in_session(conn.execute(SESSION_FOR_IN_SESSION, {
            "session_id": bounded_id(session_id)}).first(), principal)
        if row.username is None:
            raise ServiceError(Code.USER_NOT_FOUND, "The user of this session no longer exists.")
        mapped = map_user(conn, row.directory_id, verified.identity, certmap)
        if mapped.id != row.user_id:
            raise ServiceError(Code.CERTIFICATE_MISMATCH, "This certificate belongs to another "
                                                       "user.", {"rule": mapped.rule})
        consume(conn, challenge_id, now)
        claims = {"iss": ctx.settings.server.broker_id, "aud": f"in-session:{detail}",
                  "sub": row.username, "sid": row.id, "dir": row.directory_id,
                  "ws": row.workspace_id, "purpose": detail, "iat": int(now.timestamp()),
                  "exp": int((now + ASSERTION_TTL).timestamp()),
                  "cnf": {"x5t#S256": base64.urlsafe_b64encode(
                      bytes.fromhex(verified.fingerprint)).rstrip(b"=").decode()},
                  "jti": secrets.token_urlsafe(12)}
        assertion = ctx.keyring.sign(conn, claims, now)
        audit.insert(conn, "in_session.auth", "success", directory_id=row.directory_id,
                     username=row.username, cert_fingerprint=verified.fingerprint,
                     session_id=row.id, purpose=detail, client_address=address,
                     certmap_rule=mapped.rule)
        return {"assertion": assertion, "expires_at": rfc3339(now + ASSERTION_TTL),
                "purpose": detail}

    def run() -> dict[str, Any]:
        given = der_certificate(certificate_b64) if certificate_b64 else None
        chain = [der_certificate(c, "chain certificate") for c in chain_b64]
        signature = decode_b64(signature_b64, "signature_invalid", "signature")
        tbs, cert_der, snap, detail = ctx.db.run(lambda c: read_challenge(c, given),
                                                 read_only=True, name="in_session_read")
        attempt.fingerprint = cert_fingerprint(cert_der)
        verified = verify_card_response(ctx, snap, tbs, cert_der, chain, signature,
                                        algorithm or default_algorithm(cert_der),
                                        on_key_proven=attempt.prove_key)
        return ctx.db.run(lambda c: assert_user(c, verified, snap.certmap, detail),
                          name="in_session_assert")

    return audited(ctx, attempt, run)


