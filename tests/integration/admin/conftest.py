"""Fixtures for the admin API tests: a running broker, admin tokens, a small PKI."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.server import ApiClient, BrokerProcess


def make_token(bp: BrokerProcess, name: str, scope: str = "write") -> str:
    out = bp.run_cli("admin", "token", "create", "--name", name, "--scope", scope, "--json")
    return json.loads(out.stdout)["token"]


def _documented_operation(method: str, path: str) -> Any:
    from broker.web.openapi import OPERATIONS

    for (m, template), op in OPERATIONS["admin"].items():
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
        if m == method and re.fullmatch(pattern, path):
            return op
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


@dataclass
class Admin:
    """An admin API client that checks every success against the OpenAPI document: the
    documented status and the documented response model (which forbids unknown fields)."""

    broker: BrokerProcess
    api: ApiClient
    token_name: str

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        r = self.api.request(method, f"/admin/v1{path}", body, **kw)
        if r.status < 300:
            op = _documented_operation(method, f"/admin/v1{path.split('?')[0]}")
            assert r.status == op.status, (method, path, r.status, op.status)
            if op.out is not None:
                op.out.model_validate(r.body)
        return r

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


@pytest.fixture
def admin(broker: BrokerProcess) -> Admin:
    """A write-scoped admin API client on the parametrised (SQLite, PostgreSQL) broker."""
    return Admin(broker, broker.admin(make_token(broker, "t")), "t")


@dataclass
class Pki:
    root: Any
    issuing: Any
    leaf: Any
    crl: Any

    def pem(self, which: str) -> str:
        return getattr(self, which).cert_pem().decode()

    def crl_pem(self) -> str:
        return self.crl.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="session")
def pki() -> Pki:
    from broker.pki import issue

    root = issue.make_root("Admin Test Root CA")
    inter = issue.make_intermediate(root, "Admin Test Issuing CA")
    leaf = issue.make_user_cert(inter, "Leaf User", upn="leaf@corp.example")
    return Pki(root, inter, leaf, issue.make_crl(inter, [leaf.cert.serial_number]))


DIRECTORY = {"id": "corp", "name": "Corp GovCloud", "region": "us-gov-west-1",
             "password_login": True,
             "smart_card": {"pre_session": True, "in_session": True, "removal_action": "lock"},
             "revocation": {"crl": True, "ocsp": False, "fail_mode": "soft"},
             "certmap": ["upn", "email"]}
