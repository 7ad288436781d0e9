"""The admin console's security at the HTTP level, against a running broker over TLS.

The browser test drives the pages; these pin the rules a browser hides: cookie attributes, the
CSP, CSRF refusals, read scope refused by the server (not only by disabled buttons), sign-out
and token revocation ending the session, and the token never in a log.
"""

from __future__ import annotations

import http.client
import re
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.integration.admin.conftest import make_token
from tests.support.server import BrokerProcess


@dataclass
class Browserish:
    """Just enough of a browser: one cookie jar, forms posted urlencoded, no redirects followed."""

    bp: BrokerProcess
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], list[str], str]:
        ctx = ssl.create_default_context(cafile=str(self.bp.cafile))
        conn = http.client.HTTPSConnection("127.0.0.1", self.bp.admin_port, context=ctx,
                                           timeout=30)
        headers = {}
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
            set_cookies = r.headers.get_all("set-cookie") or []
            for c in set_cookies:
                name, _, rest = c.partition("=")
                value = rest.split(";", 1)[0]
                if "Max-Age=0" in c:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
            return r.status, {k.lower(): v for k, v in r.headers.items()}, set_cookies, text
        finally:
            conn.close()

    def csrf(self, html: str) -> str:
        return re.findall(r'name="csrf" value="([^"]+)"', html)[-1]

    def sign_in(self, token: str) -> tuple[int, dict[str, str], list[str], str]:
        _, _, _, html = self.request("GET", "/console/sign-in")
        return self.request("POST", "/console/sign-in", {"csrf": self.csrf(html),
                                                         "token": token})


@pytest.fixture
def bp(broker_factory: Any, tmp_path: Any) -> BrokerProcess:
    made: BrokerProcess = broker_factory(f"sqlite:///{tmp_path / 'console.db'}")
    return made


DIRECTORY_FORM = {"resource": "directories", "operation": "create",
                  "return_to": "/console/directories", "id": "corp", "name": "Corp",
                  "region": "us-gov-west-1", "smart_card.pre_session": "on"}


def test_sign_in_sets_a_hardened_expiring_cookie_and_a_strict_csp(bp: BrokerProcess) -> None:
    token = make_token(bp, "root")
    b = Browserish(bp)
    status, headers, _, html = b.request("GET", "/console/sign-in")
    assert status == 200
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert "<script>" not in html and " style=" not in html
    status, headers, cookies, _ = b.sign_in(token)
    assert (status, headers["location"]) == (303, "/console/")
    [session_cookie] = [c for c in cookies if c.startswith("__Host-console=")]
    for attribute in ("secure", "httponly", "samesite=strict", "path=/", "max-age="):
        assert attribute in session_cookie.lower(), session_cookie
    assert token not in session_cookie
    status, _, _, html = b.request("GET", "/console/")
    assert status == 200 and "Logins, last 24 hours" in html
    assert token not in bp.logs()


def test_sign_in_without_its_csrf_token_is_refused(bp: BrokerProcess) -> None:
    token = make_token(bp, "root")
    b = Browserish(bp)
    b.request("GET", "/console/sign-in")
    status, _, cookies, html = b.request("POST", "/console/sign-in", {"token": token})
    assert status == 403 and "CSRF" in html
    assert not [c for c in cookies if c.startswith("__Host-console=")]


def test_a_wrong_token_is_refused_and_audited_without_the_token(bp: BrokerProcess) -> None:
    token = make_token(bp, "root")
    b = Browserish(bp)
    status, _, _, html = b.sign_in("sba_not-a-real-token")
    assert status == 401 and "unknown or revoked" in html
    assert b.request("GET", "/console/")[0] == 303
    events = bp.admin(token).get("/admin/v1/audit-events?kind=console.sign_in").body["items"]
    assert [(e["outcome"], e["reason"]) for e in events] == [("refused", "admin_token_invalid")]
    assert "sba_not-a-real-token" not in bp.logs()


def test_a_change_without_the_csrf_token_is_refused_and_with_it_goes_through(
        bp: BrokerProcess) -> None:
    token = make_token(bp, "root")
    b = Browserish(bp)
    b.sign_in(token)
    status, _, _, html = b.request("POST", "/console/directories/do", DIRECTORY_FORM)
    assert status == 403 and "CSRF" in html
    status, _, _, html = b.request("POST", "/console/directories/do",
                                   {**DIRECTORY_FORM, "csrf": "forged"})
    assert status == 403
    assert bp.admin(token).get("/admin/v1/directories").body["items"] == []
    # Positive control: the same form with the session's token creates the directory.
    _, _, _, page = b.request("GET", "/console/directories")
    status, headers, _, _ = b.request("POST", "/console/directories/do",
                                      {**DIRECTORY_FORM, "csrf": b.csrf(page)})
    assert (status, headers["location"]) == (303, "/console/directories")
    created = bp.admin(token).get("/admin/v1/directories/corp").body
    assert created["smart_card"]["pre_session"] is True
    [event] = bp.admin(token).get("/admin/v1/audit-events?kind=directory.create").body["items"]
    assert event["actor"] == "console:root"


def test_a_read_scope_session_sees_everything_and_changes_nothing(bp: BrokerProcess) -> None:
    writer = make_token(bp, "root")
    reader = make_token(bp, "auditor", "read")
    assert bp.admin(writer).post("/admin/v1/directories", {
        "id": "corp", "name": "Corp", "region": "us-gov-west-1"}).status == 201
    b = Browserish(bp)
    b.sign_in(reader)
    status, _, _, page = b.request("GET", "/console/directories")
    assert status == 200 and "corp" in page and "read scope" in page
    assert re.search(r'<button type="submit"[^>]*disabled title="Your admin token has read',
                     page)
    status, _, _, html = b.request("POST", "/console/directories/do", {
        **DIRECTORY_FORM, "id": "other", "csrf": b.csrf(page)})
    assert status == 403 and "read scope" in html
    assert [d["id"] for d in bp.admin(writer).get("/admin/v1/directories").body["items"]] == \
        ["corp"]


def test_sign_out_and_token_revocation_end_the_session(bp: BrokerProcess) -> None:
    token = make_token(bp, "root")
    b = Browserish(bp)
    b.sign_in(token)
    kept = dict(b.cookies)
    _, _, _, page = b.request("GET", "/console/")
    assert b.request("POST", "/console/sign-out", {"csrf": b.csrf(page)})[0] == 303
    # The old cookie, replayed, no longer opens anything: the session is gone server-side.
    replay = Browserish(bp, kept)
    status, headers, _, _ = replay.request("GET", "/console/")
    assert (status, headers["location"]) == (303, "/console/sign-in")
    b.sign_in(token)
    assert b.request("GET", "/console/")[0] == 200
    bp.run_cli("admin", "token", "revoke", "--name", "root")
    assert b.request("GET", "/console/")[0] == 303


def test_the_admin_api_is_untouched_by_the_console(bp: BrokerProcess) -> None:
    token = make_token(bp, "root")
    assert bp.admin(token).get("/admin/v1/directories").status == 200
    b = Browserish(bp)
    assert b.request("GET", "/console")[0] == 308
    assert b.request("GET", "/console/static/console.js")[0] == 200
    assert b.request("GET", "/console/static/..%2Fconsole.py")[0] in (403, 404)


def test_lists_page_and_search_from_the_declared_filters(bp: BrokerProcess) -> None:
    token = make_token(bp, "root")
    api = bp.admin(token)
    assert api.post("/admin/v1/directories", {"id": "corp", "name": "Corp",
                                              "region": "us-gov-west-1"}).status == 201
    for i in range(30):
        assert api.post("/admin/v1/directories/corp/users",
                        {"username": f"user{i:02d}"}).status == 201
    b = Browserish(bp)
    b.sign_in(token)

    def usernames(html: str) -> list[str]:
        return re.findall(r'<td data-column="username">\s*([^<\s]+)', html)

    _, _, _, page = b.request("GET", "/console/users?directory_id=corp")
    assert usernames(page) == [f"user{i:02d}" for i in range(25)]
    [next_link] = re.findall(r'<a href="\?([^"]+)" rel="next">', page)
    _, _, _, page = b.request("GET", "/console/users?" + next_link.replace("&amp;", "&"))
    assert usernames(page) == [f"user{i:02d}" for i in range(25, 30)]
    assert 'rel="next"' not in page
    _, _, _, page = b.request("GET", "/console/users?directory_id=corp&search=USER1")
    assert usernames(page) == [f"user1{i}" for i in range(10)]


def _selected(html: str) -> str:
    [chosen] = re.findall(r'<select name="directory_id" id="header-directory">.*?'
                          r'<option selected>([^<]+)</option>', html)
    return chosen


def _flash(html: str) -> str:
    [text] = re.findall(r'id="flash">([^<]*)</p>', html)
    return text


def _two_directories_signed_in(bp: BrokerProcess) -> tuple[Any, Browserish]:
    """Directories field-office and hq-gov, and a console session of a write token."""
    token = make_token(bp, "root")
    api = bp.admin(token)
    for d in ("field-office", "hq-gov"):
        assert api.post("/admin/v1/directories", {"id": d, "name": d,
                                                  "region": "us-gov-west-1"}).status == 201
    b = Browserish(bp)
    b.sign_in(token)
    return api, b


def test_the_selected_directory_is_kept_in_the_session_and_used_by_forms_and_messages(
        bp: BrokerProcess) -> None:
    """Issue 29: with hq-gov selected, codes are issued in hq-gov and every form and message
    says so (the issue form used to name the first directory whatever the filter said)."""
    api, b = _two_directories_signed_in(bp)
    _, _, _, page = b.request("GET", "/console/registration-codes")
    assert _selected(page) == "field-office"  # nothing chosen yet: the first
    status, headers, _, _ = b.request("POST", "/console/directory", {
        "csrf": b.csrf(page), "directory_id": "hq-gov",
        "return_to": "/console/registration-codes"})
    assert (status, headers["location"]) == (303, "/console/registration-codes")
    # Kept server-side: a page without any query parameter works in hq-gov.
    _, _, _, page = b.request("GET", "/console/registration-codes")
    assert _selected(page) == "hq-gov"
    issue = page[page.index('id="op-registration-codes-issue"'):]
    assert 'name="path.directory_id" value="hq-gov"' in issue
    assert "In directory <b>hq-gov</b>" in issue and "field-office</b>" not in issue
    assert re.search(r'<select name="directory">.*?<option selected>hq-gov</option>', page)
    status, headers, _, _ = b.request("POST", "/console/registration-codes/do", {
        "csrf": b.csrf(page), "resource": "registration-codes", "operation": "issue",
        "path.directory_id": "hq-gov", "count": "3",
        "return_to": "/console/registration-codes"})
    assert status == 303
    _, _, _, page = b.request("GET", headers["location"])
    assert _flash(page).startswith("3 registration codes issued in hq-gov: ")
    codes = api.get("/admin/v1/registration-codes").body["items"]
    assert sorted(c["directory"] for c in codes) == ["hq-gov"] * 3
    # The WorkSpace form's directory starts at the selection too.
    _, _, _, page = b.request("GET", "/console/workspaces")
    create = page[page.index('id="op-workspaces-create"'):]
    assert re.search(r'<select id="f-directory" name="directory">.*?'
                     r'<option selected>hq-gov</option>', create)
    # A link's ?directory_id= overrides and becomes the selection; an unknown one is refused.
    _, _, _, page = b.request("GET", "/console/users?directory_id=field-office")
    assert _selected(page) == "field-office"
    assert "In directory <b>field-office</b>" in page
    status, _, _, html = b.request("POST", "/console/directory", {
        "csrf": b.csrf(page), "directory_id": "nowhere", "return_to": "/console/users"})
    assert status == 400 and "no directory &#39;nowhere&#39;" in html
    assert _selected(b.request("GET", "/console/users")[3]) == "field-office"


def test_a_change_message_names_its_directory_and_directories_link_their_pages(
        bp: BrokerProcess) -> None:
    api, b = _two_directories_signed_in(bp)
    _, _, _, page = b.request("GET", "/console/directories")
    links = re.findall(r'<td class="directory-links" data-directory="hq-gov">(.*?)</td>', page)
    assert links and all(f'href="/console/{p}?directory_id=hq-gov' in links[0]
                         for p in ("trust", "users", "workspaces", "registration-codes"))
    assert "#section-crls" in links[0]
    # The region is chosen from the catalogue's regions, not typed.
    regions = re.findall(r'<select id="f-region" name="region" required>(.*?)</select>', page,
                         re.S)
    assert regions and '<option value="us-gov-west-1"' in regions[0]
    _, _, _, page = b.request("GET", "/console/users?directory_id=hq-gov")
    status, headers, _, _ = b.request("POST", "/console/users/do", {
        "csrf": b.csrf(page), "resource": "users", "operation": "create",
        "path.directory_id": "hq-gov", "username": "alice",
        "return_to": "/console/users"})
    assert status == 303
    assert _flash(b.request("GET", headers["location"])[3]) == "user alice created in hq-gov"
    _, _, _, page = b.request(
        "GET", "/console/users/edit?resource=users&path.directory_id=hq-gov&path.username=alice")
    assert "In directory <b>hq-gov</b>." in page
    assert api.get("/admin/v1/directories/hq-gov/users/alice").status == 200


def test_workspaces_show_their_name_and_offer_start_or_stop_by_state(bp: BrokerProcess) -> None:
    token = make_token(bp, "root")
    api = bp.admin(token)
    assert api.post("/admin/v1/directories", {"id": "corp", "name": "Corp",
                                              "region": "us-gov-west-1"}).status == 201
    assert api.post("/admin/v1/directories/corp/users", {"username": "alice"}).status == 201
    for ws, state in (("ws-on", "AVAILABLE"), ("ws-off", "STOPPED")):
        assert api.post("/admin/v1/workspaces", {
            "id": ws, "directory": "corp", "user": "alice", "name": f"Desk {ws}",
            "protocol": "WSP", "state": state}).status == 201
    b = Browserish(bp)
    b.sign_in(token)
    _, _, _, page = b.request("GET", "/console/workspaces")
    assert re.findall(r'<td data-column="name">\s*([^<]+?)\s*</td>', page) == \
        ["Desk ws-off", "Desk ws-on"]
    rows = {m.group(1): m.group(0) for m in re.finditer(
        r'<td data-column="id">\s*(ws-\w+).*?</tr>', page, re.S)}
    disabled = {ws: {label: bool(off) for off, label in re.findall(
        r'<button type="submit" class="[^"]*"( disabled[^>]*)?>(Start|Stop)</button>', row)}
        for ws, row in rows.items()}
    assert disabled == {"ws-off": {"Start": False, "Stop": True},
                        "ws-on": {"Start": True, "Stop": False}}
    assert "Only a WorkSpace in state STOPPED can start; this one is AVAILABLE." in rows["ws-on"]


def test_a_console_request_is_one_access_line_by_its_declared_route(bp: BrokerProcess) -> None:
    import json
    import time

    status, headers, _, _ = Browserish(bp).request("GET", "/console/sign-in")
    assert status == 200
    # The same route wrapper as the JSON APIs (http.routed): the answer names its request id,
    # and the access line below carries the same one.
    rid = headers.get("x-request-id", "")
    assert re.fullmatch(r"[0-9a-f]{32}", rid), headers
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while not lines and time.monotonic() < deadline:
        lines = [r for r in (json.loads(x) for x in bp.logs().splitlines() if x.startswith("{"))
                 if r.get("msg") == "request" and "sign-in" in str(r.get("route"))]
        time.sleep(0.05)
    assert [(r["api"], r["route"], r["status"], r["code"]) for r in lines] == \
        [("console", "/console/sign-in", 200, "ok")]
    assert lines[0].get("request_id") == rid, lines
