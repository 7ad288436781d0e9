"""WorkSpace sessions: connect, the second PIN at "Starting WorkSpace", heartbeats, end.

* ``connect`` after a password login: an AVAILABLE WorkSpace gets a session at once (201); a
  STOPPED one is started and the answer is 202 STARTING until it is AVAILABLE.
* ``connect`` after a smart-card login always answers 202 with a *logon challenge* ("Starting
  WorkSpace": the user enters the PIN again and the card signs), whatever the WorkSpace's state;
  a STOPPED one is started meanwhile. ``logon`` verifies that signature (same certificate as the
  login, same chain and revocation checks) and, once the WorkSpace is AVAILABLE (at once for one
  that already was), consumes the challenge and opens the session. While it is still starting,
  ``logon`` answers workspace_not_ready and changes nothing, so the client can poll with the
  same signature.
* A session records the client of the login that opened it. Whether the card may be used inside
  it — its ``smart_card_redirection`` (session object and ticket claim ``scr``) and its
  in-session challenges — is one pure rule, :func:`broker.policy.in_session_use`: WSP, region,
  directory toggle, a supported client (for card and password logins alike) and, per purpose,
  the WorkSpace's stated operating system (no ``sudo`` on Windows).
* One active session per WorkSpace: a new session takes over and the old one is told
  ``disconnect`` on its next heartbeat.
* Card removal applies the directory's removal_action (none | lock | disconnect); a session
  without heartbeats for ``sessions.heartbeat_timeout_s`` is ended by the sweeper.
* In-session authentication (sudo, browsers; broker/service/in_session.py) returns a signed
  assertion (JWS) verifiable with the JWKS.
* Every call names a session or WorkSpace and receives the caller's :class:`ClientPrincipal`
  (the web layer resolved the auth token first): anything the token's user does not own is
  ``session_unknown`` / ``workspace_unknown`` (404), never revealed. Ending a session does not
  end the login's auth token (the user may connect again); an expired or revoked auth token
  stops every call on its sessions, so their heartbeats stop and the sweeper ends them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Row

from broker import kinds, policy
from broker.codes import Code
from broker.kinds import (
    AuthMethod,
    Purpose,
    RemovalAction,
    SessionAction,
    SessionEndReason,
    SessionState,
    WorkSpaceState,
)
from broker.service import audit, limits
from broker.service.attempts import Attempt, audited
from broker.service.auth import ClientPrincipal
from broker.service.challenges import MAX_ID, check_row, consume, insert_challenge
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.registrations import Toggles, code_settings
from broker.service.tickets import TICKET_AUDIENCE
from broker.service.tokens import new_id
from broker.service.trust import (
    TrustSnapshot,
    default_algorithm,
    verify_card_response,
)
from broker.service.wire import decode_b64, rfc3339
from broker.store.statements import (
    INSERT_SESSION,
    SESSION_WITH_REMOVAL_ACTION,
    TAKE_OVER_SESSIONS,
    UPDATE_SESSION,
    UPDATE_WORKSPACE,
    WORKSPACE_AND_CHALLENGE,
    WORKSPACE_FOR_SESSION,
)
from broker.workspaces.backend import WorkSpaceBackend, backend_from_settings


def bounded_id(identifier: str) -> str | None:
    """``identifier`` if it may name a row; longer input never does (looked up as NULL)."""
    return identifier if len(identifier) <= MAX_ID else None


class _Owned(Protocol):
    """A row the caller may own: a WorkSpace or a session."""

    user_id: int
    directory_id: str


class _WorkSpaceRow(Toggles, Protocol):
    """What :data:`WORKSPACE_FOR_SESSION` reads (directory and user columns NULL when gone)."""

    id: str
    directory_id: str
    user_id: int
    protocol: kinds.Protocol
    os: kinds.WorkSpaceOs | None
    state: WorkSpaceState
    state_changed_at: datetime
    transition_due_at: datetime | None
    last_activity_at: datetime
    region: str
    version: int | None
    username: str | None


class _LogonRow(_WorkSpaceRow, Protocol):
    """:class:`_WorkSpaceRow` with the challenge of :data:`WORKSPACE_AND_CHALLENGE`."""

    challenge_id: str | None
    challenge_purpose: Purpose | None
    challenge_workspace_id: str | None
    auth_token_id: int | None
    to_be_signed: bytes
    used_at: datetime | None
    challenge_expires_at: datetime


class _SessionRow(Protocol):
    """What :data:`SESSION_WITH_REMOVAL_ACTION` reads."""

    id: str
    user_id: int
    directory_id: str
    workspace_id: str
    auth_method: AuthMethod
    state: SessionState
    pending_action: SessionAction | None
    end_reason: SessionEndReason | None
    removal_action: RemovalAction | None


def _check_workspace(row: Row[Any] | None, principal: ClientPrincipal) -> _WorkSpaceRow:
    """``row`` (read by any means) if it is a WorkSpace of the caller's directory that the
    caller may use: else workspace_unknown (404), workspace_not_yours or
    smart_card_requires_wsp."""
    if row is None or row.directory_id != principal.directory_id:
        raise ServiceError(Code.WORKSPACE_UNKNOWN, "There is no such WorkSpace.")
    if row.user_id != principal.user_id:
        raise ServiceError(Code.WORKSPACE_NOT_YOURS, "This WorkSpace belongs to another user.")
    if principal.method == AuthMethod.SMART_CARD and row.protocol != kinds.Protocol.WSP:
        raise ServiceError(Code.SMART_CARD_REQUIRES_WSP,
                           "Smart cards work only with WorkSpaces streamed over WSP; this "
                           "WorkSpace uses PCoIP.")
    return cast(_WorkSpaceRow, row)


def check_session(row: Row[Any] | None, principal: ClientPrincipal) -> _Owned:
    """``row`` (read by any means) if the caller's user owns it; session_unknown (404)."""
    if row is None or row.user_id != principal.user_id \
            or row.directory_id != principal.directory_id:
        raise ServiceError(Code.SESSION_UNKNOWN, "There is no such session.")
    return cast(_Owned, row)


def in_session_decision(ctx: BrokerContext, region: str, settings: policy.DirectorySettings,
                        protocol: str, client: object, os: str | None,
                        detail: str | None = None) -> policy.Decision:
    """:func:`broker.policy.in_session_use` for a session's stored values (``client`` as
    recorded, None = unknown): the one source of ``smart_card_redirection`` and of the
    in-session refusal."""
    return policy.in_session_use(
        ctx.catalogue.get(region), settings,
        protocol=policy.Protocol.WSP if protocol == kinds.Protocol.WSP
        else policy.Protocol.PCOIP,
        client=policy.client_of(client), os=os, detail=detail)


def directory_gone() -> ServiceError:
    return ServiceError(Code.DIRECTORY_UNKNOWN, "The directory no longer exists.")


# --------------------------------------------------------------------------- Core hot path

@dataclass
class WorkSpaceLifecycle:
    """The lifecycle of a WorkSpace read on Core, for the backend to move (it satisfies
    :class:`broker.workspaces.backend.Lifecycle`); :meth:`save` writes back what changed."""

    id: str
    directory_id: str
    protocol: kinds.Protocol
    state: WorkSpaceState
    state_changed_at: datetime
    transition_due_at: datetime | None
    last_activity_at: datetime

    @classmethod
    def of(cls, row: _WorkSpaceRow | Row[Any]) -> WorkSpaceLifecycle:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def save(self, conn: Connection, read: WorkSpaceLifecycle) -> None:
        """One UPDATE of the columns that changed since ``read`` (none: no statement), as an
        ORM flush would: a concurrent change to another column is not overwritten."""
        changed = {f.name: getattr(self, f.name) for f in fields(self)
                   if getattr(self, f.name) != getattr(read, f.name)}
        if changed:
            conn.execute(UPDATE_WORKSPACE, {"ws_id": self.id, **changed})


def _owned_workspace(conn: Connection, principal: ClientPrincipal,
                     workspace_id: str) -> _WorkSpaceRow:
    return _check_workspace(conn.execute(WORKSPACE_FOR_SESSION, {
        "workspace_id": bounded_id(workspace_id)}).first(), principal)


def _open_session(ctx: BrokerContext, conn: Connection, backend: WorkSpaceBackend,
                  principal: ClientPrincipal, row: _WorkSpaceRow, ws: WorkSpaceLifecycle,
                  read: WorkSpaceLifecycle,
                  now: datetime, address: str | None,
                  events: list[dict[str, Any]]) -> dict[str, Any]:
    """Open a session on ``ws`` (read as ``row``), taking over earlier ones, and write the
    transaction's WorkSpace changes and audit ``events`` with its own: the session, one UPDATE
    of the WorkSpace, one INSERT of every audit event."""
    if row.version is None:  # deleted while the call ran
        raise directory_gone()
    if row.username is None:
        raise ServiceError(Code.USER_NOT_FOUND, "The user of this login no longer exists.")
    # One active session per WorkSpace: earlier ones are told to disconnect.
    conn.execute(TAKE_OVER_SESSIONS, {"ws_id": ws.id, "now": now})
    sid = new_id(24)
    expires = now + timedelta(seconds=ctx.settings.login.ticket_ttl_s)
    redirection = in_session_decision(ctx, row.region, code_settings(row), ws.protocol,
                                      principal.client, row.os).allowed
    host, port = backend.endpoint(ws)
    gateway = {"host": host, "port": port, "protocol": ws.protocol}
    conn.execute(INSERT_SESSION, {
        "id": sid, "workspace_id": ws.id, "user_id": principal.user_id,
        "directory_id": ws.directory_id, "auth_method": principal.method,
        "cert_fingerprint": principal.cert_fingerprint, "protocol": ws.protocol,
        "state": SessionState.ACTIVE, "smart_card_redirection": redirection,
        "client": principal.client,
        "last_heartbeat_at": now,
        "expires_at": expires, "created_at": now})
    ws.last_activity_at = now
    ws.save(conn, read)
    claims = {"iss": ctx.settings.server.broker_id, "aud": TICKET_AUDIENCE, "sub": row.username,
              "sid": sid, "dir": ws.directory_id, "ws": ws.id, "proto": ws.protocol,
              "gw": gateway, "scr": redirection, "amr": [principal.method],
              "iat": int(now.timestamp()), "exp": int(expires.timestamp()),
              "jti": secrets.token_urlsafe(12)}
    if row.os:
        claims["os"] = row.os
    ticket = ctx.keyring.sign(conn, claims, now)
    events.append(audit.event("session.open", "success", directory_id=ws.directory_id,
                              username=row.username, client_address=address,
                              cert_fingerprint=principal.cert_fingerprint, session_id=sid,
                              workspace_id=ws.id, protocol=ws.protocol))
    audit.insert_all(conn, events)
    return {"session": {"id": sid, "ticket": ticket, "gateway": gateway,
                        "expires_at": rfc3339(expires), "smart_card_redirection": redirection,
                        "workspace_id": ws.id}}


@dataclass(frozen=True)
class Opened:
    """connect opened a session at once (HTTP 201): ``body`` is ``{"session": …}``."""

    body: dict[str, Any]


@dataclass(frozen=True)
class Starting:
    """connect started the WorkSpace or asks for the PIN again (HTTP 202): ``body`` is
    ``{"state", "workspace_id", "logon_challenge"?}``."""

    body: dict[str, Any]


def throttles(kind: str, principal: ClientPrincipal, address: str | None, per_token: int,
               per_address: int) -> list[tuple[str, int]]:
    """The rate counters of one call: per login (auth token) and per client address. A
    refused call rolls its transaction back, so it counts against neither."""
    hits = [(f"{kind}:tok:{principal.token_id}", per_token)]
    if address:
        hits.append((f"{kind}:addr:{address}", per_address))
    return hits


def connect(ctx: BrokerContext, principal: ClientPrincipal, workspace_id: str,
            address: str | None) -> Opened | Starting:
    """POST /v1/workspaces/{id}/connect → :class:`Opened` (a session) or :class:`Starting`
    (``{state, logon_challenge?}``); the web layer answers 201 or 202.

    A smart-card login always gets 202 with a logon challenge (the PIN again at "Starting
    WorkSpace"), also for an AVAILABLE WorkSpace; a password login gets its session at once
    when the WorkSpace is AVAILABLE. A STOPPED WorkSpace is started either way.

    One write transaction on the Core hot path: the WorkSpace with its directory and user,
    then for a session the takeover, the session, the WorkSpace's activity and the audit event;
    otherwise the WorkSpace's new state (when started), its audit event and the logon
    challenge."""
    backend = backend_from_settings(ctx.settings)

    def start_or_open(conn: Connection) -> Opened | Starting:
        now = ctx.now()
        lim = ctx.settings.login
        limits.hit_many(conn, throttles("connect", principal, address,
                                         lim.connects_per_token_per_minute,
                                         lim.connects_per_address_per_minute), 60, now)
        row = _owned_workspace(conn, principal, workspace_id)
        ws, read = WorkSpaceLifecycle.of(row), WorkSpaceLifecycle.of(row)
        backend.refresh(ws, now)
        events: list[dict[str, Any]] = []
        state = WorkSpaceState(ws.state)
        if state not in (WorkSpaceState.AVAILABLE, WorkSpaceState.STOPPED,
                         WorkSpaceState.STARTING):
            raise ServiceError(Code.WORKSPACE_UNAVAILABLE,
                               f"The WorkSpace is {state.value}; it cannot be connected to now.",
                               {"state": state.value})
        if state == WorkSpaceState.STOPPED:
            backend.start(ws, now)
            events.append(audit.event("workspace.start", "change",
                                      directory_id=ws.directory_id,
                                      actor=f"user:{principal.user_id}", workspace_id=ws.id))
        smart_card = principal.method == AuthMethod.SMART_CARD
        if ws.state == WorkSpaceState.AVAILABLE and not smart_card:
            return Opened(_open_session(ctx, conn, backend, principal, row, ws, read, now,
                                        address, events))
        body: dict[str, Any] = {"state": ws.state, "workspace_id": ws.id}
        if smart_card:
            if row.version is None:  # the directory was deleted while the call ran
                raise directory_gone()
            # A start can outlast a normal challenge: give the PIN its full TTL after it.
            due = ws.transition_due_at if ws.state != WorkSpaceState.AVAILABLE else None
            body["logon_challenge"] = insert_challenge(
                ctx, conn, ws.directory_id, row.version, Purpose.LOGON, now=now,
                address=address, cert_fingerprint=principal.cert_fingerprint,
                workspace_id=ws.id, auth_token_id=principal.token_id,
                valid_until=None if due is None
                else due + timedelta(seconds=ctx.settings.login.challenge_ttl_s))
        ws.save(conn, read)
        if events:
            audit.insert_all(conn, events)
        return Starting(body)

    return ctx.db.run(start_or_open)


def logon(ctx: BrokerContext, principal: ClientPrincipal, workspace_id: str, challenge_id: str,
          signature_b64: str, algorithm: str | None, address: str | None) -> dict[str, Any]:
    """POST /v1/workspaces/{id}/logon: the second signature, then the session.

    On the Core hot path: one read (the WorkSpace with its directory's version and the
    challenge), the verification outside any transaction, then one write transaction (the
    WorkSpace again, the single-use consume, the session as :func:`connect` opens it, both
    audit events in one INSERT). A WorkSpace still starting answers workspace_not_ready and
    changes nothing: the challenge stays unused."""
    backend = backend_from_settings(ctx.settings)
    attempt = Attempt("logon.smart_card", address, challenge_id=challenge_id,
                      directory_id=principal.directory_id,
                      fingerprint=principal.cert_fingerprint)

    def read_challenge(conn: Connection) -> tuple[bytes, TrustSnapshot]:
        now = ctx.now()
        row = cast(_LogonRow, _check_workspace(conn.execute(WORKSPACE_AND_CHALLENGE, {
            "workspace_id": bounded_id(workspace_id),
            "challenge_id": bounded_id(challenge_id)}).first(), principal))
        if row.challenge_id is None:
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "There is no such challenge.")
        check_row(row.used_at, row.challenge_expires_at, now)
        if row.challenge_purpose != Purpose.LOGON or row.challenge_workspace_id != row.id \
                or row.auth_token_id != principal.token_id:
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "This is not a logon challenge for this "
                                                    "WorkSpace and login.")
        if row.version is None:
            raise directory_gone()
        return row.to_be_signed, ctx.trust.snapshot_at(conn, row.directory_id, row.version)

    def open_session(conn: Connection) -> dict[str, Any]:
        now = ctx.now()
        row = _owned_workspace(conn, principal, workspace_id)
        ws, read = WorkSpaceLifecycle.of(row), WorkSpaceLifecycle.of(row)
        backend.refresh(ws, now)
        if ws.state != WorkSpaceState.AVAILABLE:
            if ws.state in (WorkSpaceState.STARTING, WorkSpaceState.PENDING):
                raise ServiceError(Code.WORKSPACE_NOT_READY, "The WorkSpace is still starting; "
                                   "try again in a moment.", {"state": ws.state})
            raise ServiceError(Code.WORKSPACE_UNAVAILABLE, f"The WorkSpace is {ws.state}.",
                               {"state": ws.state})
        consume(conn, challenge_id, now)
        logged_on = audit.event("logon.smart_card", "success", directory_id=ws.directory_id,
                                client_address=address,
                                cert_fingerprint=principal.cert_fingerprint,
                                challenge_id=challenge_id, workspace_id=ws.id)
        return _open_session(ctx, conn, backend, principal, row, ws, read, now, address,
                             [logged_on])

    def run() -> dict[str, Any]:
        cert_der = principal.cert_der
        if cert_der is None:
            raise ServiceError(Code.CHALLENGE_UNKNOWN, "This login did not use a smart card.")
        signature = decode_b64(signature_b64, "signature_invalid", "signature")
        tbs, snap = ctx.db.run(read_challenge, read_only=True)
        verify_card_response(ctx, snap, tbs, cert_der, [], signature,
                             algorithm or default_algorithm(cert_der),
                             on_key_proven=attempt.prove_key)
        return ctx.db.run(open_session)

    return audited(ctx, attempt, run, quiet=frozenset({Code.WORKSPACE_NOT_READY}))


def _owned_session_row(conn: Connection, principal: ClientPrincipal,
                       session_id: str) -> _SessionRow:
    return cast(_SessionRow, check_session(conn.execute(SESSION_WITH_REMOVAL_ACTION, {
        "session_id": bounded_id(session_id)}).first(), principal))


def heartbeat(ctx: BrokerContext, principal: ClientPrincipal, session_id: str,
              card_present: bool) -> dict[str, Any]:
    """POST /v1/sessions/{id}/heartbeat → {"action": "none" | "lock" | "disconnect"}.

    One write transaction on the Core hot path: the session with its directory's removal
    action, then one UPDATE of the session (and, for a live one, one of its WorkSpace's
    activity; an audit event when the card's removal changes the session)."""

    def beat(conn: Connection) -> dict[str, Any]:
        now = ctx.now()
        row = _owned_session_row(conn, principal, session_id)
        changes: dict[str, Any] = {}
        if row.pending_action:
            pending, reason = row.pending_action, row.end_reason
            changes["pending_action"] = None
            if pending == SessionAction.DISCONNECT and row.state != SessionState.ENDED:
                reason = SessionEndReason.DISCONNECTED
                changes.update(state=SessionState.ENDED, ended_at=now, end_reason=reason)
            conn.execute(UPDATE_SESSION, {"session_id": row.id, **changes})
            return {"action": pending, "reason": reason}
        if row.state == SessionState.ENDED:
            raise ServiceError(Code.SESSION_ENDED, "This session has ended.",
                               {"reason": row.end_reason})
        changes["last_heartbeat_at"] = now
        conn.execute(UPDATE_WORKSPACE, {"ws_id": row.workspace_id, "last_activity_at": now})
        action = RemovalAction.NONE
        if row.auth_method == AuthMethod.SMART_CARD:
            if card_present:
                if row.state == SessionState.LOCKED:
                    changes["state"] = SessionState.ACTIVE
            else:
                # The directory went (NULL): the safe choice.
                action = row.removal_action or RemovalAction.LOCK
                if action == RemovalAction.LOCK and row.state != SessionState.LOCKED:
                    changes["state"] = SessionState.LOCKED
                elif action == RemovalAction.DISCONNECT:
                    changes.update(state=SessionState.ENDED, ended_at=now,
                                   end_reason=SessionEndReason.CARD_REMOVED)
                if "state" in changes:
                    audit.insert(conn, "session.card_removed", "change",
                                 directory_id=row.directory_id, session_id=row.id,
                                 action=action.value)
        conn.execute(UPDATE_SESSION, {"session_id": row.id, **changes})
        return {"action": action.value}

    return ctx.db.run(beat)


def end_session(ctx: BrokerContext, principal: ClientPrincipal, session_id: str,
                reason: SessionEndReason = SessionEndReason.CLIENT) -> None:
    """DELETE /v1/sessions/{id}: ends the session (the login's auth token stays valid)."""

    def end(conn: Connection) -> None:
        row = _owned_session_row(conn, principal, session_id)
        if row.state != SessionState.ENDED:
            conn.execute(UPDATE_SESSION, {"session_id": row.id, "state": SessionState.ENDED,
                                          "ended_at": ctx.now(), "end_reason": reason})
            audit.insert(conn, "session.end", "change", directory_id=row.directory_id,
                         session_id=row.id, reason=reason.value)

    ctx.db.run(end)
