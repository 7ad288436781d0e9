"""WorkSpaces: owner, bundle, protocol, running mode, operating system, state; create, change,
delete, start and stop. Switching one to PCoIP ends its smart-card sessions at once."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, object_session

from broker import kinds
from broker.admin.common import (
    DIR_404,
    READ,
    WRITE,
    by_username_of,
    directory_filter,
    list_rows,
    search,
)
from broker.admin.fields import (
    ID_RULES,
    CliSpec,
    ConsoleSpec,
    Field,
    time_field,
)
from broker.admin.framework import Call, Operation, Resource
from broker.admin.pagination import Filter
from broker.codes import Code
from broker.service import audit
from broker.service.errors import ServiceError
from broker.service.ldapdir import settings_of
from broker.service.lookups import (
    get_directory_row,
    get_user_row,
    get_workspace_row,
    username_of,
)
from broker.service.trust import name_row
from broker.store.models import Directory, User, WorkSpace
from broker.store.models import Session as BrokerSession
from broker.workspaces import request_start, request_stop

if TYPE_CHECKING:
    from broker.service.context import BrokerContext

WORKSPACE_STATES = kinds.values(kinds.WorkSpaceState)
WS_PATH = "/workspaces/{workspace_id}"


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
    return session.get_one(User, name_row(session.connection(), d.id, username))


def workspace_values(w: WorkSpace | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """Column values of a WorkSpace body or file entry (owner, directory and state aside)."""
    values = WORKSPACES.values(data, [f for f in WORKSPACES.fields
                                      if f.name in ("name", "bundle", "protocol",
                                                    "running_mode", "os")])
    if "name" in values and values["name"] is None:
        values["name"] = w.id if w is not None else data["id"]
    return values


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
    audit.insert(session, "workspace.create", "change", directory_id=directory_id,
                 username=owner.username, actor=actor, workspace=w.id, protocol=w.protocol)
    return WORKSPACES.view(w)


def end_smart_card_sessions(session: Session, ws: WorkSpace, now: datetime, reason: str
                            ) -> list[str]:
    """End the live smart-card sessions of ``ws`` at once; their next heartbeat disconnects."""
    rows = list(session.scalars(select(BrokerSession).where(
        BrokerSession.workspace_id == ws.id,
        BrokerSession.state.in_(kinds.LIVE_SESSION_STATES),
        BrokerSession.auth_method == kinds.AuthMethod.SMART_CARD)))
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
    if "protocol" in changed and w.protocol == kinds.Protocol.PCOIP:
        ended = end_smart_card_sessions(session, w, now, "protocol_changed")
    if changed:
        session.flush()
        audit.insert(session, "workspace.update", "change", directory_id=w.directory_id,
                     username=owner_name, actor=actor, workspace=w.id, fields=changed,
                     ended_sessions=ended)
    return WORKSPACES.view(w)


def delete_workspace(session: Session, workspace_id: str, actor: str) -> None:
    w = get_workspace_row(session, workspace_id)
    directory_id, owner = w.directory_id, username_of(session, w.user_id)
    session.expunge(w)
    session.execute(delete(WorkSpace).where(WorkSpace.id == workspace_id))
    audit.insert(session, "workspace.delete", "change", directory_id=directory_id,
                 username=owner, actor=actor, workspace=workspace_id)


def _transition(action: str) -> Any:
    """Start (STOPPED → STARTING) or stop (AVAILABLE → STOPPING) a WorkSpace; a no-op in the
    state it is going to, workspace_unavailable where the backend refuses."""

    def run(session: Session, ctx: BrokerContext, call: Call) -> dict[str, Any]:
        w = get_workspace_row(session, call.path["workspace_id"])
        before = w.state
        (request_start if action == "start" else request_stop)(session, w, ctx.now(),
                                                                 ctx.settings)
        session.flush()
        audit.insert(session, f"workspace.{action}", "change", directory_id=w.directory_id,
                     username=username_of(session, w.user_id), actor=call.actor, workspace=w.id,
                     before=before, after=w.state)
        return WORKSPACES.view(w)
    return run


WORKSPACES: Resource = Resource(
    "workspaces", "WorkSpace", "WorkSpaces",
    "WorkSpaces: owner, bundle, protocol, running mode, operating system, state; start and "
    "stop.", WorkSpace,
    tag="workspaces", title="WorkSpace",
    fields=(
        Field("id", str, "ID", "Stable, operator-chosen identifier.", update=False,
              list_column=True, cli=CliSpec(positional=True), **ID_RULES),
        Field("directory", str, "Directory", "The directory the WorkSpace belongs to.",
              update=False, in_file=False, column="directory_id", list_column=True,
              **ID_RULES),
        Field("user", str, "Owner", "Username of the owner.", list_column=True,
              limits={"min_length": 1, "max_length": 200},
              read=lambda w, ctx: username_of(object_session(w), w.user_id)),
        Field("name", str, "Name", "Display name (default: the id).", nullable=True,
              default=None, limits={"max_length": 200},
              console=ConsoleSpec(column=True)),
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
        time_field("state_changed_at", "State changed", "When the state last changed.",
                   console=ConsoleSpec(column=True)),
        time_field("transition_due_at", "Transition due", "When STARTING/STOPPING completes."),
        time_field("created_at", "Created", "When the WorkSpace was created."),
    ),
    operations=(
        Operation("list", "GET", "/workspaces", READ,
                  lambda s, ctx, c: list_rows(WORKSPACES, s, ctx, c), "List WorkSpaces.",
                  out="page", filters=(
                      directory_filter(WorkSpace, "Only this directory's WorkSpaces."),
                      Filter("user", "Only this user's (username).",
                             where=by_username_of(WorkSpace)),
                      Filter("state", "Only WorkSpaces in this state.", choices=WORKSPACE_STATES,
                             column=WorkSpace.state),
                      Filter("protocol", "Only WSP or PCoIP.", choices=kinds.values(kinds.Protocol),
                             column=WorkSpace.protocol),
                      Filter("search", "WorkSpace ids or names containing this text.",
                             where=search(WorkSpace.id, WorkSpace.name)))),
        Operation("create", "POST", "/workspaces", WRITE,
                  lambda s, ctx, c: create_workspace(s, ctx, c.body, c.actor),
                  "Create a WorkSpace.", status=201, body="create",
                  errors=(*DIR_404, Code.RESOURCE_NOT_FOUND, Code.CONFLICT,
                          Code.DIRECTORY_UNAVAILABLE),
                  audit="workspace.create",
                  message="WorkSpace {id} created"),
        Operation("get", "GET", WS_PATH, READ,
                  lambda s, ctx, c: get_workspace(s, c.path["workspace_id"]), "Get a WorkSpace.",
                  errors=(Code.WORKSPACE_UNKNOWN,)),
        Operation("update", "PATCH", WS_PATH, WRITE,
                  lambda s, ctx, c: update_workspace(s, ctx, c.path["workspace_id"], c.body,
                                                     c.actor),
                  "Change a WorkSpace. Switching to PCoIP ends its smart-card sessions at once "
                  "(their next heartbeat answers disconnect).", body="update",
                  errors=(Code.WORKSPACE_UNKNOWN, Code.RESOURCE_NOT_FOUND,
                          Code.DIRECTORY_UNAVAILABLE),
                  audit="workspace.update",
                  message="WorkSpace {id} updated"),
        Operation("delete", "DELETE", WS_PATH, WRITE,
                  lambda s, ctx, c: delete_workspace(s, c.path["workspace_id"], c.actor),
                  "Delete a WorkSpace.", status=204, out=None, errors=(Code.WORKSPACE_UNKNOWN,),
                  audit="workspace.delete", message="WorkSpace {workspace_id} deleted"),
        Operation("start", "POST", f"{WS_PATH}/start", WRITE, _transition("start"),
                  "Start a stopped WorkSpace.", status=202,
                  errors=(Code.WORKSPACE_UNKNOWN, Code.WORKSPACE_UNAVAILABLE),
                  audit="workspace.start",
                  message="WorkSpace {id} is {state}"),
        Operation("stop", "POST", f"{WS_PATH}/stop", WRITE, _transition("stop"),
                  "Stop an available WorkSpace.", status=202,
                  errors=(Code.WORKSPACE_UNKNOWN, Code.WORKSPACE_UNAVAILABLE),
                  audit="workspace.stop",
                  message="WorkSpace {id} is {state}"),
    ),
)
