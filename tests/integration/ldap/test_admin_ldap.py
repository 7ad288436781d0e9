"""The ldap object through the admin API (declared once: API, OpenAPI, CLI, file), its checks,
and WorkSpaces of LDAP users (the owner must exist in the directory's server)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.admin.conftest import Admin, make_token
from tests.support.ldapserver import Slapd

pytestmark = pytest.mark.slow


@pytest.fixture
def admin(broker: Any) -> Admin:
    return Admin(broker, broker.admin(make_token(broker, "ldap-admin")), "ldap-admin")


def _ldap(slapd: Slapd, secret: Path) -> dict[str, Any]:
    return {"url": slapd.ldaps_url, "ca_file": str(slapd.ca_file), "flavour": "generic",
            "base_dn": slapd.base_dn, "bind_dn": slapd.svc_dn,
            "bind_password_file": str(secret)}


def test_ldap_directory_through_the_admin_api(admin: Admin, slapd: Slapd,
                                              tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    secret = slapd.write_secret(tmp_path / "ldap.secret")
    slapd.person(f"lena-{tag}", mail=f"lena-{tag}@corp.example")
    body = {"id": f"l{tag}", "name": "LDAP", "region": "us-gov-west-1",
            "certmap": ["email", "certificate"], "ldap": _ldap(slapd, secret)}
    created = admin.post("/directories", body)
    assert created.status == 201, created.body
    assert created.body["ldap"]["bind_password_file"] == str(secret)
    assert slapd.svc_password not in str(created.body)

    refusals = [
        ({"url": "ldap://dc1.corp.example"}, "ldap.url"),  # plain LDAP off loopback
        ({"url": "ldaps://dc1.corp.example", "start_tls": True}, "ldap.start_tls"),
        ({"bind_password_file": "ldap.secret"}, "ldap.bind_password_file"),  # relative
        ({"attributes": {"nonsense": "x"}}, "ldap.attributes"),
        ({"url": "ldaps://dc1.corp.example/?x"}, "ldap.url"),
    ]
    for change, field in refusals:
        got = admin.patch(f"/directories/l{tag}", {"ldap": change})
        assert got.status == 400, (change, got.body)
        assert field in got.body["error"]["message"], (change, got.body)
    # LDAP-only certmap rules on a directory with its own users.
    local = admin.post("/directories", {"id": f"m{tag}", "name": "Local",
                                        "region": "us-gov-west-1", "certmap": ["certificate"]})
    assert local.status == 400 and "certmap" in local.body["error"]["message"]

    ws = {"id": f"ws-{tag}", "directory": f"l{tag}", "user": f"nobody-{tag}",
          "protocol": "WSP", "running_mode": "ALWAYS_ON"}
    missing = admin.post("/workspaces", ws)
    assert missing.status == 404, missing.body
    assert "holds no user" in missing.body["error"]["message"]
    made = admin.post("/workspaces", {**ws, "user": f"lena-{tag}"})
    assert made.status == 201, made.body
    users = admin.post(f"/directories/l{tag}/users", {"username": f"x-{tag}"})
    assert users.status == 400 and "LDAP server" in users.body["error"]["message"]


def test_bind_password_file_readable_by_others_is_refused(admin: Admin, broker: Any,
                                                          slapd: Slapd, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    secret = slapd.write_secret(tmp_path / "ldap.secret")
    secret.chmod(0o640)
    assert admin.post("/directories", {"id": f"p{tag}", "name": "P", "region": "us-gov-west-1",
                                       "certmap": ["email"],
                                       "ldap": _ldap(slapd, secret)}).status == 201
    got = admin.post("/workspaces", {"id": f"ws-p{tag}", "directory": f"p{tag}",
                                     "user": "someone", "protocol": "WSP",
                                     "running_mode": "ALWAYS_ON"})
    assert got.status == 503 and got.body["error"]["code"] == "directory_unavailable"
    assert "chmod 600" in got.body["error"]["message"]
    assert slapd.svc_password not in broker.logs()


def _settings(slapd: Slapd, secret: Path, **kw: Any) -> Any:
    from types import SimpleNamespace

    from broker.service.ldapdir import settings_of

    conf = {**_ldap(slapd, secret), **kw}
    return settings_of(SimpleNamespace(id="tls", certmap=["email"], **{
        f"ldap_{k}": conf.get(k) for k in (
            "url", "start_tls", "ca_file", "flavour", "base_dn", "bind_dn",
            "bind_password_file", "user_name_attribute", "user_filter", "attributes",
            "required_groups", "cache_ttl_s", "timeout_s")}))


def test_tls_is_checked_ca_and_hostname(slapd: Slapd, tmp_path: Path) -> None:
    """In process (one layer: the LDAP client against the real slapd): the right CA and name
    bind over ldaps and StartTLS; another CA, or a name the certificate does not carry, is
    directory_unavailable before any password is sent."""
    from broker.errors import BrokerError
    from broker.pki import issue
    from broker.service.ldapdir import LdapDirectories

    secret = slapd.write_secret(tmp_path / "ldap.secret")
    service = LdapDirectories()
    assert service.check(_settings(slapd, secret))["search"]
    assert service.check(_settings(slapd, secret, url=slapd.ldap_url, start_tls=True))["search"]
    other = tmp_path / "other-ca.pem"
    other.write_bytes(issue.make_root("Some Other CA").cert_pem())
    for bad in (_settings(slapd, secret, ca_file=str(other)),
                # the certificate names 127.0.0.1 only
                _settings(slapd, secret, url=f"ldaps://localhost:{slapd.ldaps_port}"),
                _settings(slapd, secret, url=slapd.ldap_url, start_tls=True,
                          ca_file=str(other))):
        with pytest.raises(BrokerError) as refused:
            service.check(bad)
        assert refused.value.code == "directory_unavailable", bad.url
