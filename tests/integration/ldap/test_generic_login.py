"""Smart-card and password logins through a running broker whose directory's users live in a
real OpenLDAP slapd (flavour generic): mapping by email and by the exact certificate, RFC 4515
escaping, required groups via memberOf, the password bind, and the directory file round trip.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from broker.pki import issue
from tests.support.dirfile import directory, render, value, workspace
from tests.support.ldapserver import Slapd
from tests.support.softcard import SoftCard, SoftClient

pytestmark = pytest.mark.slow


def _card(inter: issue.Issued, cn: str, **kw: Any) -> SoftCard:
    got = issue.make_user_cert(inter, cn, **kw)
    return SoftCard(got.key, got.cert, [inter.cert])


@pytest.fixture
def setup(slapd: Slapd, broker: Any, tmp_path: Path) -> dict[str, Any]:
    """A PKI, people in slapd (unique per test: the server is shared by the session), and an
    LDAP directory applied through the CLI."""
    tag = uuid.uuid4().hex[:8]
    root = issue.make_root("Corp Root CA")
    inter = issue.make_intermediate(root, "Corp Issuing CA")
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "root.pem").write_bytes(root.cert_pem())
    (pki / "issuing.pem").write_bytes(inter.cert_pem())
    names = {k: f"{k}-{tag}" for k in ("gina", "hank", "ivan", "twin1", "twin2", "stranger")}
    cards = {
        "gina": _card(inter, "Gina", email=f"{names['gina']}@corp.example"),
        "hank": _card(inter, "Hank", email=f"{names['hank']}@corp.example"),
        "ivan": _card(inter, "Ivan"),  # no email: mapped by the exact certificate
        "twin": _card(inter, "Twin", email=f"twin-{tag}@corp.example"),
        "star": _card(inter, "Star", email="*@corp.example"),
        "inject": _card(inter, "*)(uid=*"),  # subject CN=*)(uid=*
        "stranger": _card(inter, "Stranger", email=f"{names['stranger']}@corp.example"),
    }
    group = f"staff-{tag}"
    dns = {
        "gina": slapd.person(names["gina"], mail=f"{names['gina']}@corp.example",
                             password="gina's password"),
        "hank": slapd.person(names["hank"], mail=f"{names['hank']}@corp.example"),
        "ivan": slapd.person(names["ivan"], cert_der=cards["ivan"].cert.public_bytes(
            serialization.Encoding.DER)),
        "twin1": slapd.person(names["twin1"], mail=f"twin-{tag}@corp.example"),
        "twin2": slapd.person(names["twin2"], mail=f"twin-{tag}@corp.example"),
    }
    slapd.group(group, [dns["gina"], dns["ivan"], dns["twin1"], dns["twin2"]])
    secret = slapd.write_secret(tmp_path / "ldap.secret")
    (tmp_path / "ldap-ca.pem").write_bytes(slapd.ca.cert_pem())
    ldap = {"url": slapd.ldaps_url, "ca_file": "ldap-ca.pem", "flavour": "generic",
            "base_dn": slapd.base_dn, "bind_dn": slapd.svc_dn,
            "bind_password_file": str(secret),
            "attributes": {"subject": "description"},
            "required_groups": [f"cn={group},ou=groups,{slapd.base_dn}"], "cache_ttl_s": 300,
            "timeout_s": 3}
    text = directory(
        "gen", "Generic LDAP", password_login=True,
        smart_card={"pre_session": True, "in_session": True}, revocation={"crl": False},
        trust_anchors=["pki/root.pem"], intermediates=["pki/issuing.pem"],
        certmap=["email", "certificate", "subject"],
        workspaces=[workspace(names["gina"], id=f"ws-gina-{tag}"),
                    workspace(names["ivan"], id=f"ws-ivan-{tag}"),
                    workspace(names["hank"], id=f"ws-hank-{tag}")])
    text = text.replace("registration_codes = 1\n", "registration_codes = 1\n\n[directory.ldap]\n"
                        + "\n".join(f"{k} = {value(v)}" for k, v in ldap.items()) + "\n")
    path = tmp_path / "directories.toml"
    path.write_text(render(text))
    out = broker.run_cli("admin", "apply", str(path), "--json")
    code = json.loads(out.stdout)["directories"][0]["registration_codes"][0]
    return {"code": code, "cards": cards, "names": names, "tag": tag, "path": path,
            "ldap": ldap, "secret": secret}


def _client(broker: Any, code: str) -> SoftClient:
    return SoftClient(broker.client(), code)


def test_logins_map_through_slapd(broker: Any, setup: dict[str, Any]) -> None:
    c = _client(broker, setup["code"])
    names, cards = setup["names"], setup["cards"]
    got = c.login(cards["gina"])
    assert got.status == 200, got.body
    assert got.body["user"]["username"] == names["gina"]
    assert [w["id"] for w in got.body["workspaces"]] == [f"ws-gina-{setup['tag']}"]
    # The exact certificate in userCertificate;binary.
    got = c.login(cards["ivan"])
    assert got.status == 200, got.body
    assert got.body["user"]["username"] == names["ivan"]
    # Nobody by email, nor by certificate.
    assert c.login(cards["stranger"]).code == "user_not_found"
    # Two entries with the same mail: refused, never "the first one".
    assert c.login(cards["twin"]).code == "user_ambiguous"
    # Not in the required group (hank exists and has a WorkSpace).
    assert c.login(cards["hank"]).code == "not_in_required_group"


def test_filter_injection_matches_nobody(broker: Any, setup: dict[str, Any]) -> None:
    """RFC 4515 escaping: a SAN email ``*@corp.example`` or a subject ``CN=*)(uid=*`` is a
    literal value (every person has a uid; the filter would match them all unescaped)."""
    c = _client(broker, setup["code"])
    for card in ("star", "inject"):
        got = c.login(setup["cards"][card])
        assert got.code == "user_not_found", (card, got.body)


def test_refusals_are_audited_with_rule_and_dn(broker: Any, setup: dict[str, Any]) -> None:
    c = _client(broker, setup["code"])
    assert c.login(setup["cards"]["hank"]).code == "not_in_required_group"
    out = broker.run_cli("admin", "audit", "list", "--json")
    events = json.loads(out.stdout)["items"]
    refused = [e for e in events if e.get("reason") == "not_in_required_group"]
    assert refused, events[:3]
    details = json.dumps(refused[0])
    assert f"uid={setup['names']['hank']},ou=people" in details
    assert '"rule": "email"' in details


def test_password_login_binds_as_the_user(broker: Any, setup: dict[str, Any]) -> None:
    api = broker.client()
    name = setup["names"]["gina"]
    ok = api.post("/v1/auth/password", {"registration_code": setup["code"], "username": name,
                                        "password": "gina's password"})
    assert ok.status == 200, ok.body
    assert ok.body["user"]["username"] == name
    bad = api.post("/v1/auth/password", {"registration_code": setup["code"],
                                         "username": name, "password": "wrong"})
    assert bad.code == "invalid_credentials"
    empty = api.post("/v1/auth/password", {"registration_code": setup["code"],
                                           "username": name, "password": ""})
    assert empty.status >= 400


def test_export_and_dry_run_carry_the_settings_not_the_secret(broker: Any,
                                                              setup: dict[str, Any],
                                                              tmp_path: Path) -> None:
    password = "svc secret"
    changed = setup["path"].with_name("changed.toml")
    changed.write_text(setup["path"].read_text().replace("timeout_s = 3", "timeout_s = 5")
                       .replace("ldap-ca.pem", "./ldap-ca.pem"))
    dry = broker.run_cli("admin", "apply", str(changed), "--dry-run")
    assert "directory gen.ldap.timeout_s: 3 → 5" in dry.stdout, dry.stdout
    assert password not in dry.stdout + dry.stderr
    target = tmp_path / "export.toml"
    broker.run_cli("admin", "export", "gen", "--output", str(target))
    exported = target.read_text()
    assert "[directory.ldap]" in exported, exported
    assert f'bind_password_file = "{setup["secret"]}"' in exported
    assert 'flavour = "generic"' in exported
    assert password not in exported
    # What was exported applies again with no change.
    again = broker.run_cli("admin", "apply", str(target), "--json")
    assert [d.get("changes", 0) for d in json.loads(again.stdout)["directories"]] == [0]


def test_workspace_owner_must_exist_in_ldap(broker: Any, setup: dict[str, Any]) -> None:
    text = setup["path"].read_text().replace(
        f"user = \"{setup['names']['hank']}\"", f"user = \"nobody-{setup['tag']}\"")
    bad = setup["path"].with_name("bad.toml")
    bad.write_text(text)
    out = broker.run_cli("admin", "apply", str(bad), check=False)
    assert out.returncode != 0
    assert "holds no user" in out.stderr + out.stdout


def test_the_name_row_holds_only_the_name_and_deleting_it_clears_the_broker_side(
        broker: Any, setup: dict[str, Any], tmp_path: Path) -> None:
    """The one row the broker keeps per LDAP user (README "The name row"): the name, nothing
    of the entry; not exported; deleting it deletes the user's WorkSpaces and tokens in the
    broker, not the entry, and the next login makes a new, empty one."""
    name, tag = setup["names"]["gina"], setup["tag"]
    c = _client(broker, setup["code"])
    got = c.login(setup["cards"]["gina"])
    assert got.status == 200, got.body
    token = got.body["auth_token"]
    row = json.loads(broker.run_cli("admin", "users", "get", "gen", name, "--json").stdout)
    assert row["username"] == name
    assert not row.get("upn") and not row.get("email"), row  # the login saw both in slapd
    assert got.body["user"]["email"] == f"{name}@corp.example"
    target = tmp_path / "export.toml"
    broker.run_cli("admin", "export", "gen", "--output", str(target))
    assert "[[directory.user]]" not in target.read_text()
    # Nothing of the entry can be written into the row either.
    refused = broker.run_cli("admin", "users", "update", "gen", name, "--upn",
                             f"{name}@elsewhere.example", check=False)
    assert refused.returncode != 0
    assert "live in its LDAP server; change them there" in refused.stdout + refused.stderr
    assert not json.loads(broker.run_cli("admin", "users", "get", "gen", name,
                                         "--json").stdout).get("upn")

    broker.run_cli("admin", "users", "delete", "gen", name)
    gone = broker.client().post(f"/v1/workspaces/ws-gina-{tag}/connect", {}, token=token)
    assert gone.status == 401, gone.body  # the token went with the row
    # The entry is untouched: she still logs in (a card needs a WSP WorkSpace, which went with
    # the row, so her password), with a new, empty name row.
    assert c.login(setup["cards"]["gina"]).code == "smart_card_requires_wsp"
    again = broker.client().post("/v1/auth/password", {
        "registration_code": setup["code"], "username": name, "password": "gina's password"})
    assert again.status == 200, again.body
    assert again.body["workspaces"] == []
    assert f"ws-gina-{tag}" not in broker.run_cli("admin", "workspaces", "list", "--json").stdout
