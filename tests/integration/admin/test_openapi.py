"""The OpenAPI documents and the routes cannot disagree: whatever routes the Klein apps have,
each must be described, and every description must have a route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from klein import Klein

from broker.web import openapi
from broker.web.errors import STATUS


@pytest.fixture
def apps(tmp_path: Path) -> dict[str, Klein]:
    """Both apps wired exactly as broker.web.server.build_sites wires them."""
    from broker.config import load_settings
    from broker.service.context import BrokerContext
    from broker.web import server

    ctx = BrokerContext(load_settings(None).replace(
        "database", url=f"sqlite:///{tmp_path / 'b.db'}"))
    return {api.name: api.app for api in server.build_apis(ctx)}


@pytest.mark.parametrize("api", ["client", "admin"])
def test_every_route_is_in_the_document_and_nothing_else(apps: dict[str, Klein],
                                                         api: str) -> None:
    app = apps[api]
    assert openapi.disagreements(app, api) == []
    doc = openapi.build_document(app, api)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == openapi.routes(app)
    assert not [(m, p) for p, ops in doc["paths"].items() for m, o in ops.items()
                if o.get("x-undocumented")]


def test_a_new_undescribed_route_is_reported(apps: dict[str, Klein]) -> None:
    app = apps["client"]

    @app.route("/v1/brand-new/<thing>", methods=["PUT"])
    def brand_new(request: Any, thing: str) -> bytes:
        return b""

    problems = openapi.disagreements(app, "client")
    assert problems == ["route PUT /v1/brand-new/{thing} is not described in "
                        "broker.web.openapi.OPERATIONS"]
    op = openapi.build_document(app, "client")["paths"]["/v1/brand-new/{thing}"]["put"]
    assert op["x-undocumented"] is True


def test_every_error_code_appears_in_some_operation(apps: dict[str, Klein]) -> None:
    seen: set[str] = set()
    for api, app in apps.items():
        doc = openapi.build_document(app, api)
        for ops in doc["paths"].values():
            for op in ops.values():
                for status, resp in op["responses"].items():
                    for code in resp.get("x-error-codes", []):
                        assert STATUS[code] == int(status)
                        seen.add(code)
    assert seen == set(STATUS)


def test_request_schemas_come_from_the_strict_models(apps: dict[str, Klein]) -> None:
    doc = openapi.build_document(apps["admin"], "admin")
    schema = doc["components"]["schemas"]["DirectoryCreate"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"id", "name", "region"}
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
