"""Desktop sessions: list (live = active or locked), get, terminate (the next heartbeat
answers disconnect)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Select
from sqlalchemy.orm import Session, object_session

from broker import kinds
from broker.admin.common import READ, WRITE, by_username_of, directory_filter, list_rows
from broker.admin.fields import ConsoleSpec, out_field, time_field
from broker.admin.framework import Operation, Resource
from broker.admin.pagination import Filter
from broker.codes import Code
from broker.service import audit
from broker.service.errors import ServiceError
from broker.service.lookups import row_by_id, username_of
from broker.store.models import Session as BrokerSession

if TYPE_CHECKING:
    from broker.service.context import BrokerContext



def get_session(session: Session, session_id: str) -> dict[str, Any]:
    return SESSIONS.view(_session_row(session, session_id))


def _session_row(session: Session, session_id: str) -> BrokerSession:
    row: BrokerSession = row_by_id(session, BrokerSession, session_id, Code.SESSION_UNKNOWN,
                                    "session")
    return row


def terminate_session(session: Session, ctx: BrokerContext, session_id: str,
                      actor: str) -> dict[str, Any]:
    """End a session now; its next heartbeat is told to disconnect. session_ended if over."""
    s = _session_row(session, session_id)
    if s.state == kinds.SessionState.ENDED:
        raise ServiceError(Code.SESSION_ENDED, "This session has already ended.",
                           {"reason": s.end_reason})
    s.state, s.end_reason, s.ended_at, s.pending_action = (
        kinds.SessionState.ENDED, kinds.SessionEndReason.ADMIN, ctx.now(),
        kinds.SessionAction.DISCONNECT)
    session.flush()
    audit.insert(session, "session.terminate", "change", directory_id=s.directory_id,
                 username=username_of(session, s.user_id), actor=actor, session_id=s.id,
                 workspace=s.workspace_id)
    return SESSIONS.view(s)


def session_state(stmt: Select[Any], value: Any) -> Select[Any]:
    if value == "live":
        return stmt.where(BrokerSession.state.in_(kinds.LIVE_SESSION_STATES))
    return stmt.where(BrokerSession.state == value)


SESSIONS: Resource = Resource(
    "sessions", "session", "Sessions", "Desktop sessions: list, terminate.", BrokerSession,
    tag="sessions",
    fields=(
        out_field("id", str, "ID", list_column=True),
        out_field("directory", str, "Directory", column="directory_id", list_column=True),
        out_field("workspace", str, "WorkSpace", column="workspace_id", list_column=True),
        out_field("user_id", int, "User id"),
        out_field("user", str, "User", "The session's user name.", nullable=True, list_column=True,
             read=lambda row, ctx: username_of(object_session(row), row.user_id)),
        out_field("auth_method", str, "Login method", list_column=True),
        out_field("protocol", str, "Protocol", list_column=True),
        out_field("state", str, "State", "active, locked or ended.", list_column=True),
        out_field("pending_action", str, "Pending action", nullable=True),
        out_field("end_reason", str, "End reason", nullable=True, list_column=True),
        out_field("cert_fingerprint", str, "Certificate fingerprint", nullable=True),
        out_field("smart_card_redirection", bool, "Smart-card redirection"),
        time_field("last_heartbeat_at", "Last heartbeat", "When the client last reported.",
                   console=ConsoleSpec(column=True)),
        time_field("expires_at", "Expires", "When the session expires."),
        time_field("created_at", "Started", "When the session started."),
        time_field("ended_at", "Ended", "When the session ended."),
    ),
    operations=(
        Operation("list", "GET", "/sessions", READ,
                  lambda s, ctx, c: list_rows(SESSIONS, s, ctx, c),
                  "List sessions (state may be live = active or locked).", out="page", filters=(
                      directory_filter(BrokerSession, "Only this directory's sessions."),
                      Filter("workspace", "Only this WorkSpace's sessions.",
                             column=BrokerSession.workspace_id),
                      Filter("user", "Only this user's (username).",
                             where=by_username_of(BrokerSession)),
                      Filter("state", "live (active or locked), active, locked or ended.",
                             choices=("live", *kinds.values(kinds.SessionState)),
                             where=session_state),
                      Filter("auth_method", "smart_card or password.",
                             choices=kinds.values(kinds.AuthMethod),
                             column=BrokerSession.auth_method))),
        Operation("get", "GET", "/sessions/{session_id}", READ,
                  lambda s, ctx, c: get_session(s, c.path["session_id"]), "Get a session.",
                  errors=(Code.SESSION_UNKNOWN,)),
        Operation("terminate", "POST", "/sessions/{session_id}/terminate", WRITE,
                  lambda s, ctx, c: terminate_session(s, ctx, c.path["session_id"], c.actor),
                  "End a session now; its next heartbeat answers disconnect.",
                  errors=(Code.SESSION_UNKNOWN, Code.SESSION_ENDED), audit="session.terminate",
                  message="session {id} terminated"),
    ),
)
