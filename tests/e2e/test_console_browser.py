"""The admin console in a real headless browser (Debian's chromium through chromedriver).

One admin's afternoon against a real broker over TLS: sign in, create a directory (the policy
note beside each toggle follows the region), upload CAs and a CRL, add a user and a WorkSpace,
issue a registration code, watch a smart-card login (through the client API) reach the overview
chart and the audit log, terminate its session; then a form without its CSRF token is refused and
a read-scope session sees everything and changes nothing. Screenshots of every page go to the
test's tmp_path; with BROKER_UPDATE_SHOTS=1 they replace docs/console/*.png (the README's).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.require import unavailable

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "console"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")

pytestmark = pytest.mark.slow


def _browser_parts() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("browser", "selenium is not installed (pip install -e '.[test]')")
    if not chromium or not driver:
        unavailable("browser", "Debian's chromium and chromium-driver are not installed "
                               "(apt-get install chromium chromium-driver; .ci/setup does it)")
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium, driver_path = _browser_parts()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1280,900")
    # The broker's dev TLS certificate is self-signed; everything else about TLS is real.
    options.accept_insecure_certs = True
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def running(broker_factory: Callable[..., Any], tmp_path: Path) -> Any:
    return broker_factory(f"sqlite:///{tmp_path / 'console.db'}",
                          BROKER_WORKSPACES_STOP_DELAY_S="2",
                          BROKER_SESSIONS_SWEEP_INTERVAL_S="0.5")


def make_token(bp: Any, name: str, scope: str) -> str:
    import json

    out = bp.run_cli("admin", "token", "create", "--name", name, "--scope", scope, "--json")
    return str(json.loads(out.stdout)["token"])


class Console:
    """The browser pointed at the broker's admin listener, with a few readable steps."""

    def __init__(self, driver: Any, base: str, shots: Path) -> None:
        from selenium.webdriver.common.by import By

        self.d = driver
        self.base = base
        self.by = By
        self.shots = shots

    def open(self, path: str) -> None:
        self.d.get(self.base + path)

    def css(self, selector: str) -> Any:
        return self.d.find_element(self.by.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        return list(self.d.find_elements(self.by.CSS_SELECTOR, selector))

    def fill(self, selector: str, value: str) -> None:
        el = self.css(selector)
        el.clear()
        el.send_keys(value)

    def region(self, value: str) -> None:
        """Choose a region from the form's list (the catalogue's regions). A region the list
        does not offer is added to it first, as a form loaded before the catalogue changed
        would submit it: the server's refusal is what such a step tests."""
        from selenium.webdriver.support.ui import Select

        picker = Select(self.css("#f-region"))
        if value not in [o.get_attribute("value") for o in picker.options]:
            self.d.execute_script("arguments[0].add(new Option(arguments[1], arguments[1]))",
                                  self.css("#f-region"), value)
        picker.select_by_value(value)

    def sign_in(self, token: str) -> None:
        self.open("/console/sign-in")
        self.fill("#token", token)
        self.submit("main form")

    def flash(self) -> str:
        """The result banner of the last change (waiting for the page it redirected to)."""
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        found = WebDriverWait(self.d, 10).until(
            expected_conditions.presence_of_element_located((self.by.CSS_SELECTOR, "#flash")))
        return str(found.text)

    def column(self, table: str, column: str) -> list[str]:
        return [c.text for c in self.all(f"#list-{table} td[data-column='{column}']")]

    def expand(self, op_id: str) -> Any:
        details = self.css(f"#{op_id}")
        if not details.get_attribute("open"):
            details.find_element(self.by.TAG_NAME, "summary").click()
        return details

    def submit(self, form_root: Any, *, confirm: bool = False) -> None:
        """Press the form's button and wait for the page it leads to."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        for attempt in range(3):
            try:
                root = self.css(form_root) if isinstance(form_root, str) else form_root
                page = self.css("html")
                root.find_element(self.by.CSS_SELECTOR, "button[type=submit]").click()
                break
            except WebDriverException:
                # Chromium now and then loses a node id right after a layout change
                # (screenshots resize the viewport); look it up again.
                if attempt == 2:
                    raise
                time.sleep(0.5)
        if confirm:
            self.d.switch_to.alert.accept()
        WebDriverWait(self.d, 10).until(lambda _: is_stale(page))

    def shot(self, name: str, width: int = 1280) -> None:
        """A full-page screenshot into ``shots`` (``width`` CSS pixels wide)."""
        metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        height = self.d.execute_script("return document.documentElement.scrollHeight")
        metrics["height"] = max(600, min(int(height), 6000))
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        png = self.d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]
        self.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.shots.mkdir(parents=True, exist_ok=True)
        (self.shots / f"{name}.png").write_bytes(base64.b64decode(png))


STALE_MARKS = ("stale element", "does not belong to the document", "no such element")


def is_stale(element: Any) -> bool:
    """Whether ``element`` left the document: selenium's staleness_of, plus chromium's other
    way of saying so ("Node with given id does not belong to the document")."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if any(mark in str(exc) for mark in STALE_MARKS):
            return True
        raise
    return False


def shots_dir(tmp_path: Path) -> Path:
    """docs/console/ only when asked (BROKER_UPDATE_SHOTS=1): a test run never rewrites tracked
    files."""
    return SHOTS if os.environ.get("BROKER_UPDATE_SHOTS") == "1" else tmp_path / "shots"


def write_pki(base: Path) -> dict[str, Any]:
    from broker.pki import issue

    base.mkdir(parents=True)
    root = issue.make_root("Console Root CA")
    inter = issue.make_intermediate(root, "Console Issuing CA")
    alice = issue.make_user_cert(inter, "Alice", upn="alice@corp.example")
    stranger = issue.make_user_cert(inter, "Nobody", upn="nobody@corp.example")
    crl = issue.make_crl(inter, [])
    (base / "root.pem").write_bytes(root.cert_pem())
    (base / "issuing.pem").write_bytes(inter.cert_pem())
    (base / "issuing.crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return {"inter": inter, "alice": alice, "stranger": stranger}


def test_an_admin_runs_the_broker_from_the_console(browser: Any, running: Any,
                                                   tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    from tests.support.softcard import SoftCard, SoftClient

    bp = running
    write_token = make_token(bp, "console-admin", "write")
    read_token = make_token(bp, "console-auditor", "read")
    pki = write_pki(tmp_path / "pki")
    shots = shots_dir(tmp_path)
    tracked = {p.name: p.read_bytes() for p in SHOTS.glob("*.png")}
    ui = Console(browser, f"https://127.0.0.1:{bp.admin_port}", shots)

    # ---- sign in: a server-side session behind a hardened cookie, no token in the URL
    ui.open("/console/")
    assert browser.current_url.endswith("/console/sign-in")
    ui.shot("sign-in")
    ui.sign_in(write_token)
    assert browser.current_url.endswith("/console/"), browser.current_url
    [cookie] = [c for c in browser.get_cookies() if c["name"] == "__Host-console"]
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert "expiry" in cookie
    assert write_token not in cookie["value"]

    # ---- a directory; the policy note beside each toggle follows the region as it is chosen
    ui.open("/console/directories")
    form = ui.expand("op-directories-create")
    ui.fill("#f-id", "corp")
    ui.fill("#f-name", "Corp GovCloud")
    ui.region("us-east-1")
    note = ui.css("[data-note-for='smart_card.pre_session']")
    assert "not available in us-east-1" in note.text and \
        "region_pre_session_unavailable" in note.text, note.text
    ui.shot("directories-create-policy")
    ui.region("us-gov-west-1")
    assert "available in us-gov-west-1" in note.text and "not" not in note.text, note.text
    ui.css("#f-smart_card\\.pre_session").click()
    ui.css("#f-smart_card\\.in_session").click()
    # A refused create comes back with the reason and everything typed still there.
    ui.region("mars-north-1")
    ui.submit(form)
    assert "mars-north-1" in ui.css("#form-error").text
    assert ui.css("#f-name").get_attribute("value") == "Corp GovCloud"
    assert ui.css("#f-smart_card\\.pre_session").is_selected()
    assert ui.column("directories", "id") == []
    form = ui.css("#op-directories-create")
    ui.region("us-gov-west-1")
    ui.submit(form)
    assert not ui.all("#form-error"), ui.css("#form-error").text
    assert ui.flash() == "directory corp created"
    assert ui.column("directories", "id") == ["corp"]
    assert ui.column("directories", "smart_card.pre_session") == ["yes"]
    created = bp.admin(write_token).get("/admin/v1/directories/corp").body
    assert created["revocation"] == {"crl": True, "ocsp": False, "fail_mode": "soft"}
    assert created["certmap"] == ["upn", "email"]

    # ---- trust: two CA certificates in one upload, then a CRL
    ui.open("/console/trust?directory_id=corp")
    form = ui.expand("op-trust-add")
    ui.css("#f-pem-file").send_keys(f"{tmp_path / 'pki' / 'root.pem'}\n"
                                    f"{tmp_path / 'pki' / 'issuing.pem'}")
    ui.submit(form)
    assert ui.flash().startswith("Add CA certificates"), ui.flash()
    assert sorted(ui.column("trust", "kind")) == ["anchor", "intermediate"]
    assert all("Console" in s for s in ui.column("trust", "subject"))
    form = ui.expand("op-crls-add")
    ui.css("#f-crl-file").send_keys(str(tmp_path / "pki" / "issuing.crl.pem"))
    ui.submit(form)
    assert ui.flash().startswith("CRL "), ui.flash()
    assert ui.column("crls", "issuer") == [pki["inter"].cert.subject.rfc4514_string()]
    ui.shot("trust")

    # ---- a user and a WorkSpace from the declared forms
    ui.open("/console/users?directory_id=corp")
    form = ui.expand("op-users-create")
    ui.fill("#f-username", "alice")
    ui.fill("#f-upn", "alice@corp.example")
    ui.submit(form)
    assert "alice" in ui.column("users", "username")
    ui.open("/console/workspaces")
    form = ui.expand("op-workspaces-create")
    ui.fill("#f-id", "ws-alice")
    Select(ui.css("#f-directory")).select_by_visible_text("corp")
    Select(ui.css("#f-user")).select_by_visible_text("alice")  # the directory's users
    Select(ui.css("#f-protocol")).select_by_visible_text("WSP")
    Select(ui.css("#f-running_mode")).select_by_visible_text("ALWAYS_ON")
    Select(ui.css("#f-state")).select_by_visible_text("AVAILABLE")
    ui.submit(form)
    assert ui.flash() == "WorkSpace ws-alice created (directory corp)", ui.flash()
    assert ui.column("workspaces", "state") == ["AVAILABLE"]

    # ---- a registration code, shown with a copy button
    ui.open("/console/registration-codes")
    form = ui.expand("op-registration-codes-issue")
    ui.submit(form)
    [code] = ui.column("registration-codes", "code")
    code = code.replace("Copy", "").strip()
    assert ui.flash().endswith(code), ui.flash()
    assert ui.css("#list-registration-codes button.copy").get_attribute("data-copy") == code
    ui.shot("registration-codes")

    # ---- one smart-card login through the client API, and one refusal
    inter = pki["inter"]
    client = SoftClient(bp.client(), code)
    assert client.register().status == 200
    alice = SoftCard(pki["alice"].key, pki["alice"].cert, [inter.cert])
    login = client.login(alice)
    assert login.status == 200, login.body
    connected = client.open_session(login.body["auth_token"], "ws-alice", alice)
    assert connected.status == 201, connected.body
    session_id = connected.body["session"]["id"]
    refused = client.login(SoftCard(pki["stranger"].key, pki["stranger"].cert, [inter.cert]))
    assert refused.status >= 400
    refusal = refused.code

    # ---- the overview chart shows both; warnings and counts are there
    ui.open("/console/")
    success = sum(int(r.get_attribute("data-count"))
                  for r in ui.all("#login-chart rect[data-outcome='success']"))
    refusals = sum(int(r.get_attribute("data-count"))
                   for r in ui.all("#login-chart rect[data-outcome='refused']"))
    assert (success, refusals) == (1, 1)
    assert ui.css(f"#refusals rect[data-reason='{refusal}']").get_attribute("data-count") == "1"
    assert ui.css("[data-live-sessions]").text == "1"
    ui.shot("overview")
    ui.shot("overview-narrow", width=420)

    # ---- the audit log, filtered to the login decisions
    ui.open("/console/audit?kind=login.*")
    assert sorted(ui.column("audit-events", "outcome")) == ["refused", "success"]
    assert "alice" in ui.column("audit-events", "username")
    # The login decision's revocation evidence is shown with it.
    evidence = ui.all("#list-audit-events [data-detail='verification'].evidence, "
                      "#list-audit-events [data-detail^='revocation'].evidence")
    assert evidence, "no revocation evidence shown for the login decision"
    ui.open(f"/console/audit?outcome=refused&reason={refusal}")
    assert ui.column("audit-events", "reason") == [refusal]
    ui.open("/console/audit")
    ui.shot("audit")

    # ---- terminate the session (the confirmation is answered)
    ui.open("/console/sessions")
    assert ui.column("sessions", "id") == [session_id]
    ui.shot("sessions")
    ui.submit(ui.css("#list-sessions form[data-confirm]"), confirm=True)
    assert ui.flash() == f"session {session_id} terminated (directory corp)", ui.flash()
    assert ui.column("sessions", "id") == []
    ended = bp.admin(write_token).get(f"/admin/v1/sessions/{session_id}").body
    assert ended["state"] == "ended"

    # ---- search, then stop the WorkSpace and watch its state change without reloading
    ui.open("/console/workspaces?search=ALI")
    assert ui.column("workspaces", "id") == ["ws-alice"]
    ui.open("/console/workspaces?search=nobody")
    assert ui.column("workspaces", "id") == []
    ui.open("/console/workspaces")
    stop = [f for f in ui.all("#list-workspaces form.inline")
            if f.find_element(ui.by.CSS_SELECTOR, "button").text == "Stop"]
    ui.submit(stop[0])
    assert ui.flash() == "WorkSpace ws-alice is STOPPING (directory corp)", ui.flash()
    assert ui.column("workspaces", "state") == ["STOPPING"]
    from selenium.webdriver.support.ui import WebDriverWait

    marker = ui.css("#flash")  # still there: the page was not reloaded, only its list
    WebDriverWait(browser, 20).until(
        lambda _: ui.column("workspaces", "state") == ["STOPPED"])
    assert marker.is_displayed()

    # ---- rotate the code (a successor appears), revoke the successor
    ui.open("/console/registration-codes")
    rotate = [f for f in ui.all("#list-registration-codes form.inline")
              if f.find_element(ui.by.CSS_SELECTOR, "button").text == "Rotate"]
    ui.submit(rotate[0])
    successor = ui.flash().removeprefix("new registration code: ").removesuffix(
        " (directory corp)")
    assert successor != code and len(successor) >= 10, successor
    states = dict(zip((c.replace("Copy", "").strip()
                       for c in ui.column("registration-codes", "code")),
                      ui.column("registration-codes", "state"), strict=True))
    assert states == {code: "rotated", successor: "active"}
    revoke = [f for f in ui.all("#list-registration-codes form.inline")
              if f.find_element(ui.by.CSS_SELECTOR, "button").text == "Revoke"
              and f.find_element(ui.by.CSS_SELECTOR, "input[name=code]")
              .get_attribute("value") == successor]
    ui.submit(revoke[0], confirm=True)
    assert ui.flash() == f"registration code {successor} revoked (directory corp)", ui.flash()

    # ---- an edit the server refuses returns to its form with the reason
    ui.open("/console/directories/edit?resource=directories&path.directory_id=corp")
    ui.region("mars-north-1")
    ui.submit("main form")
    assert "mars-north-1" in ui.flash() and "/console/directories/edit" in browser.current_url

    # ---- pages for the README, then the edit form with its policy notes
    for page in ("directories", "users", "workspaces"):
        ui.open(f"/console/{page}")
        ui.shot(page)
    ui.open("/console/directories/edit?resource=directories&path.directory_id=corp")
    assert "available in us-gov-west-1" in \
        ui.css("[data-note-for='smart_card.pre_session']").text
    ui.shot("directory-edit")

    # ---- a form without its CSRF token is refused, and nothing changes
    ui.open("/console/directories/edit?resource=directories&path.directory_id=corp")
    ui.fill("#f-name", "Renamed without CSRF")
    browser.execute_script("document.querySelector('main form input[name=csrf]').remove()")
    ui.submit("main form")
    assert "CSRF" in ui.css("#refused").text
    assert bp.admin(write_token).get("/admin/v1/directories/corp").body["name"] == \
        "Corp GovCloud"

    # ---- sign out; a read-scope session sees everything and changes nothing
    ui.open("/console/")
    ui.submit(ui.css("form.who"))
    assert browser.current_url.endswith("/console/sign-in")
    ui.open("/console/directories")
    assert browser.current_url.endswith("/console/sign-in")
    ui.sign_in(read_token)
    ui.open("/console/directories")
    assert "read scope" in ui.css("#read-only").text
    assert ui.column("directories", "id") == ["corp"]
    buttons = ui.all("main form[action$='/do'] button[type=submit]")
    assert buttons and all(not b.is_enabled() for b in buttons)
    assert all("read scope" in b.get_attribute("title") for b in buttons)
    ui.shot("directories-read-only")
    # Even a button re-enabled by hand is refused by the server.
    ui.open("/console/directories/edit?resource=directories&path.directory_id=corp")
    ui.fill("#f-name", "Renamed by a reader")
    browser.execute_script(
        "document.querySelector('main form button[type=submit]').disabled = false")
    ui.submit("main form")
    assert "read scope" in ui.css("#refused").text
    assert bp.admin(write_token).get("/admin/v1/directories/corp").body["name"] == \
        "Corp GovCloud"

    # The tokens never reached a URL or the broker's log.
    logs = bp.logs()
    assert write_token not in logs and read_token not in logs
    assert os.path.getsize(shots / "overview.png") > 10_000
    if shots != SHOTS:
        assert {p.name: p.read_bytes() for p in SHOTS.glob("*.png")} == tracked, \
            "the test rewrote docs/console/ without BROKER_UPDATE_SHOTS=1"


def test_codes_are_issued_in_the_directory_selected_in_the_header(browser: Any, running: Any,
                                                                 tmp_path: Path) -> None:
    """Issue 29: with two directories and the second one selected, the issue form names it,
    the codes land in it (checked through the admin API) and the message says so."""
    from selenium.webdriver.support.ui import Select

    bp = running
    token = make_token(bp, "console-admin", "write")
    api = bp.admin(token)
    for d in ("field-office", "hq-gov"):
        assert api.post("/admin/v1/directories", {"id": d, "name": d,
                                                  "region": "us-gov-west-1"}).status == 201
    ui = Console(browser, f"https://127.0.0.1:{bp.admin_port}", tmp_path / "shots")
    ui.sign_in(token)
    ui.open("/console/registration-codes")
    header = Select(ui.css("#header-directory"))
    assert header.first_selected_option.text == "field-office"
    header.select_by_visible_text("hq-gov")
    ui.submit("#directory-pick")
    assert browser.current_url.endswith("/console/registration-codes"), browser.current_url
    assert Select(ui.css("#header-directory")).first_selected_option.text == "hq-gov"
    form = ui.expand("op-registration-codes-issue")
    assert form.find_element(ui.by.CSS_SELECTOR, ".in-directory").text == "In directory hq-gov."
    ui.fill("#f-count", "3")
    ui.submit(form)
    message = ui.flash()
    assert message.startswith("3 registration codes issued in hq-gov: "), message
    codes = api.get("/admin/v1/registration-codes").body["items"]
    assert sorted(c["directory"] for c in codes) == ["hq-gov"] * 3
    assert sorted(message.split(": ", 1)[1].split(", ")) == sorted(c["code"] for c in codes)
    # The list shows hq-gov's codes, and the selection holds on the next page too.
    assert sorted(ui.column("registration-codes", "directory")) == ["hq-gov"] * 3
    ui.open("/console/workspaces")
    ui.expand("op-workspaces-create")
    assert Select(ui.css("#f-directory")).first_selected_option.text == "hq-gov"


def test_the_owner_is_picked_from_the_directory_users_and_rfc5280_options_start_collapsed(
        browser: Any, running: Any, tmp_path: Path) -> None:
    """Issue 29: the WorkSpace owner is a list of the selected directory's users (not a name
    to type and misspell), and the directory form keeps its RFC 5280 path options folded away
    until asked for (or set)."""
    from selenium.webdriver.support.ui import Select

    bp = running
    token = make_token(bp, "console-admin", "write")
    api = bp.admin(token)
    for d in ("corp", "empty"):
        assert api.post("/admin/v1/directories", {"id": d, "name": d,
                                                  "region": "us-gov-west-1"}).status == 201
    for user in ("bob", "alice"):
        assert api.post("/admin/v1/directories/corp/users", {"username": user}).status == 201
    ui = Console(browser, f"https://127.0.0.1:{bp.admin_port}", tmp_path / "shots")
    ui.sign_in(token)

    # ---- the owner picker lists corp's users (sorted), and the WorkSpace gets the one picked
    ui.open("/console/workspaces?directory_id=corp")
    form = ui.expand("op-workspaces-create")
    assert form.find_element(ui.by.CSS_SELECTOR, "summary").text == "New WorkSpace"
    owner = Select(ui.css("#f-user"))
    assert [o.text for o in owner.options] == ["Choose the owner", "alice", "bob"]
    assert "users of directory corp" in ui.css("[data-field='user'] .owner-help").text
    ui.fill("#f-id", "ws-bob")
    owner.select_by_visible_text("bob")
    Select(ui.css("#f-protocol")).select_by_visible_text("WSP")
    ui.submit(form)
    assert ui.flash() == "WorkSpace ws-bob created (directory corp)", ui.flash()
    assert api.get("/admin/v1/workspaces/ws-bob").body["user"] == "bob"
    # The edit form offers the same list with the owner chosen.
    ui.open("/console/workspaces/edit?resource=workspaces&path.workspace_id=ws-bob")
    assert Select(ui.css("#f-user")).first_selected_option.text == "bob"
    # A directory without users says so instead of offering an empty list.
    ui.open("/console/workspaces?directory_id=empty")
    ui.expand("op-workspaces-create")
    assert [o.text for o in Select(ui.css("#f-user")).options] == ["Choose the owner"]
    assert "has no users yet" in ui.css("[data-field='user'] .owner-help").text

    # ---- the directory form: RFC 5280 options collapsed, there when opened
    ui.open("/console/directories")
    form = ui.expand("op-directories-create")
    advanced = form.find_element(ui.by.CSS_SELECTOR, "details#advanced-pki")
    assert advanced.get_attribute("open") is None
    for field in ("max_chain_depth", "required_policies", "explicit_policy", "aia_fetch"):
        assert not ui.css(f"#f-{field}").is_displayed(), field
    assert ui.css("#f-name").is_displayed() and ui.css("#f-certmap").is_displayed()
    advanced.find_element(ui.by.TAG_NAME, "summary").click()
    assert ui.css("#f-max_chain_depth").is_displayed()
    ui.fill("#f-id", "strict")
    ui.fill("#f-name", "Strict PKI")
    ui.region("us-gov-west-1")
    ui.fill("#f-max_chain_depth", "1")
    ui.submit(form)
    assert ui.flash() == "directory strict created", ui.flash()
    assert api.get("/admin/v1/directories/strict").body["max_chain_depth"] == 1
    # Editing: folded where every option is at its default, open where one is not.
    ui.open("/console/directories/edit?resource=directories&path.directory_id=corp")
    assert ui.css("#advanced-pki").get_attribute("open") is None
    assert not ui.css("#f-max_chain_depth").is_displayed()
    ui.open("/console/directories/edit?resource=directories&path.directory_id=strict")
    assert ui.css("#advanced-pki").get_attribute("open") is not None
    assert ui.css("#f-max_chain_depth").get_attribute("value") == "1"
    ui.shot("directory-advanced")
