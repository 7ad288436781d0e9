"""WorkSpace sessions over real TLS: Starting WorkSpace + second PIN, tickets, heartbeats,
card removal, in-session authentication, restart mid-flow."""

from __future__ import annotations

import time

import pytest

from broker.service.tickets import verify
from tests.support.jws import verify_es256
from tests.support.softcard import WINDOWS, SoftClient
from tests.support.world import build_world

FAST = {"BROKER_WORKSPACES_START_DELAY_S": "2", "BROKER_SESSIONS_SWEEP_INTERVAL_S": "0.5"}


@pytest.fixture
def fast(broker_factory, migrated_url, tmp_path):  # type: ignore[no-untyped-def]
    bp = broker_factory(migrated_url, **FAST)
    return bp, build_world(tmp_path / "w", bp)


def login(bp, w, who: str = "alice", directory: str = "corp"):  # type: ignore[no-untyped-def]
    client = SoftClient(bp.client(), w.codes[directory])
    r = client.login(w.cards[who])
    assert r.status == 200, r.body
    return client, r.body["auth_token"]


def test_stopped_workspace_starts_and_asks_for_the_pin_again(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w)
    r = client.connect(token, "ws-alice")
    assert r.status == 202 and r.body["state"] == "STARTING"
    logon = r.body["logon_challenge"]
    assert logon["purpose"] == "logon"
    first = client.logon(token, "ws-alice", logon, w.cards["alice"])
    assert first.status == 409 and first.code == "workspace_not_ready"
    deadline = time.monotonic() + 15
    while True:
        r = client.logon(token, "ws-alice", logon, w.cards["alice"])
        if r.status != 409:
            break
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert r.status == 201, r.body
    session = r.body["session"]
    jwks = bp.client().get("/v1/jwks.json").body
    claims = verify(session["ticket"], jwks)
    assert verify_es256(session["ticket"], jwks) == claims, "an independent ES256 check agrees"
    assert claims["sid"] == session["id"] and claims["ws"] == "ws-alice"
    assert claims["proto"] == "WSP" and claims["sub"] == "alice" and claims["scr"] is True
    assert session["smart_card_redirection"] is True
    assert session["gateway"]["protocol"] == "WSP"


def test_logon_needs_the_login_certificate(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w)
    logon = client.connect(token, "ws-alice").body["logon_challenge"]
    r = client.logon(token, "ws-alice", logon, w.cards["bob"])
    assert r.status == 401 and r.code == "signature_invalid"


def test_available_workspace_asks_for_the_pin_again_then_opens_at_once(fast) -> None:  # type: ignore[no-untyped-def]
    """"On the Starting WorkSpace page, enter your PIN again": every card login, also when the
    WorkSpace is already AVAILABLE; its session opens right after the logon signature."""
    bp, w = fast
    client, token = login(bp, w, "bob")
    r = client.connect(token, "ws-bob")
    assert r.status == 202 and r.body["state"] == "AVAILABLE", r.body
    assert r.body["logon_challenge"]["purpose"] == "logon"
    r = client.logon(token, "ws-bob", r.body["logon_challenge"], w.cards["bob"])
    assert r.status == 201 and r.body["session"]["ticket"]
    assert r.body["session"]["smart_card_redirection"] is True


def test_the_logon_challenge_is_single_use(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w, "bob")
    challenge = client.connect(token, "ws-bob").body["logon_challenge"]
    assert client.logon(token, "ws-bob", challenge, w.cards["bob"]).status == 201
    again = client.logon(token, "ws-bob", challenge, w.cards["bob"])
    assert again.status == 401 and again.code == "challenge_used"


def test_pcoip_workspace_refuses_smart_card_login(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w)
    r = client.connect(token, "ws-alice-pcoip")
    assert r.status == 403 and r.code == "smart_card_requires_wsp"


def test_another_users_workspace_is_refused(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w)
    assert client.connect(token, "ws-bob").code == "workspace_not_yours"
    assert client.connect("sbt_bogus", "ws-alice").code == "auth_token_invalid"


def test_password_user_connects_to_pcoip(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    r = bp.client().post("/v1/auth/password", {"registration_code": w.codes["corp"],
                                               "username": "dave",
                                               "password": "correct horse battery staple",
                                               "client": WINDOWS})
    token = r.body["auth_token"]
    s = SoftClient(bp.client(), w.codes["corp"]).connect(token, "ws-dave")
    assert s.status == 201 and s.body["session"]["smart_card_redirection"] is False


def password_session(bp, w, client: dict[str, str] | None):  # type: ignore[no-untyped-def]
    """erin (us-east-1: no pre-session card login) logs in with her password from ``client``
    (None: the client is not stated) and connects to her WSP WorkSpace."""
    body = {"registration_code": w.codes["east"], "username": "erin",
            "password": "erin password", **({"client": client} if client else {})}
    r = bp.client().post("/v1/auth/password", body)
    assert r.status == 200, r.body
    s = SoftClient(bp.client(), w.codes["east"]).connect(r.body["auth_token"], "ws-erin")
    assert s.status == 201, s.body
    return s.body["session"], r.body["auth_token"]


@pytest.mark.parametrize("client,reasons", [
    (WINDOWS, None),
    (None, ["client_unknown"]),
    ({"platform": "linux", "arch": "x86_64", "version": "3.1.1"},
     ["client_platform_unsupported"]),
    ({"platform": "windows", "arch": "x86", "version": "3.0.9"},
     ["client_arch_unsupported", "client_version_unsupported"])])
def test_ticket_session_and_in_session_decision_agree(fast, client, reasons) -> None:  # type: ignore[no-untyped-def]
    """The client rule holds in-session: only the Windows client 3.1.1+ on 64-bit Windows
    redirects the card. The ticket's ``scr``, the session's ``smart_card_redirection`` and the
    in-session challenge come from the same rule, for a password login too."""
    bp, w = fast
    session, token = password_session(bp, w, client)
    claims = verify(session["ticket"], bp.client().get("/v1/jwks.json").body)
    allowed = reasons is None
    assert session["smart_card_redirection"] is allowed and claims["scr"] is allowed
    ch = bp.client().post(f"/v1/sessions/{session['id']}/in-session/challenges",
                          {"purpose": "browser"}, token=token)
    if allowed:
        assert ch.status == 201, ch.body
    else:
        assert ch.status == 403 and ch.code == "in_session_not_allowed"
        assert ch.body["error"]["details"]["reasons"] == reasons


def test_sudo_is_refused_in_a_windows_workspace(fast) -> None:  # type: ignore[no-untyped-def]
    """A WorkSpace stated as windows (admin CLI) carries ``os`` in its ticket and refuses the
    sudo purpose (purpose_not_for_os); a browser inside it still gets its challenge."""
    bp, w = fast
    created = bp.run_cli("admin", "workspaces", "create", "ws-erin-win", "--directory", "east",
                         "--user", "erin", "--protocol", "WSP", "--state", "AVAILABLE",
                         "--os", "windows", "--json")
    assert '"os": "windows"' in created.stdout
    r = bp.client().post("/v1/auth/password", {"registration_code": w.codes["east"],
                                               "username": "erin", "password": "erin password",
                                               "client": WINDOWS})
    token = r.body["auth_token"]
    s = SoftClient(bp.client(), w.codes["east"]).connect(token, "ws-erin-win")
    assert s.status == 201, s.body
    session = s.body["session"]
    claims = verify(session["ticket"], bp.client().get("/v1/jwks.json").body)
    assert claims["os"] == "windows" and claims["scr"] is True
    sudo = bp.client().post(f"/v1/sessions/{session['id']}/in-session/challenges",
                            {"purpose": "sudo"}, token=token)
    assert sudo.status == 403 and sudo.code == "in_session_not_allowed"
    assert sudo.body["error"]["details"]["reasons"] == ["purpose_not_for_os"]
    browser = bp.client().post(f"/v1/sessions/{session['id']}/in-session/challenges",
                               {"purpose": "browser"}, token=token)
    assert browser.status == 201, browser.body
    # ws-erin states no operating system: sudo as today, and no os claim.
    session, token = password_session(bp, w, WINDOWS)
    assert "os" not in verify(session["ticket"], bp.client().get("/v1/jwks.json").body)


def test_a_card_login_records_its_client_for_the_session(fast) -> None:  # type: ignore[no-untyped-def]
    """The client the card login's challenge was issued to is the session's client."""
    bp, w = fast
    client, token = login(bp, w, "bob")
    session = client.open_session(token, "ws-bob", w.cards["bob"]).body["session"]
    assert session["smart_card_redirection"] is True
    assert in_session(bp, w, session["id"], "bob", "browser", token=token).status == 200


def heartbeat(bp, sid: str, present: bool, token: str):  # type: ignore[no-untyped-def]
    return bp.client().post(f"/v1/sessions/{sid}/heartbeat", {"card_present": present},
                            token=token)


@pytest.mark.parametrize("removal,action", [("lock", "lock"), ("disconnect", "disconnect"),
                                            ("none", "none")])
def test_card_removal_applies_the_directory_action(broker_factory, migrated_url, tmp_path,
                                                   removal, action) -> None:  # type: ignore[no-untyped-def]
    bp = broker_factory(migrated_url, **FAST)
    w = build_world(tmp_path / "w", bp, removal=removal)
    client, token = login(bp, w, "bob")
    sid = client.open_session(token, "ws-bob", w.cards["bob"]).body["session"]["id"]
    assert heartbeat(bp, sid, True, token).body["action"] == "none"
    assert heartbeat(bp, sid, False, token).body["action"] == action
    after = heartbeat(bp, sid, True, token)
    if action == "disconnect":
        assert after.status == 410 and after.code == "session_ended"
    else:
        assert after.body["action"] == "none"


def test_second_connect_takes_over_and_first_is_told_to_disconnect(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w, "bob")
    first = client.open_session(token, "ws-bob", w.cards["bob"]).body["session"]["id"]
    second = client.open_session(token, "ws-bob", w.cards["bob"]).body["session"]["id"]
    assert heartbeat(bp, first, True, token).body["action"] == "disconnect"
    assert heartbeat(bp, first, True, token).status == 410
    assert heartbeat(bp, second, True, token).body["action"] == "none"


def test_missing_heartbeats_end_the_session(broker_factory, migrated_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bp = broker_factory(migrated_url, BROKER_SESSIONS_HEARTBEAT_TIMEOUT_S="1", **FAST)
    w = build_world(tmp_path / "w", bp)
    client, token = login(bp, w, "bob")
    sid = client.open_session(token, "ws-bob", w.cards["bob"]).body["session"]["id"]
    time.sleep(3)
    r = heartbeat(bp, sid, True, token)
    assert r.status == 410 and r.body["error"]["details"]["reason"] == "heartbeat_timeout"


def test_delete_ends_the_session(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w, "bob")
    sid = client.open_session(token, "ws-bob", w.cards["bob"]).body["session"]["id"]
    assert bp.client().delete(f"/v1/sessions/{sid}", token=token).status == 204
    assert heartbeat(bp, sid, True, token).status == 410
    assert bp.client().delete("/v1/sessions/nope", token=token).status == 404


def in_session(bp, w, sid: str, card: str, purpose: str = "sudo",  # type: ignore[no-untyped-def]
               with_certificate: bool = False, *, token: str):
    import base64

    api = bp.client()
    api.token = token
    ch = api.post(f"/v1/sessions/{sid}/in-session/challenges", {"purpose": purpose})
    if ch.status != 201:
        return ch
    sig = w.cards[card].sign(base64.b64decode(ch.body["to_be_signed"]))
    return api.post(f"/v1/sessions/{sid}/in-session/challenges/{ch.body['challenge_id']}"
                    "/response", {"signature": base64.b64encode(sig).decode(),
                                  "algorithm": w.cards[card].algorithm,
                                  **({"certificate": w.cards[card].cert_b64()}
                                     if with_certificate else {})})


def test_in_session_sudo_works_in_a_us_east_1_wsp_session(fast) -> None:  # type: ignore[no-untyped-def]
    """us-east-1: no pre-session card login, so erin logs in with her password and then uses
    her card inside the WSP session (sudo), as the reference describes."""
    bp, w = fast
    session, token = password_session(bp, w, WINDOWS)
    assert session["smart_card_redirection"] is True
    r = in_session(bp, w, session["id"], "erin", with_certificate=True, token=token)
    assert r.status == 200, r.body
    jwks = bp.client().get("/v1/jwks.json").body
    claims = verify(r.body["assertion"], jwks)
    assert verify_es256(r.body["assertion"], jwks) == claims
    assert claims["sub"] == "erin" and claims["purpose"] == "sudo"
    assert claims["aud"] == "in-session:sudo"


def test_in_session_card_of_another_user_is_refused(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    session, token = password_session(bp, w, WINDOWS)
    r = in_session(bp, w, session["id"], "alice", with_certificate=True, token=token)
    assert r.status == 401 and r.code in ("certificate_mismatch", "user_not_found")


def test_in_session_is_refused_in_a_pcoip_session(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    r = bp.client().post("/v1/auth/password", {"registration_code": w.codes["corp"],
                                               "username": "dave",
                                               "password": "correct horse battery staple",
                                               "client": WINDOWS})
    sid = SoftClient(bp.client(), w.codes["corp"]).connect(
        r.body["auth_token"], "ws-dave").body["session"]["id"]
    ch = bp.client().post(f"/v1/sessions/{sid}/in-session/challenges", {"purpose": "sudo"},
                          token=r.body["auth_token"])
    assert ch.status == 403 and ch.code == "in_session_not_allowed"


def test_in_session_with_another_card_is_refused(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w, "bob")
    sid = client.open_session(token, "ws-bob", w.cards["bob"]).body["session"]["id"]
    assert in_session(bp, w, sid, "bob", "browser", token=token).status == 200
    r = in_session(bp, w, sid, "alice", token=token)
    assert r.status == 401 and r.code == "signature_invalid"


def test_restart_between_connect_and_logon_loses_nothing(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w)
    logon = client.connect(token, "ws-alice").body["logon_challenge"]
    assert bp.stop() == 0
    bp.start()
    deadline = time.monotonic() + 15
    while True:
        r = client.logon(token, "ws-alice", logon, w.cards["alice"])
        if r.status != 409:
            break
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert r.status == 201, r.body
    assert r.body["session"]["ticket"]


def test_jwks_publishes_only_public_keys(broker) -> None:  # type: ignore[no-untyped-def]
    doc = broker.client().get("/v1/jwks.json").body
    assert doc["keys"] and all(k["kty"] == "EC" and "d" not in k and k["kid"]
                               for k in doc["keys"])

