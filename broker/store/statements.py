"""SQLAlchemy Core statements of the login hot path, built once at import.

Each is a constant whose compiled form SQLAlchemy caches per dialect, executed on a plain
Connection (:meth:`broker.store.db.Database.run`): no ORM session, identity map, flush or
statement construction per call. Values arrive as bound parameters named in each docstring.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    Delete,
    Insert,
    Integer,
    Select,
    String,
    Table,
    Update,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from broker.kinds import (
    LIVE_SESSION_STATES,
    LOCAL_CERTMAP_RULES,
    CertmapRule,
    RunningMode,
    SessionAction,
    SessionEndReason,
    SessionState,
    WorkSpaceState,
)
from broker.store.models import (
    AuditEvent,
    AuthToken,
    Challenge,
    Directory,
    RateCounter,
    RegistrationCode,
    Session,
    User,
    WorkSpace,
)

_codes: Table = RegistrationCode.__table__  # type: ignore[assignment]
_dirs: Table = Directory.__table__  # type: ignore[assignment]
_challenges: Table = Challenge.__table__  # type: ignore[assignment]
_counters: Table = RateCounter.__table__  # type: ignore[assignment]
_users: Table = User.__table__  # type: ignore[assignment]
_workspaces: Table = WorkSpace.__table__  # type: ignore[assignment]
_tokens: Table = AuthToken.__table__  # type: ignore[assignment]
_audit: Table = AuditEvent.__table__  # type: ignore[assignment]
_sessions: Table = Session.__table__  # type: ignore[assignment]


def _lock(param: str) -> Any:
    """``locked_until`` of the counter named by ``param`` (NULL when none)."""
    return select(_counters.c.locked_until).where(
        _counters.c.key == bindparam(param)).scalar_subquery()


#: A registration code, its directory's login settings and the source address's failure lock,
#: in one read. Parameters: ``code``, ``address_key`` (None when there is no address).
CODE_AND_DIRECTORY: Select[Any] = (
    select(_codes.c.id, _codes.c.state, _codes.c.revoked_at, _codes.c.rotated_at,
           _dirs.c.id.label("directory_id"), _dirs.c.name, _dirs.c.region,
           _dirs.c.sc_pre_session, _dirs.c.sc_in_session, _dirs.c.password_login,
           _dirs.c.version, _dirs.c.ldap_url,
           _lock("address_key").label("address_locked_until"))
    .select_from(_codes.join(_dirs, _dirs.c.id == _codes.c.directory_id))
    .where(_codes.c.code == bindparam("code")))

#: What answering a challenge needs before any verification: the challenge, its directory's
#: version, and the locks on the certificate and the source address (and whether the certificate
#: has a failure counter at all). Parameters: ``challenge_id``, ``cert_key``, ``address_key``.
CHALLENGE_FOR_RESPONSE: Select[Any] = (
    select(_challenges.c.to_be_signed, _challenges.c.purpose, _challenges.c.used_at,
           _challenges.c.client,
           _challenges.c.expires_at, _challenges.c.directory_id, _dirs.c.version,
           _lock("cert_key").label("cert_locked_until"),
           _lock("address_key").label("address_locked_until"),
           select(_counters.c.count).where(_counters.c.key == bindparam("cert_key"))
           .scalar_subquery().label("cert_failures"))
    .select_from(_challenges.outerjoin(_dirs, _dirs.c.id == _challenges.c.directory_id))
    .where(_challenges.c.id == bindparam("challenge_id")))

#: Locks by key, for when there is no challenge row to hang them on. Parameter: ``keys``.
LOCKS: Select[Any] = select(_counters.c.key, _counters.c.locked_until).where(
    _counters.c.key.in_(bindparam("keys", expanding=True)),
    _counters.c.locked_until > bindparam("now"))

#: The single use: exactly one caller across all processes changes the row.
#: Parameters: ``challenge_id``, ``now``.
CONSUME_CHALLENGE: Update = (
    update(_challenges)
    .where(_challenges.c.id == bindparam("challenge_id"), _challenges.c.used_at.is_(None),
           _challenges.c.expires_at > bindparam("now"))
    .values(used_at=bindparam("now")))

#: Why a consume changed nothing. Parameter: ``challenge_id``.
CHALLENGE_USED_AT: Select[Any] = select(_challenges.c.id, _challenges.c.used_at).where(
    _challenges.c.id == bindparam("challenge_id"))

INSERT_CHALLENGE: Insert = insert(_challenges)

#: The auth token a client presents, by the SHA-256 of its value. Parameter: ``token_hash``.
AUTH_TOKEN_BY_HASH: Select[Any] = select(
    _tokens.c.id, _tokens.c.token_hash, _tokens.c.user_id, _tokens.c.directory_id,
    _tokens.c.method, _tokens.c.cert_fingerprint, _tokens.c.cert_der, _tokens.c.expires_at,
    _tokens.c.revoked_at, _tokens.c.client).where(_tokens.c.token_hash == bindparam("token_hash"))
INSERT_AUTH_TOKEN: Insert = insert(_tokens)
INSERT_AUDIT_EVENT: Insert = insert(_audit)

#: Parameter: ``key``.
CLEAR_COUNTER: Delete = delete(_counters).where(_counters.c.key == bindparam("key"))


def _certmap_condition(rule: CertmapRule) -> Any:
    """The rule's condition on ``users``, from what :class:`broker.kinds.CertmapRule` says of
    it: its column, folded to lower case when the rule is case-insensitive, equal to the bound
    ``value`` (or in the bound ``values`` for a rule a certificate offers several of)."""
    if rule.column is None:
        raise ValueError(f"certmap rule {rule.value} needs an LDAP directory")
    column = _users.c[rule.column]
    side = func.lower(column) if rule.folds_case else column
    if rule.many:
        return side.in_(bindparam("values", expanding=True, type_=String()))
    return side == bindparam("value", type_=String())


def _user_with_workspaces(rule: CertmapRule) -> Select[Any]:
    # At most two candidates (two mean "ambiguous"), found by the rule's expression index, as
    # a derived table the plan starts from (one or two primary-key probes into users, then the
    # WorkSpaces by their user_id index), with the WorkSpaces in the same round trip.
    # On SQLite the rule's index is named (INDEXED BY; see create_broker_engine): after ANALYZE,
    # a column that is mostly NULL (no user has a fingerprint yet, say) looks to SQLite's
    # planner like a thousand rows per value, and it chose a scan of every user over the index
    # for a lookup that finds one or two. PostgreSQL's statistics know the NULL fraction.
    candidates = (select(_users.c.id)
                  .where(_users.c.directory_id == bindparam("directory_id"),
                         _users.c.disabled.is_(False), _certmap_condition(rule))
                  .with_hint(_users, f"INDEXED BY ix_users_certmap_{rule.value}", "sqlite")
                  .limit(2).subquery("candidates"))
    return (select(_users.c.id, _users.c.directory_id, _users.c.username, _users.c.upn,
                   _users.c.email, _users.c.subject, _users.c.cert_fingerprint,
                   *_WS_COLUMNS)
            .select_from(candidates.join(_users, _users.c.id == candidates.c.id)
                         .outerjoin(_workspaces, _workspaces.c.user_id == _users.c.id))
            .order_by(_users.c.id, _workspaces.c.id))


#: A user's WorkSpaces as a login answer lists them (NULL columns: the user has none).
_WS_COLUMNS = (_workspaces.c.id.label("ws_id"), _workspaces.c.name.label("ws_name"),
               _workspaces.c.protocol, _workspaces.c.running_mode, _workspaces.c.state)

#: Per certmap rule of the broker's own users: the (at most two) enabled users it finds, each
#: with its WorkSpaces. Parameters: ``directory_id`` and ``value`` (``values``, a list, for a
#: rule whose certificate side is many, such as ``email``).
USER_WITH_WORKSPACES: dict[CertmapRule, Select[Any]] = {
    rule: _user_with_workspaces(rule) for rule in LOCAL_CERTMAP_RULES}

#: A password login's user by exact name, with its WorkSpaces (no row: no such user).
#: Parameters: ``directory_id``, ``username``.
USER_BY_NAME_WITH_WORKSPACES: Select[Any] = (
    select(_users.c.id, _users.c.directory_id, _users.c.username, _users.c.upn,
           _users.c.email, _users.c.password_hash, _users.c.disabled, *_WS_COLUMNS)
    .select_from(_users.outerjoin(_workspaces, _workspaces.c.user_id == _users.c.id))
    .where(_users.c.directory_id == bindparam("directory_id"),
           _users.c.username == bindparam("username"))
    .order_by(_workspaces.c.id))

#: The WorkSpaces of a user (an LDAP user's name row). Parameter: ``user_id``.
WORKSPACES_OF_USER: Select[Any] = (
    select(*_WS_COLUMNS).where(_workspaces.c.user_id == bindparam("user_id"))
    .order_by(_workspaces.c.id))

#: A directory's LDAP settings (broker.service.ldapdir.settings_of reads the row).
#: Parameter: ``directory_id``.
DIRECTORY_LDAP: Select[Any] = select(
    *[c for c in _dirs.c if c.name == "id" or c.name.startswith("ldap_")]).where(
    _dirs.c.id == bindparam("directory_id"))


@functools.cache
def count_hits(dialect: str, keys: int) -> Insert:
    """Count one event for each of ``keys`` keys in one statement (``INSERT … SELECT … ON
    CONFLICT DO UPDATE … RETURNING``), built once per dialect and number of keys.

    The rows come from a ``UNION ALL`` of bound parameters rather than a multi-row ``VALUES``:
    SQLAlchemy cannot cache the compiled form of a multi-row ``VALUES`` (it compiled this
    statement again on every challenge, about a millisecond each), while this form is compiled
    once. SQLite needs the ``WHERE true`` to read ``ON CONFLICT`` as the upsert's clause.

    Parameters: ``key_0`` … ``key_<n-1>``, ``now``, ``cutoff`` (a window that started at or
    before it restarts at ``now``). Returns ``key, count, window_start`` per key, in any order.
    """
    dialect_insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = bindparam("now", type_=_counters.c.window_start.type)
    rows = union_all(*[
        select(bindparam(f"key_{i}", type_=_counters.c.key.type).label("key"),
               now.label("window_start"), literal(1, Integer).label("count"))
        for i in range(keys)]).subquery("hits")
    stale = _counters.c.window_start <= bindparam("cutoff", type_=_counters.c.window_start.type)
    stmt = dialect_insert(_counters).from_select(
        ["key", "window_start", "count"],
        select(rows.c.key, rows.c.window_start, rows.c.count).where(true()))
    return stmt.on_conflict_do_update(index_elements=[_counters.c.key], set_={
        "count": case((stale, 1), else_=_counters.c.count + 1),
        "window_start": case((stale, stmt.excluded.window_start),
                             else_=_counters.c.window_start)},
    ).returning(_counters.c.key, _counters.c.count, _counters.c.window_start)


# --------------------------------------------------------------------------- sessions

#: A WorkSpace with what a session on it needs: its lifecycle fields, its directory's region,
#: toggles and version (NULL when the directory is gone) and its user's name (NULL when the
#: user is gone). Parameter: ``workspace_id``.
WORKSPACE_FOR_SESSION: Select[Any] = (
    select(_workspaces.c.id, _workspaces.c.directory_id, _workspaces.c.user_id,
           _workspaces.c.protocol, _workspaces.c.os, _workspaces.c.state,
           _workspaces.c.state_changed_at,
           _workspaces.c.transition_due_at, _workspaces.c.last_activity_at, _dirs.c.region,
           _dirs.c.sc_pre_session, _dirs.c.sc_in_session, _dirs.c.password_login,
           _dirs.c.version, _users.c.username)
    .select_from(_workspaces.outerjoin(_dirs, _dirs.c.id == _workspaces.c.directory_id)
                 .outerjoin(_users, _users.c.id == _workspaces.c.user_id))
    .where(_workspaces.c.id == bindparam("workspace_id")))

#: :data:`WORKSPACE_FOR_SESSION` and, in the same read, the challenge ``challenge_id`` (its
#: columns NULL when there is none). Parameters: ``workspace_id``, ``challenge_id``.
WORKSPACE_AND_CHALLENGE: Select[Any] = (
    WORKSPACE_FOR_SESSION.add_columns(
        _challenges.c.id.label("challenge_id"), _challenges.c.purpose.label("challenge_purpose"),
        _challenges.c.workspace_id.label("challenge_workspace_id"),
        _challenges.c.auth_token_id, _challenges.c.to_be_signed, _challenges.c.used_at,
        _challenges.c.expires_at.label("challenge_expires_at"))
    .outerjoin(_challenges, _challenges.c.id == bindparam("challenge_id")))

#: Write a WorkSpace's changed columns, passed as parameters beside ``ws_id`` (the statement
#: is compiled once per set of columns).
UPDATE_WORKSPACE: Update = update(_workspaces).where(_workspaces.c.id == bindparam("ws_id"))

#: One active session per WorkSpace: the live ones are told to disconnect on their next
#: heartbeat. Parameters: ``ws_id``, ``now``.
TAKE_OVER_SESSIONS: Update = (
    update(_sessions)
    .where(_sessions.c.workspace_id == bindparam("ws_id"),
           _sessions.c.state.in_(LIVE_SESSION_STATES))
    .values(state=SessionState.ENDED, end_reason=SessionEndReason.TAKEN_OVER,
            ended_at=bindparam("now"), pending_action=SessionAction.DISCONNECT))

INSERT_SESSION: Insert = insert(_sessions)

#: A session with its directory's card-removal action (NULL when the directory is gone).
#: Parameter: ``session_id``.
SESSION_WITH_REMOVAL_ACTION: Select[Any] = (
    select(_sessions.c.id, _sessions.c.user_id, _sessions.c.directory_id,
           _sessions.c.workspace_id, _sessions.c.auth_method, _sessions.c.state,
           _sessions.c.pending_action, _sessions.c.end_reason, _dirs.c.removal_action)
    .select_from(_sessions.outerjoin(_dirs, _dirs.c.id == _sessions.c.directory_id))
    .where(_sessions.c.id == bindparam("session_id")))

#: Write a session's changed columns, passed as parameters beside ``session_id``.
UPDATE_SESSION: Update = update(_sessions).where(_sessions.c.id == bindparam("session_id"))


# --------------------------------------------------------------------------- in session

#: A session with what in-session use needs: its directory's region, toggles and version (NULL
#: when the directory is gone), its WorkSpace's stated OS and its user's name (NULL when gone).
#: Parameter: ``session_id``.
SESSION_FOR_IN_SESSION: Select[Any] = (
    select(_sessions.c.id, _sessions.c.user_id, _sessions.c.directory_id,
           _sessions.c.workspace_id, _sessions.c.protocol, _sessions.c.state,
           _sessions.c.end_reason, _sessions.c.client, _sessions.c.cert_fingerprint,
           _dirs.c.region, _dirs.c.sc_pre_session, _dirs.c.sc_in_session,
           _dirs.c.password_login, _dirs.c.version, _workspaces.c.os, _users.c.username)
    .select_from(_sessions.outerjoin(_dirs, _dirs.c.id == _sessions.c.directory_id)
                 .outerjoin(_workspaces, _workspaces.c.id == _sessions.c.workspace_id)
                 .outerjoin(_users, _users.c.id == _sessions.c.user_id))
    .where(_sessions.c.id == bindparam("session_id")))

#: :data:`SESSION_FOR_IN_SESSION` and, in the same read, the challenge ``challenge_id`` (its
#: columns NULL when there is none). Parameters: ``session_id``, ``challenge_id``.
SESSION_AND_CHALLENGE: Select[Any] = (
    SESSION_FOR_IN_SESSION.add_columns(
        _challenges.c.id.label("challenge_id"), _challenges.c.purpose.label("challenge_purpose"),
        _challenges.c.session_id.label("challenge_session_id"), _challenges.c.detail,
        _challenges.c.to_be_signed, _challenges.c.used_at,
        _challenges.c.expires_at.label("challenge_expires_at"))
    .outerjoin(_challenges, _challenges.c.id == bindparam("challenge_id")))


# --------------------------------------------------------------------------- failure counters

#: Start a lockout: ``locked_until`` of the counter, with its count reset. Parameters:
#: ``counter_key``, ``until``.
LOCK_COUNTER: Update = (
    update(_counters).where(_counters.c.key == bindparam("counter_key"))
    .values(locked_until=bindparam("until"), count=0))


#: Hold a counter until ``until`` (a slowdown), its count going on. Parameters:
#: ``counter_key``, ``until``.
HOLD_COUNTER: Update = (
    update(_counters).where(_counters.c.key == bindparam("counter_key"))
    .values(locked_until=bindparam("until")))


@functools.cache
def mark_counter(dialect: str) -> Insert:
    """Remember ``key`` until ``until`` (a fact, not a failure): the counter's window restarts
    at ``now`` with no count. Parameters: ``counter_key``, ``now``, ``until``."""
    dialect_insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = dialect_insert(_counters).values(key=bindparam("counter_key"),
                                            window_start=bindparam("now"),
                                            count=0, locked_until=bindparam("until"))
    return stmt.on_conflict_do_update(index_elements=[_counters.c.key], set_={
        "window_start": stmt.excluded.window_start, "count": 0,
        "locked_until": stmt.excluded.locked_until})


# --------------------------------------------------------------------------- sweeps

#: WorkSpaces whose transition is due (a start or stop to complete). Parameter: ``now``.
DUE_WORKSPACES: Select[Any] = (
    select(_workspaces.c.id, _workspaces.c.directory_id, _workspaces.c.protocol,
           _workspaces.c.state, _workspaces.c.state_changed_at, _workspaces.c.transition_due_at,
           _workspaces.c.last_activity_at)
    .where(_workspaces.c.transition_due_at.is_not(None),
           _workspaces.c.transition_due_at <= bindparam("now"))
    .with_for_update(skip_locked=True))

#: AUTO_STOP WorkSpaces idle since before ``idle_before`` with no live session.
IDLE_WORKSPACES: Select[Any] = (
    select(*DUE_WORKSPACES.selected_columns)
    .where(_workspaces.c.running_mode == RunningMode.AUTO_STOP,
           _workspaces.c.state == WorkSpaceState.AVAILABLE,
           _workspaces.c.last_activity_at < bindparam("idle_before"),
           _workspaces.c.id.not_in(select(_sessions.c.workspace_id).where(
               _sessions.c.state.in_(LIVE_SESSION_STATES))))
    .with_for_update(skip_locked=True))

#: End the live sessions whose last heartbeat is older than ``stale_before``; returns each
#: one's id and directory (for its audit event). Parameters: ``stale_before``, ``now``.
END_STALE_SESSIONS: Update = (
    update(_sessions)
    .where(_sessions.c.state.in_(LIVE_SESSION_STATES),
           _sessions.c.last_heartbeat_at < bindparam("stale_before"))
    .values(state=SessionState.ENDED, ended_at=bindparam("now"),
            end_reason=SessionEndReason.HEARTBEAT_TIMEOUT)
    .returning(_sessions.c.id, _sessions.c.directory_id))

#: Challenges past their expiry that were never answered (counted before they go).
UNANSWERED_EXPIRED_CHALLENGES: Select[Any] = select(func.count()).select_from(_challenges).where(
    _challenges.c.expires_at < bindparam("now"), _challenges.c.used_at.is_(None))
DELETE_EXPIRED_CHALLENGES: Delete = delete(_challenges).where(
    _challenges.c.expires_at < bindparam("now"))
DELETE_EXPIRED_AUTH_TOKENS: Delete = delete(_tokens).where(_tokens.c.expires_at < bindparam("now"))
