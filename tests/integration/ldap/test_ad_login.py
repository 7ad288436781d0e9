"""Smart-card logins through a running broker whose directory is a real Samba AD DC (flavour
ad): the UPN in the SAN, the strong altSecurityIdentities mapping (issuer + serial), disabled and
expired accounts, nested required groups (LDAP_MATCHING_RULE_IN_CHAIN, part of the one search a
first login costs), the exact certificate (``userCertificate``), injection attempts in the UPN,
and ``broker admin directories test-lookup``.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from broker.pki import issue
from tests.support.dirfile import directory, render, value, workspace
from tests.support.ldapserver import SambaDc
from tests.support.softcard import SoftCard, SoftClient

pytestmark = pytest.mark.slow


def _card(inter: issue.Issued, cn: str, **kw: Any) -> SoftCard:
    got = issue.make_user_cert(inter, cn, **kw)
    return SoftCard(got.key, got.cert, [inter.cert])


def strong_mapping(card: SoftCard) -> str:
    """X509:<I>issuer<SR>serial as Microsoft documents it (KB5014754): the issuer's RDNs in
    encoded order, the serial number's bytes reversed, in hex."""
    n = card.cert.serial_number
    serial = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return f"X509:<I>C=US,O=Example Agency,CN=Corp Issuing CA<SR>{serial[::-1].hex().upper()}"


@pytest.fixture
def ad(samba_dc: SambaDc, broker: Any, tmp_path: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    root = issue.make_root("Corp Root CA")
    inter = issue.make_intermediate(root, "Corp Issuing CA")
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "root.pem").write_bytes(root.cert_pem())
    (pki / "issuing.pem").write_bytes(inter.cert_pem())
    n = {k: f"{k}{tag}" for k in ("anna", "bert", "cora", "dora", "emil", "gus", "twin1",
                                  "twin2")}
    cards = {
        "anna": _card(inter, "Anna", upn=f"{n['anna']}@corp.example"),
        "bert": _card(inter, "Bert"),  # no UPN: strong altSecurityIdentities mapping
        "cora": _card(inter, "Cora"),  # no UPN: the exact certificate in userCertificate
        "dora": _card(inter, "Dora", upn=f"{n['dora']}@corp.example"),
        "emil": _card(inter, "Emil", upn=f"{n['emil']}@corp.example"),
        "gus": _card(inter, "Gus", upn=f"{n['gus']}@corp.example"),
        "star": _card(inter, "Star", upn="*@corp.example"),
        "inject": _card(inter, "Inject", upn="*)(sAMAccountName=*"),
        "twin": _card(inter, "Twin"),
    }
    dc = samba_dc
    dns = {
        "anna": dc.user(n["anna"], upn=f"{n['anna']}@corp.example"),
        "bert": dc.user(n["bert"], alt_security_identities=[strong_mapping(cards["bert"])]),
        "cora": dc.user(n["cora"], cert_der=cards["cora"].cert.public_bytes(
            serialization.Encoding.DER)),
        "dora": dc.user(n["dora"], upn=f"{n['dora']}@corp.example", disabled=True),
        "emil": dc.user(n["emil"], upn=f"{n['emil']}@corp.example",
                        expires=datetime.now(UTC) - timedelta(days=1)),
        "gus": dc.user(n["gus"], upn=f"{n['gus']}@corp.example"),  # in no group
        "twin1": dc.user(n["twin1"], alt_security_identities=[strong_mapping(cards["twin"])]),
        "twin2": dc.user(n["twin2"], alt_security_identities=[strong_mapping(cards["twin"])]),
    }
    inner = dc.group(f"inner{tag}", [dns[k] for k in dns if k != "gus"])
    outer = dc.group(f"outer{tag}", [inner])  # required: anna is in it only through inner
    secret = dc.write_secret(tmp_path / "ldap.secret")
    (tmp_path / "ad-ca.pem").write_bytes(dc.ca.cert_pem())
    ldap = {"url": dc.ldaps_url, "ca_file": "ad-ca.pem", "flavour": "ad",
            "base_dn": dc.base_dn, "bind_dn": dc.svc_dn, "bind_password_file": str(secret),
            "user_name_attribute": "sAMAccountName", "required_groups": [outer],
            "timeout_s": 5}
    text = directory(
        "ad", "Corp AD", password_login=True,
        smart_card={"pre_session": True, "in_session": True}, revocation={"crl": False},
        trust_anchors=["pki/root.pem"], intermediates=["pki/issuing.pem"],
        certmap=["upn", "alt_security_identities", "certificate"],
        workspaces=[workspace(n[k], id=f"ws-{n[k]}") for k in ("anna", "bert", "cora", "gus")])
    text = text.replace("registration_codes = 1\n", "registration_codes = 1\n\n[directory.ldap]\n"
                        + "\n".join(f"{k} = {value(v)}" for k, v in ldap.items()) + "\n")
    path = tmp_path / "directories.toml"
    path.write_text(render(text))
    out = broker.run_cli("admin", "apply", str(path), "--json")
    code = json.loads(out.stdout)["directories"][0]["registration_codes"][0]
    return {"code": code, "cards": cards, "names": n, "dns": dns, "tmp": tmp_path}


def test_smart_card_logins_through_active_directory(broker: Any, ad: dict[str, Any]) -> None:
    c = SoftClient(broker.client(), ad["code"])
    cards, n = ad["cards"], ad["names"]
    got = c.login(cards["anna"])  # UPN; in the required group only through a nested group
    assert got.status == 200, got.body
    assert got.body["user"]["username"] == n["anna"]
    assert got.body["user"]["upn"] == f"{n['anna']}@corp.example"
    assert [w["id"] for w in got.body["workspaces"]] == [f"ws-{n['anna']}"]
    got = c.login(cards["bert"])  # strong altSecurityIdentities (issuer + serial)
    assert got.status == 200, got.body
    assert got.body["user"]["username"] == n["bert"]
    got = c.login(cards["cora"])  # the exact certificate (userCertificate, octet match)
    assert got.status == 200, got.body
    assert got.body["user"]["username"] == n["cora"]
    assert [w["id"] for w in got.body["workspaces"]] == [f"ws-{n['cora']}"]
    assert c.login(cards["dora"]).code == "account_disabled"
    assert c.login(cards["emil"]).code == "account_expired"
    assert c.login(cards["gus"]).code == "not_in_required_group"
    assert c.login(cards["twin"]).code == "user_ambiguous"


def _searches(broker: Any, directory_id: str) -> int:
    """LDAP searches the broker made for a directory so far (its metric)."""
    text = str(broker.admin().request("GET", "/metrics").body)
    label = re.escape(f'directory="{directory_id}"')
    return sum(int(float(m.group(1))) for m in re.finditer(
        r"broker_ldap_request_duration_seconds_count\{" + label + r',result="[a-z]+"\} ([0-9.e+]+)',
        text))


def test_a_first_login_costs_one_search_with_nested_required_groups(
        broker: Any, ad: dict[str, Any]) -> None:
    c = SoftClient(broker.client(), ad["code"])
    before = _searches(broker, "ad")
    got = c.login(ad["cards"]["anna"])  # in the required group only through a nested one
    assert got.status == 200, got.body
    assert _searches(broker, "ad") - before == 1
    assert c.login(ad["cards"]["anna"]).status == 200  # cache-warm: none
    assert _searches(broker, "ad") - before == 1
    # A miss costs a second search, which tells the refusal apart.
    assert c.login(ad["cards"]["gus"]).code == "not_in_required_group"
    assert _searches(broker, "ad") - before == 3
    assert c.login(ad["cards"]["star"]).code == "user_not_found"
    assert _searches(broker, "ad") - before == 5


def test_upn_injection_matches_nobody(broker: Any, ad: dict[str, Any]) -> None:
    c = SoftClient(broker.client(), ad["code"])
    for card in ("star", "inject"):
        got = c.login(ad["cards"][card])
        assert got.code == "user_not_found", (card, got.body)


def test_refusal_audit_names_rule_and_dn(broker: Any, ad: dict[str, Any]) -> None:
    c = SoftClient(broker.client(), ad["code"])
    assert c.login(ad["cards"]["dora"]).code == "account_disabled"
    out = broker.run_cli("admin", "audit", "list", "--json")
    refused = [e for e in json.loads(out.stdout)["items"]
               if e.get("reason") == "account_disabled"]
    assert refused
    text = json.dumps(refused[0])
    assert ad["dns"]["dora"] in text and '"rule": "upn"' in text


def test_password_login_binds_to_active_directory(broker: Any, ad: dict[str, Any]) -> None:
    api = broker.client()
    name = ad["names"]["anna"]
    ok = api.post("/v1/auth/password", {"registration_code": ad["code"], "username": name,
                                        "password": f"Us3r!{name}"})
    assert ok.status == 200, ok.body
    bad = api.post("/v1/auth/password", {"registration_code": ad["code"], "username": name,
                                         "password": "Wrong!Passw0rd"})
    assert bad.code == "invalid_credentials"


def test_test_lookup_explains_the_mapping(broker: Any, ad: dict[str, Any]) -> None:
    pem = ad["tmp"] / "anna.pem"
    pem.write_bytes(ad["cards"]["anna"].cert.public_bytes(serialization.Encoding.PEM))
    out = broker.run_cli("admin", "directories", "test-lookup", "ad", "--certificate",
                         str(pem), "--json")
    found = json.loads(out.stdout)
    assert (found["user"], found["rule"], found["dn"]) == (
        ad["names"]["anna"], "upn", ad["dns"]["anna"])
    pem = ad["tmp"] / "bert.pem"
    pem.write_bytes(ad["cards"]["bert"].cert.public_bytes(serialization.Encoding.PEM))
    found = json.loads(broker.run_cli("admin", "directories", "test-lookup", "ad",
                                      "--certificate", str(pem), "--json").stdout)
    assert found["rule"] == "alt_security_identities"
    pem = ad["tmp"] / "cora.der"  # a DER file works too
    pem.write_bytes(ad["cards"]["cora"].cert.public_bytes(serialization.Encoding.DER))
    found = json.loads(broker.run_cli("admin", "directories", "test-lookup", "ad",
                                      "--certificate", str(pem), "--json").stdout)
    assert (found["user"], found["rule"], found["dn"]) == (
        ad["names"]["cora"], "certificate", ad["dns"]["cora"])
    pem = ad["tmp"] / "dora.pem"
    pem.write_bytes(ad["cards"]["dora"].cert.public_bytes(serialization.Encoding.PEM))
    out = broker.run_cli("admin", "directories", "test-lookup", "ad", "--certificate",
                         str(pem), "--json", check=False)
    assert out.returncode == 1
    refusal = json.loads(out.stdout)["error"]
    assert refusal["code"] == "account_disabled"
    assert refusal["details"]["dn"] == ad["dns"]["dora"]


def test_doctor_checks_bind_and_search(broker: Any, ad: dict[str, Any]) -> None:
    out = broker.run_cli("doctor", check=False)
    lines = [line for line in out.stdout.splitlines() if line.split()[1:2] == ["ldap"]]
    assert lines and lines[0].startswith("OK"), out.stdout
    assert "bound, base DN found" in lines[0]
    secret = ad["tmp"] / "ldap.secret"
    secret.chmod(0o644)  # readable by others: refused like ssh refuses such a key
    out = broker.run_cli("doctor", check=False)
    lines = [line for line in out.stdout.splitlines() if line.split()[1:2] == ["ldap"]]
    assert lines[0].startswith("FAIL") and "chmod 600" in lines[0], out.stdout
    assert "Svc!Passw0rd" not in out.stdout + out.stderr
