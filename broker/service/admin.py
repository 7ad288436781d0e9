"""Admin use cases and the ONE declaration of each admin resource.

Every resource (directories, trust, CRLs, users, WorkSpaces, registration codes, sessions, audit
events) is declared once below as a :class:`~broker.service.resources.Resource`: its fields
(types, limits, labels, help, defaults, where they may be set), list filters and operations
(method and path, read or write scope, audit event, use case). The admin API, its OpenAPI
document, the ``broker admin`` commands and apply/export are generated from these
declarations; adding a per-directory setting is one :class:`Field` in ``DIRECTORIES``.

Use cases are plain blocking functions ``fn(session, ctx, ..., actor)`` run inside the caller's
ONE transaction (the admin API's request or one `broker admin` command), so a failure changes
nothing. They take and return plain values; every change writes an audit event naming ``actor``
(``token:<name>`` or ``cli:<user>``).

Errors (ServiceError codes): directory_unknown, resource_not_found, workspace_unknown,
session_unknown, session_ended, conflict, validation_failed, certificate_unreadable,
certificate_not_ca, crl_unreadable, workspace_unavailable, malformed_request (bad cursor).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.orm import Session, object_session

import broker.policy as policy
from broker import kinds
from broker.codes import Code
from broker.service import audit
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.ldapdir import (
    FLAVOURS,
    check_settings,
    parse_pairs,
    settings_of,
    warnings_of,
)
from broker.service.passwords import hash_password
from broker.service.resources import (
    DEFAULT_LIMIT,
    FINGERPRINT_PATTERN,
    ID_PATTERN,
    MAX_LIMIT,
    Call,
    Field,
    Filter,
    Operation,
    Page,
    Resource,
    Scope,
    check_id,
    filtered,
    paginate,
)
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

__all__ = ["DEFAULT_LIMIT", "ID_PATTERN", "MAX_LIMIT", "Page", "RESOURCES"]

LIVE_SESSION_STATES = kinds.LIVE_SESSION_STATES
WORKSPACE_STATES = kinds.values(kinds.WorkSpaceState)
#: Trust anchors and intermediates expiring sooner than this are warned about.
CA_EXPIRY_WARNING = timedelta(days=30)
#: A CRL whose nextUpdate is closer than this is warned about.
CRL_DUE_WARNING = timedelta(hours=24)
CERTMAP_RULES = kinds.values(kinds.CertmapRule)
READ, WRITE = Scope.READ, Scope.WRITE
DIR_404 = ("directory_unknown",)


def _time(name: str, label: str, help: str, column: str | None = None, *,
          console_column: bool = False, warn_within: timedelta | None = None,
          list_column: bool = False) -> Field:
    """A read-only timestamp (ISO 8601, UTC)."""
    return Field(name, str, label, help, column=column, nullable=True, create=False,
                 update=False, in_file=False, console_column=console_column,
                 warn_within=warn_within, list_column=list_column)


def _out(name: str, type_: Any, label: str, help: str = "", *, column: str | None = None,
         nullable: bool = False, list_column: bool = False, read: Any = None,
         console_column: bool = False, copyable: bool = False) -> Field:
    """A read-only output field."""
    return Field(name, type_, label, help or label + ".", column=column, nullable=nullable,
                 create=False, update=False, in_file=False, list_column=list_column, read=read,
                 console_column=console_column, copyable=copyable)


def _unique(rules: Any) -> Any:
    # Runs before the type check: only a list of strings can be judged (the type check refuses
    # anything else with a clear message).
    if isinstance(rules, list) and all(isinstance(r, str) for r in rules) \
            and len(set(rules)) != len(rules):
        raise ValueError("certmap rules must not repeat")
    return rules


# --------------------------------------------------------------------------- lookups

def _row_by_id(session: Session, model: type[Any], key: str, code: Code, what: str) -> Any:
    """The row of ``model`` with primary key ``key``, or ServiceError ``code`` (an id longer
    than any stored one is not looked up)."""
    row = session.get(model, key) if len(key) <= 64 else None
    if row is None:
        raise ServiceError(code, f"There is no {what} {key!r}.", {what.lower(): key})
    return row


def get_directory_row(session: Session, directory_id: str) -> Directory:
    row: Directory = _row_by_id(session, Directory, directory_id, Code.DIRECTORY_UNKNOWN,
                                "directory")
    return row


def get_user_row(session: Session, directory_id: str, username: str) -> User:
    get_directory_row(session, directory_id)
    u = session.scalar(select(User).where(User.directory_id == directory_id,
                                          User.username == username))
    if u is None:
        raise ServiceError(Code.RESOURCE_NOT_FOUND,
                           f"Directory {directory_id!r} has no user {username!r}.",
                           {"directory": directory_id, "username": username})
    return u


def get_workspace_row(session: Session, workspace_id: str) -> WorkSpace:
    row: WorkSpace = _row_by_id(session, WorkSpace, workspace_id, Code.WORKSPACE_UNKNOWN,
                                "WorkSpace")
    return row


def username_of(session: Session | None, user_id: int) -> str | None:
    u = session.get(User, user_id) if session is not None else None
    return u.username if u is not None else None


def region_suggestion(region: str, known: Any) -> str:
    """" (did you mean 'us-gov-west-1'?)" for a near miss of a catalogue region, else ""."""
    import difflib

    close = difflib.get_close_matches(region.lower(), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_region(ctx: BrokerContext, region: str) -> None:
    if region not in ctx.catalogue:
        raise ServiceError(Code.VALIDATION_FAILED,
                           f"Region {region!r} is not in the region catalogue"
                           f"{region_suggestion(region, ctx.catalogue.region_ids())}.",
                           {"field": "region", "region": region})


# --------------------------------------------------------------------------- policy warnings

class SettingWarning(BaseModel):
    """A setting that was saved but cannot take effect, with the policy's reason code."""

    model_config = ConfigDict(extra="forbid")
    code: str
    field: str
    message: str


def directory_warnings(catalogue: Any, region: str, pre_session: bool, in_session: bool,
                       password_login: bool) -> list[dict[str, str]]:
    """Why these directory settings cannot (fully) take effect in ``region``, from the pure
    policy: ``region_pre_session_unavailable``, ``in_session_not_allowed`` and
    ``no_login_method`` (no client could log in at all). Empty when everything applies."""
    if region not in catalogue:
        return []
    entry = catalogue.get(region)
    settings = policy.DirectorySettings(pre_session=pre_session, in_session=in_session,
                                        password_login=password_login)
    out: list[dict[str, str]] = []
    pre = policy.decide_smart_card(entry, settings, policy.Purpose.PRE_SESSION)
    if pre_session and policy.Reason.REGION_PRE_SESSION_UNAVAILABLE in pre.reasons:
        out.append({"code": policy.Reason.REGION_PRE_SESSION_UNAVAILABLE.value,
                    "field": "smart_card.pre_session",
                    "message": f"pre-session smart-card login is not available in {region}; "
                               "clients will not be offered \"Insert your smart card\""})
    inside = policy.decide_smart_card(entry, settings, policy.Purpose.IN_SESSION)
    if in_session and not inside.allowed:
        out.append({"code": policy.Reason.IN_SESSION_NOT_ALLOWED.value,
                    "field": "smart_card.in_session",
                    "message": f"in-session smart-card use is not available in {region}"})
    if not password_login and not pre.allowed:
        out.append({"code": "no_login_method", "field": "password_login",
                    "message": "with password login off and no pre-session smart-card login, "
                               "no client can log in to this directory"})
    return out


def _directory_row_warnings(d: Directory, ctx: Any) -> list[dict[str, str]]:
    if ctx is None:
        return []
    out = directory_warnings(ctx.catalogue, d.region, d.sc_pre_session, d.sc_in_session,
                             d.password_login)
    session = object_session(d)
    if session is not None:
        from broker.service.coverage import directory_gaps

        out += directory_gaps(session, d.id, ctx.now())
    return out + warnings_of(d)


# --------------------------------------------------------------------------- directories

def _check_ldap(d: Directory) -> None:
    problem = check_settings(d)
    if problem is not None:
        raise ServiceError(Code.VALIDATION_FAILED, f"{problem[0]}: {problem[1]}",
                           {"field": problem[0], "fields": [problem[0]]})


def list_directories(session: Session, page: Page, *, region: str | None = None,
                     ctx: Any = None) -> dict[str, Any]:
    return list_rows(DIRECTORIES, session, ctx, Call("", filters={"region": region}, page=page))


def get_directory(session: Session, directory_id: str, ctx: Any = None) -> dict[str, Any]:
    return DIRECTORIES.view(get_directory_row(session, directory_id), ctx)


def create_directory(session: Session, ctx: BrokerContext, fields: Mapping[str, Any],
                     actor: str) -> dict[str, Any]:
    """Create a directory from its declared fields (defaults filled in); conflict when the id
    exists, validation_failed for an unknown region or an invalid field. The view carries
    ``warnings`` for settings the region's policy makes ineffective."""
    data = DIRECTORIES.validate(fields)
    directory_id = data["id"]
    _check_region(ctx, data["region"])
    if session.get(Directory, directory_id) is not None:
        raise ServiceError(Code.CONFLICT, f"A directory {directory_id!r} already exists.",
                           {"directory": directory_id})
    values = {**DIRECTORIES.defaults(), **DIRECTORIES.values(data)}
    values.pop("id", None)
    d = Directory(id=directory_id, created_at=ctx.now(), updated_at=ctx.now(), **values)
    _check_ldap(d)
    session.add(d)
    session.flush()
    view = DIRECTORIES.view(d, ctx)
    audit.record(session, "directory.create", "change", directory_id=d.id, actor=actor,
                 region=d.region, warnings=[w["code"] for w in view["warnings"]])
    return view


def check_region_move(session: Session, d: Directory, region: str) -> None:
    """A code's prefix names its region: a directory with active codes may not move."""
    if region == d.region:
        return
    live = session.scalar(select(RegistrationCode.id).where(
        RegistrationCode.directory_id == d.id, RegistrationCode.state == "active").limit(1))
    if live is not None:
        raise ServiceError(Code.VALIDATION_FAILED,
                           f"Directory {d.id!r} has active registration codes for {d.region}; "
                           f"revoke them before moving it to {region} (a code's prefix names "
                           "its region).", {"field": "region"})


def update_directory(session: Session, ctx: BrokerContext, directory_id: str,
                     fields: Mapping[str, Any], actor: str) -> dict[str, Any]:
    d = get_directory_row(session, directory_id)
    values = DIRECTORIES.values(DIRECTORIES.validate(fields, update=True))
    if "region" in values and values["region"] != d.region:
        _check_region(ctx, values["region"])
        check_region_move(session, d, values["region"])
    changed = DIRECTORIES.assign(d, values)
    _check_ldap(d)
    if changed:
        d.updated_at = ctx.now()
        session.flush()
    view = DIRECTORIES.view(d, ctx)
    if changed:
        audit.record(session, "directory.update", "change", directory_id=d.id, actor=actor,
                     fields=changed, warnings=[w["code"] for w in view["warnings"]])
    return view


def delete_directory(session: Session, directory_id: str, actor: str) -> None:
    """Delete a directory and everything in it (users, WorkSpaces, trust, codes, sessions)."""
    d = get_directory_row(session, directory_id)
    session.expunge(d)
    # The database cascades (ON DELETE CASCADE) to every row of the directory.
    session.execute(delete(Directory).where(Directory.id == directory_id))
    audit.record(session, "directory.delete", "change", directory_id=directory_id, actor=actor)


# --------------------------------------------------------------------------- trust and CRLs

def parse_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in PEM ``data`` (or one DER certificate, raw or base64);
    certificate_unreadable when there is none."""
    data = data.strip()
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            try:
                data = base64.b64decode(data, validate=True)
            except binascii.Error:
                pass  # raw DER
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ServiceError(Code.CERTIFICATE_UNREADABLE,
                           "The upload is not a PEM certificate (or base64 DER).") from None
    if not certs:
        raise ServiceError(Code.CERTIFICATE_UNREADABLE, "The upload holds no certificate.")
    return certs


def is_ca(cert: x509.Certificate) -> bool:
    """basicConstraints CA=true (a missing or malformed extension is not a CA)."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return bool(bc.ca)


def cert_fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def parse_crl(data: bytes) -> x509.CertificateRevocationList:
    """A PEM CRL, or a DER CRL (raw or base64); crl_unreadable otherwise."""
    data = data.strip()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        try:
            data = base64.b64decode(data, validate=True)
        except binascii.Error:
            pass  # raw DER
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise ServiceError(Code.CRL_UNREADABLE,
                           "The upload is not a PEM CRL (or base64 DER CRL).") from None


def crl_fingerprint(crl: x509.CertificateRevocationList) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(crl.public_bytes(serialization.Encoding.DER))
    return digest.finalize().hex()


def profile_options(value_of: Callable[[Field], Any]) -> Any:
    """The directory's :class:`broker.pki.profile.ProfileOptions`: every field declared with
    ``profile=True``, read by ``value_of`` (from a row, or from a directory file entry)."""
    from broker.pki.profile import ProfileOptions

    return ProfileOptions(**{f.name: bool(value_of(f)) for f in DIRECTORIES.fields
                             if f.profile})


def row_profile_options(d: Directory) -> Any:
    return profile_options(lambda f: getattr(d, f.attr))


def check_ca_upload(cert: x509.Certificate, options: Any = None) -> list[str]:
    """Judge a CA certificate an admin uploads with the PKI profile
    (:func:`broker.pki.profile.check_ca_upload`): certificate_not_ca when it is no CA,
    certificate_profile_invalid naming every RFC 5280 MUST it breaks; else the SHOULDs it
    misses and the MUSTs the directory's profile ``options`` relax (accepted, shown as
    warnings)."""
    from broker.pki import profile

    fp = cert_fingerprint(cert)
    details = {"fingerprint": fp, "subject": cert.subject.rfc4514_string()}
    if not is_ca(cert):
        raise ServiceError(Code.CERTIFICATE_NOT_CA,
                           "The certificate is not a CA certificate (basicConstraints "
                           "CA=true is required for trust anchors and intermediates).", details)
    errors, warnings = profile.check_ca_upload(cert.public_bytes(serialization.Encoding.DER),
                                               options or profile.STRICT)
    if errors:
        raise ServiceError(Code.CERTIFICATE_PROFILE_INVALID,
                           "The CA certificate breaks RFC 5280: " + " ".join(errors),
                           {**details, "reasons": errors})
    return warnings


def _ca_warnings(t: TrustCertificate, ctx: Any) -> list[str]:
    from broker.pki import profile

    session = object_session(t)
    d = session.get(Directory, t.directory_id) if session is not None else None
    out = profile.check_ca_upload(t.der, row_profile_options(d) if d else profile.STRICT)[1]
    if session is not None and t.kind == "intermediate":
        from datetime import UTC

        from broker.service.coverage import directory_gaps

        subject = f"CA {t.subject}:"
        out += [g["message"] for g in directory_gaps(session, t.directory_id,
                                                     datetime.now(UTC))
                if subject in g["message"]]
    return out


def trust_row(directory_id: str, cert: x509.Certificate, kind: str | None) -> TrustCertificate:
    return TrustCertificate(
        directory_id=directory_id,
        kind=kind or ("anchor" if cert.issuer == cert.subject else "intermediate"),
        subject=cert.subject.rfc4514_string(), fingerprint=cert_fingerprint(cert),
        not_after=cert.not_valid_after_utc, der=cert.public_bytes(serialization.Encoding.DER))


def crl_row(directory_id: str, crl: x509.CertificateRevocationList) -> Crl:
    return Crl(directory_id=directory_id, issuer=crl.issuer.rfc4514_string(),
               fingerprint=crl_fingerprint(crl), this_update=crl.last_update_utc,
               next_update=crl.next_update_utc, der=crl.public_bytes(serialization.Encoding.DER))


def add_trust(session: Session, directory_id: str, pem: str, kind: str | None,
              actor: str) -> list[dict[str, Any]]:
    """Add the CA certificate(s) in ``pem`` as anchors or intermediates.

    certificate_unreadable when it does not parse, certificate_not_ca when one lacks
    basicConstraints CA=true, conflict when one is already there.
    """
    options = row_profile_options(get_directory_row(session, directory_id))
    added: list[TrustCertificate] = []
    for cert in parse_certificates(pem.encode()):
        check_ca_upload(cert, options)
        row = trust_row(directory_id, cert, kind)
        exists = session.scalar(select(TrustCertificate.id).where(
            TrustCertificate.directory_id == directory_id,
            TrustCertificate.fingerprint == row.fingerprint))
        if exists is not None or row.fingerprint in {r.fingerprint for r in added}:
            raise ServiceError(Code.CONFLICT,
                               "This certificate is already trusted by the directory.",
                               {"fingerprint": row.fingerprint})
        session.add(row)
        added.append(row)
    session.flush()
    for row in added:
        audit.record(session, "trust.add", "change", directory_id=directory_id, actor=actor,
                     cert_fingerprint=row.fingerprint, trust_kind=row.kind)
    return [TRUST.view(r) for r in added]


def add_crl(session: Session, directory_id: str, text: str, actor: str) -> dict[str, Any]:
    get_directory_row(session, directory_id)
    row = crl_row(directory_id, parse_crl(text.encode()))
    if session.scalar(select(Crl.id).where(Crl.directory_id == directory_id,
                                           Crl.fingerprint == row.fingerprint)) is not None:
        raise ServiceError(Code.CONFLICT, "This CRL is already loaded.",
                           {"fingerprint": row.fingerprint})
    session.add(row)
    session.flush()
    audit.record(session, "crl.add", "change", directory_id=directory_id, actor=actor,
                 crl_fingerprint=row.fingerprint, issuer=row.issuer)
    return CRLS.view(row)


def _remove_by_fingerprint(model: Any, what: str, audit_kind: str, audit_key: str
                           ) -> Any:
    def run(session: Session, ctx: Any, call: Call) -> None:
        directory_id, fingerprint = call.path["directory_id"], call.path["fingerprint"]
        get_directory_row(session, directory_id)
        row = session.scalar(select(model).where(model.directory_id == directory_id,
                                                 model.fingerprint == fingerprint.lower()))
        if row is None:
            raise ServiceError(Code.RESOURCE_NOT_FOUND, f"The directory has no such {what}.",
                               {"fingerprint": fingerprint})
        session.delete(row)
        details = {audit_key: row.fingerprint}
        if model is TrustCertificate:
            details["trust_kind"] = row.kind
        audit.record(session, audit_kind, "change", directory_id=directory_id,
                     actor=call.actor, **details)
    return run


def remove_trust(session: Session, directory_id: str, fingerprint: str, actor: str) -> None:
    TRUST.operation("remove").run(session, None, Call(actor, {"directory_id": directory_id,
                                                              "fingerprint": fingerprint}))


def remove_crl(session: Session, directory_id: str, fingerprint: str, actor: str) -> None:
    CRLS.operation("remove").run(session, None, Call(actor, {"directory_id": directory_id,
                                                             "fingerprint": fingerprint}))


# --------------------------------------------------------------------------- users

def set_password(d: Directory, u: User, password: str | None) -> None:
    if password is None:
        u.password_hash = None
        return
    if not d.password_login:
        raise ServiceError(Code.VALIDATION_FAILED,
                           f"Directory {d.id!r} has password login off; a password cannot be set.",
                           {"field": "password"})
    u.password_hash = hash_password(password)


def user_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """Column values of a user body or file entry (username and password aside)."""
    values = USERS.values(data, [f for f in USERS.fields if f.name not in ("username",
                                                                            "password")])
    if values.get("cert_fingerprint"):
        values["cert_fingerprint"] = values["cert_fingerprint"].lower()
    return values


def list_users(session: Session, directory_id: str, page: Page, *,
               disabled: bool | None = None) -> dict[str, Any]:
    return list_rows(USERS, session, None, Call("", {"directory_id": directory_id},
                                                filters={"disabled": disabled}, page=page))


def get_user(session: Session, directory_id: str, username: str) -> dict[str, Any]:
    return USERS.view(get_user_row(session, directory_id, username))


def _owner(session: Session, ctx: BrokerContext, d: Directory, username: str) -> User:
    """A WorkSpace's owner: a user row, or for an LDAP directory a name its server holds."""
    s = settings_of(d)
    if s is None:
        return get_user_row(session, d.id, username)
    found = session.scalar(select(User).where(User.directory_id == d.id,
                                              User.username == username))
    if found is not None:
        return found
    if ctx.ldap.find_name(s, username) is None:
        raise ServiceError(Code.RESOURCE_NOT_FOUND, f"The LDAP directory of {d.id!r} holds no "
                           f"user {username!r} ({s.user_name_attribute}).",
                           {"directory": d.id, "username": username})
    from broker.service.trust import name_row

    return session.get_one(User, name_row(session.connection(), d.id, username))


def create_user(session: Session, directory_id: str, fields: Mapping[str, Any],
                actor: str) -> dict[str, Any]:
    d = get_directory_row(session, directory_id)
    if d.ldap_url:
        raise ServiceError(Code.VALIDATION_FAILED, f"The users of directory {directory_id!r} "
                           "live in its LDAP server; create them there.",
                           {"field": "username"})
    data = USERS.validate(fields)
    username = data["username"]
    if session.scalar(select(User.id).where(User.directory_id == directory_id,
                                            User.username == username)) is not None:
        raise ServiceError(Code.CONFLICT, f"Directory {directory_id!r} already has a user "
                           f"{username!r}.", {"username": username})
    u = User(directory_id=directory_id, username=username, **user_values(data))
    if data.get("password") is not None:
        set_password(d, u, data["password"])
    session.add(u)
    session.flush()
    audit.record(session, "user.create", "change", directory_id=directory_id, username=username,
                 actor=actor, with_password=u.password_hash is not None)
    return USERS.view(u)


def update_user(session: Session, directory_id: str, username: str, fields: Mapping[str, Any],
                actor: str) -> dict[str, Any]:
    u = get_user_row(session, directory_id, username)
    data = USERS.validate(fields, update=True)
    changed = USERS.assign(u, user_values(data))
    if "password" in data:
        set_password(u.directory, u, data["password"])
        changed.append("password")
    if changed:
        session.flush()
        audit.record(session, "user.update", "change", directory_id=directory_id,
                     username=username, actor=actor, fields=changed)
    return USERS.view(u)


def delete_user(session: Session, directory_id: str, username: str, actor: str) -> None:
    u = get_user_row(session, directory_id, username)
    session.execute(delete(User).where(User.id == u.id))
    session.expunge(u)
    audit.record(session, "user.delete", "change", directory_id=directory_id, username=username,
                 actor=actor)


# --------------------------------------------------------------------------- WorkSpaces

def workspace_values(w: WorkSpace | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """Column values of a WorkSpace body or file entry (owner, directory and state aside)."""
    values = WORKSPACES.values(data, [f for f in WORKSPACES.fields
                                      if f.name in ("name", "bundle", "protocol",
                                                    "running_mode", "os")])
    if "name" in values and values["name"] is None:
        values["name"] = w.id if w is not None else data["id"]
    return values


def list_workspaces(session: Session, page: Page, **filters: Any) -> dict[str, Any]:
    return list_rows(WORKSPACES, session, None, Call("", filters=filters, page=page))


def get_workspace(session: Session, workspace_id: str) -> dict[str, Any]:
    return WORKSPACES.view(get_workspace_row(session, workspace_id))


def create_workspace(session: Session, ctx: BrokerContext, fields: Mapping[str, Any],
                     actor: str) -> dict[str, Any]:
    data = WORKSPACES.validate(fields)
    directory_id = data["directory"]
    d = get_directory_row(session, directory_id)
    owner = _owner(session, ctx, d, data["user"])
    if session.get(WorkSpace, data["id"]) is not None:
        raise ServiceError(Code.CONFLICT, f"A WorkSpace {data['id']!r} already exists.",
                           {"workspace": data["id"]})
    now = ctx.now()
    w = WorkSpace(id=data["id"], directory_id=directory_id, user_id=owner.id,
                  state=data["state"], state_changed_at=now, last_activity_at=now,
                  created_at=now, **workspace_values(None, data))
    session.add(w)
    session.flush()
    audit.record(session, "workspace.create", "change", directory_id=directory_id,
                 username=owner.username, actor=actor, workspace=w.id, protocol=w.protocol)
    return WORKSPACES.view(w)


def end_smart_card_sessions(session: Session, ws: WorkSpace, now: datetime, reason: str
                            ) -> list[str]:
    """End the live smart-card sessions of ``ws`` at once; their next heartbeat disconnects."""
    rows = list(session.scalars(select(BrokerSession).where(
        BrokerSession.workspace_id == ws.id,
        BrokerSession.state.in_(LIVE_SESSION_STATES),
        BrokerSession.auth_method == "smart_card")))
    for s in rows:
        s.state, s.end_reason, s.ended_at, s.pending_action = (
            kinds.SessionState.ENDED, kinds.SessionEndReason(reason), now,
            kinds.SessionAction.DISCONNECT)
    return [s.id for s in rows]


def update_workspace(session: Session, ctx: BrokerContext, workspace_id: str,
                     fields: Mapping[str, Any], actor: str) -> dict[str, Any]:
    """Change a WorkSpace. Switching it to PCoIP ends its smart-card sessions in the same
    transaction (smart cards are only for WSP): state ended, end_reason protocol_changed,
    pending_action disconnect."""
    w = get_workspace_row(session, workspace_id)
    data = WORKSPACES.validate(fields, update=True)
    now = ctx.now()
    changed: list[str] = []
    owner_name = username_of(session, w.user_id)
    if data.get("user") is not None and data["user"] != owner_name:
        owner = _owner(session, ctx, get_directory_row(session, w.directory_id), data["user"])
        w.user_id, owner_name = owner.id, owner.username
        changed.append("user")
    changed += WORKSPACES.assign(w, workspace_values(w, data))
    if data.get("state") is not None and data["state"] != w.state:
        w.state, w.state_changed_at, w.transition_due_at = data["state"], now, None
        changed.append("state")
    ended: list[str] = []
    if "protocol" in changed and w.protocol == "PCoIP":
        ended = end_smart_card_sessions(session, w, now, "protocol_changed")
    if changed:
        session.flush()
        audit.record(session, "workspace.update", "change", directory_id=w.directory_id,
                     username=owner_name, actor=actor, workspace=w.id, fields=changed,
                     ended_sessions=ended)
    return WORKSPACES.view(w)


def delete_workspace(session: Session, workspace_id: str, actor: str) -> None:
    w = get_workspace_row(session, workspace_id)
    directory_id, owner = w.directory_id, username_of(session, w.user_id)
    session.expunge(w)
    session.execute(delete(WorkSpace).where(WorkSpace.id == workspace_id))
    audit.record(session, "workspace.delete", "change", directory_id=directory_id,
                 username=owner, actor=actor, workspace=workspace_id)


def _transition(action: str) -> Any:
    """Start (STOPPED → STARTING) or stop (AVAILABLE → STOPPING) a WorkSpace; a no-op in the
    state it is going to, workspace_unavailable where the backend refuses."""

    def run(session: Session, ctx: BrokerContext, call: Call) -> dict[str, Any]:
        from broker.workspaces import request_start, request_stop

        w = get_workspace_row(session, call.path["workspace_id"])
        before = w.state
        (request_start if action == "start" else request_stop)(session, w, ctx.now(),
                                                                 ctx.settings)
        session.flush()
        audit.record(session, f"workspace.{action}", "change", directory_id=w.directory_id,
                     username=username_of(session, w.user_id), actor=call.actor, workspace=w.id,
                     before=before, after=w.state)
        return WORKSPACES.view(w)
    return run


def start_workspace(session: Session, ctx: BrokerContext, workspace_id: str,
                    actor: str) -> dict[str, Any]:
    result: dict[str, Any] = _transition("start")(session, ctx, Call(
        actor, {"workspace_id": workspace_id}))
    return result


def stop_workspace(session: Session, ctx: BrokerContext, workspace_id: str,
                   actor: str) -> dict[str, Any]:
    result: dict[str, Any] = _transition("stop")(session, ctx, Call(
        actor, {"workspace_id": workspace_id}))
    return result


# --------------------------------------------------------------------------- registration codes

def _code(session: Session, code: str) -> dict[str, Any]:
    row = session.scalar(select(RegistrationCode).where(RegistrationCode.code == code))
    if row is None:
        raise ServiceError(Code.RESOURCE_NOT_FOUND, "no such registration code")
    return CODES.view(row)


def list_codes(session: Session, page: Page, *, directory: str | None = None,
               state: str | None = None) -> dict[str, Any]:
    return list_rows(CODES, session, None, Call("", filters={"directory": directory,
                                                              "state": state}, page=page))


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
        raise ServiceError(Code.VALIDATION_FAILED, exc.message, {"field": "code"}) from None
    return code


# --------------------------------------------------------------------------- sessions

def get_session(session: Session, session_id: str) -> dict[str, Any]:
    return SESSIONS.view(_session_row(session, session_id))


def _session_row(session: Session, session_id: str) -> BrokerSession:
    row: BrokerSession = _row_by_id(session, BrokerSession, session_id, Code.SESSION_UNKNOWN,
                                    "session")
    return row


def terminate_session(session: Session, ctx: BrokerContext, session_id: str,
                      actor: str) -> dict[str, Any]:
    """End a session now; its next heartbeat is told to disconnect. session_ended if over."""
    s = _session_row(session, session_id)
    if s.state == "ended":
        raise ServiceError(Code.SESSION_ENDED, "This session has already ended.",
                           {"reason": s.end_reason})
    s.state, s.end_reason, s.ended_at, s.pending_action = (
        kinds.SessionState.ENDED, kinds.SessionEndReason.ADMIN, ctx.now(),
        kinds.SessionAction.DISCONNECT)
    session.flush()
    audit.record(session, "session.terminate", "change", directory_id=s.directory_id,
                 username=username_of(session, s.user_id), actor=actor, session_id=s.id,
                 workspace=s.workspace_id)
    return SESSIONS.view(s)


def list_sessions(session: Session, page: Page, **filters: Any) -> dict[str, Any]:
    return list_rows(SESSIONS, session, None, Call("", filters=filters, page=page))


def list_audit(session: Session, page: Page, **filters: Any) -> dict[str, Any]:
    """Audit events, newest first. ``kind`` ending in ``*`` matches a prefix."""
    return list_rows(AUDIT_EVENTS, session, None, Call("", filters=filters, page=page))


# --------------------------------------------------------------------------- generic operations

def list_rows(resource: Resource, session: Session, ctx: Any, call: Call) -> dict[str, Any]:
    """One page of ``resource`` narrowed by the call's filters (and parent directory)."""
    model = resource.model
    key = getattr(model, resource.order_by)
    stmt: Select[Any] = select(model)
    if "directory_id" in call.path:
        get_directory_row(session, call.path["directory_id"])
        stmt = stmt.where(model.directory_id == call.path["directory_id"])  # type: ignore[attr-defined]
    op = resource.operation("list")
    stmt = filtered(stmt, op.filters, call.filters)
    return paginate(session, stmt, key, call.page, lambda r: resource.view(r, ctx),
                    descending=resource.newest_first)


def _list(name: str) -> Any:
    def run(session: Session, ctx: Any, call: Call) -> dict[str, Any]:
        return list_rows(RESOURCES[name], session, ctx, call)
    return run


def _byusername_of(model: Any) -> Any:
    def where(stmt: Select[Any], value: Any) -> Select[Any]:
        return stmt.join(User, User.id == model.user_id).where(User.username == value)
    return where


def _search(*columns: Any) -> Any:
    """A filter matching rows where any of ``columns`` contains the text (case-insensitive)."""
    def where(stmt: Select[Any], value: Any) -> Select[Any]:
        needle = str(value).lower()
        return stmt.where(or_(*(func.lower(c).contains(needle, autoescape=True)
                                for c in columns)))
    return where


def _session_state(stmt: Select[Any], value: Any) -> Select[Any]:
    if value == "live":
        return stmt.where(BrokerSession.state.in_(LIVE_SESSION_STATES))
    return stmt.where(BrokerSession.state == value)


def _audit_kind(stmt: Select[Any], value: Any) -> Select[Any]:
    if value.endswith("*"):
        return stmt.where(AuditEvent.kind.startswith(value[:-1], autoescape=True))
    return stmt.where(AuditEvent.kind == value)


# --------------------------------------------------------------------------- declarations

_ID = dict(validators=(check_id,), limits={"pattern": ID_PATTERN})
_DIRECTORY_PATH = "/directories/{directory_id}"

def _ldap(name: str, type_: Any, label: str, help: str, **kw: Any) -> Field:
    return Field(name, type_, label, help, group="ldap", column=f"ldap_{name}",
                 cli=f"ldap-{name.replace('_', '-')}", **kw)


_LDAP_TEXT = {"min_length": 1, "max_length": 1000}
_LDAP_FIELDS = (
    _ldap("url", str, "LDAP URL", "ldaps://HOST[:PORT], or ldap://HOST[:PORT] with StartTLS "
          "(plain ldap:// only on loopback). Empty: the broker's own users.", nullable=True,
          default=None, limits={"pattern": r"^ldaps?://[^\s/]+/?$", "max_length": 500}),
    _ldap("start_tls", bool, "StartTLS", "Upgrade an ldap:// connection with StartTLS.",
          default=False),
    _ldap("ca_file", str, "LDAP CA file", "PEM file of the CA of the LDAP server's TLS "
          "certificate (absolute path; empty: the system's CAs). The hostname is checked.",
          nullable=True, default=None, limits=_LDAP_TEXT),
    _ldap("flavour", str, "LDAP flavour", "ad (Active Directory: account state, nested "
          "groups, altSecurityIdentities) or generic (inetOrgPerson).", default="ad",
          choices=FLAVOURS),
    _ldap("base_dn", str, "Base DN", "Where users are searched.", nullable=True, default=None,
          limits=_LDAP_TEXT),
    _ldap("bind_dn", str, "Bind DN", "The service account the broker binds as.",
          nullable=True, default=None, limits=_LDAP_TEXT),
    _ldap("bind_password_file", str, "Bind password file",
          "Absolute path of the file holding the service account's password (mode 600 or "
          "stricter; the password is never stored, exported or logged).", nullable=True,
          default=None, limits=_LDAP_TEXT),
    _ldap("user_name_attribute", str, "User name attribute",
          "The user's name in the broker (WorkSpace owner, audit); default sAMAccountName "
          "(ad) or uid (generic).", nullable=True, default=None,
          limits={"pattern": r"^[A-Za-z][A-Za-z0-9-]{0,99}$"}),
    _ldap("user_filter", str, "User filter", "Every user found must also match this LDAP "
          "filter; default (&(objectCategory=person)(objectClass=user)) or "
          "(objectClass=inetOrgPerson).", nullable=True, default=None, limits=_LDAP_TEXT),
    _ldap("attributes", dict[str, str], "Certmap attributes",
          "Certmap rule → attribute, e.g. upn=userPrincipalName, email=mail (defaults per "
          "flavour).", nullable=True, default=None, validators=(parse_pairs,)),
    _ldap("required_groups", list, "Required groups", "Group DNs; a user must be in one "
          "(nested membership counts with ad).", default=[],
          item_limits={"min_length": 1, "max_length": 1000}, limits={"max_length": 50}),
    _ldap("cache_ttl_s", int, "LDAP cache seconds", "How long a process keeps a found user "
          "(refusals: at most 30 s).", default=300, limits={"ge": 0, "le": 86400}),
    _ldap("timeout_s", int, "LDAP timeout seconds", "Bound of each LDAP connect, TLS "
          "handshake and operation; past it logins answer directory_unavailable.",
          default=3, limits={"ge": 1, "le": 60}),
)


DIRECTORIES = Resource(
    "directories", "directory", "Directories",
    "Directories: region, smart-card and revocation settings, certmap, password login.",
    Directory, tag="directories",
    fields=(
        Field("id", str, "ID", "Stable, operator-chosen identifier.", update=False,
              list_column=True, cli_positional=True, **_ID),  # type: ignore[arg-type]
        Field("name", str, "Name", "Display name shown to users.", list_column=True,
              limits={"min_length": 1, "max_length": 200}),
        Field("region", str, "Region", "A region id from the region catalogue (its rules "
              "decide which smart-card settings can take effect).", list_column=True,
              limits={"min_length": 1, "max_length": 32}),
        Field("password_login", bool, "Password login", "Allow password login.",
              default=False, list_column=True),
        Field("pre_session", bool, "Pre-session smart-card login",
              "Log in with a smart card (only where the region allows it).", default=False,
              group="smart_card", column="sc_pre_session", list_column=True),
        Field("in_session", bool, "In-session smart cards",
              "Smart cards inside the session (sudo, browsers).", default=False,
              group="smart_card", column="sc_in_session", list_column=True),
        Field("removal_action", str, "On card removal",
              "What a session does when the card is removed.", default="lock",
              group="smart_card", choices=kinds.values(kinds.RemovalAction), list_column=True),
        Field("crl", bool, "Check CRLs", "Check certificates against CRLs.", default=True,
              group="revocation", column="revocation_crl"),
        Field("ocsp", bool, "Check OCSP", "Ask the certificate's OCSP responder.",
              default=False, group="revocation", column="revocation_ocsp"),
        Field("fail_mode", str, "Revocation fail mode",
              "soft: allow when revocation status is unknown; hard: refuse.", default="soft",
              group="revocation", column="revocation_fail_mode",
              choices=kinds.values(kinds.FailMode)),
        Field("certmap", list, "Certificate mapping",
              "Rules that find the user from the certificate, tried in order.",
              default=["upn", "email"], choices=CERTMAP_RULES, list_column=True,
              limits={"min_length": 1, "max_length": len(CERTMAP_RULES)},
              validators=(_unique,)),
        Field("required_eku", str, "Required EKU",
              "Extended key usage the login certificate must carry: client-auth "
              "(clientAuth or smart-card logon) or any.", default="client-auth",
              choices=kinds.values(kinds.RequiredEku)),
        # Path validation inputs (RFC 5280 §6.1.1), one entry each: API, CLI, file, export.
        Field("required_policies", list, "Required policies",
              "Certificate-policy OIDs of the initial policy set (empty: any policy).",
              default=[], item_limits={"pattern": r"^[0-2](\.[0-9]{1,20}){1,30}$"},
              limits={"max_length": 50}),
        Field("explicit_policy", bool, "Explicit policy",
              "initial-explicit-policy: the path must be valid for a required policy.",
              default=False),
        Field("policy_mapping_inhibit", bool, "Inhibit policy mapping",
              "initial-policy-mapping-inhibit.", default=False),
        Field("any_policy_inhibit", bool, "Inhibit anyPolicy",
              "initial-any-policy-inhibit.", default=False),
        Field("max_chain_depth", int, "Maximum chain depth",
              "Intermediate CAs allowed between the login certificate and the anchor.",
              default=6, limits={"ge": 0, "le": 255}),
        Field("aia_fetch", bool, "Fetch intermediates (AIA)",
              "Fetch missing intermediates from the certificate's AIA caIssuers URL (HTTP).",
              default=False),
        Field("accept_noncritical_constraints", bool, "Accept non-critical CA constraints",
              "Accept (with a warning) CA certificates whose basicConstraints or "
              "policyConstraints is not critical, which RFC 5280 forbids; off: refused.",
              default=False, profile=True),
        # Users from LDAP / Active Directory (DESIGN §11); no url: the broker's own users.
        *_LDAP_FIELDS,
        _out("warnings", list[SettingWarning], "Warnings",
             "Settings that cannot take effect in this region, with the policy's reason.",
             read=_directory_row_warnings),
        _time("created_at", "Created", "When the directory was created."),
        _time("updated_at", "Updated", "When the directory last changed."),
    ),
)

TRUST = Resource(
    "trust", "trust certificate", "Trust", "Trust anchors and intermediate CA certificates of "
    "a directory.", TrustCertificate, tag="trust", title="Trust",
    fields=(
        Field("pem", str, "Certificates", "One or more PEM certificates (or one base64 DER "
              "certificate).", update=False, output=False, in_file=False,
              limits={"min_length": 1, "max_length": 60000}, cli="pem-file",
              cli_positional=True, cli_input="file"),
        Field("kind", str, "Kind", "anchor or intermediate; by default a self-issued "
              "certificate is an anchor, others intermediates.",
              choices=kinds.values(kinds.TrustKind),
              nullable=True, default=None, update=False, in_file=False, list_column=True),
        _out("directory", str, "Directory", column="directory_id"),
        _out("subject", str, "Subject", "The certificate's subject DN.", list_column=True),
        _out("fingerprint", str, "Fingerprint", "SHA-256 of the certificate (hex).",
             list_column=True),
        _time("not_after", "Expires", "End of the certificate's validity.",
              console_column=True, warn_within=CA_EXPIRY_WARNING),
        _out("warnings", list[str], "Warnings", "RFC 5280 recommendations this CA "
             "certificate does not follow (accepted, shown).", read=_ca_warnings),
        _time("created_at", "Added", "When it was added."),
    ),
)

CRLS = Resource(
    "crls", "CRL", "CRLs", "Certificate revocation lists of a directory.", Crl, tag="trust",
    title="Crl",
    fields=(
        Field("crl", str, "CRL", "A PEM CRL, or a DER CRL in base64.", update=False,
              output=False, in_file=False, limits={"min_length": 1, "max_length": 60000},
              cli="crl-file", cli_positional=True, cli_input="file_b64"),
        _out("directory", str, "Directory", column="directory_id"),
        _out("issuer", str, "Issuer", "The CRL issuer's DN.", list_column=True),
        _out("fingerprint", str, "Fingerprint", "SHA-256 of the CRL (hex).", list_column=True),
        _time("this_update", "This update", "When the CRL was issued.", console_column=True),
        _time("next_update", "Next update", "When the next CRL is due.",
              console_column=True, warn_within=CRL_DUE_WARNING, list_column=True),
        _time("created_at", "Added", "When it was loaded."),
    ),
)

USERS = Resource(
    "users", "user", "Users", "Users of a directory.", User, tag="users",
    fields=(
        _out("directory", str, "Directory", column="directory_id"),
        Field("username", str, "Username", "The user's name in the directory.", update=False,
              list_column=True, cli_positional=True, limits={"min_length": 1, "max_length": 200}),
        Field("upn", str, "UPN", "User principal name (certmap rule upn).", nullable=True,
              default=None, list_column=True, limits={"max_length": 320}),
        Field("email", str, "Email", "Email address (certmap rule email).", nullable=True,
              default=None, list_column=True, limits={"max_length": 320}),
        Field("subject", str, "Certificate subject", "Subject DN (certmap rule subject).",
              nullable=True, default=None, limits={"max_length": 2000}),
        Field("cert_fingerprint", str, "Certificate fingerprint",
              "SHA-256 of the user's certificate, hex (certmap rule fingerprint).",
              nullable=True, default=None, list_column=True,
              limits={"pattern": FINGERPRINT_PATTERN}),
        Field("password", str, "Password", "Password (needs password login); stored as a "
              "scrypt hash.", nullable=True, default=None, output=False,
              limits={"min_length": 1, "max_length": 1024}, cli="password-stdin",
              cli_input="stdin"),
        Field("password_hash", str, "Password hash", "A scrypt hash (files only).",
              nullable=True, default=None, output=False, in_api=False, update=False,
              limits={"pattern": r"^scrypt\$"}),
        _out("has_password", bool, "Has password", list_column=True,
             read=lambda u, ctx: u.password_hash is not None),
        Field("disabled", bool, "Disabled", "A disabled user cannot log in.", default=False,
              list_column=True, cli_off="enabled"),
        _time("created_at", "Created", "When the user was created."),
    ),
)

WORKSPACES = Resource(
    "workspaces", "WorkSpace", "WorkSpaces",
    "WorkSpaces: owner, bundle, protocol, running mode, operating system, state; start and "
    "stop.", WorkSpace,
    tag="workspaces", title="WorkSpace",
    fields=(
        Field("id", str, "ID", "Stable, operator-chosen identifier.", update=False,
              list_column=True, cli_positional=True, **_ID),  # type: ignore[arg-type]
        Field("directory", str, "Directory", "The directory the WorkSpace belongs to.",
              update=False, in_file=False, column="directory_id", list_column=True,
              **_ID),  # type: ignore[arg-type]
        Field("user", str, "Owner", "Username of the owner.", list_column=True,
              limits={"min_length": 1, "max_length": 200},
              read=lambda w, ctx: username_of(object_session(w), w.user_id)),
        Field("name", str, "Name", "Display name (default: the id).", nullable=True,
              default=None, limits={"max_length": 200}, console_column=True),
        Field("bundle", str, "Bundle", "Hardware/software bundle.", default="standard",
              list_column=True, limits={"min_length": 1, "max_length": 100}),
        Field("protocol", str, "Protocol", "Streaming protocol (smart cards only with WSP; "
              "switching to PCoIP ends its smart-card sessions at once).",
              choices=kinds.values(kinds.Protocol), list_column=True),
        Field("running_mode", str, "Running mode", "ALWAYS_ON or AUTO_STOP.",
              default="AUTO_STOP", choices=kinds.values(kinds.RunningMode), list_column=True),
        Field("os", str, "Operating system", "windows or linux; not stated (null) keeps every "
              "in-session purpose, windows refuses sudo (purpose_not_for_os).", nullable=True,
              default=None, choices=kinds.values(kinds.WorkSpaceOs), list_column=True),
        Field("state", str, "State", "Initial state (set it directly to recover, e.g. from "
              "ERROR; start and stop are the usual way).", default="STOPPED",
              choices=WORKSPACE_STATES, list_column=True),
        _time("state_changed_at", "State changed", "When the state last changed.",
              console_column=True),
        _time("transition_due_at", "Transition due", "When STARTING/STOPPING completes."),
        _time("created_at", "Created", "When the WorkSpace was created."),
    ),
)

CODES = Resource(
    "registration-codes", "registration code", "Registration codes",
    "Registration codes: issue, rotate, revoke, list.", RegistrationCode,
    tag="registration codes", title="Code", cli_aliases=("codes",),
    fields=(
        _out("code", str, "Code", list_column=True, copyable=True),
        _out("directory", str, "Directory", column="directory_id", list_column=True),
        _out("state", str, "State", "active, rotated or revoked.", list_column=True),
        _time("created_at", "Issued", "When the code was issued.", console_column=True),
        _time("rotated_at", "Rotated", "When it was rotated."),
        _time("revoked_at", "Revoked", "When it was revoked."),
    ),
)

SESSIONS = Resource(
    "sessions", "session", "Sessions", "Desktop sessions: list, terminate.", BrokerSession,
    tag="sessions",
    fields=(
        _out("id", str, "ID", list_column=True),
        _out("directory", str, "Directory", column="directory_id", list_column=True),
        _out("workspace", str, "WorkSpace", column="workspace_id", list_column=True),
        _out("user_id", int, "User id"),
        _out("user", str, "User", "The session's user name.", nullable=True, list_column=True,
             read=lambda row, ctx: username_of(object_session(row), row.user_id)),
        _out("auth_method", str, "Login method", list_column=True),
        _out("protocol", str, "Protocol", list_column=True),
        _out("state", str, "State", "active, locked or ended.", list_column=True),
        _out("pending_action", str, "Pending action", nullable=True),
        _out("end_reason", str, "End reason", nullable=True, list_column=True),
        _out("cert_fingerprint", str, "Certificate fingerprint", nullable=True),
        _out("smart_card_redirection", bool, "Smart-card redirection"),
        _time("last_heartbeat_at", "Last heartbeat", "When the client last reported.",
              console_column=True),
        _time("expires_at", "Expires", "When the session expires."),
        _time("created_at", "Started", "When the session started."),
        _time("ended_at", "Ended", "When the session ended."),
    ),
)

AUDIT_EVENTS = Resource(
    "audit-events", "audit event", "Audit events", "Audit events: every admin change and "
    "every login decision.", AuditEvent, tag="audit", title="AuditEvent",
    cli_aliases=("audit",), newest_first=True,
    fields=(
        _out("id", int, "ID", list_column=True),
        _time("at", "At", "When it happened.", list_column=True),
        _out("kind", str, "Event", list_column=True),
        _out("outcome", str, "Outcome", "success, refused, error or change.",
             list_column=True),
        _out("reason", str, "Reason", nullable=True, list_column=True),
        _out("directory", str, "Directory", column="directory_id", nullable=True,
             list_column=True),
        _out("username", str, "User", nullable=True, list_column=True),
        _out("actor", str, "Actor", nullable=True, list_column=True),
        _out("client_address", str, "Client address", nullable=True, list_column=True),
        _out("cert_fingerprint", str, "Certificate fingerprint", nullable=True),
        _out("details", dict[str, Any], "Details", "What the decision rests on (revocation "
             "evidence among it).", nullable=True, console_column=True),
    ),
)


def _ops(resource: Resource, *ops: Operation) -> Resource:
    """``resource`` with its operations (declared after every resource: they name each other's
    use cases)."""
    return dataclasses.replace(resource, operations=ops)


_dir_filter = {
    "workspaces": Filter("directory", "Only this directory's WorkSpaces.",
                         column=WorkSpace.directory_id),
    "registration-codes": Filter("directory", "Only this directory's codes.",
                                 column=RegistrationCode.directory_id),
    "sessions": Filter("directory", "Only this directory's sessions.",
                       column=BrokerSession.directory_id),
    "audit-events": Filter("directory", "Only this directory's events.",
                           column=AuditEvent.directory_id),
}

DIRECTORIES = _ops(DIRECTORIES,
     Operation("list", "GET", "/directories", READ, _list("directories"), "List directories.",
               out="page", filters=(Filter("region", "Only directories in this region.",
                                           column=Directory.region),)),
     Operation("create", "POST", "/directories", WRITE,
               lambda s, ctx, c: create_directory(s, ctx, c.body, c.actor),
               "Create a directory (the answer's warnings name settings the region's policy "
               "makes ineffective).", status=201, body="create",
               errors=("conflict", "validation_failed"), audit="directory.create",
               message="directory {id} created"),
     Operation("get", "GET", _DIRECTORY_PATH, READ,
               lambda s, ctx, c: get_directory(s, c.path["directory_id"], ctx),
               "Get a directory.", errors=DIR_404),
     Operation("update", "PATCH", _DIRECTORY_PATH, WRITE,
               lambda s, ctx, c: update_directory(s, ctx, c.path["directory_id"], c.body,
                                                  c.actor),
               "Change a directory (only the fields given).", body="update",
               errors=DIR_404 + ("validation_failed",), audit="directory.update",
               message="directory {id} updated"),
     Operation("delete", "DELETE", _DIRECTORY_PATH, WRITE,
               lambda s, ctx, c: delete_directory(s, c.path["directory_id"], c.actor),
               "Delete a directory and everything in it.", status=204, out=None,
               errors=DIR_404, audit="directory.delete",
               confirm="Delete directory {directory_id} and everything in it?",
               message="directory {directory_id} deleted"))

TRUST = _ops(TRUST,
     Operation("list", "GET", f"{_DIRECTORY_PATH}/trust", READ, _list("trust"),
               "List trust anchors and intermediates.", out="page", errors=DIR_404,
               filters=(Filter("kind", "anchor or intermediate.",
                               choices=kinds.values(kinds.TrustKind),
                               column=TrustCertificate.kind),)),
     Operation("add", "POST", f"{_DIRECTORY_PATH}/trust", WRITE,
               lambda s, ctx, c: add_trust(s, c.path["directory_id"], c.body["pem"],
                                           c.body.get("kind"), c.actor),
               "Add CA certificates (PEM) as trust anchors or intermediates.", status=201,
               body="create", out="items",
               errors=DIR_404 + ("certificate_unreadable", "certificate_not_ca",
                                 "certificate_profile_invalid", "conflict"),
               audit="trust.add"),
     Operation("remove", "DELETE", f"{_DIRECTORY_PATH}/trust/{{fingerprint}}", WRITE,
               _remove_by_fingerprint(TrustCertificate, "trusted certificate", "trust.remove",
                                      "cert_fingerprint"),
               "Remove a trusted certificate by SHA-256 fingerprint.", status=204, out=None,
               errors=DIR_404 + ("resource_not_found",), audit="trust.remove",
               message="certificate {fingerprint} removed from {directory_id}"))

CRLS = _ops(CRLS,
     Operation("list", "GET", f"{_DIRECTORY_PATH}/crls", READ, _list("crls"),
               "List CRLs with this_update and next_update.", out="page", errors=DIR_404),
     Operation("add", "POST", f"{_DIRECTORY_PATH}/crls", WRITE,
               lambda s, ctx, c: add_crl(s, c.path["directory_id"], c.body["crl"], c.actor),
               "Upload a CRL (PEM, or base64 DER).", status=201, body="create",
               errors=DIR_404 + ("crl_unreadable", "conflict"), audit="crl.add",
               message="CRL {fingerprint} added to {directory_id}"),
     Operation("remove", "DELETE", f"{_DIRECTORY_PATH}/crls/{{fingerprint}}", WRITE,
               _remove_by_fingerprint(Crl, "CRL", "crl.remove", "crl_fingerprint"),
               "Remove a CRL by SHA-256 fingerprint.", status=204, out=None,
               errors=DIR_404 + ("resource_not_found",), audit="crl.remove",
               message="CRL {fingerprint} removed from {directory_id}"))

_USER_PATH = f"{_DIRECTORY_PATH}/users/{{username}}"
USERS = _ops(USERS,
     Operation("list", "GET", f"{_DIRECTORY_PATH}/users", READ, _list("users"), "List users.",
               out="page", errors=DIR_404,
               filters=(Filter("disabled", "Only disabled (true) or enabled (false) users.",
                               type=bool, column=User.disabled),
                        Filter("search", "Usernames, UPNs or emails containing this text.",
                               where=_search(User.username, User.upn, User.email)))),
     Operation("create", "POST", f"{_DIRECTORY_PATH}/users", WRITE,
               lambda s, ctx, c: create_user(s, c.path["directory_id"], c.body, c.actor),
               "Create a user.", status=201, body="create",
               errors=DIR_404 + ("conflict", "validation_failed"), audit="user.create",
               message="user {username} created in {directory}"),
     Operation("get", "GET", _USER_PATH, READ,
               lambda s, ctx, c: get_user(s, c.path["directory_id"], c.path["username"]),
               "Get a user.", errors=DIR_404 + ("resource_not_found",)),
     Operation("update", "PATCH", _USER_PATH, WRITE,
               lambda s, ctx, c: update_user(s, c.path["directory_id"], c.path["username"],
                                             c.body, c.actor),
               "Change a user (null clears upn, email, subject, cert_fingerprint, password).",
               body="update", errors=DIR_404 + ("resource_not_found", "validation_failed"),
               audit="user.update", message="user {username} updated"),
     Operation("delete", "DELETE", _USER_PATH, WRITE,
               lambda s, ctx, c: delete_user(s, c.path["directory_id"], c.path["username"],
                                             c.actor),
               "Delete a user and their WorkSpaces.", status=204, out=None,
               errors=DIR_404 + ("resource_not_found",), audit="user.delete",
               message="user {username} deleted from {directory_id}"))

_WS_PATH = "/workspaces/{workspace_id}"
WORKSPACES = _ops(WORKSPACES,
     Operation("list", "GET", "/workspaces", READ, _list("workspaces"), "List WorkSpaces.",
               out="page", filters=(
                   _dir_filter["workspaces"],
                   Filter("user", "Only this user's (username).",
                          where=_byusername_of(WorkSpace)),
                   Filter("state", "Only WorkSpaces in this state.", choices=WORKSPACE_STATES,
                          column=WorkSpace.state),
                   Filter("protocol", "Only WSP or PCoIP.", choices=kinds.values(kinds.Protocol),
                          column=WorkSpace.protocol),
                   Filter("search", "WorkSpace ids or names containing this text.",
                          where=_search(WorkSpace.id, WorkSpace.name)))),
     Operation("create", "POST", "/workspaces", WRITE,
               lambda s, ctx, c: create_workspace(s, ctx, c.body, c.actor),
               "Create a WorkSpace.", status=201, body="create",
               errors=DIR_404 + ("resource_not_found", "conflict", "directory_unavailable"),
               audit="workspace.create",
               message="WorkSpace {id} created"),
     Operation("get", "GET", _WS_PATH, READ,
               lambda s, ctx, c: get_workspace(s, c.path["workspace_id"]), "Get a WorkSpace.",
               errors=("workspace_unknown",)),
     Operation("update", "PATCH", _WS_PATH, WRITE,
               lambda s, ctx, c: update_workspace(s, ctx, c.path["workspace_id"], c.body,
                                                  c.actor),
               "Change a WorkSpace. Switching to PCoIP ends its smart-card sessions at once "
               "(their next heartbeat answers disconnect).", body="update",
               errors=("workspace_unknown", "resource_not_found", "directory_unavailable"),
               audit="workspace.update",
               message="WorkSpace {id} updated"),
     Operation("delete", "DELETE", _WS_PATH, WRITE,
               lambda s, ctx, c: delete_workspace(s, c.path["workspace_id"], c.actor),
               "Delete a WorkSpace.", status=204, out=None, errors=("workspace_unknown",),
               audit="workspace.delete", message="WorkSpace {workspace_id} deleted"),
     Operation("start", "POST", f"{_WS_PATH}/start", WRITE, _transition("start"),
               "Start a stopped WorkSpace.", status=202,
               errors=("workspace_unknown", "workspace_unavailable"), audit="workspace.start",
               message="WorkSpace {id} is {state}"),
     Operation("stop", "POST", f"{_WS_PATH}/stop", WRITE, _transition("stop"),
               "Stop an available WorkSpace.", status=202,
               errors=("workspace_unknown", "workspace_unavailable"), audit="workspace.stop",
               message="WorkSpace {id} is {state}"))

_CODE_PARAM = Field("code", str, "Registration code", "The code (any case).",
                    limits={"min_length": 1, "max_length": 64}, cli_positional=True)
CODES = _ops(CODES,
     Operation("list", "GET", "/registration-codes", READ, _list("registration-codes"),
               "List registration codes with their state.", out="page", errors=DIR_404,
               filters=(_dir_filter["registration-codes"],
                        Filter("state", "active, rotated or revoked.",
                               choices=kinds.values(kinds.CodeState),
                               column=RegistrationCode.state))),
     Operation("issue", "POST", f"{_DIRECTORY_PATH}/registration-codes", WRITE,
               lambda s, ctx, c: issue_codes(s, ctx, c.path["directory_id"], c.body["count"],
                                             c.actor),
               "Issue registration codes.", status=201, body="params", out="items",
               params=(Field("count", int, "How many", "How many codes to issue.", default=1,
                             limits={"ge": 1, "le": 100}),), params_model="CodeIssue",
               errors=DIR_404, audit="registration_code.issue"),
     Operation("rotate", "POST", "/registration-codes/rotate", WRITE,
               lambda s, ctx, c: rotate_code(s, ctx, c.body["code"], c.actor),
               "Rotate a code: a successor is issued; the old one works for the grace period.",
               status=201, body="params", params=(_CODE_PARAM,), params_model="CodeRef",
               errors=("validation_failed", "resource_not_found", "conflict"),
               audit="registration_code.rotate", message="new registration code: {code}"),
     Operation("revoke", "POST", "/registration-codes/revoke", WRITE,
               lambda s, ctx, c: revoke_code(s, ctx, c.body["code"], c.actor),
               "Revoke a code at once.", body="params", params=(_CODE_PARAM,),
               params_model="CodeRef", errors=("validation_failed", "resource_not_found"),
               audit="registration_code.revoke", message="registration code {code} revoked"))

SESSIONS = _ops(SESSIONS,
     Operation("list", "GET", "/sessions", READ, _list("sessions"),
               "List sessions (state may be live = active or locked).", out="page", filters=(
                   _dir_filter["sessions"],
                   Filter("workspace", "Only this WorkSpace's sessions.",
                          column=BrokerSession.workspace_id),
                   Filter("user", "Only this user's (username).",
                          where=_byusername_of(BrokerSession)),
                   Filter("state", "live (active or locked), active, locked or ended.",
                          choices=("live", *kinds.values(kinds.SessionState)),
                          where=_session_state),
                   Filter("auth_method", "smart_card or password.",
                          choices=kinds.values(kinds.AuthMethod),
                          column=BrokerSession.auth_method))),
     Operation("get", "GET", "/sessions/{session_id}", READ,
               lambda s, ctx, c: get_session(s, c.path["session_id"]), "Get a session.",
               errors=("session_unknown",)),
     Operation("terminate", "POST", "/sessions/{session_id}/terminate", WRITE,
               lambda s, ctx, c: terminate_session(s, ctx, c.path["session_id"], c.actor),
               "End a session now; its next heartbeat answers disconnect.",
               errors=("session_unknown", "session_ended"), audit="session.terminate",
               message="session {id} terminated"))

AUDIT_EVENTS = _ops(AUDIT_EVENTS,
     Operation("list", "GET", "/audit-events", READ, _list("audit-events"),
               "Audit events, newest first (kind may end in * for a prefix; since/until are "
               "ISO 8601 times).", out="page", filters=(
                   _dir_filter["audit-events"],
                   Filter("username", "Only events about this user.",
                          column=AuditEvent.username, cli="user"),
                   Filter("kind", "An event kind; end with * for a prefix (directory.*).",
                          where=_audit_kind),
                   Filter("outcome", "success, refused, error or change.",
                          choices=kinds.values(kinds.Outcome),
                          column=AuditEvent.outcome),
                   Filter("reason", "Only events with this reason code.",
                          column=AuditEvent.reason),
                   Filter("actor", "Only changes by this actor (token:NAME, cli:USER).",
                          column=AuditEvent.actor),
                   Filter("since", "ISO 8601 time (inclusive).", type=datetime,
                          where=lambda stmt, v: stmt.where(AuditEvent.at >= v)),
                   Filter("until", "ISO 8601 time (exclusive).", type=datetime,
                          where=lambda stmt, v: stmt.where(AuditEvent.at < v)))))

#: Every admin resource, by its API/CLI name, in the order the CLI and console list them.
RESOURCES: dict[str, Resource] = {r.name: r for r in (
    DIRECTORIES, TRUST, CRLS, USERS, WORKSPACES, CODES, SESSIONS, AUDIT_EVENTS)}
