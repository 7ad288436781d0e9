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
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession

from broker import policy
from broker.errors import BrokerError
from broker.service import audit, login
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.registrations import directory_settings
from broker.service.tickets import TICKET_AUDIENCE, KeyRing
from broker.service.tokens import token_hash
from broker.store.models import AuthToken, Challenge, Directory, Session, User, WorkSpace
from broker.workspaces.backend import WorkSpaceState, backend_from_settings

ASSERTION_TTL = timedelta(minutes=2)


def keyring(ctx: BrokerContext) -> KeyRing:
    ring = getattr(ctx, "_keyring", None)
    if ring is None:
        s = ctx.settings
        ring = KeyRing(timedelta(days=s.sessions.signing_key_rotation_days),
                       timedelta(seconds=max(s.login.ticket_ttl_s, 600)))
        ctx._keyring = ring  # type: ignore[attr-defined]
    return ring


def authenticate(session: DbSession, bearer: str | None, now: datetime) -> AuthToken:
    if not bearer:
        raise ServiceError("auth_required", "This call needs the auth token from login "
                                            "(Authorization: Bearer …).")
    row = session.scalar(select(AuthToken).where(AuthToken.token_hash == token_hash(bearer)))
    if row is None or row.revoked_at is not None:
        raise ServiceError("auth_token_invalid", "The auth token is not valid; log in again.")
    if row.expires_at <= now:
        raise ServiceError("auth_token_expired", "The auth token has expired; log in again.")
    return row


def _owned_workspace(session: DbSession, token: AuthToken, workspace_id: str) -> WorkSpace:
    ws = session.get(WorkSpace, workspace_id) if len(workspace_id) <= 64 else None
    if ws is None or ws.directory_id != token.directory_id:
        raise ServiceError("workspace_unknown", "There is no such WorkSpace.")
    if ws.user_id != token.user_id:
        raise ServiceError("workspace_not_yours", "This WorkSpace belongs to another user.")
    if token.method == "smart_card" and ws.protocol != "WSP":
        raise ServiceError("smart_card_requires_wsp",
                           "Smart cards work only with WorkSpaces streamed over WSP; this "
                           "WorkSpace uses PCoIP.")
    return ws


def _redirection_allowed(ctx: BrokerContext, d: Directory, protocol: str) -> bool:
    decision = policy.decide_smart_card(
        ctx.catalogue.get(d.region), directory_settings(d), policy.Purpose.IN_SESSION,
        protocol=policy.Protocol.WSP if protocol == "WSP" else policy.Protocol.PCOIP)
    return decision.allowed


def _open_session(ctx: BrokerContext, session: DbSession, token: AuthToken, ws: WorkSpace,
                  now: datetime, address: str | None) -> dict[str, Any]:
    d = session.get(Directory, ws.directory_id)
    user = session.get(User, token.user_id)
    assert d is not None and user is not None
    # One active session per WorkSpace: earlier ones are told to disconnect.
    session.execute(update(Session).where(Session.workspace_id == ws.id,
                                          Session.state.in_(("active", "locked")))
                    .values(state="ended", end_reason="taken_over", ended_at=now,
                            pending_action="disconnect")
                    .execution_options(synchronize_session=False))
    sid = secrets.token_urlsafe(24)
    expires = now + timedelta(seconds=ctx.settings.login.ticket_ttl_s)
    redirection = token.method == "smart_card" and _redirection_allowed(ctx, d, ws.protocol)
    host, port = backend_from_settings(ctx.settings).endpoint(ws)
    gateway = {"host": host, "port": port, "protocol": ws.protocol}
    session.add(Session(id=sid, workspace_id=ws.id, user_id=user.id, directory_id=d.id,
                        auth_method=token.method, cert_fingerprint=token.cert_fingerprint,
                        protocol=ws.protocol, state="active", smart_card_redirection=redirection,
                        last_heartbeat_at=now, expires_at=expires, created_at=now))
    ws.last_activity_at = now
    claims = {"iss": ctx.settings.server.broker_id, "aud": TICKET_AUDIENCE, "sub": user.username,
              "sid": sid, "dir": d.id, "ws": ws.id, "proto": ws.protocol, "gw": gateway,
              "scr": redirection, "amr": [token.method], "iat": int(now.timestamp()),
              "exp": int(expires.timestamp()), "jti": secrets.token_urlsafe(12)}
    ticket = keyring(ctx).sign(session, claims, now)
    audit.record(session, "session.open", "success", directory_id=d.id, username=user.username,
                 client_address=address, cert_fingerprint=token.cert_fingerprint,
                 session_id=sid, workspace_id=ws.id, protocol=ws.protocol)
    return {"id": sid, "ticket": ticket, "gateway": gateway,
            "expires_at": login.rfc3339(expires), "smart_card_redirection": redirection,
            "workspace_id": ws.id}


def connect(ctx: BrokerContext, bearer: str | None, workspace_id: str,
            address: str | None) -> tuple[int, dict[str, Any]]:
    """POST /v1/workspaces/{id}/connect → (201, {session}) or (202, {state, logon_challenge})."""
    backend = backend_from_settings(ctx.settings)

    def work(session: DbSession) -> tuple[int, dict[str, Any]]:
        now = ctx.now()
        token = authenticate(session, bearer, now)
        ws = _owned_workspace(session, token, workspace_id)
        backend.refresh(ws, now)
        state = WorkSpaceState(ws.state)
        if state == WorkSpaceState.AVAILABLE:
            return 201, {"session": _open_session(ctx, session, token, ws, now, address)}
        if state in (WorkSpaceState.STOPPED, WorkSpaceState.STARTING):
            if state == WorkSpaceState.STOPPED:
                backend.start(ws, now)
                audit.record(session, "workspace.start", "change", directory_id=ws.directory_id,
                             actor=f"user:{token.user_id}", workspace_id=ws.id)
            body: dict[str, Any] = {"state": ws.state, "workspace_id": ws.id}
            if ws.state == WorkSpaceState.AVAILABLE:
                return 201, {"session": _open_session(ctx, session, token, ws, now, address)}
            if token.method == "smart_card":
                ch = login.create_challenge(
                    ctx, session, ws.directory_id, "logon", now=now, address=address,
                    cert_fingerprint=token.cert_fingerprint, workspace_id=ws.id,
                    auth_token_id=token.id)
                # The start can outlast a normal challenge: give the PIN its full TTL after it.
                row = session.get(Challenge, ch["challenge_id"])
                assert row is not None
                if ws.transition_due_at is not None:
                    row.expires_at = max(row.expires_at, ws.transition_due_at + timedelta(
                        seconds=ctx.settings.login.challenge_ttl_s))
                ch["expires_at"] = login.rfc3339(row.expires_at)
                body["logon_challenge"] = ch
            return 202, body
        raise ServiceError("workspace_unavailable",
                           f"The WorkSpace is {state.value}; it cannot be connected to now.",
                           {"state": state.value})

    return ctx.db.transaction(work)


def logon(ctx: BrokerContext, bearer: str | None, workspace_id: str, challenge_id: str,
          signature_b64: str, algorithm: str | None, address: str | None) -> dict[str, Any]:
    """POST /v1/workspaces/{id}/logon: the second signature, then the session."""
    backend = backend_from_settings(ctx.settings)
    state: dict[str, Any] = {}

    def load(session: DbSession) -> tuple[bytes, bytes, login.TrustSnapshot]:
        now = ctx.now()
        token = authenticate(session, bearer, now)
        state["directory_id"] = token.directory_id
        ws = _owned_workspace(session, token, workspace_id)
        ch = login.check_challenge(session, challenge_id, now)
        if ch.purpose != "logon" or ch.workspace_id != ws.id or ch.auth_token_id != token.id:
            raise ServiceError("challenge_unknown", "This is not a logon challenge for this "
                                                    "WorkSpace and login.")
        if token.cert_der is None:
            raise ServiceError("challenge_unknown", "This login did not use a smart card.")
        state["fingerprint"] = token.cert_fingerprint
        d = session.get(Directory, ws.directory_id)
        assert d is not None
        return ch.to_be_signed, token.cert_der, login.load_trust(session, d, with_users=False)

    def finish(session: DbSession) -> dict[str, Any]:
        now = ctx.now()
        token = authenticate(session, bearer, now)
        ws = _owned_workspace(session, token, workspace_id)
        backend.refresh(ws, now)
        if ws.state != WorkSpaceState.AVAILABLE:
            if ws.state in (WorkSpaceState.STARTING, WorkSpaceState.PENDING):
                raise ServiceError("workspace_not_ready", "The WorkSpace is still starting; "
                                   "try again in a moment.", {"state": ws.state})
            raise ServiceError("workspace_unavailable", f"The WorkSpace is {ws.state}.",
                               {"state": ws.state})
        login.consume_challenge(session, challenge_id, now)
        audit.record(session, "logon.smart_card", "success", directory_id=ws.directory_id,
                     client_address=address, cert_fingerprint=token.cert_fingerprint,
                     challenge_id=challenge_id, workspace_id=ws.id)
        return {"session": _open_session(ctx, session, token, ws, now, address)}

    try:
        signature = login.decode_b64(signature_b64, "signature_invalid", "signature")
        tbs, cert_der, snap = ctx.db.transaction(load)
        alg = algorithm or _default_algorithm(cert_der)
        login.verify_card_response(ctx, snap, tbs, cert_der, [], signature, alg, map_user=False)
        return ctx.db.transaction(finish)
    except BrokerError as exc:
        if exc.code != "workspace_not_ready":
            login._record_refusal(ctx, "logon.smart_card", exc, state, address, challenge_id)
        raise


def _default_algorithm(cert_der: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    key = x509.load_der_x509_certificate(cert_der).public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa-sha384" if key.curve.key_size >= 384 else "ecdsa-sha256"
    return "rsa-pkcs1-sha256"


def _live_session(session: DbSession, session_id: str) -> Session:
    row = session.get(Session, session_id) if len(session_id) <= 64 else None
    if row is None:
        raise ServiceError("session_unknown", "There is no such session.")
    return row


def heartbeat(ctx: BrokerContext, session_id: str, card_present: bool) -> dict[str, Any]:
    """POST /v1/sessions/{id}/heartbeat → {"action": "none" | "lock" | "disconnect"}."""

    def work(session: DbSession) -> dict[str, Any]:
        now = ctx.now()
        row = _live_session(session, session_id)
        if row.pending_action:
            action, row.pending_action = row.pending_action, None
            if action == "disconnect" and row.state != "ended":
                row.state, row.ended_at, row.end_reason = "ended", now, "disconnected"
            return {"action": action, "reason": row.end_reason}
        if row.state == "ended":
            raise ServiceError("session_ended", "This session has ended.",
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

    return ctx.db.transaction(work)


def end_session(ctx: BrokerContext, session_id: str, reason: str = "client") -> None:
    """DELETE /v1/sessions/{id}."""

    def work(session: DbSession) -> None:
        row = _live_session(session, session_id)
        if row.state != "ended":
            row.state, row.ended_at, row.end_reason = "ended", ctx.now(), reason
            audit.record(session, "session.end", "change", directory_id=row.directory_id,
                         session_id=row.id, reason=reason)

    ctx.db.transaction(work)


def _active_session(session: DbSession, session_id: str) -> Session:
    row = _live_session(session, session_id)
    if row.state == "ended":
        raise ServiceError("session_ended", "This session has ended.", {"reason": row.end_reason})
    return row


def in_session_challenge(ctx: BrokerContext, session_id: str, purpose: str,
                         address: str | None) -> dict[str, Any]:
    """POST /v1/sessions/{id}/in-session/challenges."""

    def work(session: DbSession) -> dict[str, Any]:
        now = ctx.now()
        row = _active_session(session, session_id)
        d = session.get(Directory, row.directory_id)
        assert d is not None
        decision = policy.decide_smart_card(
            ctx.catalogue.get(d.region), directory_settings(d), policy.Purpose.IN_SESSION,
            protocol=policy.Protocol.WSP if row.protocol == "WSP" else policy.Protocol.PCOIP)
        if not decision.allowed:
            reasons = [r.value for r in decision.reasons]
            raise ServiceError("in_session_not_allowed",
                               "In-session smart-card use is not allowed for this session: "
                               + ", ".join(reasons), {"reasons": reasons})
        body = login.create_challenge(ctx, session, d.id, f"in_session:{purpose}", now=now,
                                      address=address, cert_fingerprint=row.cert_fingerprint,
                                      session_id=row.id)
        audit.record(session, "in_session.challenge", "success", directory_id=d.id,
                     session_id=row.id, purpose=purpose, challenge_id=body["challenge_id"])
        return body

    try:
        return ctx.db.transaction(work)
    except BrokerError as exc:
        # The failed transaction was rolled back: audit the refusal in one that commits.
        reason, reasons = exc.code, exc.details.get("reasons")
        ctx.db.transaction(lambda s: audit.record(
            s, "in_session.challenge", "refused", reason=reason, reasons=reasons,
            session_id=session_id[:64], client_address=address))
        raise


def in_session_response(ctx: BrokerContext, session_id: str, challenge_id: str,
                        signature_b64: str, algorithm: str | None,
                        certificate_b64: str | None, address: str | None) -> dict[str, Any]:
    """POST /v1/sessions/{id}/in-session/challenges/{cid}/response → {assertion (JWS)}."""
    state: dict[str, Any] = {}

    def load(session: DbSession) -> tuple[bytes, bytes, login.TrustSnapshot, str | None]:
        now = ctx.now()
        row = _active_session(session, session_id)
        ch = login.check_challenge(session, challenge_id, now)
        if ch.purpose != "in_session" or ch.session_id != row.id:
            raise ServiceError("challenge_unknown", "This is not a challenge of this session.")
        cert_der: bytes | None = None
        if certificate_b64:
            cert_der = login.decode_b64(certificate_b64, "certificate_malformed", "certificate")
            if row.cert_fingerprint and login.cert_fingerprint(cert_der) != row.cert_fingerprint:
                raise ServiceError("certificate_mismatch", "Sign with the certificate of the "
                                                           "login.")
        elif row.cert_fingerprint:
            tok = session.scalar(select(AuthToken).where(
                AuthToken.user_id == row.user_id,
                AuthToken.cert_fingerprint == row.cert_fingerprint,
                AuthToken.cert_der.is_not(None)).limit(1))
            cert_der = tok.cert_der if tok else None
        if cert_der is None:
            raise ServiceError("certificate_malformed", "Send the certificate to verify with.")
        state["fingerprint"] = login.cert_fingerprint(cert_der)
        state["directory_id"] = row.directory_id
        d = session.get(Directory, row.directory_id)
        user = session.get(User, row.user_id)
        assert d is not None and user is not None
        return ch.to_be_signed, cert_der, login.load_trust(session, d), ch.detail

    def finish(session: DbSession, verified: login.Verified, detail: str | None) -> dict[str, Any]:
        now = ctx.now()
        row = _active_session(session, session_id)
        user = session.get(User, row.user_id)
        assert user is not None
        if verified.username and verified.username != user.username:
            raise ServiceError("certificate_mismatch", "This certificate belongs to another "
                                                       "user.")
        login.consume_challenge(session, challenge_id, now)
        claims = {"iss": ctx.settings.server.broker_id, "aud": f"in-session:{detail}",
                  "sub": user.username, "sid": row.id, "dir": row.directory_id,
                  "ws": row.workspace_id, "purpose": detail, "iat": int(now.timestamp()),
                  "exp": int((now + ASSERTION_TTL).timestamp()),
                  "cnf": {"x5t#S256": base64.urlsafe_b64encode(
                      bytes.fromhex(verified.fingerprint)).rstrip(b"=").decode()},
                  "jti": secrets.token_urlsafe(12)}
        assertion = keyring(ctx).sign(session, claims, now)
        audit.record(session, "in_session.auth", "success", directory_id=row.directory_id,
                     username=user.username, cert_fingerprint=verified.fingerprint,
                     session_id=row.id, purpose=detail, client_address=address)
        return {"assertion": assertion, "expires_at": login.rfc3339(now + ASSERTION_TTL),
                "purpose": detail}

    try:
        signature = login.decode_b64(signature_b64, "signature_invalid", "signature")
        tbs, cert_der, snap, detail = ctx.db.transaction(load)
        alg = algorithm or _default_algorithm(cert_der)
        verified = login.verify_card_response(ctx, snap, tbs, cert_der, [], signature, alg)
        return ctx.db.transaction(lambda s: finish(s, verified, detail))
    except BrokerError as exc:
        login._record_refusal(ctx, "in_session.auth", exc, state, address, challenge_id)
        raise


# --------------------------------------------------------------------------- sweeps

def sweep_workspaces(ctx: BrokerContext) -> int:
    """Complete due transitions; stop idle AUTO_STOP WorkSpaces that have no session."""
    backend = backend_from_settings(ctx.settings)
    idle = timedelta(seconds=ctx.settings.workspaces.auto_stop_idle_s)

    def work(session: DbSession) -> int:
        now = ctx.now()
        changed = 0
        for ws in session.scalars(select(WorkSpace).where(
                WorkSpace.transition_due_at.is_not(None), WorkSpace.transition_due_at <= now)
                .with_for_update(skip_locked=True)):
            changed += backend.refresh(ws, now)
        busy = select(Session.workspace_id).where(Session.state.in_(("active", "locked")))
        for ws in session.scalars(select(WorkSpace).where(
                WorkSpace.running_mode == "AUTO_STOP", WorkSpace.state == "AVAILABLE",
                WorkSpace.last_activity_at < now - idle, WorkSpace.id.not_in(busy))
                .with_for_update(skip_locked=True)):
            backend.stop(ws, now)
            audit.record(session, "workspace.auto_stop", "change",
                         directory_id=ws.directory_id, workspace_id=ws.id)
            changed += 1
        return changed

    return ctx.db.transaction(work)


def sweep_sessions(ctx: BrokerContext) -> int:
    """End sessions whose heartbeats stopped."""
    timeout = timedelta(seconds=ctx.settings.sessions.heartbeat_timeout_s)

    def work(session: DbSession) -> int:
        now = ctx.now()
        stale = list(session.scalars(select(Session).where(
            Session.state.in_(("active", "locked")),
            Session.last_heartbeat_at < now - timeout).with_for_update(skip_locked=True)))
        for row in stale:
            row.state, row.ended_at, row.end_reason = "ended", now, "heartbeat_timeout"
            audit.record(session, "session.end", "change", directory_id=row.directory_id,
                         session_id=row.id, reason="heartbeat_timeout")
        return len(stale)

    return ctx.db.transaction(work)
