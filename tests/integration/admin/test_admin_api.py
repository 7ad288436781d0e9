"""The admin API (/admin/v1) over real TLS against SQLite and PostgreSQL: every resource, strict
bodies, one transaction per request, token scopes, and an audit event for every change."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization

from tests.integration.admin.conftest import DIRECTORY, Admin, Pki, make_token


def create_directory(admin: Admin, **overrides: Any) -> dict[str, Any]:
    r = admin.post("/directories", {**DIRECTORY, **overrides})
    assert r.status == 201, r.body
    return r.body


def audit(admin: Admin, **query: str) -> list[dict[str, Any]]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    r = admin.get(f"/audit-events?limit=500{'&' + qs if qs else ''}")
    assert r.status == 200, r.body
    return r.body["items"]


# --------------------------------------------------------------------------- directories

def test_directory_create_get_list_update_delete(admin: Admin) -> None:
    created = create_directory(admin)
    assert created["smart_card"] == DIRECTORY["smart_card"]
    create_directory(admin, id="east", name="East", region="us-east-1")
    assert admin.get("/directories/corp").body["name"] == "Corp GovCloud"
    assert [d["id"] for d in admin.get("/directories?region=us-east-1").body["items"]] == ["east"]

    r = admin.patch("/directories/corp", {"name": "Corp 2",
                                          "smart_card": {"removal_action": "disconnect"},
                                          "revocation": {"fail_mode": "hard"}})
    assert r.status == 200, r.body
    assert r.body["name"] == "Corp 2"
    assert r.body["smart_card"] == {"pre_session": True, "in_session": True,
                                    "removal_action": "disconnect"}
    assert r.body["revocation"]["fail_mode"] == "hard" and r.body["revocation"]["crl"] is True

    assert admin.delete("/directories/east").status == 204
    r = admin.get("/directories/east")
    assert (r.status, r.code) == (404, "directory_unknown")


def test_directory_list_pages_with_cursor_and_offset(admin: Admin) -> None:
    for i in range(5):
        create_directory(admin, id=f"d{i}", name=f"D{i}")
    seen, cursor = [], ""
    while True:
        r = admin.get(f"/directories?limit=2{'&cursor=' + cursor if cursor else ''}")
        assert r.status == 200, r.body
        seen += [d["id"] for d in r.body["items"]]
        cursor = r.body["next_cursor"]
        if not cursor:
            break
    assert seen == [f"d{i}" for i in range(5)]
    r = admin.get("/directories?limit=2&offset=3")
    assert [d["id"] for d in r.body["items"]] == ["d3", "d4"]


def test_unknown_region_is_refused_and_nothing_is_written(admin: Admin) -> None:
    r = admin.post("/directories", {**DIRECTORY, "region": "mars-north-1"})
    assert (r.status, r.code) == (400, "validation_failed")
    assert admin.get("/directories").body["items"] == []


def test_bad_bodies_are_malformed_requests_and_write_nothing(admin: Admin) -> None:
    missing = {k: v for k, v in DIRECTORY.items() if k != "name"}
    wrong_type = {**DIRECTORY, "password_login": "yes"}
    unknown = {**DIRECTORY, "colour": "blue"}
    unknown_nested = {**DIRECTORY, "smart_card": {"pre_session": True, "pin": "1234"}}
    bad_enum = {**DIRECTORY, "smart_card": {"removal_action": "explode"}}
    for body in (missing, wrong_type, unknown, unknown_nested, bad_enum, [DIRECTORY], "corp"):
        r = admin.post("/directories", body)
        assert (r.status, r.code) == (400, "malformed_request"), (body, r.body)
    r = admin.post("/directories", raw=b"{not json")
    assert (r.status, r.code) == (400, "malformed_request")
    r = admin.post("/directories", raw=b"")
    assert (r.status, r.code) == (400, "malformed_request")
    assert admin.get("/directories").body["items"] == []


def test_patch_refuses_null_for_required_fields_and_writes_nothing(admin: Admin) -> None:
    create_directory(admin)
    for body in ({"name": None}, {"smart_card": {"pre_session": None}}, {"id": "other"}):
        r = admin.patch("/directories/corp", body)
        assert (r.status, r.code) == (400, "malformed_request"), (body, r.body)
    assert admin.get("/directories/corp").body["name"] == DIRECTORY["name"]


def test_huge_body_is_refused_with_413(admin: Admin) -> None:
    r = admin.post("/directories", {**DIRECTORY, "name": "x" * 70000})
    assert (r.status, r.code) == (413, "request_too_large")
    assert admin.get("/directories").body["items"] == []


def test_duplicate_directory_is_a_conflict_and_keeps_the_first(admin: Admin) -> None:
    create_directory(admin)
    r = admin.post("/directories", {**DIRECTORY, "name": "Impostor"})
    assert (r.status, r.code) == (409, "conflict")
    assert admin.get("/directories/corp").body["name"] == DIRECTORY["name"]


def test_unknown_paths_and_ids_are_404(admin: Admin) -> None:
    assert admin.get("/nothing-here").status == 404
    for path, code in (("/directories/nope", "directory_unknown"),
                       ("/directories/nope/users", "directory_unknown"),
                       ("/workspaces/nope", "workspace_unknown"),
                       ("/sessions/nope", "session_unknown")):
        r = admin.get(path)
        assert (r.status, r.code) == (404, code), path


# --------------------------------------------------------------------------- trust and CRLs

def test_trust_anchors_and_intermediates(admin: Admin, pki: Pki) -> None:
    create_directory(admin)
    r = admin.post("/directories/corp/trust", {"pem": pki.pem("root")})
    assert r.status == 201, r.body
    root = r.body["items"][0]
    assert root["kind"] == "anchor" and "Admin Test Root CA" in root["subject"]
    r = admin.post("/directories/corp/trust", {"pem": pki.pem("issuing"), "kind": "intermediate"})
    assert r.status == 201, r.body
    listed = admin.get("/directories/corp/trust").body["items"]
    assert [(t["kind"], t["fingerprint"]) for t in listed] == [
        ("anchor", root["fingerprint"]), ("intermediate", r.body["items"][0]["fingerprint"])]
    assert all(t["not_after"] and t["subject"] for t in listed)
    assert len(admin.get("/directories/corp/trust?kind=anchor").body["items"]) == 1

    assert admin.delete(f"/directories/corp/trust/{root['fingerprint']}").status == 204
    r = admin.delete(f"/directories/corp/trust/{root['fingerprint']}")
    assert (r.status, r.code) == (404, "resource_not_found")
    assert len(admin.get("/directories/corp/trust").body["items"]) == 1


def test_non_ca_certificate_is_refused_as_anchor(admin: Admin, pki: Pki) -> None:
    create_directory(admin)
    r = admin.post("/directories/corp/trust", {"pem": pki.pem("leaf"), "kind": "anchor"})
    assert (r.status, r.code) == (400, "certificate_not_ca")
    # A bundle with one CA and one leaf is refused as a whole.
    r = admin.post("/directories/corp/trust", {"pem": pki.pem("root") + pki.pem("leaf")})
    assert (r.status, r.code) == (400, "certificate_not_ca")
    assert admin.get("/directories/corp/trust").body["items"] == []


def test_unreadable_and_duplicate_certificates_are_refused(admin: Admin, pki: Pki) -> None:
    create_directory(admin)
    r = admin.post("/directories/corp/trust", {"pem": "-----BEGIN CERTIFICATE-----\nAAAA\n"
                                                      "-----END CERTIFICATE-----\n"})
    assert (r.status, r.code) == (400, "certificate_unreadable")
    r = admin.post("/directories/corp/trust", {"pem": "not a certificate"})
    assert (r.status, r.code) == (400, "certificate_unreadable")
    assert admin.post("/directories/corp/trust", {"pem": pki.pem("root")}).status == 201
    der = base64.b64encode(pki.root.cert_der()).decode()
    r = admin.post("/directories/corp/trust", {"pem": der})
    assert (r.status, r.code) == (409, "conflict")
    assert len(admin.get("/directories/corp/trust").body["items"]) == 1


def test_crl_upload_list_and_remove(admin: Admin, pki: Pki) -> None:
    create_directory(admin)
    r = admin.post("/directories/corp/crls", {"crl": pki.crl_pem()})
    assert r.status == 201, r.body
    assert r.body["this_update"] and r.body["next_update"]
    der_b64 = base64.b64encode(pki.crl.public_bytes(serialization.Encoding.DER)).decode()
    r2 = admin.post("/directories/corp/crls", {"crl": der_b64})
    assert (r2.status, r2.code) == (409, "conflict")
    r3 = admin.post("/directories/corp/crls", {"crl": "garbage"})
    assert (r3.status, r3.code) == (400, "crl_unreadable")
    listed = admin.get("/directories/corp/crls").body["items"]
    assert [c["fingerprint"] for c in listed] == [r.body["fingerprint"]]
    assert listed[0]["this_update"] == r.body["this_update"]
    assert admin.delete(f"/directories/corp/crls/{r.body['fingerprint']}").status == 204
    assert admin.get("/directories/corp/crls").body["items"] == []


# --------------------------------------------------------------------------- users

def test_users_create_update_delete(admin: Admin) -> None:
    create_directory(admin)
    r = admin.post("/directories/corp/users", {"username": "alice", "upn": "alice@corp.example",
                                               "password": "s3cret pass"})
    assert r.status == 201, r.body
    assert r.body["has_password"] is True and "password" not in r.body
    assert "s3cret" not in json.dumps(r.body)
    r = admin.patch("/directories/corp/users/alice", {"email": "a@corp.example",
                                                      "disabled": True, "upn": None})
    assert r.status == 200, r.body
    assert (r.body["email"], r.body["disabled"], r.body["upn"]) == ("a@corp.example", True,
                                                                    None)
    assert [u["username"] for u in
            admin.get("/directories/corp/users?disabled=true").body["items"]] == ["alice"]
    r = admin.post("/directories/corp/users", {"username": "alice"})
    assert (r.status, r.code) == (409, "conflict")
    assert admin.delete("/directories/corp/users/alice").status == 204
    r = admin.get("/directories/corp/users/alice")
    assert (r.status, r.code) == (404, "resource_not_found")


def test_password_needs_password_login_on_the_directory(admin: Admin) -> None:
    create_directory(admin, password_login=False)
    r = admin.post("/directories/corp/users", {"username": "bob", "password": "pw"})
    assert (r.status, r.code) == (400, "validation_failed")
    assert admin.get("/directories/corp/users").body["items"] == []
    r = admin.post("/directories/nope/users", {"username": "bob"})
    assert (r.status, r.code) == (404, "directory_unknown")


def test_user_cert_fingerprint_must_be_sha256_hex(admin: Admin) -> None:
    create_directory(admin)
    r = admin.post("/directories/corp/users", {"username": "bob", "cert_fingerprint": "abc"})
    assert (r.status, r.code) == (400, "malformed_request")


# --------------------------------------------------------------------------- WorkSpaces

def _workspace_setup(admin: Admin) -> None:
    create_directory(admin)
    assert admin.post("/directories/corp/users", {"username": "alice"}).status == 201


def test_workspaces_create_list_update_delete(admin: Admin) -> None:
    _workspace_setup(admin)
    r = admin.post("/workspaces", {"id": "ws-1", "directory": "corp", "user": "alice",
                                   "protocol": "WSP", "running_mode": "AUTO_STOP"})
    assert r.status == 201, r.body
    assert (r.body["state"], r.body["user"], r.body["bundle"]) == ("STOPPED", "alice",
                                                                   "standard")
    r = admin.post("/workspaces", {"id": "ws-1", "directory": "corp", "user": "alice",
                                   "protocol": "WSP"})
    assert (r.status, r.code) == (409, "conflict")
    r = admin.post("/workspaces", {"id": "ws-2", "directory": "corp", "user": "nobody",
                                   "protocol": "WSP"})
    assert (r.status, r.code) == (404, "resource_not_found")
    r = admin.post("/workspaces", {"id": "ws-3", "directory": "corp", "user": "alice",
                                   "protocol": "RDP"})
    assert (r.status, r.code) == (400, "malformed_request")
    assert [w["id"] for w in admin.get("/workspaces?directory=corp&user=alice").body["items"]] \
        == ["ws-1"]
    r = admin.patch("/workspaces/ws-1", {"bundle": "performance", "running_mode": "ALWAYS_ON"})
    assert r.status == 200 and r.body["bundle"] == "performance", r.body
    # os: not stated (null) by default; windows | linux (any case); null clears it again
    assert r.body["os"] is None
    assert admin.patch("/workspaces/ws-1", {"os": "Windows"}).body["os"] == "windows"
    r = admin.patch("/workspaces/ws-1", {"os": "macos"})
    assert r.status == 400, r.body
    assert admin.patch("/workspaces/ws-1", {"os": None}).body["os"] is None
    assert admin.get("/workspaces?protocol=PCoIP").body["items"] == []
    # A closed-set filter takes its choices case-insensitively and refuses anything else.
    assert [w["id"] for w in admin.get("/workspaces?protocol=wsp").body["items"]] == ["ws-1"]
    for bad in ("/workspaces?state=AAA", "/sessions?state=AAA",
                "/registration-codes?state=AAA", "/workspaces?protocol=RDP"):
        r = admin.get(bad)
        assert (r.status, r.code) == (400, "validation_failed"), (bad, r.body)
        assert "must be one of" in r.body["error"]["message"]
    assert admin.delete("/workspaces/ws-1").status == 204
    assert admin.get("/workspaces/ws-1").code == "workspace_unknown"


def test_workspace_start_and_stop(admin: Admin) -> None:
    _workspace_setup(admin)
    for ws_id, state in (("ws-stopped", "STOPPED"), ("ws-up", "AVAILABLE"),
                         ("ws-broken", "ERROR")):
        assert admin.post("/workspaces", {"id": ws_id, "directory": "corp", "user": "alice",
                                          "protocol": "WSP", "state": state}).status == 201
    r = admin.post("/workspaces/ws-stopped/start")
    assert r.status == 202 and r.body["state"] == "STARTING" and r.body["transition_due_at"]
    r = admin.post("/workspaces/ws-up/stop")
    assert r.status == 202 and r.body["state"] == "STOPPING"
    r = admin.post("/workspaces/ws-broken/start")
    assert (r.status, r.code) == (409, "workspace_unavailable")
    assert admin.get("/workspaces/ws-broken").body["state"] == "ERROR"
    r = admin.post("/workspaces/nope/start")
    assert (r.status, r.code) == (404, "workspace_unknown")


# --------------------------------------------------------------------------- registration codes

def test_registration_codes_issue_rotate_revoke(admin: Admin) -> None:
    create_directory(admin)
    r = admin.post("/directories/corp/registration-codes", {"count": 2})
    assert r.status == 201, r.body
    first, second = (c["code"] for c in r.body["items"])
    assert first.startswith("SLGOVW+")
    r = admin.post("/registration-codes/rotate", {"code": first.lower()})
    assert r.status == 201, r.body
    successor = r.body["code"]
    r = admin.post("/registration-codes/revoke", {"code": second})
    assert r.status == 200 and r.body["state"] == "revoked"
    states = {c["code"]: c["state"] for c in
              admin.get("/registration-codes?directory=corp").body["items"]}
    assert states == {first: "rotated", second: "revoked", successor: "active"}
    assert [c["code"] for c in admin.get("/registration-codes?state=active").body["items"]] == [
        successor]
    r = admin.post("/registration-codes/rotate", {"code": second})
    assert (r.status, r.code) == (409, "conflict")
    r = admin.post("/registration-codes/revoke", {"code": "not-a-code"})
    assert (r.status, r.code) == (400, "validation_failed")
    r = admin.post("/directories/nope/registration-codes", {"count": 1})
    assert (r.status, r.code) == (404, "directory_unknown")


def test_revoked_code_no_longer_registers(admin: Admin) -> None:
    create_directory(admin)
    code = admin.post("/directories/corp/registration-codes", {}).body["items"][0]["code"]
    client = {"platform": "windows", "arch": "x86_64", "version": "3.1.1"}
    assert admin.broker.client().post("/v1/registrations", {
        "registration_code": code, "client": client}).status == 200
    assert admin.post("/registration-codes/revoke", {"code": code}).status == 200
    r = admin.broker.client().post("/v1/registrations", {"registration_code": code,
                                                         "client": client})
    assert (r.status, r.code) == (410, "registration_code_revoked")


# --------------------------------------------------------------------------- tokens

def test_read_token_may_only_read(admin: Admin) -> None:
    reader = admin.broker.admin(make_token(admin.broker, "reader", "read"))
    assert reader.get("/admin/v1/directories").status == 200
    r = reader.post("/admin/v1/directories", DIRECTORY)
    assert (r.status, r.code) == (403, "admin_scope_insufficient")
    r = reader.post("/admin/v1/directories", {"bad": "body"})
    assert (r.status, r.code) == (403, "admin_scope_insufficient")
    assert admin.get("/directories").body["items"] == []


def test_missing_unknown_and_revoked_tokens_are_refused(admin: Admin) -> None:
    anonymous = admin.broker.admin()
    assert anonymous.get("/admin/v1/directories").code == "admin_token_invalid"
    r = anonymous.get("/admin/v1/directories", token="sba_not-a-real-token")
    assert (r.status, r.code) == (401, "admin_token_invalid")
    admin.broker.run_cli("admin", "token", "revoke", "--name", "t")
    r = admin.get("/directories")
    assert (r.status, r.code) == (401, "admin_token_invalid")
    r = admin.post("/directories", DIRECTORY)
    assert (r.status, r.code) == (401, "admin_token_invalid")


# --------------------------------------------------------------------------- audit

def test_every_change_is_audited_with_the_token_name(admin: Admin, pki: Pki) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    create_directory(admin)
    admin.patch("/directories/corp", {"name": "Corp 2"})
    admin.post("/directories/corp/trust", {"pem": pki.pem("root")})
    admin.post("/directories/corp/crls", {"crl": pki.crl_pem()})
    admin.post("/directories/corp/users", {"username": "alice", "password": "pw"})
    admin.patch("/directories/corp/users/alice", {"email": "a@corp.example"})
    admin.post("/workspaces", {"id": "ws-1", "directory": "corp", "user": "alice",
                               "protocol": "WSP"})
    admin.post("/workspaces/ws-1/start")
    admin.patch("/workspaces/ws-1", {"protocol": "PCoIP"})
    code = admin.post("/directories/corp/registration-codes", {}).body["items"][0]["code"]
    admin.post("/registration-codes/rotate", {"code": code})
    admin.post("/registration-codes/revoke", {"code": code})
    admin.delete("/workspaces/ws-1")
    admin.delete("/directories/corp/users/alice")
    # A refused change leaves no event.
    assert admin.post("/directories", DIRECTORY).status == 409

    events = audit(admin, actor="token:t")
    kinds = {e["kind"] for e in events}
    assert kinds >= {"directory.create", "directory.update", "trust.add", "crl.add",
                     "user.create", "user.update", "workspace.create", "workspace.start",
                     "workspace.update", "registration_code.issue", "registration_code.rotate",
                     "registration_code.revoke", "workspace.delete", "user.delete"}
    assert all(e["actor"] == "token:t" and e["outcome"] == "change" for e in events)
    assert sum(e["kind"] == "directory.create" for e in events) == 1
    assert "pw" not in json.dumps([e["details"] for e in events]).replace("pwd", "")

    assert {e["kind"] for e in audit(admin, kind="user.*")} == {"user.create", "user.update",
                                                                "user.delete"}
    assert all(e["username"] == "alice" for e in audit(admin, username="alice"))
    assert all(e["directory"] == "corp" for e in audit(admin, directory="corp"))
    since = started.isoformat().replace("+00:00", "Z")
    assert len(audit(admin, since=since)) >= len(events)
    assert audit(admin, until=since) == [] or all(
        e["kind"] == "admin_token.create" for e in audit(admin, until=since))
    ids = [e["id"] for e in audit(admin)]
    assert ids == sorted(ids, reverse=True)


def test_list_queries_are_validated(admin: Admin) -> None:
    for query in ("limit=0", "limit=501", "limit=ten", "colour=blue", "cursor=%%%",
                  "since=yesterday", "since=2026-01-01T00:00:00", "offset=-1",
                  "cursor=abc&offset=1"):
        r = admin.get(f"/audit-events?{query}")
        assert (r.status, r.code) == (400, "malformed_request"), query


# --------------------------------------------------------------------------- sessions

def _world(admin: Admin, tmp_path: Any) -> Any:
    from tests.support.world import build_world

    return build_world(tmp_path / "world", admin.broker)


def _card_session(admin: Admin, world: Any, who: str, ws: str) -> str:
    from tests.support.softcard import SoftClient

    client = SoftClient(admin.broker.client(), world.codes["corp"])
    r = client.login(world.cards[who])
    assert r.status == 200, r.body
    token = r.body["auth_token"]
    r = client.open_session(token, ws, world.cards[who])
    assert r.status == 201, r.body
    SESSION_TOKENS[r.body["session"]["id"]] = token
    return r.body["session"]["id"]


#: The auth token of each session a test opened (session calls need the owner's token).
SESSION_TOKENS: dict[str, str] = {}


def heartbeat(admin: Admin, sid: str) -> Any:
    return admin.broker.client(SESSION_TOKENS[sid]).post(f"/v1/sessions/{sid}/heartbeat",
                                                         {"card_present": True})


def test_switching_a_workspace_to_pcoip_disconnects_its_smart_card_sessions(
        admin: Admin, tmp_path: Any) -> None:
    world = _world(admin, tmp_path)
    sid = _card_session(admin, world, "bob", "ws-bob")
    # A password session on another WSP WorkSpace, for contrast.
    r = admin.broker.client().post("/v1/auth/password", {
        "registration_code": world.codes["east"], "username": "erin",
        "password": "erin password"})
    assert r.status == 200, r.body
    r2 = admin.broker.client(r.body["auth_token"]).post("/v1/workspaces/ws-erin/connect")
    assert r2.status == 201, r2.body
    password_sid = r2.body["session"]["id"]
    SESSION_TOKENS[password_sid] = r.body["auth_token"]
    assert heartbeat(admin, sid).body["action"] == "none"

    r = admin.patch("/workspaces/ws-bob", {"protocol": "PCoIP"})
    assert r.status == 200 and r.body["protocol"] == "PCoIP", r.body
    s = admin.get(f"/sessions/{sid}").body
    assert (s["state"], s["end_reason"], s["pending_action"]) == ("ended", "protocol_changed",
                                                                  "disconnect")
    hb = heartbeat(admin, sid)
    assert hb.status == 200 and hb.body["action"] == "disconnect", hb.body

    assert admin.patch("/workspaces/ws-erin", {"protocol": "PCoIP"}).status == 200
    assert admin.get(f"/sessions/{password_sid}").body["state"] == "active"
    assert heartbeat(admin, password_sid).body["action"] == "none"
    [event] = audit(admin, kind="workspace.update", username="bob")
    assert event["details"]["ended_sessions"] == [sid]


def test_sessions_list_and_terminate(admin: Admin, tmp_path: Any) -> None:
    world = _world(admin, tmp_path)
    sid = _card_session(admin, world, "bob", "ws-bob")
    listed = admin.get("/sessions?directory=corp&state=live&user=bob").body["items"]
    assert [s["id"] for s in listed] == [sid]
    assert listed[0]["auth_method"] == "smart_card" and listed[0]["workspace"] == "ws-bob"
    r = admin.post(f"/sessions/{sid}/terminate")
    assert r.status == 200 and r.body["state"] == "ended" and r.body["end_reason"] == "admin"
    hb = heartbeat(admin, sid)
    assert hb.status == 200 and hb.body["action"] == "disconnect"
    r = admin.post(f"/sessions/{sid}/terminate")
    assert (r.status, r.code) == (410, "session_ended")
    assert admin.get("/sessions?state=live").body["items"] == []
    assert [e["kind"] for e in audit(admin, kind="session.terminate")] == ["session.terminate"]


# --------------------------------------------------------------------------- OpenAPI

def test_openapi_documents_are_served_without_a_token(admin: Admin) -> None:
    from broker.web.errors import STATUS

    r = admin.broker.admin().get("/admin/v1/openapi.json")
    assert r.status == 200 and r.body["openapi"] == "3.1.0"
    doc = r.body
    assert "/admin/v1/workspaces/{workspace_id}" in doc["paths"]
    assert set(doc["paths"]["/admin/v1/directories"]) == {"get", "post"}
    assert not [p for p, ops in doc["paths"].items() for o in ops.values()
                if o.get("x-undocumented")]
    r = admin.broker.client().get("/v1/openapi.json")
    assert r.status == 200 and "/v1/registrations" in r.body["paths"]
    codes = {c for d in (doc, r.body) for ops in d["paths"].values() for o in ops.values()
             for resp in o["responses"].values() for c in resp.get("x-error-codes", [])}
    assert codes == set(STATUS)


def test_start_delay_completes(broker_factory: Any, migrated_url: str) -> None:
    """A started WorkSpace becomes AVAILABLE once its start delay passed: the sweeper completes
    the transition (a broker sweeping every second, so the test waits seconds, not the default
    15 s interval)."""
    bp = broker_factory(migrated_url, "[sessions]\nsweep_interval_s = 1\n"
                                      "[workspaces]\nstart_delay_s = 1.0\n")
    admin = Admin(bp, bp.admin(make_token(bp, "t")), "t")
    _workspace_setup(admin)
    admin.post("/workspaces", {"id": "ws-1", "directory": "corp", "user": "alice",
                               "protocol": "WSP"})
    started = admin.post("/workspaces/ws-1/start").body
    assert started["state"] == "STARTING", started
    due = datetime.fromisoformat(started["transition_due_at"])
    assert due > datetime.now(UTC) - timedelta(seconds=1)
    deadline = time.monotonic() + (due - datetime.now(UTC)).total_seconds() + 5
    while True:
        state = admin.get("/workspaces/ws-1").body["state"]
        if state == "AVAILABLE":
            break
        assert state == "STARTING", state
        assert time.monotonic() < deadline, "the start never completed"
        time.sleep(0.3)


# --------------------------------------------------------------------------- one declaration

def test_a_bad_id_is_refused_with_the_real_pattern(admin: Admin) -> None:
    r = admin.post("/directories", {**DIRECTORY, "id": "bad id!"})
    assert (r.status, r.code) == (400, "malformed_request")
    assert "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$" in r.body["error"]["message"], r.body
    assert r.body["error"]["details"]["fields"] == ["id"]
    create_directory(admin)
    assert admin.post("/directories/corp/users", {"username": "alice"}).status == 201
    r = admin.post("/workspaces", {"id": "ws 1", "directory": "corp", "user": "alice",
                                   "protocol": "WSP"})
    assert (r.status, r.code) == (400, "malformed_request")
    assert "{0,63}$" in r.body["error"]["message"]
    assert admin.get("/workspaces").body["items"] == []


def test_required_eku_is_settable_through_the_api(admin: Admin) -> None:
    assert create_directory(admin)["required_eku"] == "client-auth"
    r = admin.patch("/directories/corp", {"required_eku": "any"})
    assert r.status == 200 and r.body["required_eku"] == "any", r.body
    r = admin.patch("/directories/corp", {"required_eku": "server-auth"})
    assert (r.status, r.code) == (400, "malformed_request")
    assert admin.get("/directories/corp").body["required_eku"] == "any"


def test_choices_are_case_insensitive_on_the_api_too(admin: Admin) -> None:
    create_directory(admin, smart_card={"pre_session": True, "removal_action": "Disconnect"})
    assert admin.get("/directories/corp").body["smart_card"]["removal_action"] == "disconnect"
    assert admin.post("/directories/corp/users", {"username": "alice"}).status == 201
    r = admin.post("/workspaces", {"id": "ws-1", "directory": "corp", "user": "alice",
                                   "protocol": "wsp"})
    assert r.status == 201 and r.body["protocol"] == "WSP", r.body


def test_ineffective_settings_are_answered_with_warnings(admin: Admin) -> None:
    r = admin.post("/directories", {**DIRECTORY, "id": "east", "region": "us-east-1",
                                    "password_login": False})
    assert r.status == 201, r.body
    assert [(w["code"], w["field"]) for w in r.body["warnings"]] == [
        ("region_pre_session_unavailable", "smart_card.pre_session"),
        ("no_login_method", "password_login")]
    assert "us-east-1" in r.body["warnings"][0]["message"]
    # The same settings where the region allows them: no warning (a positive control).
    assert create_directory(admin)["warnings"] == []
    r = admin.patch("/directories/east", {"smart_card": {"pre_session": False},
                                          "password_login": True})
    assert r.status == 200 and r.body["warnings"] == [], r.body
    [event] = audit(admin, kind="directory.create", directory="east")
    assert event["details"]["warnings"] == ["region_pre_session_unavailable", "no_login_method"]
