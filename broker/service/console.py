"""The admin console's use cases: signed-in sessions and the overview's figures. No HTTP here.

A console session starts from an admin token (the same hashed tokens and read/write scopes as
the admin API). The browser holds only a random secret; its SHA-256 is stored with the session's
CSRF token and expiry. A session lives ``IDLE`` after its last use and never past ``ABSOLUTE``
after sign-in; revoking the admin token ends every session made with it.
"""

from __future__ import annotations

import hmac
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from broker.admin.crls import CRL_DUE_WARNING
from broker.admin.directories import directory_warnings
from broker.admin.trust import CA_EXPIRY_WARNING
from broker.admin.workspaces import WORKSPACE_STATES
from broker.codes import Code
from broker.kinds import LIVE_SESSION_STATES, Outcome
from broker.service import admin_tokens, audit, coverage
from broker.service.errors import ServiceError
from broker.service.tokens import fingerprint, token_hash
from broker.store.models import (
    AdminToken,
    AuditEvent,
    ConsoleSession,
    Crl,
    Directory,
    TrustCertificate,
    WorkSpace,
)
from broker.store.models import Session as BrokerSession

IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=8)
EXPIRY_WARNING = CA_EXPIRY_WARNING
CRL_NEAR = CRL_DUE_WARNING
#: Kinds of audit event that are login decisions.
LOGIN_KINDS = ("login.smart_card", "login.password")


@dataclass(frozen=True)
class ConsoleIdentity:
    """Who is signed in to a console session."""

    session_id: int
    token_name: str
    scope: str
    csrf_token: str
    expires_at: datetime
    flash: str | None = None
    #: The directory selected in the console's header (None: none chosen yet).
    directory_id: str | None = None
    #: Every directory id, in order (what the header's selector offers).
    directories: tuple[str, ...] = ()

    @property
    def can_write(self) -> bool:
        return self.scope == "write"

    @property
    def directory(self) -> str:
        """The directory the console works in: the selected one while it exists, else the
        first ("" when there is none)."""
        if self.directory_id in self.directories:
            return self.directory_id or ""
        return self.directories[0] if self.directories else ""

    @property
    def actor(self) -> str:
        return f"console:{self.token_name}"


def sign_in(session: Session, presented: str | None, now: datetime,
            client_address: str | None = None) -> tuple[str, ConsoleIdentity]:
    """A new console session for a valid admin token: (cookie secret, identity).

    Raises ServiceError admin_token_invalid (record it with :func:`sign_in_refused` in a
    transaction of its own: this one rolls back)."""
    who = admin_tokens.authenticate(session, presented, now)
    secret = secrets.token_urlsafe(32)
    row = ConsoleSession(secret_hash=token_hash(secret), admin_token_id=who.token_id,
                         csrf_token=secrets.token_urlsafe(32), created_at=now,
                         last_seen_at=now, expires_at=now + IDLE)
    session.add(row)
    # Expired sessions are dropped as new ones are made (no separate sweep needed).
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
    session.flush()
    audit.insert(session, "console.sign_in", "success", actor=f"console:{who.name}",
                 client_address=client_address, scope=who.scope,
                 console_session=fingerprint(secret))
    return secret, ConsoleIdentity(row.id, who.name, who.scope, row.csrf_token, row.expires_at)


def sign_in_refused(session: Session, client_address: str | None) -> None:
    """Audit a refused console sign-in (naming no token)."""
    audit.insert(session, "console.sign_in", "refused", reason=Code.ADMIN_TOKEN_INVALID.value,
                 client_address=client_address)


def resolve(session: Session, secret: str | None, now: datetime, *,
            take_flash: bool = True) -> ConsoleIdentity:
    """The identity of a live console session (its idle expiry slides), or
    ServiceError console_session_invalid."""
    row = None
    if secret:
        row = session.scalar(select(ConsoleSession).where(
            ConsoleSession.secret_hash == token_hash(secret)))
    if row is None or not hmac.compare_digest(row.secret_hash, token_hash(secret or "")) \
            or row.expires_at <= now:
        raise ServiceError(Code.ADMIN_TOKEN_INVALID, "Sign in to the console.")
    token = session.get(AdminToken, row.admin_token_id)
    if token is None or token.revoked_at is not None:
        session.delete(row)
        raise ServiceError(Code.ADMIN_TOKEN_INVALID, "The admin token of this console session "
                                                  "was revoked; sign in again.")
    row.last_seen_at = now
    row.expires_at = min(now + IDLE, row.created_at + ABSOLUTE)
    flash = row.flash
    if take_flash:
        row.flash = None
    return ConsoleIdentity(row.id, token.name, token.scope, row.csrf_token, row.expires_at,
                           flash, row.directory_id, tuple(directory_ids(session)))


def csrf_ok(identity: ConsoleIdentity, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(identity.csrf_token, presented or "")


def set_flash(session: Session, identity: ConsoleIdentity, message: str) -> None:
    row = session.get(ConsoleSession, identity.session_id)
    if row is not None:
        row.flash = message[:2000]


def select_directory(session: Session, identity: ConsoleIdentity, directory_id: str) -> None:
    """Remember the directory this console session works in (an existing one only)."""
    if session.get(Directory, directory_id) is None:
        raise ServiceError(Code.DIRECTORY_UNKNOWN, f"There is no directory {directory_id!r}.",
                           {"directory_id": directory_id})
    row = session.get(ConsoleSession, identity.session_id)
    if row is not None:
        row.directory_id = directory_id


def sign_out(session: Session, secret: str | None) -> None:
    """End the console session the secret names (nothing when there is none)."""
    if not secret:
        return
    row = session.scalar(select(ConsoleSession).where(
        ConsoleSession.secret_hash == token_hash(secret)))
    if row is not None:
        token = session.get(AdminToken, row.admin_token_id)
        audit.insert(session, "console.sign_out", "change",
                     actor=f"console:{token.name}" if token else None)
        session.delete(row)


# --------------------------------------------------------------------------- overview

def login_series(session: Session, now: datetime, hours: int = 24) -> dict[str, Any]:
    """Login decisions per hour for the last ``hours``, split by outcome, and refusals by
    reason code (from the audit log)."""
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    rows = session.execute(select(AuditEvent.at, AuditEvent.outcome, AuditEvent.reason).where(
        AuditEvent.kind.in_(LOGIN_KINDS), AuditEvent.at >= start)).all()
    buckets = [start + timedelta(hours=i) for i in range(hours)]
    counts: dict[str, list[int]] = {"success": [0] * hours, "refused": [0] * hours,
                                    "error": [0] * hours}
    reasons: Counter[str] = Counter()
    for at, outcome, reason in rows:
        index = int((at - start).total_seconds() // 3600)
        if 0 <= index < hours:
            counts.setdefault(outcome, [0] * hours)[index] += 1
        if outcome == Outcome.REFUSED:
            reasons[reason or "unknown"] += 1
    return {"buckets": [b.isoformat() for b in buckets], "counts": counts,
            "reasons": reasons.most_common()}


def overview(session: Session, ctx: Any) -> dict[str, Any]:
    """Everything the overview page shows, in one read."""
    now = ctx.now()
    live = session.scalar(select(func.count()).select_from(BrokerSession).where(
        BrokerSession.state.in_(LIVE_SESSION_STATES))) or 0
    by_state: dict[str, int] = dict(session.execute(select(WorkSpace.state, func.count())
                                                    .group_by(WorkSpace.state)).all())
    workspaces = [(state, by_state.get(state, 0)) for state in WORKSPACE_STATES]
    return {"now": now.isoformat(), "logins": login_series(session, now),
            "live_sessions": live, "workspaces": workspaces,
            "warnings": warnings(session, ctx.catalogue, now)}


def warnings(session: Session, catalogue: Any, now: datetime) -> list[dict[str, str]]:
    """What needs an admin: CAs expiring within 30 days, CRLs past or near nextUpdate, OCSP
    soft-fails in the last hour, directory settings the region's policy makes ineffective."""
    out: list[dict[str, str]] = []
    for cert in session.scalars(select(TrustCertificate).where(
            TrustCertificate.not_after < now + EXPIRY_WARNING).order_by(
            TrustCertificate.not_after)):
        past = cert.not_after <= now
        out.append({"code": "ca_expired" if past else "ca_expiring",
                    "directory": cert.directory_id,
                    "message": f"{cert.kind} {cert.subject} "
                               f"{'expired' if past else 'expires'} "
                               f"{cert.not_after:%Y-%m-%d %H:%M} UTC "
                               f"(fingerprint {cert.fingerprint[:16]}…)"})
    for crl in session.scalars(select(Crl).where(Crl.next_update < now + CRL_NEAR).order_by(
            Crl.next_update)):
        if crl.next_update is None:  # excluded by the WHERE; narrows the type
            continue
        past = crl.next_update <= now
        out.append({"code": "crl_stale" if past else "crl_due",
                    "directory": crl.directory_id,
                    "message": f"CRL of {crl.issuer} "
                               f"{'is past its nextUpdate' if past else 'reaches nextUpdate'} "
                               f"{crl.next_update:%Y-%m-%d %H:%M} UTC"})
    soft: Counter[str] = Counter()
    causes: dict[str, str] = {}
    for directory_id, details in session.execute(
            select(AuditEvent.directory_id, AuditEvent.details).where(
                AuditEvent.kind.in_(LOGIN_KINDS), AuditEvent.at >= now - timedelta(hours=1))
            .order_by(AuditEvent.at)):
        reasons = details.get("revocation_soft_fail") if isinstance(details, dict) else None
        if reasons:
            soft[directory_id or "?"] += 1
            # the latest cause, as the revocation check worded it (CRL or OCSP, and which CA)
            causes[directory_id or "?"] = (reasons[0] if isinstance(reasons, list)
                                           else str(reasons))
    for directory_id, n in sorted(soft.items()):
        out.append({"code": "revocation_soft_fail", "directory": directory_id,
                    "message": f"{n} login(s) in the last hour passed with revocation status "
                               f"unknown (soft fail); latest cause: {causes[directory_id]}"})
    for row in session.scalars(select(Directory)):
        for w in directory_warnings(catalogue, row.region, row.sc_pre_session,
                                          row.sc_in_session, row.password_login):
            out.append({"code": w["code"], "directory": row.id,
                        "message": f"{w['field']}: {w['message']}"})
        for w in coverage.directory_gaps(session, row.id, now):
            out.append({"code": w["code"], "directory": row.id, "message": w["message"]})
    return out


def directory_ids(session: Session) -> list[str]:
    """Every directory id, in order (the console's directory pickers)."""
    return list(session.scalars(select(Directory.id).order_by(Directory.id)))


def directory_notes(catalogue: Any) -> dict[str, dict[str, dict[str, str]]]:
    """Per region, what the policy says about each smart-card toggle (the directory form shows
    it next to the toggle): ``{region: {field: {"ok": "yes"|"no", "message", "code"}}}``."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for region in catalogue.region_ids():
        found = {w["field"]: w for w in directory_warnings(catalogue, region, True, True,
                                                                 True)}
        notes = {}
        for field, what in (("smart_card.pre_session", "pre-session smart-card login"),
                            ("smart_card.in_session", "in-session smart-card use")):
            if field in found:
                notes[field] = {"ok": "no", "code": found[field]["code"],
                                "message": found[field]["message"]}
            else:
                notes[field] = {"ok": "yes", "code": "",
                                "message": f"{what} is available in {region}"}
        out[region] = notes
    return out
