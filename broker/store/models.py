"""SQLAlchemy 2 typed models: every table the broker keeps, in one place.

Schema changes go through an Alembic revision under migrations/ (a test checks that autogenerate
finds no difference between these models and the migrations). Times are timezone-aware UTC.
Secrets (auth tokens, admin tokens, passwords) are stored only as hashes.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.types import TypeDecorator

from broker import kinds

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def closed(values: type[enum.StrEnum], name: str, length: int) -> Enum:
    """A column of a closed set: VARCHAR(``length``) holding the members' values, with a CHECK
    constraint ``ck_<table>_<name>`` (migrations 0007, 0009, 0012) so no writer can store
    anything else. Read back as the StrEnum member: ``Mapped[kinds.X]``."""
    return Enum(values, native_enum=False, create_constraint=True, name=name, length=length,
                values_callable=lambda e: list(kinds.values(e)), validate_strings=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Directory(Base):
    __tablename__ = "directories"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(32))
    password_login: Mapped[bool] = mapped_column(Boolean, default=False)
    sc_pre_session: Mapped[bool] = mapped_column(Boolean, default=False)
    sc_in_session: Mapped[bool] = mapped_column(Boolean, default=False)
    removal_action: Mapped[kinds.RemovalAction] = mapped_column(
        closed(kinds.RemovalAction, "removal_action", 16), default=kinds.RemovalAction.LOCK)
    revocation_crl: Mapped[bool] = mapped_column(Boolean, default=True)
    revocation_ocsp: Mapped[bool] = mapped_column(Boolean, default=False)
    revocation_fail_mode: Mapped[kinds.FailMode] = mapped_column(
        closed(kinds.FailMode, "revocation_fail_mode", 8), default=kinds.FailMode.SOFT)
    #: certmap rules (broker.kinds.CertmapRule values) tried in order.
    certmap: Mapped[list[str]] = mapped_column(JSON, default=lambda: list(kinds.DEFAULT_CERTMAP))
    #: EKU the login certificate must carry: "client-auth" (clientAuth or smart-card logon).
    required_eku: Mapped[kinds.RequiredEku] = mapped_column(
        closed(kinds.RequiredEku, "required_eku", 32), default=kinds.RequiredEku.CLIENT_AUTH)
    #: Path validation inputs (RFC 5280 §6.1.1): the initial policy set (policy OIDs; empty =
    #: any), initial-explicit-policy, -policy-mapping-inhibit, -any-policy-inhibit.
    required_policies: Mapped[list[str]] = mapped_column(JSON, default=list)
    explicit_policy: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_mapping_inhibit: Mapped[bool] = mapped_column(Boolean, default=False)
    any_policy_inhibit: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Intermediate CAs allowed between the login certificate and the anchor (0-255).
    max_chain_depth: Mapped[int] = mapped_column(Integer, default=6)
    #: Fetch missing intermediates from the certificate's AIA caIssuers URL (HTTP only).
    aia_fetch: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Profile relaxation: CA certificates whose basicConstraints/policyConstraints is not
    #: critical are accepted with a warning (broker.pki.profile.ProfileOptions).
    accept_noncritical_constraints: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Users from LDAP / Active Directory (DESIGN §11; broker.service.ldapdir). No url: the
    #: broker's own users. The bind password is never here: only the file it is read from.
    ldap_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    ldap_start_tls: Mapped[bool] = mapped_column(Boolean, default=False)
    ldap_ca_file: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    ldap_flavour: Mapped[kinds.LdapFlavour] = mapped_column(
        closed(kinds.LdapFlavour, "ldap_flavour", 16), default=kinds.LdapFlavour.AD)
    ldap_base_dn: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    ldap_bind_dn: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    ldap_bind_password_file: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    ldap_user_name_attribute: Mapped[str | None] = mapped_column(String(100), nullable=True)
    ldap_user_filter: Mapped[str | None] = mapped_column(Text, nullable=True)
    ldap_attributes: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    ldap_required_groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    ldap_cache_ttl_s: Mapped[int] = mapped_column(Integer, default=300)
    ldap_timeout_s: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    #: Bumped in the same transaction as any change to the directory's settings, trust anchors,
    #: intermediates or CRLs (see _bump_directory_versions): per-process caches of what a login
    #: needs compare it and reload on a change, in every process, within one request.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    users: Mapped[list[User]] = relationship(back_populates="directory",
                                             cascade="all, delete-orphan")


class TrustCertificate(Base):
    """A trust anchor or an intermediate CA certificate of one directory."""

    __tablename__ = "trust_certificates"
    __table_args__ = (UniqueConstraint("directory_id", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    directory_id: Mapped[str] = mapped_column(ForeignKey("directories.id", ondelete="CASCADE"),
                                              index=True)
    kind: Mapped[kinds.TrustKind] = mapped_column(closed(kinds.TrustKind, "kind", 16))
    subject: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 hex
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Crl(Base):
    __tablename__ = "crls"
    __table_args__ = (UniqueConstraint("directory_id", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    directory_id: Mapped[str] = mapped_column(ForeignKey("directories.id", ondelete="CASCADE"),
                                              index=True)
    issuer: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    this_update: Mapped[datetime] = mapped_column(UTCDateTime)
    next_update: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("directory_id", "username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    directory_id: Mapped[str] = mapped_column(ForeignKey("directories.id", ondelete="CASCADE"),
                                              index=True)
    username: Mapped[str] = mapped_column(String(200))
    upn: Mapped[str | None] = mapped_column(String(320), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    password_hash: Mapped[str | None] = mapped_column(String(300), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    directory: Mapped[Directory] = relationship(back_populates="users")


# Certificate-to-user mapping looks a user up by what the certificate carries, never by loading
# the directory's users: one index per certmap rule (case-insensitive where the rule is).
Index("ix_users_certmap_upn", User.directory_id, func.lower(User.upn))
Index("ix_users_certmap_email", User.directory_id, func.lower(User.email))
Index("ix_users_certmap_subject", User.directory_id, User.subject)
Index("ix_users_certmap_fingerprint", User.directory_id, func.lower(User.cert_fingerprint))


class WorkSpace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    directory_id: Mapped[str] = mapped_column(ForeignKey("directories.id", ondelete="CASCADE"),
                                              index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    bundle: Mapped[str] = mapped_column(String(100), default="standard")
    protocol: Mapped[kinds.Protocol] = mapped_column(closed(kinds.Protocol, "protocol", 8))
    running_mode: Mapped[kinds.RunningMode] = mapped_column(
        closed(kinds.RunningMode, "running_mode", 16))
    state: Mapped[kinds.WorkSpaceState] = mapped_column(
        closed(kinds.WorkSpaceState, "state", 16))
    # The stated operating system (windows | linux); NULL: not stated, every purpose allowed.
    os: Mapped[kinds.WorkSpaceOs | None] = mapped_column(closed(kinds.WorkSpaceOs, "os", 16),
                                                         nullable=True)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When an in-progress transition (STARTING, STOPPING) completes.
    transition_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RegistrationCode(Base):
    __tablename__ = "registration_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: Canonical upper-case form, the lookup key.
    code: Mapped[str] = mapped_column(String(64), unique=True)
    directory_id: Mapped[str] = mapped_column(ForeignKey("directories.id", ondelete="CASCADE"),
                                              index=True)
    state: Mapped[kinds.CodeState] = mapped_column(closed(kinds.CodeState, "state", 16),
                                                   default=kinds.CodeState.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Challenge(Base):
    """A single-use PKI challenge: ``used_at`` is set by one atomic conditional UPDATE."""

    __tablename__ = "challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    directory_id: Mapped[str] = mapped_column(ForeignKey("directories.id", ondelete="CASCADE"),
                                              index=True)
    purpose: Mapped[kinds.Purpose] = mapped_column(closed(kinds.Purpose, "purpose", 16))
    #: In-session purpose detail (sudo, browser, other).
    detail: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_be_signed: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    client_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    registration_code_id: Mapped[int | None] = mapped_column(
        ForeignKey("registration_codes.id", ondelete="SET NULL"), nullable=True)
    #: For logon / in-session challenges: the certificate that must sign (SHA-256 hex).
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    workspace_id: Mapped[str | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The client a pre-session login challenge was issued to ({platform, arch, version}).
    client: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    auth_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("auth_tokens.id", ondelete="CASCADE"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuthToken(Base):
    """Opaque bearer token handed out after login; only its SHA-256 is stored."""

    __tablename__ = "auth_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    directory_id: Mapped[str] = mapped_column(ForeignKey("directories.id", ondelete="CASCADE"))
    method: Mapped[kinds.AuthMethod] = mapped_column(closed(kinds.AuthMethod, "method", 16))
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cert_der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # The client the login stated ({platform, arch, version}); NULL: it did not say.
    client: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_workspace_state", "workspace_id", "state"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    directory_id: Mapped[str] = mapped_column(ForeignKey("directories.id", ondelete="CASCADE"),
                                              index=True)
    auth_method: Mapped[kinds.AuthMethod] = mapped_column(
        closed(kinds.AuthMethod, "auth_method", 16))
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    protocol: Mapped[kinds.Protocol] = mapped_column(closed(kinds.Protocol, "protocol", 8))
    state: Mapped[kinds.SessionState] = mapped_column(closed(kinds.SessionState, "state", 16),
                                                      default=kinds.SessionState.ACTIVE)
    #: What the next heartbeat is told when the broker decided something (e.g. takeover).
    pending_action: Mapped[kinds.SessionAction | None] = mapped_column(
        closed(kinds.SessionAction, "pending_action", 16), nullable=True)
    end_reason: Mapped[kinds.SessionEndReason | None] = mapped_column(
        closed(kinds.SessionEndReason, "end_reason", 64), nullable=True)
    smart_card_redirection: Mapped[bool] = mapped_column(Boolean, default=False)
    # The client of the login that opened the session; NULL: unknown (no in-session use).
    client: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    last_heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SigningKey(Base):
    """ES256 keys that sign session tickets and in-session assertions, published as JWKS."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_pem: Mapped[bytes] = mapped_column(LargeBinary)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: When the key starts (started) signing: the next key's lies ahead (service/tickets.py).
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: After this a key no longer signs; it is still published until ``expires_at``.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AdminToken(Base):
    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[kinds.Scope] = mapped_column(closed(kinds.Scope, "scope", 8),
                                               default=kinds.Scope.WRITE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[kinds.Outcome] = mapped_column(closed(kinds.Outcome, "outcome", 16))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    directory_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    username: Mapped[str | None] = mapped_column(String(200), nullable=True)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    client_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RateCounter(Base):
    """Fixed-window counters shared by every broker process (rate limits, lockouts)."""

    __tablename__ = "rate_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer, default=0)
    #: Set when a lockout is in force (failure counters).
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@event.listens_for(OrmSession, "before_flush")
def _bump_directory_versions(session: OrmSession, _context: Any, _instances: Any) -> None:
    """Every ORM change to a directory or its trust material bumps the directory's version."""
    touched: set[str] = set()
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, TrustCertificate | Crl):
            touched.add(obj.directory_id)
        elif isinstance(obj, Directory) and obj not in session.new \
                and session.is_modified(obj, include_collections=False):
            obj.version = (obj.version or 0) + 1
    for directory_id in touched:
        d = session.get(Directory, directory_id)
        if d is not None and d not in session.new and d not in session.deleted:
            d.version = (d.version or 0) + 1


class ConsoleSession(Base):
    """A signed-in admin console: the cookie's secret is stored only as its hash."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin_token_id: Mapped[int] = mapped_column(ForeignKey("admin_tokens.id", ondelete="CASCADE"),
                                                index=True)
    #: The form token every state-changing console request must carry.
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: One message shown on the next page (the result of the last change), then cleared.
    flash: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The directory the console works in (header selector); None until one is chosen.
    directory_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
