"""The OpenAPI documents and the routes cannot disagree, and the admin API is what we say it is.

The admin routes and the OpenAPI document are both generated from the resource declarations, so
comparing one with the other proves little. The admin API is therefore checked against
``ADMIN_API`` below: a hand-kept list of every method, path and access the admin API must have.
A route that appears, disappears or changes its access fails here until this list is changed
on purpose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.web import openapi
from broker.web.errors import STATUS
from broker.web.http import Access, JsonApi

R, W, A = Access.ADMIN_READ, Access.ADMIN_WRITE, Access.ANONYMOUS
D = "/admin/v1/directories/{directory_id}"

#: Every route of the admin API: (method, path) → who may call it. Kept by hand on purpose.
ADMIN_API: dict[tuple[str, str], Access] = {
    ("GET", "/healthz"): A, ("GET", "/readyz"): A, ("GET", "/metrics"): A,
    ("GET", "/admin/v1/openapi.json"): A,
    ("GET", "/admin/v1/directories"): R, ("POST", "/admin/v1/directories"): W,
    ("GET", D): R, ("PATCH", D): W, ("DELETE", D): W,
    ("GET", f"{D}/trust"): R, ("POST", f"{D}/trust"): W,
    ("DELETE", f"{D}/trust/{{fingerprint}}"): W,
    ("GET", f"{D}/crls"): R, ("POST", f"{D}/crls"): W, ("DELETE", f"{D}/crls/{{fingerprint}}"): W,
    ("GET", f"{D}/users"): R, ("POST", f"{D}/users"): W,
    ("GET", f"{D}/users/{{username}}"): R, ("PATCH", f"{D}/users/{{username}}"): W,
    ("DELETE", f"{D}/users/{{username}}"): W,
    ("GET", "/admin/v1/workspaces"): R, ("POST", "/admin/v1/workspaces"): W,
    ("GET", "/admin/v1/workspaces/{workspace_id}"): R,
    ("PATCH", "/admin/v1/workspaces/{workspace_id}"): W,
    ("DELETE", "/admin/v1/workspaces/{workspace_id}"): W,
    ("POST", "/admin/v1/workspaces/{workspace_id}/start"): W,
    ("POST", "/admin/v1/workspaces/{workspace_id}/stop"): W,
    ("GET", "/admin/v1/registration-codes"): R,
    ("POST", f"{D}/registration-codes"): W,
    ("POST", "/admin/v1/registration-codes/rotate"): W,
    ("POST", "/admin/v1/registration-codes/revoke"): W,
    ("GET", "/admin/v1/sessions"): R, ("GET", "/admin/v1/sessions/{session_id}"): R,
    ("POST", "/admin/v1/sessions/{session_id}/terminate"): W,
    ("GET", "/admin/v1/audit-events"): R,
}

#: Query parameters each admin list takes besides limit, cursor and offset.
ADMIN_LIST_FILTERS = {
    "/admin/v1/directories": {"region"},
    f"{D}/trust": {"kind"},
    f"{D}/crls": set(),
    f"{D}/users": {"disabled", "search"},
    "/admin/v1/workspaces": {"directory", "user", "state", "protocol", "search"},
    "/admin/v1/registration-codes": {"directory", "state"},
    "/admin/v1/sessions": {"directory", "workspace", "user", "state", "auth_method"},
    "/admin/v1/audit-events": {"directory", "username", "kind", "outcome", "reason", "actor",
                               "since", "until"},
}


@pytest.fixture
def apis(tmp_path: Path) -> dict[str, JsonApi]:
    """Both APIs wired exactly as broker.web.server.build_sites wires them."""
    from broker.config import load_settings
    from broker.service.context import BrokerContext
    from broker.web import server

    ctx = BrokerContext(load_settings(None).replace(
        "database", url=f"sqlite:///{tmp_path / 'b.db'}"))
    client, admin = server.build_apis(ctx)
    return {"client": client, "admin": admin}


def test_the_admin_api_has_exactly_the_expected_routes_and_access(
        apis: dict[str, JsonApi]) -> None:
    api = apis["admin"]
    declared = {(r.method, r.template): r.access for r in api.routes}
    assert declared == ADMIN_API
    # Every route Klein answers was declared (none slipped past the declaration).
    assert openapi.routes(api.app) == set(ADMIN_API)


def test_the_admin_document_lists_the_expected_operations(apis: dict[str, JsonApi]) -> None:
    doc = openapi.build_document(apis["admin"].app, "admin")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == set(ADMIN_API)
    for (method, path), access in ADMIN_API.items():
        op = doc["paths"][path][method.lower()]
        assert not op.get("x-undocumented"), (method, path)
        errors = {c for r in op["responses"].values() for c in r.get("x-error-codes", [])}
        if access is A:
            assert op["security"] == [], (method, path)
            continue
        assert op["security"] == [{"adminToken": []}], (method, path)
        assert "admin_token_invalid" in errors
        assert ("admin_scope_insufficient" in errors) == (access is W), (method, path)
        if path in ADMIN_LIST_FILTERS and method == "GET":
            query = {p["name"] for p in op["parameters"] if p["in"] == "query"}
            assert query == {"limit", "cursor", "offset"} | ADMIN_LIST_FILTERS[path], path


@pytest.mark.parametrize("api", ["client", "admin"])
def test_every_route_is_in_the_document_and_nothing_else(apis: dict[str, JsonApi],
                                                         api: str) -> None:
    app = apis[api].app
    assert openapi.disagreements(app, api) == []
    doc = openapi.build_document(app, api)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == openapi.routes(app)
    assert not [(m, p) for p, ops in doc["paths"].items() for m, o in ops.items()
                if o.get("x-undocumented")]


def test_a_new_undescribed_route_is_reported(apis: dict[str, JsonApi]) -> None:
    api = apis["client"]

    @api.route("/v1/brand-new/{thing}", "PUT", access=Access.ANONYMOUS)
    async def brand_new(request: Any, thing: str) -> tuple[int, Any]:
        return 204, None

    problems = openapi.disagreements(api.app, "client")
    assert problems == ["route PUT /v1/brand-new/{thing} is not described in "
                        "broker.web.openapi.OPERATIONS"]
    op = openapi.build_document(api.app, "client")["paths"]["/v1/brand-new/{thing}"]["put"]
    assert op["x-undocumented"] is True


def test_every_error_code_appears_in_some_operation(apis: dict[str, JsonApi]) -> None:
    seen: set[str] = set()
    for name, api in apis.items():
        doc = openapi.build_document(api.app, name)
        for ops in doc["paths"].values():
            for op in ops.values():
                for status, resp in op["responses"].items():
                    for code in resp.get("x-error-codes", []):
                        assert STATUS[code] == int(status)
                        seen.add(code)
    assert seen == set(STATUS)


def test_request_schemas_come_from_the_strict_models(apis: dict[str, JsonApi]) -> None:
    doc = openapi.build_document(apis["admin"].app, "admin")
    schema = doc["components"]["schemas"]["DirectoryCreate"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"id", "name", "region"}
    # Labels, help text, choices and the real id pattern reach the document (and a console).
    assert schema["properties"]["id"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    assert schema["properties"]["required_eku"]["enum"] == ["client-auth", "any"]
    assert schema["properties"]["name"]["title"] == "Name"
    post = doc["paths"]["/admin/v1/directories"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"] == \
        "#/components/schemas/DirectoryCreate"
    assert post["security"] == [{"adminToken": []}]
    assert doc["paths"]["/admin/v1/openapi.json"]["get"]["security"] == []
    refs = {v for v in _walk(doc) if isinstance(v, str) and v.startswith("#/components/")}
    for ref in refs:
        assert ref.split("/")[-1] in doc["components"]["schemas"], ref


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)
    else:
        yield node
