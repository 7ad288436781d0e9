"""Every route declares who may call it; the declaration is what the wrapper enforces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.web.http import Access, JsonApi
from broker.web.openapi import IGNORED_METHODS, openapi_path


@pytest.fixture
def apis(tmp_path: Path) -> dict[str, JsonApi]:
    from broker.config import load_settings
    from broker.service.context import BrokerContext
    from broker.web import server

    ctx = BrokerContext(load_settings(None).replace(
        "database", url=f"sqlite:///{tmp_path / 'b.db'}"))
    return {api.name: api for api in server.build_apis(ctx)}


def undeclared(api: JsonApi) -> list[tuple[str, str]]:
    declared = {(r.method, r.template) for r in api.routes}
    live = {(m, openapi_path(rule.rule)) for rule in api.app.url_map.iter_rules()
            for m in rule.methods or () if m not in IGNORED_METHODS}
    return sorted(live - declared)


@pytest.mark.parametrize("name", ["client", "admin"])
def test_every_route_declares_its_access(apis: dict[str, JsonApi], name: str) -> None:
    assert undeclared(apis[name]) == []
    assert len(apis[name].routes) > 10


def test_a_route_added_without_a_declaration_is_caught(apis: dict[str, JsonApi]) -> None:
    api = apis["client"]

    @api.app.route("/v1/sessions/<session_id>/sneaky", methods=["POST"])
    def sneaky(request: Any, session_id: str) -> bytes:
        return b""

    assert undeclared(api) == [("POST", "/v1/sessions/{session_id}/sneaky")]


def test_whatever_names_a_session_or_workspace_needs_an_auth_token(
        apis: dict[str, JsonApi]) -> None:
    for route in apis["client"].routes:
        if "{session_id}" in route.template or "{workspace_id}" in route.template:
            assert route.access is Access.AUTH_TOKEN, route


def test_admin_routes_need_an_admin_token_and_changes_need_write(
        apis: dict[str, JsonApi]) -> None:
    public = {"/healthz", "/readyz", "/metrics", "/admin/v1/openapi.json"}
    for route in apis["admin"].routes:
        if route.template in public:
            continue
        expected = Access.ADMIN_READ if route.method == "GET" else Access.ADMIN_WRITE
        assert route.access is expected, route


def test_access_must_be_declared_with_the_enum() -> None:
    from klein import Klein

    api = JsonApi("client", Klein())
    with pytest.raises(TypeError):
        api.route("/v1/x", "GET", access="anonymous")  # type: ignore[arg-type]


def test_every_console_route_declares_its_access(tmp_path: Path) -> None:
    from broker.config import load_settings
    from broker.service.context import BrokerContext
    from broker.web import server

    ctx = BrokerContext(load_settings(None).replace(
        "database", url=f"sqlite:///{tmp_path / 'b.db'}"))
    console = server.build_console(ctx)
    assert undeclared(console) == []
    public = {("GET", "/console/sign-in"), ("POST", "/console/sign-in"),
              ("GET", "/console/static/{name}")}
    for route in console.routes:
        if (route.method, route.template) in public:
            assert route.access is Access.ANONYMOUS, route
        elif route.template.endswith("/do"):
            assert route.access is Access.CONSOLE_WRITE, route
        else:
            assert route.access is Access.CONSOLE_READ, route
    # Every change goes through the one declared, write-scoped route.
    assert [r.template for r in console.routes if r.access is Access.CONSOLE_WRITE] == \
        ["/console/{slug}/do"]
