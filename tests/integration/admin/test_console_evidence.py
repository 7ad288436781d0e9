"""Refused-login evidence (issue 29, item 6): for every login decision the console's Login
decisions page, the admin API and ``broker admin audit list`` show the client address, the
certificate's subject, UPN and fingerprint and the certmap rule that decided — decoded, never
as \\u escapes — and the page narrows to refusals.

The events are written the way a login writes them (``broker.service.audit.insert`` into the
running broker's database), with the ``certmap_rule`` detail the login's mapping leaves."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tests.integration.admin.conftest import make_token
from tests.integration.admin.test_console_http import Browserish
from tests.support.server import BrokerProcess

SUBJECT = "CN=Zoë O'Brien,OU=Field,O=Agency"
FINGERPRINT = "ab12" * 16


@pytest.fixture
def bp(broker_factory: Any, tmp_path: Any) -> BrokerProcess:
    made: BrokerProcess = broker_factory(f"sqlite:///{tmp_path / 'evidence.db'}")
    made.db_url = f"sqlite:///{tmp_path / 'evidence.db'}"  # type: ignore[attr-defined]
    return made


def write_events(url: str) -> None:
    from broker.service import audit

    engine = create_engine(url)
    with Session(engine) as s, s.begin():
        audit.insert(s, "login.smart_card", "success", directory_id="corp", username="alice",
                     client_address="127.0.2.10", cert_fingerprint="cd34" * 16,
                     certificate={"subject": "CN=Alice,O=Agency", "upn": "alice@corp.example"},
                     certmap_rule="email")
        audit.insert(s, "login.smart_card", "refused", reason="user_not_found",
                     directory_id="corp", client_address="127.51.100.7",
                     cert_fingerprint=FINGERPRINT,
                     certificate={"subject": SUBJECT, "upn": "zoë@corp.example",
                                  "emails": None},
                     certmap_rule=["upn", "email"],
                     verification={"detail": "no user for 'zoë@corp.example'"})
        audit.insert(s, "user.create", "change", directory_id="corp", username="bob",
                     actor="admin:root")
        audit.insert(s, "logon.smart_card", "refused", reason="certificate_revocation_unknown",
                     directory_id="corp", username="alice", client_address="127.0.2.10",
                     cert_fingerprint="cd34" * 16,
                     certificate={"subject": "CN=Alice,O=Agency", "upn": "alice@corp.example"})
    engine.dispose()


def cells(html: str, column: str) -> list[str]:
    found = re.findall(rf'<td data-column="{re.escape(column)}">(.*?)</td>', html, re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c)).strip() for c in found]


def test_login_decisions_show_their_evidence_everywhere(bp: BrokerProcess) -> None:
    token = make_token(bp, "root")
    api = bp.admin(token)
    assert api.post("/admin/v1/directories", {"id": "corp", "name": "Corp",
                                              "region": "us-gov-west-1"}).status == 201
    write_events(bp.db_url)  # type: ignore[attr-defined]

    b = Browserish(bp)
    b.sign_in(token)
    status, _, _, page = b.request("GET", "/console/logins")
    assert status == 200, page
    # login decisions only (the WorkSpace logon's too), newest first
    assert cells(page, "kind") == ["logon.smart_card", "login.smart_card", "login.smart_card"]
    assert cells(page, "outcome") == ["refused", "refused", "success"]
    assert cells(page, "client_address") == ["127.0.2.10", "127.51.100.7", "127.0.2.10"]
    assert cells(page, "subject") == ["CN=Alice,O=Agency", "CN=Zoë O&#39;Brien,OU=Field,O=Agency",
                                      "CN=Alice,O=Agency"]
    assert cells(page, "upn") == ["alice@corp.example", "zoë@corp.example",
                                  "alice@corp.example"]
    assert cells(page, "certmap_rule") == ["—", "upn, email", "email"]
    assert f'title="{FINGERPRINT}"' in page
    assert "\\u00eb" not in page and "\\u0027" not in page
    assert 'id="only-refusals"' in page

    _, _, _, refused = b.request("GET", "/console/logins?outcome=refused")
    assert cells(refused, "outcome") == ["refused", "refused"]
    assert cells(refused, "reason") == ["certificate_revocation_unknown", "user_not_found"]
    assert "<b>refusals only</b>" in refused
    # The audit log still has everything; the kind filter stays on its form.
    _, _, _, log = b.request("GET", "/console/audit")
    assert {"directory.create", "login.smart_card", "user.create"} <= set(cells(log, "kind"))

    # The admin API: the same fields on every event (null where there is none).
    items = api.get("/admin/v1/audit-events?kind=login.*").body["items"]
    assert [(e["client_address"], e["subject"], e["upn"], e["cert_fingerprint"],
             e["certmap_rule"]) for e in items] == [
        ("127.51.100.7", SUBJECT, "zoë@corp.example", FINGERPRINT, "upn, email"),
        ("127.0.2.10", "CN=Alice,O=Agency", "alice@corp.example", "cd34" * 16, "email")]
    [change] = api.get("/admin/v1/audit-events?kind=user.create").body["items"]
    assert change["subject"] is None and change["certmap_rule"] is None

    # The CLI: a column each, decoded, in the table and in --json.
    table = bp.run_cli("admin", "audit", "list", "--kind", "login.*").stdout.splitlines()
    head = table[0].split()
    for column in ("AT", "CLIENT_ADDRESS", "SUBJECT", "UPN", "CERT_FINGERPRINT",
                   "CERTMAP_RULE"):
        assert column in head, head
    assert SUBJECT in table[1] and FINGERPRINT in table[1] and "upn, email" in table[1], \
        table[1]
    raw = bp.run_cli("admin", "audit", "list", "--kind", "login.*", "--json").stdout
    assert "\\u00eb" not in raw and "Zoë" in raw
    assert json.loads(raw)["items"][0]["certmap_rule"] == "upn, email"


def test_an_ldap_directory_owner_is_typed_with_the_known_names_suggested(
        bp: BrokerProcess, tmp_path: Any) -> None:
    """An LDAP-backed directory's users live on its server: the WorkSpace owner is a text field
    suggesting the names the broker knows, with a link to look one up (the users page searches
    the server); a local directory's owner is a list of its users."""
    from tests.support.server import free_port

    token = make_token(bp, "root")
    api = bp.admin(token)
    secret = tmp_path / "ldap.secret"
    secret.write_text("not-used\n")
    secret.chmod(0o600)
    got = api.post("/admin/v1/directories", {
        "id": "ad", "name": "AD", "region": "us-gov-west-1",
        "ldap": {"url": f"ldap://127.0.0.1:{free_port()}", "flavour": "ad",
                 "base_dn": "dc=corp,dc=example", "bind_dn": "cn=svc,dc=corp,dc=example",
                 "bind_password_file": str(secret)}})
    assert got.status == 201, got.body
    # A user the broker met at a login (mapped from the server's entry, as logins store it).
    from broker.store.models import User

    engine = create_engine(bp.db_url)  # type: ignore[attr-defined]
    with Session(engine) as s, s.begin():
        s.add(User(directory_id="ad", username="carol", upn="carol@corp.example"))
    engine.dispose()
    b = Browserish(bp)
    b.sign_in(token)
    _, _, _, page = b.request("GET", "/console/workspaces?directory_id=ad")
    [field] = re.findall(r'<div class="field field-text" data-field="user">(.*?)</div>', page,
                         re.S)
    assert '<input id="f-user" name="user"' in field and 'list="f-user-known"' in field
    assert '<option value="carol">' in field and "<select" not in field
    assert 'href="/console/users?directory_id=ad" class="owner-lookup"' in field
    assert "LDAP server" in field
