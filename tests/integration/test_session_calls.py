"""The session use cases in process (SQLite and PostgreSQL): what connect, logon, heartbeat and
end_session write — rows, audit events with their fields, the single use of a logon challenge —
beside the over-TLS tests of test_sessions_api."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from broker.config import Settings
from broker.errors import BrokerError
from broker.service import auth, in_session, login, registrations, sessions, sweeps
from broker.service.auth import ClientPrincipal
from broker.service.context import BrokerContext
from broker.store.models import AuditEvent, Challenge, Directory, Session, User, WorkSpace
from tests.integration.test_login_cost import REPO, SkewedClock, seed
from tests.support.softcard import WINDOWS

ADDRESS = "192.0.2.7"


class World:
    def __init__(self, database: Any) -> None:
        self.clock = SkewedClock()
        self.ctx = BrokerContext(Settings(base_dir=REPO), database=database, clock=self.clock)
        self.code, self.card = seed(self.ctx, 0)

        def stopped_workspace(s: Any) -> None:
            alice = s.scalar(select(User).where(User.username == "alice"))
            s.add(WorkSpace(id="ws-auto", directory_id="corp", user_id=alice.id,
                            protocol="WSP", running_mode="AUTO_STOP", state="STOPPED"))

        self.ctx.db.transaction(stopped_workspace)
        client = registrations.ClientSpec(**WINDOWS)
        ch = login.issue_login_challenge(self.ctx, self.code, client, 1, ADDRESS)
        token = login.respond_to_challenge(
            self.ctx, ch["challenge_id"], self.card.cert_b64(), self.card.chain_b64(),
            self.sign(ch), self.card.algorithm, ADDRESS)["auth_token"]
        self.principal: ClientPrincipal = auth.client_principal(self.ctx, token)

    def sign(self, challenge: dict[str, Any]) -> str:
        return base64.b64encode(self.card.sign(base64.b64decode(challenge["to_be_signed"]))
                                ).decode()

    def events(self, kind: str) -> list[AuditEvent]:
        return self.ctx.db.read(lambda s: list(s.scalars(
            select(AuditEvent).where(AuditEvent.kind == kind).order_by(AuditEvent.id))))

    def row(self, model: Any, key: Any) -> Any:
        return self.ctx.db.read(lambda s: s.get(model, key))

    def logon(self, challenge: dict[str, Any], workspace_id: str = "ws-auto") -> dict[str, Any]:
        return sessions.logon(self.ctx, self.principal, workspace_id, challenge["challenge_id"],
                              self.sign(challenge), self.card.algorithm, ADDRESS)

    def open(self, workspace_id: str = "ws-alice") -> dict[str, Any]:
        """Connect to an AVAILABLE WorkSpace: the PIN again (a logon challenge), then the
        session."""
        started = sessions.connect(self.ctx, self.principal, workspace_id, ADDRESS)
        body = started.body
        assert isinstance(started, sessions.Starting) and body["state"] == "AVAILABLE", body
        return self.logon(body["logon_challenge"], workspace_id)


@pytest.fixture
def world(database: Any) -> World:
    return World(database)


def code_of(call: Any) -> str:
    with pytest.raises(BrokerError) as err:
        call()
    return str(err.value.code)


def test_a_card_login_connects_to_an_available_workspace_with_the_pin_again(
        world: World) -> None:
    """"Starting WorkSpace" asks for the PIN on every card login: an AVAILABLE WorkSpace gets a
    logon challenge (bound to it, this login and its certificate) and nothing else yet."""
    started = sessions.connect(world.ctx, world.principal, "ws-alice", ADDRESS)
    body = started.body
    assert isinstance(started, sessions.Starting)
    assert body["state"] == "AVAILABLE" and "session" not in body
    ch = world.row(Challenge, body["logon_challenge"]["challenge_id"])
    assert (ch.purpose, ch.workspace_id, ch.auth_token_id, ch.cert_fingerprint) == (
        "logon", "ws-alice", world.principal.token_id, world.principal.cert_fingerprint)
    assert world.events("session.open") == [] and world.events("workspace.start") == []


def test_logon_opens_a_session_and_audits_it(world: World) -> None:
    body = world.open("ws-alice")
    sid = body["session"]["id"]
    row = world.row(Session, sid)
    assert (row.workspace_id, row.user_id, row.auth_method, row.state, row.protocol) == (
        "ws-alice", world.principal.user_id, "smart_card", "active", "WSP")
    assert row.cert_fingerprint == world.principal.cert_fingerprint
    assert row.smart_card_redirection is body["session"]["smart_card_redirection"] is True
    assert row.client == WINDOWS, "the session records the client of its login"
    (event,) = world.events("session.open")
    assert (event.outcome, event.directory_id, event.username, event.client_address,
            event.cert_fingerprint) == ("success", "corp", "alice", ADDRESS,
                                        world.principal.cert_fingerprint)
    assert event.details == {"session_id": sid, "workspace_id": "ws-alice", "protocol": "WSP"}
    assert world.row(WorkSpace, "ws-alice").last_activity_at == row.created_at


def test_a_second_connect_takes_over_the_first_session(world: World) -> None:
    first = world.open()["session"]
    world.open()
    old = world.row(Session, first["id"])
    assert (old.state, old.end_reason, old.pending_action) == ("ended", "taken_over",
                                                               "disconnect")
    assert sessions.heartbeat(world.ctx, world.principal, first["id"], True) == {
        "action": "disconnect", "reason": "taken_over"}
    assert code_of(lambda: sessions.heartbeat(world.ctx, world.principal, first["id"],
                                              True)) == "session_ended"


def test_connect_to_a_stopped_workspace_starts_it_with_a_logon_challenge(world: World) -> None:
    started = sessions.connect(world.ctx, world.principal, "ws-auto", ADDRESS)
    body = started.body
    assert isinstance(started, sessions.Starting) and body["state"] == "STARTING"
    ws = world.row(WorkSpace, "ws-auto")
    assert ws.state == "STARTING" and ws.transition_due_at is not None
    (start,) = world.events("workspace.start")
    assert (start.outcome, start.directory_id, start.actor, start.details) == (
        "change", "corp", f"user:{world.principal.user_id}", {"workspace_id": "ws-auto"})
    logon = body["logon_challenge"]
    ch = world.row(Challenge, logon["challenge_id"])
    assert (ch.purpose, ch.workspace_id, ch.auth_token_id, ch.cert_fingerprint) == (
        "logon", "ws-auto", world.principal.token_id, world.principal.cert_fingerprint)
    # The PIN gets the full TTL after the start completes.
    ttl = timedelta(seconds=world.ctx.settings.login.challenge_ttl_s)
    assert ch.expires_at == ws.transition_due_at + ttl
    assert logon["purpose"] == "logon" and logon["accepted_issuers"]


def test_logon_while_starting_changes_nothing(world: World) -> None:
    logon = sessions.connect(world.ctx, world.principal, "ws-auto", ADDRESS).body[
        "logon_challenge"]
    assert code_of(lambda: world.logon(logon)) == "workspace_not_ready"
    assert world.row(Challenge, logon["challenge_id"]).used_at is None
    assert world.row(WorkSpace, "ws-auto").state == "STARTING"
    assert world.events("logon.smart_card") == []


def test_a_logon_challenge_opens_one_session(world: World) -> None:
    logon = sessions.connect(world.ctx, world.principal, "ws-auto", ADDRESS).body[
        "logon_challenge"]
    world.clock.offset += timedelta(seconds=world.ctx.settings.workspaces.start_delay_s + 1)
    opened = world.logon(logon)["session"]
    assert world.row(WorkSpace, "ws-auto").state == "AVAILABLE"
    assert world.row(Challenge, logon["challenge_id"]).used_at is not None
    (event,) = [e for e in world.events("logon.smart_card") if e.outcome == "success"]
    assert (event.directory_id, event.client_address, event.cert_fingerprint) == (
        "corp", ADDRESS, world.principal.cert_fingerprint)
    assert event.details == {"challenge_id": logon["challenge_id"], "workspace_id": "ws-auto"}
    assert [e.details["session_id"] for e in world.events("session.open")] == [opened["id"]]
    assert code_of(lambda: world.logon(logon)) == "challenge_used"


def test_a_challenge_of_another_workspace_is_unknown_to_logon(world: World) -> None:
    logon = sessions.connect(world.ctx, world.principal, "ws-auto", ADDRESS).body[
        "logon_challenge"]
    assert code_of(lambda: sessions.logon(world.ctx, world.principal, "ws-alice",
                                          logon["challenge_id"], world.sign(logon),
                                          world.card.algorithm, ADDRESS)) == "challenge_unknown"
    assert code_of(lambda: sessions.logon(world.ctx, world.principal, "ws-auto", "nope",
                                          world.sign(logon), world.card.algorithm,
                                          ADDRESS)) == "challenge_unknown"


@pytest.mark.parametrize("action, states", [("lock", ["locked", "locked", "active"]),
                                            ("disconnect", ["ended"]),
                                            ("none", ["active", "active", "active"])])
def test_card_removal_applies_the_directorys_action(world: World, action: str,
                                                    states: list[str]) -> None:
    world.ctx.db.transaction(lambda s: s.execute(update(Directory).values(
        removal_action=action)))
    sid = world.open()["session"]["id"]
    seen = []
    for present in (False, False, True)[:len(states)]:
        assert sessions.heartbeat(world.ctx, world.principal, sid, present) == {
            "action": "none" if present else action}
        seen.append(world.row(Session, sid).state)
    assert seen == states
    removed = world.events("session.card_removed")
    assert [e.details for e in removed] == ([] if action == "none" else [
        {"session_id": sid, "action": action}])
    if action == "disconnect":
        assert world.row(Session, sid).end_reason == "card_removed"


def test_end_session_ends_it_once_and_hides_other_users_sessions(world: World) -> None:
    sid = world.open()["session"]["id"]
    stranger = ClientPrincipal(0, world.principal.user_id + 1000, "corp", "smart_card", None,
                               None)
    assert code_of(lambda: sessions.end_session(world.ctx, stranger, sid)) == "session_unknown"
    assert code_of(lambda: sessions.heartbeat(world.ctx, stranger, sid, True)) == \
        "session_unknown"
    sessions.end_session(world.ctx, world.principal, sid)
    sessions.end_session(world.ctx, world.principal, sid)
    row = world.row(Session, sid)
    assert (row.state, row.end_reason) == ("ended", "client")
    assert [(e.reason, e.details) for e in world.events("session.end")] == [
        ("client", {"session_id": sid})]
    assert code_of(lambda: sessions.connect(world.ctx, stranger, "ws-alice", ADDRESS)) == \
        "workspace_not_yours"


def test_every_card_login_decision_records_its_certmap_rule(world: World) -> None:
    """The login's audit event names the rule that found the user; once alice's UPN is gone
    the refusal names the rules tried; in-session use names its rule too."""
    (login_event,) = [e for e in world.events("login.smart_card") if e.outcome == "success"]
    assert login_event.details["certmap_rule"] == "upn"
    sid = world.open()["session"]["id"]
    isc = in_session.in_session_challenge(world.ctx, world.principal, sid, "browser", ADDRESS)
    in_session.in_session_response(world.ctx, world.principal, sid, isc["challenge_id"],
                                 world.sign(isc), world.card.algorithm, None, [], ADDRESS)
    (used,) = world.events("in_session.auth")
    assert used.outcome == "success" and used.details["certmap_rule"] == "upn"
    world.ctx.db.transaction(lambda s: s.execute(update(User).where(User.username == "alice")
                                                 .values(upn=None)))
    ch = login.issue_login_challenge(world.ctx, world.code,
                                     registrations.ClientSpec(**WINDOWS), 1, ADDRESS)
    assert code_of(lambda: login.respond_to_challenge(
        world.ctx, ch["challenge_id"], world.card.cert_b64(), world.card.chain_b64(),
        world.sign(ch), world.card.algorithm, ADDRESS)) == "user_not_found"
    (refused,) = [e for e in world.events("login.smart_card") if e.outcome == "refused"]
    assert refused.reason == "user_not_found"
    assert refused.details["certmap_rule"] == ["upn", "email"]


def test_a_sweep_ends_silent_sessions_once_and_audits_each(world: World) -> None:
    """The heartbeat sweep ends a live session whose heartbeats stopped (one audit event), and
    a second sweep finds nothing; a session that still beats is left alone."""
    from broker.service import sweeps

    sid = world.open()["session"]["id"]
    assert sweeps.sweep_sessions(world.ctx) == 0
    world.clock.offset += timedelta(seconds=world.ctx.settings.sessions.heartbeat_timeout_s + 1)
    by_name = {fn.__name__: fn for fn in sweeps.sweepers(world.ctx)}
    assert by_name["sweep_sessions"]() == 1
    assert by_name["sweep_sessions"]() == 0
    row = world.row(Session, sid)
    assert (row.state, row.end_reason) == ("ended", "heartbeat_timeout")
    ends = [e for e in world.events("session.end") if e.details["session_id"] == sid]
    assert [e.reason for e in ends] == ["heartbeat_timeout"]


def test_the_workspace_sweep_completes_starts_and_stops_idle_workspaces(world: World) -> None:
    sessions.connect(world.ctx, world.principal, "ws-auto", ADDRESS)
    assert world.row(WorkSpace, "ws-auto").state == "STARTING"
    world.clock.offset += timedelta(seconds=world.ctx.settings.workspaces.start_delay_s + 1)
    assert sweeps.sweep_workspaces(world.ctx) >= 1
    assert world.row(WorkSpace, "ws-auto").state == "AVAILABLE"
    world.clock.offset += timedelta(seconds=world.ctx.settings.workspaces.auto_stop_idle_s + 1)
    assert sweeps.sweep_workspaces(world.ctx) == 1
    assert world.row(WorkSpace, "ws-auto").state == "STOPPING"
    (stop,) = world.events("workspace.auto_stop")
    assert stop.details == {"workspace_id": "ws-auto"}
