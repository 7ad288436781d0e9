"""Security regressions, probed as an attacker would, against a real broker over TLS.

Three directories (corp and east share a CA, other has its own), one broker process. Each test
names the item of the security issue it guards.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.security.conftest import Secured
from tests.support.softcard import WINDOWS, SoftClient, b64

pytestmark = pytest.mark.slow


def _login(s: Secured, who: str, code: str = "corp", source: str | None = None) -> str:
    client = SoftClient(s.client(source=source), s.world.codes[code])
    r = client.login(s.world.cards[who])
    assert r.status == 200, r.body
    s.remember(r.body["auth_token"])
    return str(r.body["auth_token"])


def _session(s: Secured, who: str, ws: str, code: str = "corp") -> tuple[str, str]:
    token = _login(s, who, code)
    r = SoftClient(s.client(), s.world.codes[code]).open_session(token, ws, s.world.cards[who])
    assert r.status == 201, r.body
    sid = r.body["session"]["id"]
    s.remember(sid, r.body["session"]["ticket"])
    return token, sid


def _password_session(s: Secured) -> tuple[str, str]:
    r = s.client().post("/v1/auth/password", {"registration_code": s.world.codes["east"],
                                              "username": "erin", "password": "erin password",
                                              "client": WINDOWS})
    assert r.status == 200, r.body
    token = r.body["auth_token"]
    r = s.client(token).post("/v1/workspaces/ws-erin/connect", {})
    assert r.status == 201, r.body
    s.remember(token, r.body["session"]["id"])
    return token, r.body["session"]["id"]


SESSION_CALLS = [
    ("POST", "/v1/sessions/{sid}/heartbeat", {"card_present": False}),
    ("POST", "/v1/sessions/{sid}/in-session/challenges", {"purpose": "sudo"}),
    ("POST", "/v1/sessions/{sid}/in-session/challenges/x/response", {"signature": "AA=="}),
    ("DELETE", "/v1/sessions/{sid}", None),
]


# ----------------------------------------------------------------------------- item 1

@pytest.mark.parametrize("method,path,body", SESSION_CALLS)
def test_session_calls_without_a_token_are_401(secured: Secured, method: str, path: str,
                                               body: Any) -> None:
    _, sid = _session(secured, "bob", "ws-bob")
    r = secured.client().request(method, path.format(sid=sid), body)
    assert r.status == 401 and r.code == "auth_required"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = secured.client("sbt_forged").request(method, path.format(sid=sid), body)
    assert r.status == 401 and r.code == "auth_token_invalid"


@pytest.mark.parametrize("method,path,body", SESSION_CALLS)
def test_session_calls_with_someone_elses_token_are_404(secured: Secured, method: str,
                                                        path: str, body: Any) -> None:
    _, sid = _session(secured, "bob", "ws-bob")
    other_directory = _login(secured, "olga", "other")
    same_directory = _login(secured, "alice")
    for token in (other_directory, same_directory):
        r = secured.client(token).request(method, path.format(sid=sid), body)
        assert r.status == 404 and r.code == "session_unknown", (token, r.body)
    # …and the session was not touched: its owner's heartbeat still says none.
    owner = _login(secured, "bob")
    r = secured.client(owner).post(f"/v1/sessions/{sid}/heartbeat", {"card_present": True})
    assert r.status == 200 and r.body["action"] == "none"


def test_not_yours_looks_exactly_like_does_not_exist(secured: Secured) -> None:
    _, sid = _session(secured, "bob", "ws-bob")
    token = _login(secured, "alice")
    theirs = secured.client(token).post(f"/v1/sessions/{sid}/heartbeat", {"card_present": True})
    missing = secured.client(token).post("/v1/sessions/nope/heartbeat", {"card_present": True})
    assert (theirs.status, theirs.body) == (missing.status, missing.body)


def test_workspaces_of_another_directory_are_unknown(secured: Secured) -> None:
    token = _login(secured, "olga", "other")
    r = secured.client(token).post("/v1/workspaces/ws-bob/connect", {})
    assert r.status == 404 and r.code == "workspace_unknown"


def test_ending_a_session_keeps_the_login(secured: Secured) -> None:
    token, sid = _session(secured, "bob", "ws-bob")
    assert secured.client(token).delete(f"/v1/sessions/{sid}").status == 204
    r = secured.client(token).post(f"/v1/sessions/{sid}/heartbeat", {"card_present": True})
    assert r.status == 410 and r.code == "session_ended"
    again = SoftClient(secured.client(), secured.world.codes["corp"]).open_session(
        token, "ws-bob", secured.world.cards["bob"])
    assert again.status == 201, "the auth token outlives one desktop session"
    secured.remember(again.body["session"]["id"])


def test_an_expired_auth_token_stops_its_sessions(broker_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from broker.store import migrate
    from tests.support.world import build_world

    url = f"sqlite:///{tmp_path / 'expiry.db'}"  # the rule is database-independent
    migrate.upgrade(url)
    bp = broker_factory(url, BROKER_LOGIN_AUTH_TOKEN_TTL_S="3")
    w = build_world(tmp_path / "w", bp)
    r = SoftClient(bp.client(), w.codes["corp"]).login(w.cards["bob"])
    token = r.body["auth_token"]
    sid = SoftClient(bp.client(), w.codes["corp"]).open_session(
        token, "ws-bob", w.cards["bob"]).body["session"]["id"]
    ok = bp.client(token).post(f"/v1/sessions/{sid}/heartbeat", {"card_present": True})
    assert ok.status == 200
    time.sleep(3.5)
    r = bp.client(token).post(f"/v1/sessions/{sid}/heartbeat", {"card_present": False})
    assert r.status == 401 and r.code == "auth_token_expired"
    r = bp.client(token).post(f"/v1/sessions/{sid}/in-session/challenges", {"purpose": "sudo"})
    assert r.status == 401 and r.code == "auth_token_expired"


def test_in_session_challenge_cannot_be_opened_on_someone_elses_session(
        secured: Secured) -> None:
    _, sid = _password_session(secured)
    intruder = _login(secured, "alice")
    r = secured.client(intruder).post(f"/v1/sessions/{sid}/in-session/challenges",
                                      {"purpose": "sudo"})
    assert r.status == 404 and r.code == "session_unknown"


# ----------------------------------------------------------------------------- items 3, 4

def test_a_stranger_with_bobs_certificate_cannot_lock_bob_out(secured: Secured) -> None:
    attacker = SoftClient(secured.client(source=secured.address()), secured.world.codes["corp"])
    attacker.api.source = secured.address()
    seen = []
    for _ in range(8):
        ch = attacker.challenge()
        if ch.status != 201:
            seen.append(ch.code)
            continue
        r = attacker.respond(ch.body, secured.world.cards["bob"], signature=b"\x30\x00")
        seen.append(r.code)
    assert "signature_invalid" in seen
    assert "rate_limited" in seen, "the attacker's address is throttled"
    assert "locked_out" not in seen
    assert _login(secured, "bob"), "bob's own card still logs in from his desk"


def test_wrong_answers_spend_the_challenge(secured: Secured) -> None:
    client = SoftClient(secured.client(source=secured.address()), secured.world.codes["corp"])
    ch = client.challenge().body
    for _ in range(2):  # failures_per_challenge = 2
        assert client.respond(ch, secured.world.cards["bob"],
                              signature=b"\x30\x00").code == "signature_invalid"
    r = client.respond(ch, secured.world.cards["bob"])
    assert r.status == 401 and r.code == "challenge_used"


def test_pem_inside_base64_is_refused_with_a_clear_code(secured: Secured) -> None:
    card = secured.world.cards["bob"]
    client = SoftClient(secured.client(), secured.world.codes["corp"])
    ch = client.challenge().body
    pem = card.cert.public_bytes(serialization.Encoding.PEM)
    sig = card.sign(base64.b64decode(ch["to_be_signed"]))
    r = client.api.post(f"/v1/auth/challenges/{ch['challenge_id']}/response",
                        {"certificate": b64(pem + b"\n\n"), "chain": card.chain_b64(),
                         "signature": b64(sig), "algorithm": card.algorithm})
    assert r.status == 401 and r.code == "certificate_malformed"
    assert "DER" in r.body["error"]["message"]


def test_lockout_and_audit_name_the_certificate_by_its_der(secured: Secured) -> None:
    import hashlib

    from sqlalchemy import create_engine, text

    card = secured.world.cards["stranger"]  # signs fine, maps to no user: counted evidence
    codes = [SoftClient(secured.client(), secured.world.codes["corp"]).login(card).code
             for _ in range(4)]  # from four addresses: the certificate itself is locked
    assert codes[:3] == ["user_not_found"] * 3 and codes[3] == "locked_out"
    der = card.cert.public_bytes(serialization.Encoding.DER)
    engine = create_engine(secured.broker.db_url)
    with engine.connect() as conn:
        fps = {row[0] for row in conn.execute(text(
            "SELECT cert_fingerprint FROM audit_events WHERE reason = 'user_not_found'"))}
    engine.dispose()
    assert hashlib.sha256(der).hexdigest() in fps


# ----------------------------------------------------------------------------- item 5

def test_logon_without_algorithm_uses_the_certificate_key(secured: Secured) -> None:
    token = _login(secured, "alice")
    r = secured.client(token).post("/v1/workspaces/ws-alice/connect", {})
    assert r.status == 202, r.body  # a card login: always the PIN again
    if r.status == 202:
        ch = r.body["logon_challenge"]
        secured.remember(ch["challenge_id"])
        sig = secured.world.cards["alice"].sign(base64.b64decode(ch["to_be_signed"]))
        r = secured.client(token).post("/v1/workspaces/ws-alice/logon",
                                       {"challenge_id": ch["challenge_id"],
                                        "signature": b64(sig)})
        assert r.status in (201, 409), r.body


# ----------------------------------------------------------------------------- item 6

HOSTILE_BODIES = [
    b"[" * 30000,
    b'{"a":' * 10000 + b"1" + b"}" * 10000,
    b'{"card_present": ' + b"9" * 5000 + b"}",
    b'{"x": 1e999}',
    b'{"x": NaN}',
    b'{"card_present": true, "card_present": false}',
    b"\xff\xfe{}",
]

CLIENT_POSTS = ["/v1/registrations", "/v1/auth/challenges", "/v1/auth/challenges/x/response",
                "/v1/auth/password", "/v1/workspaces/ws-bob/connect",
                "/v1/workspaces/ws-bob/logon", "/v1/sessions/x/heartbeat",
                "/v1/sessions/x/in-session/challenges",
                "/v1/sessions/x/in-session/challenges/y/response"]


@pytest.mark.parametrize("raw", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_json_is_a_400_on_every_client_endpoint(secured: Secured, raw: bytes) -> None:
    token = _login(secured, "bob")
    for path in CLIENT_POSTS:
        r = secured.client(token).request("POST", path, raw=raw)
        assert r.status == 400 and r.code == "malformed_request", (path, r.status, r.body)


def test_hostile_json_on_the_admin_api_meets_the_token_check_first(secured: Secured) -> None:
    admin = secured.broker.admin()
    r = admin.request("POST", "/admin/v1/directories", raw=b"[" * 30000)
    assert r.status == 401 and r.code == "admin_token_invalid"
    out = secured.broker.run_cli("admin", "token", "create", "--name", "sec", "--scope",
                                 "write", "--json")
    token = json.loads(out.stdout)["token"]
    secured.remember(token)
    r = secured.broker.admin(token).request("POST", "/admin/v1/directories", raw=b"[" * 30000)
    assert r.status == 400 and r.code == "malformed_request"


# ----------------------------------------------------------------------------- items 7, 8

def test_one_client_cannot_spend_a_codes_challenges(secured: Secured) -> None:
    greedy = SoftClient(secured.client(source=secured.address()), secured.world.codes["corp"])
    statuses = [greedy.challenge().status for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    neighbour = SoftClient(secured.client(source=secured.address()), secured.world.codes["corp"])
    assert neighbour.challenge().status == 201


def test_password_guessing_is_throttled_per_address(secured: Secured) -> None:
    api = secured.client(source=secured.address())
    statuses = []
    for i in range(8):
        r = api.post("/v1/auth/password", {"registration_code": secured.world.codes["east"],
                                           "username": f"user{i}", "password": "guess"})
        statuses.append(r.code)
    assert statuses[:4] == ["invalid_credentials"] * 4
    assert set(statuses[4:]) == {"rate_limited"}
    ok = secured.client().post("/v1/auth/password", {"registration_code":
                                                     secured.world.codes["east"],
                                                     "username": "erin",
                                                     "password": "erin password"})
    assert ok.status == 200, "other addresses are not throttled"


# ----------------------------------------------------------------------------- items 9, 10

def _tls(secured: Secured) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(secured.broker.cafile))
    raw = socket.create_connection(("127.0.0.1", secured.broker.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def _read_all(sock: ssl.SSLSocket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ssl.SSLError, ConnectionResetError):
        pass
    return data


def test_slow_request_heads_are_cut_off(secured: Secured) -> None:
    # The server's head timeout ends the exchange: without it _read_all gets nothing in 6 s.
    sock = _tls(secured)
    head = b"POST /v1/registrations HTTP/1.1\r\nHost: x\r\n"
    for byte in head[:6]:
        sock.send(bytes([byte]))
        time.sleep(0.5)
    answer = _read_all(sock, 6)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b'"request_timeout"' in answer


def test_a_huge_header_is_431_at_once(secured: Secured) -> None:
    sock = _tls(secured)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
    answer = _read_all(sock, 5)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
    assert b'"headers_too_large"' in answer


def test_an_oversized_content_length_is_413_before_the_body(secured: Secured) -> None:
    # No body is ever sent: an answer at all means the server did not wait for it.
    sock = _tls(secured)
    sock.sendall(b"POST /v1/registrations HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n")
    answer = _read_all(sock, 5)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert b'"request_too_large"' in answer


# ----------------------------------------------------------------------------- item 11

def test_out_of_range_integer_query_parameters_are_400(secured: Secured) -> None:
    out = secured.broker.run_cli("admin", "token", "create", "--name", "reader", "--scope",
                                 "read", "--json")
    token = json.loads(out.stdout)["token"]
    secured.remember(token)
    for query in ("offset=99999999999999999999", "limit=-1", "offset=1e3"):
        r = secured.broker.admin(token).get(f"/admin/v1/audit-events?{query}")
        assert r.status == 400 and r.code == "malformed_request", (query, r.body)


def test_a_non_utf8_path_gets_the_json_error_body(secured: Secured) -> None:
    sock = _tls(secured)
    sock.sendall(b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = _read_all(sock, 5)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), head
    assert json.loads(body)["error"]["code"] in ("not_found", "malformed_request")


def test_bodies_must_be_json(secured: Secured) -> None:
    r = secured.client().request("POST", "/v1/registrations",
                                 raw=b'{"registration_code": "x", "client": {}}',
                                 headers={"content-type": "text/plain"})
    assert r.status == 415 and r.code == "unsupported_media_type"


def test_a_client_version_with_a_newline_is_not_311(secured: Secured) -> None:
    r = secured.client().post("/v1/registrations", {
        "registration_code": secured.world.codes["corp"],
        "client": {"platform": "windows", "arch": "x86_64", "version": "3.1.1\n"}})
    assert r.status == 200, r.body
    assert "smart_card" not in r.body["login_methods"]
    assert "client_version_unsupported" in r.body["smart_card"]["reasons"]


# ----------------------------------------------------------------------------- item 12

def test_in_session_response_takes_the_pre_session_body(secured: Secured) -> None:
    token, sid = _password_session(secured)
    api = secured.client(token)
    ch = api.post(f"/v1/sessions/{sid}/in-session/challenges", {"purpose": "sudo"})
    assert ch.status == 201, ch.body
    secured.remember(ch.body["challenge_id"], json.loads(base64.b64decode(
        ch.body["to_be_signed"]).split(b"\n", 1)[1])["nonce"])
    card = secured.world.cards["erin"]
    sig = card.sign(base64.b64decode(ch.body["to_be_signed"]))
    r = api.post(f"/v1/sessions/{sid}/in-session/challenges/{ch.body['challenge_id']}/response",
                 {"certificate": card.cert_b64(), "chain": card.chain_b64(),
                  "signature": b64(sig), "algorithm": card.algorithm})
    assert r.status == 200, r.body
    assert r.body["assertion"].count(".") == 2


# ----------------------------------------------------------------------------- item 2 (last)

def test_zz_the_log_holds_no_id_token_or_nonce(secured: Secured) -> None:
    """Runs last in the module: everything the suite saw is checked against the log."""
    log = secured.broker.logs()
    assert '"route"' in log and "/v1/sessions/{session_id}/heartbeat" in log
    assert len(secured.secrets) > 20
    leaked = sorted(v for v in secured.secrets if v in log)
    assert leaked == []
    assert "GET /v1/" not in log and "POST /v1/sessions/" not in log
