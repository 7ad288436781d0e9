"""Admin use cases: directories, trust, CRLs, users, WorkSpaces, codes, sessions, audit.

Plain blocking functions ``fn(session, ctx, ..., actor)`` run inside the caller's ONE transaction
(the admin API's request or one `broker admin` command), so a failure changes nothing. They take
and return plain values (dicts of JSON-ready data); the web layer and the CLI only translate.
Every change writes an audit event naming ``actor`` (``token:<name>`` or ``cli:<user>``).

Errors (ServiceError codes): directory_unknown, resource_not_found, workspace_unknown,
session_unknown, session_ended, conflict, validation_failed, certificate_unreadable,
certificate_not_ca, crl_unreadable, workspace_unavailable, malformed_request (bad cursor).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from broker.service import audit
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.passwords import hash_password
from broker.store.models import (
    AuditEvent,
    Crl,
    Directory,
    RegistrationCode,
    TrustCertificate,
    User,
    WorkSpace,
)
from broker.store.models import Session as BrokerSession

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
LIVE_SESSION_STATES = ("active", "locked")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --------------------------------------------------------------------------- pagination

@dataclass(frozen=True)
class Page:
    """Which slice of a list: ``limit`` rows after ``cursor`` (opaque) or from ``offset``."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    offset: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ServiceError("malformed_request", f"limit must be 1 to {MAX_LIMIT}")
        if self.offset is not None and self.offset < 0:
            raise ServiceError("malformed_request", "offset must not be negative")
        if self.offset is not None and self.cursor is not None:
            raise ServiceError("malformed_request", "give cursor or offset, not both")


def _encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([key]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        (key,) = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise ServiceError("malformed_request", "the cursor is not one this API issued") from None
    if not isinstance(key, int | str):
        raise ServiceError("malformed_request", "the cursor is not one this API issued")
    return key


def paginate(session: Session, stmt: Select[Any], key: Any, page: Page,
             view: Callable[[Any], dict[str, Any]], *, descending: bool = False
             ) -> dict[str, Any]:
    """``{"items": [...], "next_cursor": str | None}`` ordered by ``key``."""
    if page.cursor is not None:
        after = _decode_cursor(page.cursor)
        stmt = stmt.where(key < after if descending else key > after)
    stmt = stmt.order_by(key.desc() if descending else key.asc())
    if page.offset:
        stmt = stmt.offset(page.offset)
    rows = list(session.scalars(stmt.limit(page.limit + 1)))
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    next_cursor = None
    if more and rows:
        next_cursor = _encode_cursor(getattr(rows[-1], key.key))
    return {"items": [view(r) for r in rows], "next_cursor": next_cursor}


# --------------------------------------------------------------------------- views

def directory_view(d: Directory) -> dict[str, Any]:
    return {
        "id": d.id, "name": d.name, "region": d.region, "password_login": d.password_login,
        "smart_card": {"pre_session": d.sc_pre_session, "in_session": d.sc_in_session,
                       "removal_action": d.removal_action},
        "revocation": {"crl": d.revocation_crl, "ocsp": d.revocation_ocsp,
                       "fail_mode": d.revocation_fail_mode},
        "certmap": list(d.certmap), "created_at": _iso(d.created_at),
        "updated_at": _iso(d.updated_at),
    }


def trust_view(t: TrustCertificate) -> dict[str, Any]:
    return {"directory": t.directory_id, "kind": t.kind, "subject": t.subject,
            "fingerprint": t.fingerprint, "not_after": _iso(t.not_after),
            "created_at": _iso(t.created_at)}


def crl_view(c: Crl) -> dict[str, Any]:
    return {"directory": c.directory_id, "issuer": c.issuer, "fingerprint": c.fingerprint,
            "this_update": _iso(c.this_update), "next_update": _iso(c.next_update),
            "created_at": _iso(c.created_at)}


def user_view(u: User) -> dict[str, Any]:
    return {"directory": u.directory_id, "username": u.username, "upn": u.upn, "email": u.email,
            "subject": u.subject, "cert_fingerprint": u.cert_fingerprint,
            "has_password": u.password_hash is not None, "disabled": u.disabled,
            "created_at": _iso(u.created_at)}


def workspace_view(w: WorkSpace, username: str | None = None) -> dict[str, Any]:
    return {"id": w.id, "directory": w.directory_id, "user": username, "name": w.name,
            "bundle": w.bundle, "protocol": w.protocol, "running_mode": w.running_mode,
            "state": w.state, "state_changed_at": _iso(w.state_changed_at),
            "transition_due_at": _iso(w.transition_due_at), "created_at": _iso(w.created_at)}


def code_view(c: RegistrationCode) -> dict[str, Any]:
    return {"code": c.code, "directory": c.directory_id, "state": c.state,
            "created_at": _iso(c.created_at), "rotated_at": _iso(c.rotated_at),
            "revoked_at": _iso(c.revoked_at)}


def session_view(s: BrokerSession) -> dict[str, Any]:
    return {"id": s.id, "directory": s.directory_id, "workspace": s.workspace_id,
            "user_id": s.user_id, "auth_method": s.auth_method, "protocol": s.protocol,
            "state": s.state, "pending_action": s.pending_action, "end_reason": s.end_reason,
            "cert_fingerprint": s.cert_fingerprint,
            "smart_card_redirection": s.smart_card_redirection,
            "last_heartbeat_at": _iso(s.last_heartbeat_at), "expires_at": _iso(s.expires_at),
            "created_at": _iso(s.created_at), "ended_at": _iso(s.ended_at)}


def audit_view(e: AuditEvent) -> dict[str, Any]:
    return {"id": e.id, "at": _iso(e.at), "kind": e.kind, "outcome": e.outcome,
            "reason": e.reason, "directory": e.directory_id, "username": e.username,
            "actor": e.actor, "client_address": e.client_address,
            "cert_fingerprint": e.cert_fingerprint, "details": e.details}


# --------------------------------------------------------------------------- lookups

def get_directory_row(session: Session, directory_id: str) -> Directory:
    d = session.get(Directory, directory_id) if len(directory_id) <= 64 else None
    if d is None:
        raise ServiceError("directory_unknown", f"There is no directory {directory_id!r}.",
                           {"directory": directory_id})
    return d


def get_user_row(session: Session, directory_id: str, username: str) -> User:
    get_directory_row(session, directory_id)
    u = session.scalar(select(User).where(User.directory_id == directory_id,
                                          User.username == username))
    if u is None:
        raise ServiceError("resource_not_found",
                           f"Directory {directory_id!r} has no user {username!r}.",
                           {"directory": directory_id, "username": username})
    return u


def get_workspace_row(session: Session, workspace_id: str) -> WorkSpace:
    w = session.get(WorkSpace, workspace_id) if len(workspace_id) <= 64 else None
    if w is None:
        raise ServiceError("workspace_unknown", f"There is no WorkSpace {workspace_id!r}.",
                           {"workspace": workspace_id})
    return w


def _username(session: Session, user_id: int) -> str | None:
    u = session.get(User, user_id)
    return u.username if u is not None else None


def _check_region(ctx: BrokerContext, region: str) -> None:
    if region not in ctx.catalogue:
        raise ServiceError("validation_failed",
                           f"Region {region!r} is not in the region catalogue.",
                           {"field": "region", "region": region})


# --------------------------------------------------------------------------- directories

_DIRECTORY_COLUMNS = {
    ("smart_card", "pre_session"): "sc_pre_session",
    ("smart_card", "in_session"): "sc_in_session",
    ("smart_card", "removal_action"): "removal_action",
    ("revocation", "crl"): "revocation_crl",
    ("revocation", "ocsp"): "revocation_ocsp",
    ("revocation", "fail_mode"): "revocation_fail_mode",
}


def _directory_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Column values from an API-shaped (nested) mapping; absent keys are left out."""
    values: dict[str, Any] = {}
    for key in ("name", "region", "password_login"):
        if key in fields:
            values[key] = fields[key]
    if "certmap" in fields:
        values["certmap"] = list(fields["certmap"])
    for (group, key), column in _DIRECTORY_COLUMNS.items():
        sub = fields.get(group)
        if sub is not None and key in sub:
            values[column] = sub[key]
    return values


def list_directories(session: Session, page: Page, *, region: str | None = None
                     ) -> dict[str, Any]:
    stmt = select(Directory)
    if region:
        stmt = stmt.where(Directory.region == region)
    return paginate(session, stmt, Directory.id, page, directory_view)


def get_directory(session: Session, directory_id: str) -> dict[str, Any]:
    return directory_view(get_directory_row(session, directory_id))


def create_directory(session: Session, ctx: BrokerContext, fields: Mapping[str, Any],
                     actor: str) -> dict[str, Any]:
    """Create a directory from ``{id, name, region, password_login?, smart_card?, revocation?,
    certmap?}``; conflict when the id exists, validation_failed for an unknown region."""
    directory_id = fields["id"]
    _check_region(ctx, fields["region"])
    if session.get(Directory, directory_id) is not None:
        raise ServiceError("conflict", f"A directory {directory_id!r} already exists.",
                           {"directory": directory_id})
    values = {"password_login": False, "sc_pre_session": False, "sc_in_session": False,
              "removal_action": "lock", "revocation_crl": True, "revocation_ocsp": False,
              "revocation_fail_mode": "soft", "certmap": ["upn", "email"]}
    values.update(_directory_values(fields))
    d = Directory(id=directory_id, created_at=ctx.now(), updated_at=ctx.now(), **values)
    session.add(d)
    session.flush()
    audit.record(session, "directory.create", "change", directory_id=d.id, actor=actor,
                 region=d.region)
    return directory_view(d)


def update_directory(session: Session, ctx: BrokerContext, directory_id: str,
                     fields: Mapping[str, Any], actor: str) -> dict[str, Any]:
    d = get_directory_row(session, directory_id)
    values = _directory_values(fields)
    if "region" in values and values["region"] != d.region:
        _check_region(ctx, values["region"])
        # A code's prefix names its region: live codes would point at the wrong one.
        live = session.scalar(select(RegistrationCode.id).where(
            RegistrationCode.directory_id == d.id, RegistrationCode.state == "active").limit(1))
        if live is not None:
            raise ServiceError("validation_failed",
                               "Revoke the directory's active registration codes before moving "
                               "it to another region (a code's prefix names its region).",
                               {"field": "region"})
    changed = [k for k, v in values.items() if getattr(d, k) != v]
    for k in changed:
        setattr(d, k, values[k])
    if changed:
        d.updated_at = ctx.now()
        session.flush()
        audit.record(session, "directory.update", "change", directory_id=d.id, actor=actor,
                     fields=changed)
    return directory_view(d)


def delete_directory(session: Session, directory_id: str, actor: str) -> None:
    """Delete a directory and everything in it (users, WorkSpaces, trust, codes, sessions)."""
    d = get_directory_row(session, directory_id)
    session.expunge(d)
    # The database cascades (ON DELETE CASCADE) to every row of the directory.
    session.execute(delete(Directory).where(Directory.id == directory_id))
    audit.record(session, "directory.delete", "change", directory_id=directory_id, actor=actor)


# --------------------------------------------------------------------------- trust and CRLs

def _parse_certificates(text: str) -> list[x509.Certificate]:
    data = text.strip().encode()
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(base64.b64decode(data, validate=True))]
    except (ValueError, binascii.Error):
        raise ServiceError("certificate_unreadable",
                           "The upload is not a PEM certificate (or base64 DER).") from None
    if not certs:
        raise ServiceError("certificate_unreadable", "The upload holds no certificate.")
    return certs


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    except ValueError:  # malformed extensions
        return False
    return bool(bc.ca)


def cert_fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def list_trust(session: Session, directory_id: str, page: Page, *,
               kind: str | None = None) -> dict[str, Any]:
    get_directory_row(session, directory_id)
    stmt = select(TrustCertificate).where(TrustCertificate.directory_id == directory_id)
    if kind:
        stmt = stmt.where(TrustCertificate.kind == kind)
    return paginate(session, stmt, TrustCertificate.id, page, trust_view)


def add_trust(session: Session, directory_id: str, pem: str, kind: str | None,
              actor: str) -> list[dict[str, Any]]:
    """Add the CA certificate(s) in ``pem`` as anchors or intermediates.

    certificate_unreadable when it does not parse, certificate_not_ca when one lacks
    basicConstraints CA=true, conflict when one is already there.
    """
    get_directory_row(session, directory_id)
    certs = _parse_certificates(pem)
    added: list[TrustCertificate] = []
    seen: set[str] = set()
    for cert in certs:
        fp = cert_fingerprint(cert)
        if not _is_ca(cert):
            raise ServiceError("certificate_not_ca",
                               "The certificate is not a CA certificate (basicConstraints "
                               "CA=true is required for trust anchors and intermediates).",
                               {"fingerprint": fp, "subject": cert.subject.rfc4514_string()})
        exists = session.scalar(select(TrustCertificate.id).where(
            TrustCertificate.directory_id == directory_id, TrustCertificate.fingerprint == fp))
        if exists is not None or fp in seen:
            raise ServiceError("conflict", "This certificate is already trusted by the directory.",
                               {"fingerprint": fp})
        seen.add(fp)
        this_kind = kind or ("anchor" if cert.issuer == cert.subject else "intermediate")
        row = TrustCertificate(directory_id=directory_id, kind=this_kind,
                               subject=cert.subject.rfc4514_string(), fingerprint=fp,
                               not_after=cert.not_valid_after_utc,
                               der=cert.public_bytes(serialization.Encoding.DER))
        session.add(row)
        added.append(row)
    session.flush()
    for row in added:
        audit.record(session, "trust.add", "change", directory_id=directory_id, actor=actor,
                     cert_fingerprint=row.fingerprint, trust_kind=row.kind)
    return [trust_view(r) for r in added]


def remove_trust(session: Session, directory_id: str, fingerprint: str, actor: str) -> None:
    get_directory_row(session, directory_id)
    row = session.scalar(select(TrustCertificate).where(
        TrustCertificate.directory_id == directory_id,
        TrustCertificate.fingerprint == fingerprint.lower()))
    if row is None:
        raise ServiceError("resource_not_found", "The directory trusts no such certificate.",
                           {"fingerprint": fingerprint})
    session.delete(row)
    audit.record(session, "trust.remove", "change", directory_id=directory_id, actor=actor,
                 cert_fingerprint=row.fingerprint, trust_kind=row.kind)


def _parse_crl(text: str) -> x509.CertificateRevocationList:
    data = text.strip().encode()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(base64.b64decode(data, validate=True))
    except (ValueError, binascii.Error):
        raise ServiceError("crl_unreadable",
                           "The upload is not a PEM CRL (or base64 DER CRL).") from None


def list_crls(session: Session, directory_id: str, page: Page) -> dict[str, Any]:
    get_directory_row(session, directory_id)
    stmt = select(Crl).where(Crl.directory_id == directory_id)
    return paginate(session, stmt, Crl.id, page, crl_view)


def add_crl(session: Session, directory_id: str, text: str, actor: str) -> dict[str, Any]:
    get_directory_row(session, directory_id)
    crl = _parse_crl(text)
    der = crl.public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    fp = digest.finalize().hex()
    if session.scalar(select(Crl.id).where(Crl.directory_id == directory_id,
                                           Crl.fingerprint == fp)) is not None:
        raise ServiceError("conflict", "This CRL is already loaded.", {"fingerprint": fp})
    row = Crl(directory_id=directory_id, issuer=crl.issuer.rfc4514_string(), fingerprint=fp,
              this_update=crl.last_update_utc, next_update=crl.next_update_utc, der=der)
    session.add(row)
    session.flush()
    audit.record(session, "crl.add", "change", directory_id=directory_id, actor=actor,
                 crl_fingerprint=fp, issuer=row.issuer)
    return crl_view(row)


def remove_crl(session: Session, directory_id: str, fingerprint: str, actor: str) -> None:
    get_directory_row(session, directory_id)
    row = session.scalar(select(Crl).where(Crl.directory_id == directory_id,
                                           Crl.fingerprint == fingerprint.lower()))
    if row is None:
        raise ServiceError("resource_not_found", "The directory has no such CRL.",
                           {"fingerprint": fingerprint})
    session.delete(row)
    audit.record(session, "crl.remove", "change", directory_id=directory_id, actor=actor,
                 crl_fingerprint=row.fingerprint)


# --------------------------------------------------------------------------- users

_USER_FIELDS = ("upn", "email", "subject", "cert_fingerprint", "disabled")


def list_users(session: Session, directory_id: str, page: Page, *,
               disabled: bool | None = None) -> dict[str, Any]:
    get_directory_row(session, directory_id)
    stmt = select(User).where(User.directory_id == directory_id)
    if disabled is not None:
        stmt = stmt.where(User.disabled == disabled)
    return paginate(session, stmt, User.id, page, user_view)


def get_user(session: Session, directory_id: str, username: str) -> dict[str, Any]:
    return user_view(get_user_row(session, directory_id, username))


def _set_password(d: Directory, u: User, password: str | None) -> None:
    if password is None:
        u.password_hash = None
        return
    if not d.password_login:
        raise ServiceError("validation_failed",
                           f"Directory {d.id!r} has password login off; a password cannot be set.",
                           {"field": "password"})
    u.password_hash = hash_password(password)


def create_user(session: Session, directory_id: str, fields: Mapping[str, Any],
                actor: str) -> dict[str, Any]:
    d = get_directory_row(session, directory_id)
    username = fields["username"]
    if session.scalar(select(User.id).where(User.directory_id == directory_id,
                                            User.username == username)) is not None:
        raise ServiceError("conflict", f"Directory {directory_id!r} already has a user "
                           f"{username!r}.", {"username": username})
    u = User(directory_id=directory_id, username=username,
             **{k: fields.get(k) for k in _USER_FIELDS if k != "disabled"},
             disabled=bool(fields.get("disabled", False)))
    if u.cert_fingerprint:
        u.cert_fingerprint = u.cert_fingerprint.lower()
    if fields.get("password") is not None:
        _set_password(d, u, fields["password"])
    session.add(u)
    session.flush()
    audit.record(session, "user.create", "change", directory_id=directory_id, username=username,
                 actor=actor, with_password=u.password_hash is not None)
    return user_view(u)


def update_user(session: Session, directory_id: str, username: str, fields: Mapping[str, Any],
                actor: str) -> dict[str, Any]:
    u = get_user_row(session, directory_id, username)
    changed = []
    for k in _USER_FIELDS:
        if k not in fields:
            continue
        v = fields[k]
        if k == "cert_fingerprint" and v:
            v = v.lower()
        if getattr(u, k) != v:
            setattr(u, k, v)
            changed.append(k)
    if "password" in fields:
        _set_password(u.directory, u, fields["password"])
        changed.append("password")
    if changed:
        session.flush()
        audit.record(session, "user.update", "change", directory_id=directory_id,
                     username=username, actor=actor, fields=changed)
    return user_view(u)


def delete_user(session: Session, directory_id: str, username: str, actor: str) -> None:
    u = get_user_row(session, directory_id, username)
    session.execute(delete(User).where(User.id == u.id))
    session.expunge(u)
    audit.record(session, "user.delete", "change", directory_id=directory_id, username=username,
                 actor=actor)


# --------------------------------------------------------------------------- WorkSpaces

def list_workspaces(session: Session, page: Page, *, directory: str | None = None,
                    user: str | None = None, state: str | None = None,
                    protocol: str | None = None) -> dict[str, Any]:
    stmt = select(WorkSpace)
    if directory:
        stmt = stmt.where(WorkSpace.directory_id == directory)
    if user:
        stmt = stmt.join(User, User.id == WorkSpace.user_id).where(User.username == user)
    if state:
        stmt = stmt.where(WorkSpace.state == state)
    if protocol:
        stmt = stmt.where(WorkSpace.protocol == protocol)
    return paginate(session, stmt, WorkSpace.id, page,
                    lambda w: workspace_view(w, _username(session, w.user_id)))


def get_workspace(session: Session, workspace_id: str) -> dict[str, Any]:
    w = get_workspace_row(session, workspace_id)
    return workspace_view(w, _username(session, w.user_id))


def create_workspace(session: Session, ctx: BrokerContext, fields: Mapping[str, Any],
                     actor: str) -> dict[str, Any]:
    directory_id = fields["directory"]
    get_directory_row(session, directory_id)
    owner = get_user_row(session, directory_id, fields["user"])
    if session.get(WorkSpace, fields["id"]) is not None:
        raise ServiceError("conflict", f"A WorkSpace {fields['id']!r} already exists.",
                           {"workspace": fields["id"]})
    now = ctx.now()
    w = WorkSpace(id=fields["id"], directory_id=directory_id, user_id=owner.id,
                  name=fields.get("name") or fields["id"],
                  bundle=fields.get("bundle") or "standard", protocol=fields["protocol"],
                  running_mode=fields.get("running_mode") or "AUTO_STOP",
                  state=fields.get("state") or "STOPPED", state_changed_at=now,
                  last_activity_at=now, created_at=now)
    session.add(w)
    session.flush()
    audit.record(session, "workspace.create", "change", directory_id=directory_id,
                 username=owner.username, actor=actor, workspace=w.id, protocol=w.protocol)
    return workspace_view(w, owner.username)


def end_smart_card_sessions(session: Session, ws: WorkSpace, now: datetime, reason: str
                            ) -> list[str]:
    """End the live smart-card sessions of ``ws`` at once; their next heartbeat disconnects."""
    rows = list(session.scalars(select(BrokerSession).where(
        BrokerSession.workspace_id == ws.id,
        BrokerSession.state.in_(LIVE_SESSION_STATES),
        BrokerSession.auth_method == "smart_card")))
    for s in rows:
        s.state, s.end_reason, s.ended_at, s.pending_action = "ended", reason, now, "disconnect"
    return [s.id for s in rows]


def update_workspace(session: Session, ctx: BrokerContext, workspace_id: str,
                     fields: Mapping[str, Any], actor: str) -> dict[str, Any]:
    """Change a WorkSpace. Switching it to PCoIP ends its smart-card sessions in the same
    transaction (smart cards are only for WSP): state ended, end_reason protocol_changed,
    pending_action disconnect."""
    w = get_workspace_row(session, workspace_id)
    now = ctx.now()
    changed: list[str] = []
    owner_name = _username(session, w.user_id)
    if "user" in fields and fields["user"] != owner_name:
        owner = get_user_row(session, w.directory_id, fields["user"])
        w.user_id, owner_name = owner.id, owner.username
        changed.append("user")
    for k in ("name", "bundle", "protocol", "running_mode"):
        if k not in fields:
            continue
        v = fields[k] if fields[k] is not None or k != "name" else w.id
        if getattr(w, k) != v:
            setattr(w, k, v)
            changed.append(k)
    if fields.get("state") is not None and fields["state"] != w.state:
        w.state, w.state_changed_at, w.transition_due_at = fields["state"], now, None
        changed.append("state")
    ended: list[str] = []
    if "protocol" in changed and w.protocol == "PCoIP":
        ended = end_smart_card_sessions(session, w, now, "protocol_changed")
    if changed:
        session.flush()
        audit.record(session, "workspace.update", "change", directory_id=w.directory_id,
                     username=owner_name, actor=actor, workspace=w.id, fields=changed,
                     ended_sessions=ended)
    return workspace_view(w, owner_name)


def delete_workspace(session: Session, workspace_id: str, actor: str) -> None:
    w = get_workspace_row(session, workspace_id)
    directory_id, owner = w.directory_id, _username(session, w.user_id)
    session.expunge(w)
    session.execute(delete(WorkSpace).where(WorkSpace.id == workspace_id))
    audit.record(session, "workspace.delete", "change", directory_id=directory_id,
                 username=owner, actor=actor, workspace=workspace_id)


def start_workspace(session: Session, ctx: BrokerContext, workspace_id: str,
                    actor: str) -> dict[str, Any]:
    """Begin starting a STOPPED WorkSpace (no-op when starting or available);
    workspace_unavailable in ERROR and other states."""
    from broker.workspaces import request_start

    w = get_workspace_row(session, workspace_id)
    before = w.state
    request_start(session, w, ctx.now(), ctx.settings)
    session.flush()
    owner = _username(session, w.user_id)
    audit.record(session, "workspace.start", "change", directory_id=w.directory_id,
                 username=owner, actor=actor, workspace=w.id, before=before, after=w.state)
    return workspace_view(w, owner)


def stop_workspace(session: Session, ctx: BrokerContext, workspace_id: str,
                   actor: str) -> dict[str, Any]:
    from broker.workspaces import request_stop

    w = get_workspace_row(session, workspace_id)
    before = w.state
    request_stop(session, w, ctx.now(), ctx.settings)
    session.flush()
    owner = _username(session, w.user_id)
    audit.record(session, "workspace.stop", "change", directory_id=w.directory_id,
                 username=owner, actor=actor, workspace=w.id, before=before, after=w.state)
    return workspace_view(w, owner)


# --------------------------------------------------------------------------- registration codes

def list_codes(session: Session, page: Page, *, directory: str | None = None,
               state: str | None = None) -> dict[str, Any]:
    stmt = select(RegistrationCode)
    if directory:
        get_directory_row(session, directory)
        stmt = stmt.where(RegistrationCode.directory_id == directory)
    if state:
        stmt = stmt.where(RegistrationCode.state == state)
    return paginate(session, stmt, RegistrationCode.id, page, code_view)


def _code(session: Session, code: str) -> dict[str, Any]:
    row = session.scalar(select(RegistrationCode).where(RegistrationCode.code == code))
    assert row is not None
    return code_view(row)


def issue_codes(session: Session, ctx: BrokerContext, directory_id: str, count: int,
                actor: str) -> list[dict[str, Any]]:
    from broker.service import registrations

    get_directory_row(session, directory_id)
    codes = [registrations.issue_code(ctx, session, directory_id, actor) for _ in range(count)]
    session.flush()
    return [_code(session, c) for c in codes]


def rotate_code(session: Session, ctx: BrokerContext, code: str, actor: str) -> dict[str, Any]:
    """The successor code; the old one keeps working for registration.rotation_grace_s."""
    from broker.service import registrations

    new = registrations.rotate_code(ctx, session, _canonical_code(ctx, code), actor)
    session.flush()
    return _code(session, new)


def revoke_code(session: Session, ctx: BrokerContext, code: str, actor: str) -> dict[str, Any]:
    from broker.service import registrations

    canonical = _canonical_code(ctx, code)
    registrations.revoke_code(ctx, session, canonical, actor)
    session.flush()
    return _code(session, registration_key(ctx, canonical))


def registration_key(ctx: BrokerContext, code: str) -> str:
    from broker import registration

    return registration.parse(code, ctx.catalogue).lookup_key


def _canonical_code(ctx: BrokerContext, code: str) -> str:
    from broker.errors import BrokerError

    try:
        registration_key(ctx, code)
    except BrokerError as exc:
        raise ServiceError("validation_failed", exc.message, {"field": "code"}) from None
    return code


# --------------------------------------------------------------------------- sessions

def list_sessions(session: Session, page: Page, *, directory: str | None = None,
                  workspace: str | None = None, user: str | None = None,
                  state: str | None = None, auth_method: str | None = None
                  ) -> dict[str, Any]:
    stmt = select(BrokerSession)
    if directory:
        stmt = stmt.where(BrokerSession.directory_id == directory)
    if workspace:
        stmt = stmt.where(BrokerSession.workspace_id == workspace)
    if user:
        stmt = stmt.join(User, User.id == BrokerSession.user_id).where(User.username == user)
    if state == "live":
        stmt = stmt.where(BrokerSession.state.in_(LIVE_SESSION_STATES))
    elif state:
        stmt = stmt.where(BrokerSession.state == state)
    if auth_method:
        stmt = stmt.where(BrokerSession.auth_method == auth_method)
    return paginate(session, stmt, BrokerSession.id, page, session_view)


def get_session(session: Session, session_id: str) -> dict[str, Any]:
    s = session.get(BrokerSession, session_id) if len(session_id) <= 64 else None
    if s is None:
        raise ServiceError("session_unknown", "There is no such session.",
                           {"session": session_id})
    return session_view(s)


def terminate_session(session: Session, ctx: BrokerContext, session_id: str,
                      actor: str) -> dict[str, Any]:
    """End a session now; its next heartbeat is told to disconnect. session_ended if over."""
    s = session.get(BrokerSession, session_id) if len(session_id) <= 64 else None
    if s is None:
        raise ServiceError("session_unknown", "There is no such session.",
                           {"session": session_id})
    if s.state == "ended":
        raise ServiceError("session_ended", "This session has already ended.",
                           {"reason": s.end_reason})
    s.state, s.end_reason, s.ended_at, s.pending_action = "ended", "admin", ctx.now(), "disconnect"
    session.flush()
    audit.record(session, "session.terminate", "change", directory_id=s.directory_id,
                 username=_username(session, s.user_id), actor=actor, session_id=s.id,
                 workspace=s.workspace_id)
    return session_view(s)


# --------------------------------------------------------------------------- audit

def list_audit(session: Session, page: Page, *, directory: str | None = None,
               username: str | None = None, kind: str | None = None,
               outcome: str | None = None, actor: str | None = None,
               since: datetime | None = None, until: datetime | None = None
               ) -> dict[str, Any]:
    """Audit events, newest first. ``kind`` ending in ``.`` or ``*`` matches a prefix."""
    stmt = select(AuditEvent)
    if directory:
        stmt = stmt.where(AuditEvent.directory_id == directory)
    if username:
        stmt = stmt.where(AuditEvent.username == username)
    if kind:
        if kind.endswith("*"):
            stmt = stmt.where(AuditEvent.kind.startswith(kind[:-1], autoescape=True))
        else:
            stmt = stmt.where(AuditEvent.kind == kind)
    if outcome:
        stmt = stmt.where(AuditEvent.outcome == outcome)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at < until)
    return paginate(session, stmt, AuditEvent.id, page, audit_view, descending=True)
