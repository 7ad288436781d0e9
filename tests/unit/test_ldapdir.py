"""The pure parts of LDAP directories: RFC 4515 escaping, settings checks, the bind password
file's mode, altSecurityIdentities values, the answer cache (a fake search: one layer only)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from broker.codes import Code
from broker.errors import BrokerError
from broker.pki import issue
from broker.pki.identity import identity_of
from broker.service import ldapdir


def row(**kw: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "id": "d", "certmap": ["upn"], "ldap_url": "ldaps://dc1.corp.example",
        "ldap_start_tls": False, "ldap_ca_file": None, "ldap_flavour": "ad",
        "ldap_base_dn": "DC=corp,DC=example", "ldap_bind_dn": None,
        "ldap_bind_password_file": None, "ldap_user_name_attribute": None,
        "ldap_user_filter": None, "ldap_attributes": None, "ldap_required_groups": [],
        "ldap_cache_ttl_s": 300, "ldap_timeout_s": 3}
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize(("raw", "escaped"), [
    ("*@corp.example", "\\2a@corp.example"),
    ("x)(uid=*", "x\\29\\28uid=\\2a"),
    ("a\\b", "a\\5cb"),
    ("nul\x00", "nul\\00"),
    ("é", "\\c3\\a9"),
    (b"\x30\x82", "0\\82"),
])
def test_escape_follows_rfc_4515(raw: str | bytes, escaped: str) -> None:
    assert ldapdir.escape(raw) == escaped


@pytest.mark.parametrize(("change", "field"), [
    ({"ldap_url": "ldap://dc1.corp.example"}, "ldap.url"),
    ({"ldap_url": "http://dc1"}, "ldap.url"),
    ({"ldap_url": "ldaps://dc1", "ldap_start_tls": True}, "ldap.start_tls"),
    ({"ldap_base_dn": None}, "ldap.base_dn"),
    ({"ldap_bind_dn": "CN=svc"}, "ldap.bind_password_file"),
    ({"ldap_bind_dn": "CN=svc", "ldap_bind_password_file": "rel"}, "ldap.bind_password_file"),
    ({"ldap_user_filter": "objectClass=user"}, "ldap.user_filter"),
    ({"certmap": ["subject"]}, "certmap"),  # no attribute for subject by default
    ({"ldap_flavour": "generic", "certmap": ["alt_security_identities"]}, "certmap"),
    ({"ldap_url": None, "certmap": ["certificate"]}, "certmap"),
])
def test_settings_that_cannot_work_are_refused(change: dict[str, Any], field: str) -> None:
    problem = ldapdir.check_settings(row(**change))
    assert problem is not None and problem[0] == field


def test_plain_ldap_on_loopback_and_start_tls_are_accepted() -> None:
    assert ldapdir.check_settings(row(ldap_url="ldap://127.0.0.1:3389")) is None
    assert ldapdir.check_settings(row(ldap_url="ldap://dc1", ldap_start_tls=True)) is None
    assert ldapdir.check_settings(row(ldap_url=None, certmap=["upn"])) is None


def test_bind_password_file_mode_is_checked(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    assert ldapdir.read_bind_password(str(secret)) == "s3cret"
    secret.chmod(0o640)
    with pytest.raises(BrokerError) as got:
        ldapdir.read_bind_password(str(secret))
    assert "chmod 600" in got.value.message and "s3cret" not in got.value.message


def test_strong_alt_security_identities() -> None:
    root = issue.make_root("Corp Root CA")
    leaf = issue.make_user_cert(root, "Anna")
    values = ldapdir.alt_security_identities(leaf.cert_der(), weak=False)
    n = leaf.cert.serial_number
    serial = n.to_bytes((n.bit_length() + 7) // 8, "big")[::-1].hex()
    assert values[0] == f"X509:<I>C=US,O=Example Agency,CN=Corp Root CA<SR>{serial}"
    assert values[1].startswith("X509:<SKI>") or values[1].startswith("X509:<SHA1-PUKEY>")
    assert all("<S>" not in v and "<RFC822>" not in v for v in values)
    weak = ldapdir.alt_security_identities(leaf.cert_der(), weak=True)
    assert weak[0].startswith("X509:<I>C=US,O=Example Agency,CN=Corp Root CA<S>")


def test_weak_mapping_is_warned() -> None:
    assert ldapdir.warnings_of(row(certmap=["alt_security_identities_weak"]))[0]["code"] == \
        "weak_certificate_mapping"
    assert ldapdir.warnings_of(row(certmap=["alt_security_identities"])) == []


def test_cache_keeps_answers_and_refusals_for_less(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    service = ldapdir.LdapDirectories(clock=lambda: now[0])
    s = ldapdir.settings_of(row())
    assert s is not None
    calls: list[str] = []
    answer: list[Any] = [ldapdir.LdapUser("anna", "CN=anna", "upn")]

    def fake(_s: Any, _values: Any, _rules: Any) -> Any:
        calls.append("search")
        if isinstance(answer[0], Exception):
            raise answer[0]
        return answer[0]

    monkeypatch.setattr(service, "_lookup", fake)
    root = issue.make_root("R")
    leaf = issue.make_user_cert(root, "Anna", upn="anna@corp.example")
    ident = identity_of(leaf.cert)
    assert service.lookup(s, ident, leaf.cert_der(), ["upn"]).username == "anna"
    assert service.lookup(s, ident, leaf.cert_der(), ["upn"]).username == "anna"
    assert calls == ["search"]  # cache-warm: no search
    now[0] += 301
    answer[0] = ldapdir._refuse(Code.ACCOUNT_DISABLED, "disabled", "upn", "CN=anna")
    with pytest.raises(ldapdir.LdapRefusal):
        service.lookup(s, ident, leaf.cert_der(), ["upn"])
    now[0] += ldapdir.NEGATIVE_TTL_S - 1
    with pytest.raises(ldapdir.LdapRefusal):
        service.lookup(s, ident, leaf.cert_der(), ["upn"])
    assert len(calls) == 2
    now[0] += 2
    answer[0] = ldapdir.LdapUser("anna", "CN=anna", "upn")
    assert service.lookup(s, ident, leaf.cert_der(), ["upn"]).username == "anna"
    assert len(calls) == 3


def test_parse_pairs() -> None:
    assert ldapdir.parse_pairs("upn=userPrincipalName, email=mail") == {
        "upn": "userPrincipalName", "email": "mail"}
    with pytest.raises(ValueError):
        ldapdir.parse_pairs("upn")


def test_console_shows_attributes_as_the_text_it_accepts() -> None:
    from broker.web.console import row_value

    row = {"ldap": {"attributes": {"upn": "userPrincipalName", "email": "mail"}}}
    text = row_value(row, "ldap.attributes")
    assert text == "upn=userPrincipalName, email=mail"
    assert ldapdir.parse_pairs(text) == row["ldap"]["attributes"]


def test_bounded_calls_run_concurrently_and_one_hang_blocks_new_attempts() -> None:
    import threading

    s = ldapdir.settings_of(row(ldap_timeout_s=1))
    assert s is not None
    pool = ldapdir._Pool(s)
    go = threading.Event()
    results: list[Any] = []

    def caller() -> None:
        try:
            results.append(pool.bounded(lambda: go.wait(10) and "ok"))
        except BrokerError as exc:
            results.append(exc.code)

    callers = [threading.Thread(target=caller) for _ in range(2)]
    for t in callers:
        t.start()
    go.set()
    for t in callers:
        t.join(10)
    assert results == ["ok", "ok"]  # two connects at once are not an outage

    never = threading.Event()
    with pytest.raises(BrokerError) as hung:
        pool.bounded(lambda: never.wait(30))
    assert hung.value.code == Code.DIRECTORY_UNAVAILABLE
    with pytest.raises(BrokerError) as fast:
        pool.bounded(lambda: "x")
    assert "still unanswered" in fast.value.message
    never.set()
    for t in list(pool._stuck):
        t.join(10)
    assert pool.bounded(lambda: "x") == "x"


def test_one_deadline_bounds_a_whole_lookup() -> None:
    now = [100.0]
    s = ldapdir.settings_of(row(ldap_timeout_s=3))
    assert s is not None
    deadline = ldapdir.Deadline(s, clock=lambda: now[0])
    assert deadline.left() == 3.0
    now[0] += 2.5  # a search that took 2.5 s: what is left is what a retry may wait
    assert deadline.left() == pytest.approx(0.5)
    now[0] += 0.5
    with pytest.raises(BrokerError) as spent:
        deadline.left()
    assert spent.value.code == Code.DIRECTORY_UNAVAILABLE
    assert "within 3 s" in spent.value.message
