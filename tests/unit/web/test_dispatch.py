"""The client API's dispatch without Klein: the same route for every request Klein would route,
and Klein itself for everything else (404/405, percent-encoded paths, trailing slashes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from klein import Klein
from twisted.web.test.requesthelper import DummyChannel

from broker.codes import Code
from broker.errors import BrokerError
from broker.web.dispatch import FastJsonResource
from broker.web.http import Access, JsonApi, JsonRequest
from broker.web.openapi import openapi_path
from broker.web.server import install_json_errors


@pytest.fixture
def client_api(tmp_path: Path) -> JsonApi:
    from broker.config import load_settings
    from broker.service.context import BrokerContext
    from broker.web import server

    ctx = BrokerContext(load_settings(None).replace(
        "database", url=f"sqlite:///{tmp_path / 'b.db'}"))
    return server.build_apis(ctx)[0]


def test_every_json_route_is_matched_as_klein_matches_it(client_api: JsonApi) -> None:
    fast = client_api.resource()
    assert isinstance(fast, FastJsonResource)
    by_handler = {id(h): (m, t) for m, t, h in client_api.handlers}
    assert len(client_api.handlers) >= 10
    for method, template, _ in client_api.handlers:
        path = template.replace("{", "x-").replace("}", "-1")
        found = fast.match(method.encode(), path.encode())
        assert found is not None, (method, template)
        assert by_handler[id(found[0])] == (method, template)
        rule, kwargs = client_api.app.url_map.bind("localhost").match(
            path, method=method, return_rule=True)
        assert openapi_path(rule.rule) == template
        assert found[1] == kwargs


@pytest.mark.parametrize("method,path", [
    (b"POST", b"/v1/auth/challenges/"),                 # trailing slash: Klein redirects
    (b"POST", b"/v1/auth/challenges/ab%2Fc/response"),  # percent-encoded: Klein's
    (b"POST", b"/v1/auth//challenges"),
    (b"POST", b"/v1/auth/challenges//response"),        # an empty variable
    (b"HEAD", b"/v1/jwks.json"),                        # HEAD of a GET: werkzeug's rule
    (b"GET", b"/v1/auth/challenges"),                   # wrong method: Klein's 405
    (b"POST", b"/v1/no/such/path"),
    (b"POST", "/v1/auth/challenges/\u00e9/response".encode()),
    (b"GET", b"/metrics"),                              # raw routes stay Klein's
])
def test_anything_else_goes_to_klein(client_api: JsonApi, method: bytes, path: bytes) -> None:
    assert client_api.resource().match(method, path) is None


def test_a_fixed_segment_beats_a_variable_as_in_werkzeug() -> None:
    fast = FastJsonResource(Klein().resource())

    async def by_id(request: Any, thing: str) -> bytes:
        return b"id"

    async def latest(request: Any) -> bytes:
        return b"latest"

    async def both(request: Any, a: str) -> bytes:
        return b"both"

    fast.add("GET", "/v1/things/{thing}/x", by_id)
    fast.add("GET", "/v1/things/latest/x", latest)
    fast.add("GET", "/v1/{a}/latest/x", both)
    assert fast.match(b"GET", b"/v1/things/latest/x") == (latest, {})
    assert fast.match(b"GET", b"/v1/things/7/x") == (by_id, {"thing": "7"})
    assert fast.match(b"GET", b"/v1/other/latest/x") == (both, {"a": "other"})


def _api() -> JsonApi:
    api = JsonApi("client", Klein())
    install_json_errors(api.app, "client")

    @api.route("/v1/things/{thing_id}", "POST", access=Access.ANONYMOUS)
    async def thing(request: Any, thing_id: str) -> tuple[int, Any]:
        if thing_id == "missing":
            raise BrokerError(Code.NOT_FOUND, "No such thing.")
        if thing_id == "bug":
            raise RuntimeError("a bug")
        return 201, {"thing": thing_id}

    return api


def _render(resource: Any, method: bytes, path: bytes) -> tuple[int, Any]:
    channel = DummyChannel()
    request = JsonRequest(channel)
    request.method, request.path, request.uri = method, path, path
    request.prepath, request.postpath = [], path.split(b"/")[1:]
    request.gotLength(0)
    resource.render(request)
    assert request.finished
    _, _, body = channel.transport.written.getvalue().partition(b"\r\n\r\n")
    return request.code, json.loads(body)


def test_a_fast_route_answers_like_the_klein_route() -> None:
    api = _api()
    fast, klein = api.resource(), api.app.resource()
    for path, status, code in ((b"/v1/things/t1", 201, None),
                               (b"/v1/things/missing", 404, "not_found"),
                               (b"/v1/things/bug", 500, "internal_error")):
        got, want = _render(fast, b"POST", path), _render(klein, b"POST", path)
        for answer in (got, want):  # a fresh request id each
            answer[1].get("error", {}).get("details", {}).pop("request_id", None)
        assert got == want
        assert got[0] == status
        if code:
            assert got[1]["error"]["code"] == code
    assert _render(fast, b"POST", b"/v1/things/t1") == (201, {"thing": "t1"})


def test_klein_answers_what_the_fast_path_does_not_take() -> None:
    fast = _api().resource()
    assert _render(fast, b"POST", b"/v1/nothing")[1]["error"]["code"] == "not_found"
    assert _render(fast, b"GET", b"/v1/things/t1")[1]["error"]["code"] == "method_not_allowed"
    # Percent-encoded: whatever Klein makes of it (today: the raw segment).
    assert _render(fast, b"POST", b"/v1/things/t%31") == \
        _render(_api().app.resource(), b"POST", b"/v1/things/t%31")


def test_a_json_request_never_parses_its_body_as_a_form() -> None:
    """On a Site that parses forms (Twisted's default), a POST with a form content type still
    keeps its body unparsed: the client API reads JSON only, and the parse cost every login."""
    from unittest import mock

    from twisted.web import http as twisted_http

    channel = DummyChannel()
    assert channel.site._parsePOSTFormSubmission  # the default a class attribute lost to
    request = JsonRequest(channel)
    body = b"a=1&b=2"
    request.requestHeaders.setRawHeaders(b"content-type",
                                         [b"application/x-www-form-urlencoded"])
    request.gotLength(len(body))
    request.handleContentChunk(body)
    request.process = lambda: None  # type: ignore[method-assign]
    with mock.patch.object(twisted_http, "_parseContentType",
                           side_effect=AssertionError("parsed the content type")) as parse:
        request.requestReceived(b"POST", b"/v1/auth/challenges", b"HTTP/1.1")
    assert not parse.called and request.args == {}
    assert request.content.read() == body
