"""Admin use cases at the database level (SQLite and PostgreSQL): the PCoIP switch ends smart-card
sessions in the same transaction, pagination, cascades, termination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.admin.directories import create_directory, delete_directory, update_directory
from broker.admin.pagination import Page
from broker.admin.registration_codes import issue_codes, revoke_code
from broker.admin.sessions import terminate_session
from broker.admin.users import create_user, list_users
from broker.admin.workspaces import create_workspace, update_workspace
from broker.config import Settings
from broker.service import sessions
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.store.models import AuditEvent, Session, User, WorkSpace

REPO = Path(__file__).resolve().parents[2]
ACTOR = "token:unit"


@pytest.fixture
def ctx(database: Any) -> BrokerContext:
    return BrokerContext(Settings(base_dir=REPO), database=database)


@pytest.fixture
def corp(ctx: BrokerContext) -> BrokerContext:
    def work(s: Any) -> None:
        create_directory(s, ctx, {"id": "corp", "name": "Corp", "region": "us-gov-west-1",
                                        "password_login": True}, ACTOR)
        for name in ("alice", "bob"):
            create_user(s, "corp", {"username": name}, ACTOR)
        for ws, user in (("ws-a", "alice"), ("ws-b", "bob")):
            create_workspace(s, ctx, {"id": ws, "directory": "corp", "user": user,
                                            "protocol": "WSP", "state": "AVAILABLE"}, ACTOR)
    ctx.db.transaction(work)
    return ctx


def add_session(ctx: BrokerContext, sid: str, ws: str, method: str, state: str = "active") -> None:
    def work(s: Any) -> None:
        w = s.get(WorkSpace, ws)
        s.add(Session(id=sid, workspace_id=ws, user_id=w.user_id, directory_id="corp",
                      auth_method=method, protocol=w.protocol, state=state,
                      expires_at=datetime.now(UTC) + timedelta(hours=1)))
    ctx.db.transaction(work)


def owner(ctx: BrokerContext, sid: str) -> Any:
    """The principal of the session's user, as the web layer would resolve it."""
    from broker.service.auth import ClientPrincipal

    row = session_row(ctx, sid)
    return ClientPrincipal(0, row.user_id, row.directory_id, row.auth_method, None, None)


def session_row(ctx: BrokerContext, sid: str) -> Session:
    return ctx.db.transaction(lambda s: s.get(Session, sid))


def test_switch_to_pcoip_ends_only_live_smart_card_sessions_of_that_workspace(
        corp: BrokerContext) -> None:
    add_session(corp, "card", "ws-a", "smart_card")
    add_session(corp, "locked-card", "ws-a", "smart_card", "locked")
    add_session(corp, "pw", "ws-a", "password")
    add_session(corp, "other-ws", "ws-b", "smart_card")
    corp.db.transaction(lambda s: update_workspace(s, corp, "ws-a", {"protocol": "PCoIP"},
                                                         ACTOR))
    for sid in ("card", "locked-card"):
        row = session_row(corp, sid)
        assert (row.state, row.end_reason, row.pending_action) == ("ended", "protocol_changed",
                                                                   "disconnect")
        assert row.ended_at is not None
    assert session_row(corp, "pw").state == "active"
    assert session_row(corp, "other-ws").state == "active"


def test_next_heartbeat_after_the_switch_says_disconnect(corp: BrokerContext) -> None:
    add_session(corp, "card", "ws-a", "smart_card")
    corp.db.transaction(lambda s: update_workspace(s, corp, "ws-a", {"protocol": "PCoIP"},
                                                         ACTOR))
    answer = sessions.heartbeat(corp, owner(corp, "card"), "card", True)
    assert answer["action"] == "disconnect"


def test_switch_and_session_ending_roll_back_together(corp: BrokerContext) -> None:
    add_session(corp, "card", "ws-a", "smart_card")

    def work(s: Any) -> None:
        update_workspace(s, corp, "ws-a", {"protocol": "PCoIP"}, ACTOR)
        raise ServiceError("conflict", "something later failed")

    with pytest.raises(ServiceError):
        corp.db.transaction(work)
    assert session_row(corp, "card").state == "active"
    assert corp.db.transaction(lambda s: s.get(WorkSpace, "ws-a").protocol) == "WSP"


def test_other_changes_leave_sessions_alone(corp: BrokerContext) -> None:
    add_session(corp, "card", "ws-a", "smart_card")
    corp.db.transaction(lambda s: update_workspace(
        s, corp, "ws-a", {"protocol": "WSP", "bundle": "power"}, ACTOR))
    assert session_row(corp, "card").state == "active"


def test_cursor_and_offset_pages_cover_every_row_once(corp: BrokerContext) -> None:
    corp.db.transaction(lambda s: [create_user(s, "corp", {"username": f"u{i}"}, ACTOR)
                                   for i in range(7)])
    names: list[str] = []
    cursor = None
    while True:
        page = corp.db.transaction(lambda s, c=cursor: list_users(
            s, "corp", Page(limit=3, cursor=c)))
        names += [u["username"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == ["alice", "bob"] + [f"u{i}" for i in range(7)]
    page = corp.db.transaction(lambda s: list_users(s, "corp", Page(limit=2,
                                                                                 offset=8)))
    assert [u["username"] for u in page["items"]] == ["u6"] and page["next_cursor"] is None


@pytest.mark.parametrize("kw", [{"limit": 0}, {"limit": 501}, {"offset": -1},
                                {"cursor": "x", "offset": 1}])
def test_bad_pages_are_malformed(kw: dict[str, Any]) -> None:
    with pytest.raises(ServiceError) as err:
        Page(**kw)
    assert err.value.code == "malformed_request"


def test_deleting_a_directory_removes_everything_in_it(corp: BrokerContext) -> None:
    add_session(corp, "card", "ws-a", "smart_card")
    corp.db.transaction(lambda s: delete_directory(s, "corp", ACTOR))

    def counts(s: Any) -> tuple[int, ...]:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (User, WorkSpace,
                                                                             Session))
    assert corp.db.transaction(counts) == (0, 0, 0)
    kinds = corp.db.transaction(lambda s: list(s.scalars(select(AuditEvent.kind))))
    assert "directory.delete" in kinds


def test_terminate_tells_the_next_heartbeat_to_disconnect(corp: BrokerContext) -> None:
    add_session(corp, "pw", "ws-a", "password")
    view = corp.db.transaction(lambda s: terminate_session(s, corp, "pw", ACTOR))
    assert (view["state"], view["end_reason"], view["pending_action"]) == ("ended", "admin",
                                                                           "disconnect")
    assert sessions.heartbeat(corp, owner(corp, "pw"), "pw", True)["action"] == "disconnect"
    with pytest.raises(ServiceError) as err:
        corp.db.transaction(lambda s: terminate_session(s, corp, "pw", ACTOR))
    assert err.value.code == "session_ended"


def test_apply_switching_a_workspace_to_pcoip_ends_its_smart_card_sessions(
        corp: BrokerContext, tmp_path: Path) -> None:
    from broker.service import directories

    add_session(corp, "card", "ws-a", "smart_card")
    path = tmp_path / "d.toml"
    path.write_text('[[directory]]\nid = "corp"\nname = "Corp"\nregion = "us-gov-west-1"\n'
                    'password_login = true\nregistration_codes = 0\n'
                    '[[directory.user]]\nusername = "alice"\n'
                    '[[directory.workspace]]\nid = "ws-a"\nuser = "alice"\nprotocol = "PCoIP"\n'
                    'state = "AVAILABLE"\n')
    loaded = directories.load_file(path, set(corp.catalogue.region_ids()))
    corp.db.transaction(lambda s: directories.apply_loaded(s, loaded, catalogue=corp.catalogue,
                                                           actor=ACTOR))
    assert corp.db.transaction(lambda s: s.get(WorkSpace, "ws-a").protocol) == "PCoIP"
    assert session_row(corp, "card").state == "ended"


def test_region_change_needs_the_codes_revoked_first(corp: BrokerContext) -> None:
    [code] = corp.db.transaction(lambda s: issue_codes(s, corp, "corp", 1, ACTOR))
    with pytest.raises(ServiceError) as err:
        corp.db.transaction(lambda s: update_directory(s, corp, "corp",
                                                             {"region": "us-east-1"}, ACTOR))
    assert err.value.code == "validation_failed"
    corp.db.transaction(lambda s: revoke_code(s, corp, code["code"], ACTOR))
    view = corp.db.transaction(lambda s: update_directory(s, corp, "corp",
                                                                {"region": "us-east-1"}, ACTOR))
    assert view["region"] == "us-east-1"
