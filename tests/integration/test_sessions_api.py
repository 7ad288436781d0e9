"""WorkSpace sessions over real TLS: Starting WorkSpace + second PIN, tickets, heartbeats,
card removal, in-session authentication, restart mid-flow."""

from __future__ import annotations

import time

import pytest

from broker.service.tickets import verify
from tests.support.jws import verify_es256
from tests.support.softcard import SoftClient
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


def test_available_always_on_workspace_gets_a_session_at_once(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w, "bob")
    r = client.connect(token, "ws-bob")
    assert r.status == 201 and r.body["session"]["ticket"]


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
                                               "password": "correct horse battery staple"})
    token = r.body["auth_token"]
    s = SoftClient(bp.client(), w.codes["corp"]).connect(token, "ws-dave")
    assert s.status == 201 and s.body["session"]["smart_card_redirection"] is False


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
    sid = client.connect(token, "ws-bob").body["session"]["id"]
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
    first = client.connect(token, "ws-bob").body["session"]["id"]
    second = client.connect(token, "ws-bob").body["session"]["id"]
    assert heartbeat(bp, first, True, token).body["action"] == "disconnect"
    assert heartbeat(bp, first, True, token).status == 410
    assert heartbeat(bp, second, True, token).body["action"] == "none"


def test_missing_heartbeats_end_the_session(broker_factory, migrated_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bp = broker_factory(migrated_url, BROKER_SESSIONS_HEARTBEAT_TIMEOUT_S="1", **FAST)
    w = build_world(tmp_path / "w", bp)
    client, token = login(bp, w, "bob")
    sid = client.connect(token, "ws-bob").body["session"]["id"]
    time.sleep(3)
    r = heartbeat(bp, sid, True, token)
    assert r.status == 410 and r.body["error"]["details"]["reason"] == "heartbeat_timeout"


def test_delete_ends_the_session(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w, "bob")
    sid = client.connect(token, "ws-bob").body["session"]["id"]
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
    r = bp.client().post("/v1/auth/password", {"registration_code": w.codes["east"],
                                               "username": "erin",
                                               "password": "erin password"})
    assert r.status == 200, r.body
    s = SoftClient(bp.client(), w.codes["east"]).connect(r.body["auth_token"], "ws-erin")
    assert s.status == 201, s.body
    sid = s.body["session"]["id"]
    r = in_session(bp, w, sid, "erin", with_certificate=True, token=r.body["auth_token"])
    assert r.status == 200, r.body
    jwks = bp.client().get("/v1/jwks.json").body
    claims = verify(r.body["assertion"], jwks)
    assert verify_es256(r.body["assertion"], jwks) == claims
    assert claims["sub"] == "erin" and claims["purpose"] == "sudo"
    assert claims["aud"] == "in-session:sudo"


def test_in_session_card_of_another_user_is_refused(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    r = bp.client().post("/v1/auth/password", {"registration_code": w.codes["east"],
                                               "username": "erin",
                                               "password": "erin password"})
    sid = SoftClient(bp.client(), w.codes["east"]).connect(
        r.body["auth_token"], "ws-erin").body["session"]["id"]
    r = in_session(bp, w, sid, "alice", with_certificate=True, token=r.body["auth_token"])
    assert r.status == 401 and r.code in ("certificate_mismatch", "user_not_found")


def test_in_session_is_refused_in_a_pcoip_session(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    r = bp.client().post("/v1/auth/password", {"registration_code": w.codes["corp"],
                                               "username": "dave",
                                               "password": "correct horse battery staple"})
    sid = SoftClient(bp.client(), w.codes["corp"]).connect(
        r.body["auth_token"], "ws-dave").body["session"]["id"]
    ch = bp.client().post(f"/v1/sessions/{sid}/in-session/challenges", {"purpose": "sudo"},
                          token=r.body["auth_token"])
    assert ch.status == 403 and ch.code == "in_session_not_allowed"


def test_in_session_with_another_card_is_refused(fast) -> None:  # type: ignore[no-untyped-def]
    bp, w = fast
    client, token = login(bp, w, "bob")
    sid = client.connect(token, "ws-bob").body["session"]["id"]
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

