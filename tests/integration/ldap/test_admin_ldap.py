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
