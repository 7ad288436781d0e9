"""Security round 2 at the web edge (issue 30): bounded metric labels, control characters and
non-UTF-8 paths, trickled bodies, TLS suites and per-listener tickets, headers that say less,
console sign-in from the form body only and throttled — against a real broker over real TLS.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
import ssl
import time
from urllib.parse import urlencode

import pytest

from tests.security.conftest import Secured

pytestmark = pytest.mark.slow


def _connection(secured: Secured, port: int) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(secured.broker.cafile))
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10,
                                       source_address=(secured.address(), 0))


def _series(secured: Secured) -> list[str]:
    """The request-driven series of /metrics (the database gauges come and go with data)."""
    r = secured.broker.admin().get("/metrics")
    assert r.status == 200
    text = r.body.decode() if isinstance(r.body, bytes) else str(r.body)
    return [line for line in text.splitlines()
            if re.match(r"broker_(http|refusals|logins|throttled)", line)]


def _send_many(secured: Secured, port: int, requests: list[tuple[str, str]]) -> set[int]:
    statuses: set[int] = set()
    conn = _connection(secured, port)
    for method, path in requests:
        for _attempt in range(2):
            try:
                conn.request(method, path, headers={"content-length": "0"})
                resp = conn.getresponse()
                resp.read()
                statuses.add(resp.status)
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = _connection(secured, port)
    conn.close()
    return statuses


# ----------------------------------------------------------------------------- item 1

def test_a_thousand_strange_methods_and_paths_add_no_series(secured: Secured) -> None:
    def junk(n: int) -> list[tuple[str, str]]:
        return [("X" + secrets.token_hex(8).upper(), "/v1/" + secrets.token_hex(12))
                for _ in range(n)] + \
               [("Q" + secrets.token_hex(8).upper(), "/v1/sessions/" + secrets.token_hex(8)
                 + "/heartbeat") for _ in range(n)]

    for port in (secured.broker.port, secured.broker.admin_port):
        _send_many(secured, port, junk(3))  # the first 'other'/'unmatched' series appear
    _series(secured)
    before = _series(secured)
    for port in (secured.broker.port, secured.broker.admin_port):
        assert _send_many(secured, port, junk(250)) <= {404, 405, 501}
    after = _series(secured)
    assert len(after) == len(before), sorted(set(after) - set(before))[:5]
    assert any('method="other"' in line for line in after)
    assert not any(re.search(r'method="[XQ][0-9A-F]{16}"', line) for line in after)


# ----------------------------------------------------------------------------- item 5 (input)

def _tls(secured: Secured, port: int | None = None) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(secured.broker.cafile))
    raw = socket.create_connection(("127.0.0.1", port or secured.broker.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def _answer(sock: ssl.SSLSocket, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ssl.SSLError, ConnectionResetError):
        pass
    return data


def test_a_trickled_chunked_body_is_cut_at_the_body_deadline(secured: Secured) -> None:
    """request_body_timeout_s is 2 here: a body sent a byte every 0.25 s is cut long before
    its 40 chunks are through (before the fix a chunked body had no deadline at all)."""
    sock = _tls(secured)
    sock.sendall(b"POST /v1/registrations HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent = 0
    try:
        for _ in range(40):
            sock.sendall(b"1\r\n \r\n")
            sent += 1
            time.sleep(0.25)  # the trickle itself, not a synchronisation
    except OSError:
        pass  # the broker closed the connection: what we want
    answer = _answer(sock, 3)
    assert answer.startswith(b"HTTP/1.1 408"), (sent, answer[:80])
    assert b'"request_timeout"' in answer
    assert sent < 40, "cut before the trickle ended"


def test_a_percent_ff_path_is_a_json_400_logged_at_info(secured: Secured) -> None:
    for port in (secured.broker.port, secured.broker.admin_port):
        r = _connection(secured, port)
        r.request("GET", "/v1/sessions/%ff%fe/heartbeat")
        resp = r.getresponse()
        body = resp.read()
        assert resp.status == 400 and "application/json" in resp.getheader("content-type")
        assert json.loads(body)["error"]["code"] == "malformed_request"
        r.close()
    log = secured.broker.logs()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    refused = [e for e in lines if e["msg"] == "request refused before routing"]
    assert refused and {e["level"] for e in refused} == {"info"}
    assert refused[-1]["reason"] == "The request path is not UTF-8."
    assert not [e for e in lines if e["level"] in ("critical", "error") or "exc" in e]
    assert "Traceback" not in log


@pytest.mark.parametrize("path", ["/v1/sessions/ab%00cd/heartbeat",
                                  "/v1/workspaces/ws%0a1/connect",
                                  "/admin/v1/directories/corp%00",
                                  "/admin/v1/audit-events?actor=a%00b"])
def test_control_characters_in_paths_and_queries_are_400(secured: Secured, path: str) -> None:
    api = secured.broker.admin() if path.startswith("/admin") else secured.client()
    r = api.request("POST" if path.startswith("/v1") else "GET", path, {})
    assert r.status == 400 and r.code == "malformed_request", (path, r.status, r.body)


def test_nul_in_any_json_string_is_400(secured: Secured) -> None:
    for body in ({"registration_code": "ab\u0000", "client": {"platform": "linux",
                                                            "arch": "x86_64", "version": "1"}},
                 {"registration_code": secured.world.codes["corp"],
                  "client": {"platform": "linux", "arch": "x86_64", "version": "1\u0000"}}):
        r = secured.client().post("/v1/registrations", body)
        assert r.status == 400 and r.code == "malformed_request", r.body


# ----------------------------------------------------------------------------- item 6 (TLS)

_contexts: dict[tuple[str, str | None, bool], ssl.SSLContext] = {}


def _handshake(secured: Secured, port: int, *, ciphers: str | None = None,
               tls12: bool = False, session: ssl.SSLSession | None = None
               ) -> tuple[ssl.SSLSession | None, bool, str]:
    """One GET /healthz on a new TLS connection: (session, resumed, cipher)."""
    key = (str(secured.broker.cafile), ciphers, tls12)
    if key not in _contexts:
        ctx = ssl.create_default_context(cafile=str(secured.broker.cafile))
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if ciphers:
            ctx.set_ciphers(ciphers + ":@SECLEVEL=0")  # let the client offer the weak ones
        _contexts[key] = ctx
    ctx = _contexts[key]
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer(sock).startswith(b"HTTP/1.1 200")
        cipher = sock.cipher()
        return sock.session, sock.session_reused, cipher[0] if cipher else ""
    finally:
        sock.close()


@pytest.mark.parametrize("suites", [
    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA",  # CBC with SHA-1
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384",  # CBC
    "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA",  # no forward secrecy
])
def test_tls12_refuses_cbc_and_non_forward_secret_suites(secured: Secured, suites: str) -> None:
    for port in (secured.broker.port, secured.broker.admin_port):
        with pytest.raises(ssl.SSLError):
            _handshake(secured, port, ciphers=suites, tls12=True)


def test_tls12_with_ecdhe_and_aead_and_tls13_connect(secured: Secured) -> None:
    _, _, cipher = _handshake(secured, secured.broker.port, tls12=True,
                              ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA")
    assert cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"
    _, _, cipher = _handshake(secured, secured.broker.port)
    assert cipher.startswith("TLS_")


def test_a_client_port_ticket_does_not_resume_on_the_admin_port(secured: Secured) -> None:
    for tls12 in (False, True):
        session, reused, _ = _handshake(secured, secured.broker.port, tls12=tls12)
        assert not reused and session is not None
        _, reused, _ = _handshake(secured, secured.broker.port, tls12=tls12, session=session)
        assert reused, "the ticket resumes where it was issued (the probe works)"
        _, reused, _ = _handshake(secured, secured.broker.admin_port, tls12=tls12,
                                  session=session)
        assert not reused, "the admin listener has its own ticket keys"


def test_server_header_and_healthz_say_little(secured: Secured) -> None:
    r = secured.client().get("/healthz")
    assert r.body == {"status": "ok"}, "no pid on the client listener"
    assert r.headers["server"] == "smartcard-broker"
    for path in ("/nope", "/v1/jwks.json"):
        assert secured.client().get(path).headers["server"] == "smartcard-broker"
    assert "twisted" not in json.dumps(secured.broker.admin().get("/healthz").headers).lower()


# ----------------------------------------------------------------------------- item 7 (console)

class Console:
    """A cookie jar posting the console's forms from one loopback source address."""

    def __init__(self, secured: Secured) -> None:
        self.secured, self.source, self.cookies = secured, secured.address(), {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], str]:
        ctx = ssl.create_default_context(cafile=str(self.secured.broker.cafile))
        conn = http.client.HTTPSConnection("127.0.0.1", self.secured.broker.admin_port,
                                           context=ctx, timeout=30,
                                           source_address=(self.source, 0))
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
            for c in r.headers.get_all("set-cookie") or []:
                name, _, rest = c.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
            return r.status, {k.lower(): v for k, v in r.headers.items()}, text
        finally:
            conn.close()

    def sign_in(self, token: str, query: str = "") -> tuple[int, dict[str, str], str]:
        _, _, html = self.request("GET", "/console/sign-in")
        csrf = re.findall(r'name="csrf" value="([^"]+)"', html)[-1]
        form = {"csrf": csrf} if query else {"csrf": csrf, "token": token}
        return self.request("POST", "/console/sign-in" + query, form)


def _admin_token(secured: Secured) -> str:
    out = secured.broker.run_cli("admin", "token", "create", "--name",
                                 "console-" + secrets.token_hex(4), "--scope", "read", "--json")
    token = str(json.loads(out.stdout)["token"])
    secured.remember(token)
    return token


def test_console_sign_in_takes_the_token_from_the_body_only(secured: Secured) -> None:
    token = _admin_token(secured)
    browser = Console(secured)
    status, _, html = browser.sign_in(token, query="?" + urlencode({"token": token}))
    assert status == 400 and "form" in html
    assert "__Host-console" not in browser.cookies
    status, headers, _ = browser.sign_in(token)
    assert status == 303 and headers["location"] == "/console/"


def test_console_sign_in_is_throttled_per_address(secured: Secured) -> None:
    token = _admin_token(secured)
    guesser = Console(secured)
    statuses = [guesser.sign_in("sbat_wrong" + str(i))[0] for i in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    status, headers, _ = guesser.sign_in(token)
    assert status == 429 and int(headers["retry-after"]) > 0, "refused before the token check"
    assert Console(secured).sign_in(token)[0] == 303, "another address is not throttled"
    assert 'broker_throttled_total{what="console_sign_in"}' in "\n".join(_series(secured))
