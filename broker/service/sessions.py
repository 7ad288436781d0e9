"""WorkSpace sessions: connect, the second PIN at "Starting WorkSpace", heartbeats, in-session.

* ``connect``: an AVAILABLE WorkSpace gets a session at once. A STOPPED one is started and the
  answer is STARTING with a *logon challenge* that the user signs after entering the PIN again;
  ``logon`` verifies that signature (same certificate as the login, same chain and revocation
  checks) and, once the WorkSpace is AVAILABLE, consumes the challenge and opens the session.
  While it is still starting, ``logon`` answers workspace_not_ready and changes nothing, so the
  client can poll with the same signature.
* One active session per WorkSpace: a new session takes over and the old one is told
  ``disconnect`` on its next heartbeat.
* Card removal applies the directory's removal_action (none | lock | disconnect); a session
  without heartbeats for ``sessions.heartbeat_timeout_s`` is ended by the sweeper.
* In-session authentication (sudo, browsers) inside WSP sessions where region and directory
  allow it returns a signed assertion (JWS) verifiable with the JWKS.
* Every call names a session or WorkSpace and receives the caller's :class:`ClientPrincipal`
  (the web layer resolved the auth token first): anything the token's user does not own is
  ``session_unknown`` / ``workspace_unknown`` (404), never revealed. Ending a session does not
  end the login's auth token (the user may connect again); an expired or revoked auth token
  stops every call on its sessions, so their heartbeats stop and the sweeper ends them.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession

from broker import policy
from broker.codes import Code
from broker.kinds import LIVE_SESSION_STATES, WorkSpaceState
from broker.service import audit
from broker.service.attempts import Attempt, audited
from broker.service.auth import ClientPrincipal
from broker.service.challenges import check_challenge, consume_challenge, create_challenge
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.registrations import directory_settings
from broker.service.tickets import TICKET_AUDIENCE
from broker.service.trust import (
    TrustSnapshot,
    Verified,
    default_algorithm,
    map_user,
    verify_card_response,
)
from broker.service.wire import cert_fingerprint, decode_b64, der_certificate, rfc3339
from broker.store.models import Challenge, Directory, Session, User, WorkSpace
from broker.workspaces.backend import backend_from_settings

ASSERTION_TTL = timedelta(minutes=2)
MAX_ID = 64


def _owned_workspace(session: DbSession, principal: ClientPrincipal,
                     workspace_id: str) -> WorkSpace:
    ws = session.get(WorkSpace, workspace_id) if len(workspace_id) <= MAX_ID else None
    if ws is None or ws.directory_id != principal.directory_id:
        raise ServiceError(Code.WORKSPACE_UNKNOWN, "There is no such WorkSpace.")
    if ws.user_id != principal.user_id:
        raise ServiceError(Code.WORKSPACE_NOT_YOURS, "This WorkSpace belongs to another user.")
    if principal.method == "smart_card" and ws.protocol != "WSP":
        raise ServiceError(Code.SMART_CARD_REQUIRES_WSP,
                           "Smart cards work only with WorkSpaces streamed over WSP; this "
                           "WorkSpace uses PCoIP.")
    return ws


def _owned_session(session: DbSession, principal: ClientPrincipal, session_id: str) -> Session:
    """The session if the caller's user owns it; session_unknown (404) otherwise."""
    row = session.get(Session, session_id) if len(session_id) <= MAX_ID else None
    if row is None or row.user_id != principal.user_id \
            or row.directory_id != principal.directory_id:
        raise ServiceError(Code.SESSION_UNKNOWN, "There is no such session.")
    return row


def _active_session(session: DbSession, principal: ClientPrincipal, session_id: str) -> Session:
    row = _owned_session(session, principal, session_id)
    if row.state == "ended":
        raise ServiceError(Code.SESSION_ENDED, "This session has ended.",
                           {"reason": row.end_reason})
    return row


def _redirection_allowed(ctx: BrokerContext, d: Directory, protocol: str) -> bool:
    decision = policy.decide_smart_card(
        ctx.catalogue.get(d.region), directory_settings(d), policy.Purpose.IN_SESSION,
        protocol=policy.Protocol.WSP if protocol == "WSP" else policy.Protocol.PCOIP)
    return decision.allowed


def _directory(session: DbSession, directory_id: str) -> Directory:
    d = session.get(Directory, directory_id)
    if d is None:  # deleted while the call ran
        raise ServiceError(Code.DIRECTORY_UNKNOWN, "The directory no longer exists.")
    return d


def _open_session(ctx: BrokerContext, session: DbSession, principal: ClientPrincipal,
                  ws: WorkSpace, now: datetime, address: str | None) -> dict[str, Any]:
    d = _directory(session, ws.directory_id)
    user = session.get(User, principal.user_id)
    if user is None:
        raise ServiceError(Code.USER_NOT_FOUND, "The user of this login no longer exists.")
    # One active session per WorkSpace: earlier ones are told to disconnect.
    session.execute(update(Session).where(Session.workspace_id == ws.id,
                                          Session.state.in_(LIVE_SESSION_STATES))
                    .values(state="ended", end_reason="taken_over", ended_at=now,
                            pending_action="disconnect")
                    .execution_options(synchronize_session=False))
    sid = secrets.token_urlsafe(24)
    expires = now + timedelta(seconds=ctx.settings.login.ticket_ttl_s)
    redirection = principal.method == "smart_card" and _redirection_allowed(ctx, d, ws.protocol)
    host, port = backend_from_settings(ctx.settings).endpoint(ws)
    gateway = {"host": host, "port": port, "protocol": ws.protocol}
    session.add(Session(id=sid, workspace_id=ws.id, user_id=user.id, directory_id=d.id,
                        auth_method=principal.method,
                        cert_fingerprint=principal.cert_fingerprint, protocol=ws.protocol,
                        state="active", smart_card_redirection=redirection,
                        last_heartbeat_at=now, expires_at=expires, created_at=now))
    ws.last_activity_at = now
    claims = {"iss": ctx.settings.server.broker_id, "aud": TICKET_AUDIENCE, "sub": user.username,
              "sid": sid, "dir": d.id, "ws": ws.id, "proto": ws.protocol, "gw": gateway,
              "scr": redirection, "amr": [principal.method], "iat": int(now.timestamp()),
              "exp": int(expires.timestamp()), "jti": secrets.token_urlsafe(12)}
    ticket = ctx.keyring.sign(session, claims, now)
    audit.record(session, "session.open", "success", directory_id=d.id, username=user.username,
                 client_address=address, cert_fingerprint=principal.cert_fingerprint,
                 session_id=sid, workspace_id=ws.id, protocol=ws.protocol)
    return {"id": sid, "ticket": ticket, "gateway": gateway,
            "expires_at": rfc3339(expires), "smart_card_redirection": redirection,
            "workspace_id": ws.id}


def connect(ctx: BrokerContext, principal: ClientPrincipal, workspace_id: str,
            address: str | None) -> tuple[int, dict[str, Any]]:
    """POST /v1/workspaces/{id}/connect → (201, {session}) or (202, {state, logon_challenge})."""
    backend = backend_from_settings(ctx.settings)

    def start_or_open(session: DbSession) -> tuple[int, dict[str, Any]]:
        now = ctx.now()
        ws = _owned_workspace(session, principal, workspace_id)
        backend.refresh(ws, now)
        state = WorkSpaceState(ws.state)
        if state == WorkSpaceState.AVAILABLE:
            return 201, {"session": _open_session(ctx, session, principal, ws, now, address)}
        if state not in (WorkSpaceState.STOPPED, WorkSpaceState.STARTING):
            raise ServiceError(Code.WORKSPACE_UNAVAILABLE,
                               f"The WorkSpace is {state.value}; it cannot be connected to now.",
                               {"state": state.value})
        if state == WorkSpaceState.STOPPED:
            backend.start(ws, now)
            audit.record(session, "workspace.start", "change", directory_id=ws.directory_id,
                         actor=f"user:{principal.user_id}", workspace_id=ws.id)
        body: dict[str, Any] = {"state": ws.state, "workspace_id": ws.id}
        if ws.state == WorkSpaceState.AVAILABLE:
            return 201, {"session": _open_session(ctx, session, principal, ws, now, address)}
        if principal.method == "smart_card":
            ch = create_challenge(
                ctx, session, ws.directory_id, "logon", now=now, address=address,
                cert_fingerprint=principal.cert_fingerprint, workspace_id=ws.id,
                auth_token_id=principal.token_id)
            # The start can outlast a normal challenge: give the PIN its full TTL after it.
            if ws.transition_due_at is not None:
                due = ws.transition_due_at + timedelta(seconds=ctx.settings.login.challenge_ttl_s)
                row = session.get(Challenge, ch["challenge_id"])
                if row is not None and due > row.expires_at:
                    row.expires_at = due
                    ch["expires_at"] = rfc3339(due)
            body["logon_challenge"] = ch
        return 202, body

    return ctx.db.transaction(start_or_open)


def logon(ctx: BrokerContext, principal: ClientPrincipal, workspace_id: str, challenge_id: str,
          signature_b64: str, algorithm: str | None, address: str | None) -> dict[str, Any]:
    """POST /v1/workspaces/{id}/logon: the second signature, then the session."""
    backend = backend_from_settings(ctx.settings)
    attempt = Attempt("logon.smart_card", address, challenge_id=challenge_id,
                      directory_id=principal.directory_id,
                      fingerprint=principal.cert_fingerprint)

    def read_challenge(session: DbSession) -> tuple[bytes, TrustSnapshot]:
        now = ctx.now()
        ws = _owned_workspace(session, principal, workspace_id)
        ch = check_challenge(session, challenge_id, now)
        if ch.purpose != "logon" or ch.workspace_id != ws.id \
                or ch.auth_token_id != principal.token_id:
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "This is not a logon challenge for this "
                                                    "WorkSpace and login.")
        return ch.to_be_signed, ctx.trust.snapshot(session, _directory(session, ws.directory_id))

    def open_session(session: DbSession) -> dict[str, Any]:
        now = ctx.now()
        ws = _owned_workspace(session, principal, workspace_id)
        backend.refresh(ws, now)
        if ws.state != WorkSpaceState.AVAILABLE:
            if ws.state in (WorkSpaceState.STARTING, WorkSpaceState.PENDING):
                raise ServiceError(Code.WORKSPACE_NOT_READY, "The WorkSpace is still starting; "
                                   "try again in a moment.", {"state": ws.state})
            raise ServiceError(Code.WORKSPACE_UNAVAILABLE, f"The WorkSpace is {ws.state}.",
                               {"state": ws.state})
        consume_challenge(session, challenge_id, now)
        audit.record(session, "logon.smart_card", "success", directory_id=ws.directory_id,
                     client_address=address, cert_fingerprint=principal.cert_fingerprint,
                     challenge_id=challenge_id, workspace_id=ws.id)
        return {"session": _open_session(ctx, session, principal, ws, now, address)}

    def run() -> dict[str, Any]:
        cert_der = principal.cert_der
        if cert_der is None:
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "This login did not use a smart card.")
        signature = decode_b64(signature_b64, "signature_invalid", "signature")
        tbs, snap = ctx.db.read(read_challenge)
        verify_card_response(ctx, snap, tbs, cert_der, [], signature,
                             algorithm or default_algorithm(cert_der),
                             on_key_proven=attempt.prove_key)
        return ctx.db.transaction(open_session)

    return audited(ctx, attempt, run, quiet=frozenset({Code.WORKSPACE_NOT_READY}))


def heartbeat(ctx: BrokerContext, principal: ClientPrincipal, session_id: str,
              card_present: bool) -> dict[str, Any]:
    """POST /v1/sessions/{id}/heartbeat → {"action": "none" | "lock" | "disconnect"}."""

    def beat(session: DbSession) -> dict[str, Any]:
        now = ctx.now()
        row = _owned_session(session, principal, session_id)
        if row.pending_action:
            action, row.pending_action = row.pending_action, None
            if action == "disconnect" and row.state != "ended":
                row.state, row.ended_at, row.end_reason = "ended", now, "disconnected"
            return {"action": action, "reason": row.end_reason}
        if row.state == "ended":
            raise ServiceError(Code.SESSION_ENDED, "This session has ended.",
                               {"reason": row.end_reason})
        row.last_heartbeat_at = now
        ws = session.get(WorkSpace, row.workspace_id)
        if ws is not None:
            ws.last_activity_at = now
        if row.auth_method != "smart_card":
            return {"action": "none"}
        if card_present:
            if row.state == "locked":
                row.state = "active"
            return {"action": "none"}
        d = session.get(Directory, row.directory_id)
        action = d.removal_action if d is not None else "lock"
        if action == "lock":
            if row.state != "locked":
                row.state = "locked"
                audit.record(session, "session.card_removed", "change",
                             directory_id=row.directory_id, session_id=row.id, action="lock")
        elif action == "disconnect":
            row.state, row.ended_at, row.end_reason = "ended", now, "card_removed"
            audit.record(session, "session.card_removed", "change",
                         directory_id=row.directory_id, session_id=row.id, action="disconnect")
        return {"action": action}

    return ctx.db.transaction(beat)


def end_session(ctx: BrokerContext, principal: ClientPrincipal, session_id: str,
                reason: str = "client") -> None:
    """DELETE /v1/sessions/{id}: ends the session (the login's auth token stays valid)."""

    def end(session: DbSession) -> None:
        row = _owned_session(session, principal, session_id)
        if row.state != "ended":
            row.state, row.ended_at, row.end_reason = "ended", ctx.now(), reason
            audit.record(session, "session.end", "change", directory_id=row.directory_id,
                         session_id=row.id, reason=reason)

    ctx.db.transaction(end)


def in_session_challenge(ctx: BrokerContext, principal: ClientPrincipal, session_id: str,
                         purpose: str, address: str | None) -> dict[str, Any]:
    """POST /v1/sessions/{id}/in-session/challenges."""
    attempt = Attempt("in_session.challenge", address, directory_id=principal.directory_id,
                      details={"purpose": purpose})

    def issue(session: DbSession) -> dict[str, Any]:
        now = ctx.now()
        row = _active_session(session, principal, session_id)
        d = _directory(session, row.directory_id)
        decision = policy.decide_smart_card(
            ctx.catalogue.get(d.region), directory_settings(d), policy.Purpose.IN_SESSION,
            protocol=policy.Protocol.WSP if row.protocol == "WSP" else policy.Protocol.PCOIP)
        if not decision.allowed:
            reasons = [r.value for r in decision.reasons]
            raise ServiceError(Code.IN_SESSION_NOT_ALLOWED,
                               "In-session smart-card use is not allowed for this session: "
                               + ", ".join(reasons), {"reasons": reasons})
        body = create_challenge(ctx, session, d.id, "in_session", purpose, now=now,
                                address=address, cert_fingerprint=row.cert_fingerprint,
                                session_id=row.id)
        audit.record(session, "in_session.challenge", "success", directory_id=d.id,
                     session_id=row.id, purpose=purpose, challenge_id=body["challenge_id"])
        return body

    return audited(ctx, attempt, lambda: ctx.db.transaction(issue))


def in_session_response(ctx: BrokerContext, principal: ClientPrincipal, session_id: str,
                        challenge_id: str, signature_b64: str, algorithm: str | None,
                        certificate_b64: str | None, chain_b64: list[str],
                        address: str | None) -> dict[str, Any]:
    """POST /v1/sessions/{id}/in-session/challenges/{cid}/response → {assertion (JWS)}."""
    attempt = Attempt("in_session.auth", address, challenge_id=challenge_id,
                      directory_id=principal.directory_id)

    def read_challenge(session: DbSession,
                       cert_der: bytes | None) -> tuple[bytes, bytes, TrustSnapshot, str | None]:
        now = ctx.now()
        row = _active_session(session, principal, session_id)
        ch = check_challenge(session, challenge_id, now)
        if ch.purpose != "in_session" or ch.session_id != row.id:
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "This is not a challenge of this session.")
        if ch.detail:
            attempt.details["purpose"] = ch.detail
        if cert_der is None:
            cert_der = principal.cert_der if principal.cert_fingerprint == row.cert_fingerprint \
                else None
        if cert_der is None:
            raise ServiceError(Code.CERTIFICATE_MALFORMED, "Send the certificate to verify with.")
        if row.cert_fingerprint and cert_fingerprint(cert_der) != row.cert_fingerprint:
            raise ServiceError(Code.CERTIFICATE_MISMATCH, "Sign with the certificate of the login.")
        return ch.to_be_signed, cert_der, ctx.trust.snapshot(
            session, _directory(session, row.directory_id)), \
            ch.detail

    def assert_user(session: DbSession, verified: Verified, certmap: tuple[str, ...],
                    detail: str | None) -> dict[str, Any]:
        now = ctx.now()
        row = _active_session(session, principal, session_id)
        user = session.get(User, row.user_id)
        if user is None:
            raise ServiceError(Code.USER_NOT_FOUND, "The user of this session no longer exists.")
        mapped = map_user(session.connection(), row.directory_id, verified.identity, certmap)
        if mapped.id != user.id:
            raise ServiceError(Code.CERTIFICATE_MISMATCH, "This certificate belongs to another "
                                                       "user.")
        consume_challenge(session, challenge_id, now)
        claims = {"iss": ctx.settings.server.broker_id, "aud": f"in-session:{detail}",
                  "sub": user.username, "sid": row.id, "dir": row.directory_id,
                  "ws": row.workspace_id, "purpose": detail, "iat": int(now.timestamp()),
                  "exp": int((now + ASSERTION_TTL).timestamp()),
                  "cnf": {"x5t#S256": base64.urlsafe_b64encode(
                      bytes.fromhex(verified.fingerprint)).rstrip(b"=").decode()},
                  "jti": secrets.token_urlsafe(12)}
        assertion = ctx.keyring.sign(session, claims, now)
        audit.record(session, "in_session.auth", "success", directory_id=row.directory_id,
                     username=user.username, cert_fingerprint=verified.fingerprint,
                     session_id=row.id, purpose=detail, client_address=address)
        return {"assertion": assertion, "expires_at": rfc3339(now + ASSERTION_TTL),
                "purpose": detail}

    def run() -> dict[str, Any]:
        given = der_certificate(certificate_b64) if certificate_b64 else None
        chain = [der_certificate(c, "chain certificate") for c in chain_b64]
        signature = decode_b64(signature_b64, "signature_invalid", "signature")
        tbs, cert_der, snap, detail = ctx.db.read(lambda s: read_challenge(s, given))
        attempt.fingerprint = cert_fingerprint(cert_der)
        verified = verify_card_response(ctx, snap, tbs, cert_der, chain, signature,
                                        algorithm or default_algorithm(cert_der),
                                        on_key_proven=attempt.prove_key)
        return ctx.db.transaction(lambda s: assert_user(s, verified, snap.certmap, detail))

    return audited(ctx, attempt, run)


# --------------------------------------------------------------------------- sweeps

def sweep_workspaces(ctx: BrokerContext) -> int:
    """Complete due transitions; stop idle AUTO_STOP WorkSpaces that have no session."""
    backend = backend_from_settings(ctx.settings)
    idle = timedelta(seconds=ctx.settings.workspaces.auto_stop_idle_s)

    def complete_and_stop(session: DbSession) -> int:
        now = ctx.now()
        changed = 0
        for ws in session.scalars(select(WorkSpace).where(
                WorkSpace.transition_due_at.is_not(None), WorkSpace.transition_due_at <= now)
                .with_for_update(skip_locked=True)):
            changed += backend.refresh(ws, now)
        busy = select(Session.workspace_id).where(Session.state.in_(LIVE_SESSION_STATES))
        for ws in session.scalars(select(WorkSpace).where(
                WorkSpace.running_mode == "AUTO_STOP", WorkSpace.state == "AVAILABLE",
                WorkSpace.last_activity_at < now - idle, WorkSpace.id.not_in(busy))
                .with_for_update(skip_locked=True)):
            backend.stop(ws, now)
            audit.record(session, "workspace.auto_stop", "change",
                         directory_id=ws.directory_id, workspace_id=ws.id)
            changed += 1
        return changed

    return ctx.db.transaction(complete_and_stop)


def sweep_sessions(ctx: BrokerContext) -> int:
    """End sessions whose heartbeats stopped."""
    timeout = timedelta(seconds=ctx.settings.sessions.heartbeat_timeout_s)

    def end_stale(session: DbSession) -> int:
        now = ctx.now()
        stale = list(session.scalars(select(Session).where(
            Session.state.in_(LIVE_SESSION_STATES),
            Session.last_heartbeat_at < now - timeout).with_for_update(skip_locked=True)))
        for row in stale:
            row.state, row.ended_at, row.end_reason = "ended", now, "heartbeat_timeout"
            audit.record(session, "session.end", "change", directory_id=row.directory_id,
                         session_id=row.id, reason="heartbeat_timeout")
        return len(stale)

    return ctx.db.transaction(end_stale)
