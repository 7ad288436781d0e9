"""OpenAPI 3.1 documents for the client API (/v1) and the admin API (/admin/v1).

The paths and methods come from the Klein apps' url maps, the request schemas from the same
strict pydantic models the routes validate with, and the error codes from the tables below (each
code's status from ``broker.web.errors.STATUS``). The admin API's operations, bodies, responses,
filters and scopes come from the resource declarations in :mod:`broker.admin`, the
same ones its routes are generated from. A route missing from :data:`OPERATIONS` is
still listed, marked ``x-undocumented``, and :func:`disagreements` reports it — the tests fail
on any disagreement, so the code and the document cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from klein import Klein
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from broker.service.context import BrokerContext
from broker.web import models as cm
from broker.web.errors import STATUS
from broker.web.http import Access, JsonApi

IGNORED_METHODS = {"HEAD", "OPTIONS"}
_RULE_ARG = re.compile(r"<(?:[a-zA-Z_]+(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")

#: Every operation may answer these.
#: Any request may meet these: the HTTP edge refuses slow or oversized heads before routing.
#: Any operation may answer these (malformed_request: malformed HTTP, a control character or
#: non-UTF-8 in the path, a control character in a query parameter).
COMMON_ERRORS = ("internal_error", "not_found", "method_not_allowed", "request_timeout",
                 "headers_too_large", "malformed_request")
#: Operations with a JSON body may also answer these.
BODY_ERRORS = ("malformed_request", "request_too_large", "unsupported_media_type")
ADMIN_READ_ERRORS = ("admin_token_invalid",)
ADMIN_WRITE_ERRORS = ("admin_token_invalid", "admin_scope_insufficient")
LIST_ERRORS = ("malformed_request",)
CODE_ERRORS = ("registration_code_malformed", "registration_code_unknown",
               "registration_code_revoked")
CHALLENGE_ERRORS = ("challenge_unknown", "challenge_expired", "challenge_used",
                    "signature_invalid")
CERT_ERRORS = ("certificate_untrusted", "certificate_expired", "certificate_not_yet_valid",
               "certificate_revoked", "certificate_revocation_unknown",
               "certificate_not_for_client_auth", "certificate_weak_algorithm",
               "certificate_malformed", "certificate_policy_mismatch", "certificate_mismatch",
               "chain_too_long")
USER_ERRORS = ("user_not_found", "user_ambiguous", "user_disabled")
#: Refusals of a directory backed by LDAP / Active Directory (DESIGN §11).
LDAP_ERRORS = ("account_disabled", "account_expired", "not_in_required_group",
               "directory_unavailable")
AUTH_ERRORS = ("auth_required", "auth_token_invalid", "auth_token_expired")


@dataclass(frozen=True)
class Operation:
    summary: str
    status: int = 200
    body: type[BaseModel] | None = None
    errors: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    auth: str | None = None  # "admin" | "client" | None
    tags: tuple[str, ...] = ()
    response: str = "application/json"
    extra: dict[str, Any] = field(default_factory=dict)
    #: The success body's model (admin API), else a generic object.
    out: type[BaseModel] | None = None


def _ops_common() -> dict[tuple[str, str], Operation]:
    return {
        ("GET", "/healthz"): Operation("The process is up.", tags=("operations",)),
        ("GET", "/readyz"): Operation(
            "Ready to serve logins: the database is reachable and its schema at the migration "
            "head (503 names the reason).", errors=("service_unavailable",),
            tags=("operations",)),
        ("GET", "/metrics"): Operation(
            "Prometheus metrics (on the client listener only with server.metrics_on_client).",
            tags=("operations",), response="text/plain"),
    }


#: Operations an API answers only when a setting turns them on.
OPTIONAL: dict[str, set[tuple[str, str]]] = {"client": {("GET", "/metrics")}, "admin": set()}


PAGE = ("limit", "cursor", "offset")


def _admin_operations() -> dict[tuple[str, str], Operation]:
    """The admin API's operations, from the resource declarations (broker.admin)."""
    from broker.admin.registry import RESOURCES
    from broker.web.admin_api import PREFIX, query_names

    out: dict[tuple[str, str], Operation] = {
        **_ops_common(),
        ("GET", f"{PREFIX}/openapi.json"): Operation("This OpenAPI document (no token needed).",
                                                     tags=("meta",)),
    }
    for resource in RESOURCES.values():
        for op in resource.operations:
            base: tuple[str, ...] = ADMIN_WRITE_ERRORS if op.scope == "write" \
                else ADMIN_READ_ERRORS
            if op.out == "page":
                base += LIST_ERRORS
            out[(op.method, PREFIX + op.path)] = Operation(
                op.summary, op.status, resource.body_model(op), base + op.errors,
                query_names(op), "admin", (resource.tag,) if resource.tag else (),
                out=resource.response_model(op),
                extra={"query": {f.name: _filter_schema(f) for f in op.filters}})
    return out


def _filter_schema(flt: Any) -> dict[str, Any]:
    """The schema of a declared list filter (its type, choices and help)."""
    schema: dict[str, Any] = {"type": "string", "description": flt.help}
    if flt.type is bool:
        schema["type"] = "boolean"
    elif flt.type is datetime:
        schema["format"] = "date-time"
    if flt.choices:
        schema["enum"] = list(flt.choices)
    return schema


def _client_operations() -> dict[tuple[str, str], Operation]:
    v = "/v1"
    return {
        **_ops_common(),
        ("GET", f"{v}/openapi.json"): Operation("This OpenAPI document.", tags=("meta",)),
        ("GET", f"{v}/jwks.json"): Operation("Public keys that verify session tickets.",
                                             tags=("tickets",)),
        ("POST", f"{v}/registrations"): Operation(
            "Register a client with a registration code.", body=cm.RegistrationRequest,
            errors=CODE_ERRORS, tags=("login",)),
        ("POST", f"{v}/auth/challenges"): Operation(
            "Ask for a pre-session smart-card challenge.", 201, cm.ChallengeRequest,
            CODE_ERRORS + ("smart_card_not_allowed", "rate_limited"), tags=("login",)),
        ("POST", f"{v}/auth/challenges/{{challenge_id}}/response"): Operation(
            "Answer a challenge with the card's signature and certificate.", 200,
            cm.ChallengeResponse, CHALLENGE_ERRORS + CERT_ERRORS + USER_ERRORS + LDAP_ERRORS
            + ("smart_card_requires_wsp", "rate_limited", "locked_out"), tags=("login",)),
        ("POST", f"{v}/auth/password"): Operation(
            "Log in with a password.", 200, cm.PasswordLogin,
            CODE_ERRORS + LDAP_ERRORS + ("invalid_credentials", "password_login_disabled",
                                         "locked_out", "rate_limited", "user_disabled"),
            tags=("login",)),
        ("POST", f"{v}/workspaces/{{workspace_id}}/connect"): Operation(
            "Connect to a WorkSpace (201 session, or 202 STARTING with a logon challenge).",
            201, None, AUTH_ERRORS + ("smart_card_requires_wsp", "workspace_not_yours",
                                      "workspace_unknown", "workspace_unavailable",
                                      "rate_limited"),
            auth="client", tags=("workspaces",), extra={"x-also": [202]}),
        ("POST", f"{v}/workspaces/{{workspace_id}}/logon"): Operation(
            "Sign the logon challenge of a starting WorkSpace.", 201, cm.LogonRequest,
            AUTH_ERRORS + CHALLENGE_ERRORS + CERT_ERRORS + (
                "workspace_not_ready", "workspace_unknown", "workspace_not_yours",
                "smart_card_requires_wsp"), auth="client", tags=("workspaces",)),
        ("POST", f"{v}/sessions/{{session_id}}/heartbeat"): Operation(
            "Report card presence; the answer says none, lock or disconnect.", 200,
            cm.HeartbeatRequest, ("session_unknown", "session_ended"), tags=("sessions",)),
        ("DELETE", f"{v}/sessions/{{session_id}}"): Operation(
            "End a session.", 204, None, ("session_unknown",), tags=("sessions",)),
        ("POST", f"{v}/sessions/{{session_id}}/in-session/challenges"): Operation(
            "Ask for an in-session (sudo, browser) challenge.", 201,
            cm.InSessionChallengeRequest, ("session_unknown", "session_ended",
                                           "in_session_not_allowed", "rate_limited"),
            tags=("sessions",)),
        ("POST", f"{v}/sessions/{{session_id}}/in-session/challenges/{{challenge_id}}/response"):
            Operation("Answer an in-session challenge; returns a signed assertion.", 200,
                      cm.InSessionResponse, ("session_unknown", "session_ended",
                                             "in_session_not_allowed") + CHALLENGE_ERRORS
                      + CERT_ERRORS, tags=("sessions",)),
    }


OPERATIONS: dict[str, dict[tuple[str, str], Operation]] = {
    "admin": _admin_operations(),
    "client": _client_operations(),
}

TITLES = {"admin": ("smartcard-broker admin API", "/admin/v1"),
          "client": ("smartcard-broker client API", "/v1")}


def openapi_path(rule: str) -> str:
    """``/v1/sessions/<session_id>`` → ``/v1/sessions/{session_id}``."""
    return _RULE_ARG.sub(r"{\1}", rule)


def routes(app: Klein) -> set[tuple[str, str]]:
    """Every (METHOD, OpenAPI path) the app answers, HEAD and OPTIONS aside."""
    out: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods or ():
            if method not in IGNORED_METHODS:
                out.add((method, openapi_path(rule.rule)))
    return out


def all_models(api: str) -> list[tuple[type[BaseModel], str]]:
    """(model, "validation" | "serialization") for every request and response model."""
    seen: dict[str, tuple[type[BaseModel], str]] = {}
    for op in OPERATIONS[api].values():
        if op.body is not None:
            seen[op.body.__name__] = (op.body, "validation")
        if op.out is not None:
            seen[op.out.__name__] = (op.out, "serialization")
    return list(seen.values())


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message", "details"],
            "properties": {"code": {"type": "string", "enum": sorted(STATUS)},
                           "message": {"type": "string"},
                           "details": {"type": "object"}}}},
    }


def _query_parameter(name: str) -> dict[str, Any]:
    schemas: dict[str, dict[str, Any]] = {
        "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
        "offset": {"type": "integer", "minimum": 0},
        "cursor": {"type": "string", "description": "next_cursor of the previous page"},
        "disabled": {"type": "boolean"},
        "since": {"type": "string", "format": "date-time"},
        "until": {"type": "string", "format": "date-time"},
    }
    return {"name": name, "in": "query", "required": False,
            "schema": schemas.get(name, {"type": "string"})}


def operation_errors(op: Operation) -> tuple[str, ...]:
    codes = list(op.errors) + list(COMMON_ERRORS)
    if op.body is not None:
        codes += BODY_ERRORS
    return tuple(dict.fromkeys(codes))


def _operation(method: str, path: str, op: Operation | None,
               access: Access | None = None) -> dict[str, Any]:
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in re.findall(r"{([^}]+)}", path)]
    if op is None:
        return {"summary": "Undocumented route.", "x-undocumented": True,
                "parameters": params, "responses": {"default": {"description": "?"}}}
    declared = op.extra.get("query", {})
    params += [{**_query_parameter(q), "schema": declared[q]} if q in declared
               else _query_parameter(q) for q in op.query]
    out: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^a-zA-Z0-9]+', '_', path).strip('_')}",
        "summary": op.summary, "tags": list(op.tags), "parameters": params,
    }
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}}}}
    success: dict[str, Any] = {"description": "Success."}
    if op.status != 204:
        schema: dict[str, Any] = ({"type": "string"} if op.response == "text/plain"
                                  else {"$ref": f"#/components/schemas/{op.out.__name__}"}
                                  if op.out is not None else {"type": "object"})
        success["content"] = {op.response: {"schema": schema}}
    responses: dict[str, Any] = {str(op.status): success}
    for extra_status in op.extra.get("x-also", []):
        responses[str(extra_status)] = {"description": "Success (see summary).",
                                        "content": {"application/json": {
                                            "schema": {"type": "object"}}}}
    by_status: dict[int, list[str]] = {}
    auth_kind = {Access.AUTH_TOKEN: "client", Access.ADMIN_READ: "admin",
                 Access.ADMIN_WRITE: "admin"}.get(access, op.auth) if access else op.auth
    implied: tuple[str, ...] = ()
    if auth_kind == "client":
        implied = AUTH_ERRORS
    elif auth_kind == "admin":
        implied = ("admin_token_invalid",) + (
            ("admin_scope_insufficient",) if access is Access.ADMIN_WRITE else ())
    for code in dict.fromkeys(operation_errors(op) + implied):
        by_status.setdefault(STATUS[code], []).append(code)
    for status, codes in sorted(by_status.items()):
        responses[str(status)] = {
            "description": "Error codes: " + ", ".join(codes) + ".",
            "x-error-codes": codes,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    out["responses"] = responses
    if auth_kind == "admin":
        out["security"] = [{"adminToken": []}]
    elif auth_kind == "client":
        out["security"] = [{"authToken": []}]
    else:
        out["security"] = []
    return out


def build_document(app: Klein, api: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app`` (``api`` is "client" or "admin")."""
    table = OPERATIONS[api]
    declared = {(r.method, r.template): r.access for r in getattr(app, "declared_routes", [])}
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(routes(app), key=lambda mp: (mp[1], mp[0])):
        paths.setdefault(path, {})[method.lower()] = _operation(
            method, path, table.get((method, path)), declared.get((method, path)))
    models = all_models(api)
    _, defs = models_json_schema(models,  # type: ignore[arg-type]
                                 ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Error"] = _error_schema()
    title, prefix = TITLES[api]
    from broker import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__,
                 "description": f"Every path is under {prefix} except the operational ones. "
                                "Errors are {\"error\": {code, message, details}}; "
                                "x-error-codes lists the stable codes per status."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "Admin token from `broker admin token create`."},
                "authToken": {"type": "http", "scheme": "bearer",
                              "description": "auth_token from a login response."},
            },
        },
        "x-error-statuses": dict(sorted(STATUS.items())),
    }


def disagreements(app: Klein, api: str) -> list[str]:
    """What the document table and the app's routes disagree on (empty when in step)."""
    live = routes(app)
    table = set(OPERATIONS[api])
    problems = [f"route {m} {p} is not described in broker.web.openapi.OPERATIONS"
                for m, p in sorted(live - table)]
    problems += [f"OPERATIONS describes {m} {p} but no route answers it"
                 for m, p in sorted(table - live - OPTIONAL[api])]
    return problems


def add_openapi_route(api: JsonApi, ctx: BrokerContext) -> None:
    """Serve the document at ``/v1/openapi.json`` or ``/admin/v1/openapi.json`` (no auth).

    The document is built on first request, after every route has been registered."""
    path = f"{TITLES[api.name][1]}/openapi.json"
    cache: dict[str, Any] = {}

    @api.route(path, "GET", access=Access.ANONYMOUS)
    async def openapi_document(request: Any) -> tuple[int, Any]:
        if "doc" not in cache:
            cache["doc"] = build_document(api.app, api.name)
        return 200, cache["doc"]
