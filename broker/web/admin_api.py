"""The admin API (/admin/v1), bound to loopback by default, Bearer admin tokens.

Each request is ONE transaction: the token is authenticated (unknown or revoked →
401 admin_token_invalid; a read token on a write → 403 admin_scope_insufficient), the strict
body and the query are validated, and the use case in :mod:`broker.service.admin` runs with the
actor ``token:<name>``. Any error rolls everything back, so a refused request writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from klein import Klein
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.service import admin, auth
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.web.admin_models import (
    NULLABLE_PATCH_FIELDS,
    CodeIssue,
    CodeRef,
    CrlUpload,
    DirectoryCreate,
    DirectoryPatch,
    TrustUpload,
    UserCreate,
    UserPatch,
    WorkSpaceCreate,
    WorkSpacePatch,
)
from broker.web.http import Access, BadRequest, JsonApi, int_param, read_model

PREFIX = "/admin/v1"
PAGE_PARAMS = ("limit", "cursor", "offset")

#: Query parameters each list operation accepts besides limit/cursor/offset (also used by the
#: OpenAPI document).
LIST_FILTERS: dict[str, tuple[str, ...]] = {
    "/admin/v1/directories": ("region",),
    "/admin/v1/directories/{directory_id}/trust": ("kind",),
    "/admin/v1/directories/{directory_id}/crls": (),
    "/admin/v1/directories/{directory_id}/users": ("disabled",),
    "/admin/v1/workspaces": ("directory", "user", "state", "protocol"),
    "/admin/v1/registration-codes": ("directory", "state"),
    "/admin/v1/sessions": ("directory", "workspace", "user", "state", "auth_method"),
    "/admin/v1/audit-events": ("directory", "username", "kind", "outcome", "actor", "since",
                               "until"),
}


def query_args(request: Any, allowed: tuple[str, ...]) -> dict[str, str]:
    """Single-valued query parameters; unknown or repeated ones are malformed_request."""
    out: dict[str, str] = {}
    for raw_key, values in (request.args or {}).items():
        key = raw_key.decode("utf-8", "replace")
        if key not in allowed:
            raise BadRequest(message=f"Unknown query parameter {key!r}.",
                             details={"parameter": key, "allowed": list(allowed)})
        if len(values) != 1:
            raise BadRequest(message=f"Query parameter {key!r} was given more than once.",
                             details={"parameter": key})
        out[key] = values[0].decode("utf-8", "replace")
    return out


def _int(args: dict[str, str], key: str) -> int | None:
    if key not in args:
        return None
    return int_param(args[key], key, low=0, high=1_000_000_000)


def page_of(args: dict[str, str]) -> admin.Page:
    limit = _int(args, "limit")
    return admin.Page(limit=admin.DEFAULT_LIMIT if limit is None else limit,
                      cursor=args.get("cursor") or None, offset=_int(args, "offset"))


def parse_time(args: dict[str, str], key: str) -> datetime | None:
    if key not in args:
        return None
    try:
        value = datetime.fromisoformat(args[key].replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise BadRequest(message=f"Query parameter {key!r} must be an ISO 8601 time.",
                         details={"parameter": key}) from None
    if value.tzinfo is None:
        raise BadRequest(message=f"Query parameter {key!r} needs a time zone (e.g. Z).",
                         details={"parameter": key})
    return value


def parse_bool(args: dict[str, str], key: str) -> bool | None:
    if key not in args:
        return None
    value = args[key].lower()
    if value not in ("true", "false"):
        raise BadRequest(message=f"Query parameter {key!r} must be true or false.",
                         details={"parameter": key})
    return value == "true"


def build_admin_api(ctx: BrokerContext) -> JsonApi:

    async def authenticate(presented: str | None, access: Access) -> Any:
        return await ctx.call(auth.admin_principal, ctx, presented,
                              access is Access.ADMIN_WRITE)

    api = JsonApi("admin", Klein(), authenticate)
    route = api.route

    async def call(request: Any, identity: Any,
                   fn: Callable[[Session, str, Any, dict[str, str]], Any], *,
                   model: type[BaseModel] | None = None, query: tuple[str, ...] = ()) -> Any:
        """Validate and run ``fn(session, actor, body, query)`` in one transaction (the token
        was checked by the route's declaration, before the body was read)."""
        args = query_args(request, query)
        body = read_model(request, model) if model is not None else None

        def work(session: Session) -> Any:
            return fn(session, f"token:{identity.name}", body, args)

        try:
            return await ctx.call(ctx.db.transaction, work)
        except IntegrityError as exc:
            text = str(exc.orig).lower()
            if "unique" not in text and "duplicate" not in text:
                raise
            # A concurrent request created the same thing first.
            raise ServiceError("conflict", "That conflicts with an existing resource.") from None

    def fields(body: BaseModel) -> dict[str, Any]:
        """The fields the request named; null only where clearing makes sense."""
        nullable = NULLABLE_PATCH_FIELDS.get(type(body).__name__, set())
        given = body.model_dump(exclude_unset=True)

        def check(values: dict[str, Any], where: str) -> None:
            for key, value in values.items():
                if isinstance(value, dict):
                    check(value, f"{where}{key}.")
                elif value is None and (where or key not in nullable):
                    raise BadRequest(message=f"{where}{key} cannot be null.",
                                     details={"fields": [f"{where}{key}"]})

        check(given, "")
        return given

    # ------------------------------------------------------------------ directories

    @route(f"{PREFIX}/directories", "GET", access=Access.ADMIN_READ)
    async def directories_list(request: Any, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.list_directories(
            s, page_of(q), region=q.get("region")),
            query=PAGE_PARAMS + LIST_FILTERS[f"{PREFIX}/directories"])

    @route(f"{PREFIX}/directories", "POST", access=Access.ADMIN_WRITE)
    async def directories_create(request: Any, principal: Any) -> tuple[int, Any]:
        return 201, await call(request, principal, lambda s, a, b, q: admin.create_directory(
            s, ctx, b.model_dump(), a), model=DirectoryCreate)

    @route(f"{PREFIX}/directories/{{directory_id}}", "GET", access=Access.ADMIN_READ)
    async def directories_get(request: Any, directory_id: str, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal,
            lambda s, a, b, q: admin.get_directory(s, directory_id))

    @route(f"{PREFIX}/directories/{{directory_id}}", "PATCH", access=Access.ADMIN_WRITE)
    async def directories_update(request: Any, directory_id: str,
                                 principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.update_directory(
            s, ctx, directory_id, fields(b), a), model=DirectoryPatch)

    @route(f"{PREFIX}/directories/{{directory_id}}", "DELETE", access=Access.ADMIN_WRITE)
    async def directories_delete(request: Any, directory_id: str,
                                 principal: Any) -> tuple[int, Any]:
        await call(request, principal,
            lambda s, a, b, q: admin.delete_directory(s, directory_id, a))
        return 204, None

    # ------------------------------------------------------------------ trust and CRLs

    @route(f"{PREFIX}/directories/{{directory_id}}/trust", "GET", access=Access.ADMIN_READ)
    async def trust_list(request: Any, directory_id: str, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.list_trust(
            s, directory_id, page_of(q), kind=q.get("kind")),
            query=PAGE_PARAMS + ("kind",))

    @route(f"{PREFIX}/directories/{{directory_id}}/trust", "POST", access=Access.ADMIN_WRITE)
    async def trust_add(request: Any, directory_id: str, principal: Any) -> tuple[int, Any]:
        added = await call(request, principal, lambda s, a, b, q: admin.add_trust(
            s, directory_id, b.pem, b.kind, a), model=TrustUpload)
        return 201, {"items": added}

    @route(f"{PREFIX}/directories/{{directory_id}}/trust/{{fingerprint}}", "DELETE",
           access=Access.ADMIN_WRITE)
    async def trust_remove(request: Any, directory_id: str, fingerprint: str,
                           principal: Any) -> tuple[int, Any]:
        await call(request, principal,
            lambda s, a, b, q: admin.remove_trust(s, directory_id, fingerprint,
                                                                  a))
        return 204, None

    @route(f"{PREFIX}/directories/{{directory_id}}/crls", "GET", access=Access.ADMIN_READ)
    async def crls_list(request: Any, directory_id: str, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.list_crls(
            s, directory_id, page_of(q)), query=PAGE_PARAMS)

    @route(f"{PREFIX}/directories/{{directory_id}}/crls", "POST", access=Access.ADMIN_WRITE)
    async def crls_add(request: Any, directory_id: str, principal: Any) -> tuple[int, Any]:
        return 201, await call(request, principal, lambda s, a, b, q: admin.add_crl(
            s, directory_id, b.crl, a), model=CrlUpload)

    @route(f"{PREFIX}/directories/{{directory_id}}/crls/{{fingerprint}}", "DELETE",
           access=Access.ADMIN_WRITE)
    async def crls_remove(request: Any, directory_id: str, fingerprint: str,
                          principal: Any) -> tuple[int, Any]:
        await call(request, principal,
            lambda s, a, b, q: admin.remove_crl(s, directory_id, fingerprint, a))
        return 204, None

    # ------------------------------------------------------------------ users

    @route(f"{PREFIX}/directories/{{directory_id}}/users", "GET", access=Access.ADMIN_READ)
    async def users_list(request: Any, directory_id: str, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.list_users(
            s, directory_id, page_of(q), disabled=parse_bool(q, "disabled")),
            query=PAGE_PARAMS + ("disabled",))

    @route(f"{PREFIX}/directories/{{directory_id}}/users", "POST", access=Access.ADMIN_WRITE)
    async def users_create(request: Any, directory_id: str, principal: Any) -> tuple[int, Any]:
        return 201, await call(request, principal, lambda s, a, b, q: admin.create_user(
            s, directory_id, b.model_dump(), a), model=UserCreate)

    @route(f"{PREFIX}/directories/{{directory_id}}/users/{{username}}", "GET",
           access=Access.ADMIN_READ)
    async def users_get(request: Any, directory_id: str, username: str,
                        principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.get_user(
            s, directory_id, username))

    @route(f"{PREFIX}/directories/{{directory_id}}/users/{{username}}", "PATCH",
           access=Access.ADMIN_WRITE)
    async def users_update(request: Any, directory_id: str, username: str,
                           principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.update_user(
            s, directory_id, username, fields(b), a), model=UserPatch)

    @route(f"{PREFIX}/directories/{{directory_id}}/users/{{username}}", "DELETE",
           access=Access.ADMIN_WRITE)
    async def users_delete(request: Any, directory_id: str, username: str,
                           principal: Any) -> tuple[int, Any]:
        await call(request, principal,
            lambda s, a, b, q: admin.delete_user(s, directory_id, username, a))
        return 204, None

    # ------------------------------------------------------------------ WorkSpaces

    @route(f"{PREFIX}/workspaces", "GET", access=Access.ADMIN_READ)
    async def workspaces_list(request: Any, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.list_workspaces(
            s, page_of(q), directory=q.get("directory"), user=q.get("user"),
            state=q.get("state"), protocol=q.get("protocol")),
            query=PAGE_PARAMS + LIST_FILTERS[f"{PREFIX}/workspaces"])

    @route(f"{PREFIX}/workspaces", "POST", access=Access.ADMIN_WRITE)
    async def workspaces_create(request: Any, principal: Any) -> tuple[int, Any]:
        return 201, await call(request, principal, lambda s, a, b, q: admin.create_workspace(
            s, ctx, b.model_dump(), a), model=WorkSpaceCreate)

    @route(f"{PREFIX}/workspaces/{{workspace_id}}", "GET", access=Access.ADMIN_READ)
    async def workspaces_get(request: Any, workspace_id: str, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal,
            lambda s, a, b, q: admin.get_workspace(s, workspace_id))

    @route(f"{PREFIX}/workspaces/{{workspace_id}}", "PATCH", access=Access.ADMIN_WRITE)
    async def workspaces_update(request: Any, workspace_id: str, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.update_workspace(
            s, ctx, workspace_id, fields(b), a), model=WorkSpacePatch)

    @route(f"{PREFIX}/workspaces/{{workspace_id}}", "DELETE", access=Access.ADMIN_WRITE)
    async def workspaces_delete(request: Any, workspace_id: str, principal: Any) -> tuple[int, Any]:
        await call(request, principal,
            lambda s, a, b, q: admin.delete_workspace(s, workspace_id, a))
        return 204, None

    @route(f"{PREFIX}/workspaces/{{workspace_id}}/start", "POST", access=Access.ADMIN_WRITE)
    async def workspaces_start(request: Any, workspace_id: str, principal: Any) -> tuple[int, Any]:
        return 202, await call(request, principal, lambda s, a, b, q: admin.start_workspace(
            s, ctx, workspace_id, a))

    @route(f"{PREFIX}/workspaces/{{workspace_id}}/stop", "POST", access=Access.ADMIN_WRITE)
    async def workspaces_stop(request: Any, workspace_id: str, principal: Any) -> tuple[int, Any]:
        return 202, await call(request, principal, lambda s, a, b, q: admin.stop_workspace(
            s, ctx, workspace_id, a))

    # ------------------------------------------------------------------ registration codes

    @route(f"{PREFIX}/registration-codes", "GET", access=Access.ADMIN_READ)
    async def codes_list(request: Any, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.list_codes(
            s, page_of(q), directory=q.get("directory"), state=q.get("state")),
            query=PAGE_PARAMS + LIST_FILTERS[f"{PREFIX}/registration-codes"])

    @route(f"{PREFIX}/directories/{{directory_id}}/registration-codes", "POST",
           access=Access.ADMIN_WRITE)
    async def codes_issue(request: Any, directory_id: str, principal: Any) -> tuple[int, Any]:
        issued = await call(request, principal, lambda s, a, b, q: admin.issue_codes(
            s, ctx, directory_id, b.count, a), model=CodeIssue)
        return 201, {"items": issued}

    @route(f"{PREFIX}/registration-codes/rotate", "POST", access=Access.ADMIN_WRITE)
    async def codes_rotate(request: Any, principal: Any) -> tuple[int, Any]:
        return 201, await call(request, principal, lambda s, a, b, q: admin.rotate_code(
            s, ctx, b.code, a), model=CodeRef)

    @route(f"{PREFIX}/registration-codes/revoke", "POST", access=Access.ADMIN_WRITE)
    async def codes_revoke(request: Any, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.revoke_code(
            s, ctx, b.code, a), model=CodeRef)

    # ------------------------------------------------------------------ sessions

    @route(f"{PREFIX}/sessions", "GET", access=Access.ADMIN_READ)
    async def sessions_list(request: Any, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.list_sessions(
            s, page_of(q), directory=q.get("directory"), workspace=q.get("workspace"),
            user=q.get("user"), state=q.get("state"), auth_method=q.get("auth_method")),
            query=PAGE_PARAMS + LIST_FILTERS[f"{PREFIX}/sessions"])

    @route(f"{PREFIX}/sessions/{{session_id}}", "GET", access=Access.ADMIN_READ)
    async def sessions_get(request: Any, session_id: str, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal,
            lambda s, a, b, q: admin.get_session(s, session_id))

    @route(f"{PREFIX}/sessions/{{session_id}}/terminate", "POST", access=Access.ADMIN_WRITE)
    async def sessions_terminate(request: Any, session_id: str, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.terminate_session(
            s, ctx, session_id, a))

    # ------------------------------------------------------------------ audit

    @route(f"{PREFIX}/audit-events", "GET", access=Access.ADMIN_READ)
    async def audit_list(request: Any, principal: Any) -> tuple[int, Any]:
        return 200, await call(request, principal, lambda s, a, b, q: admin.list_audit(
            s, page_of(q), directory=q.get("directory"), username=q.get("username"),
            kind=q.get("kind"), outcome=q.get("outcome"), actor=q.get("actor"),
            since=parse_time(q, "since"), until=parse_time(q, "until")),
            query=PAGE_PARAMS + LIST_FILTERS[f"{PREFIX}/audit-events"])

    # GET /admin/v1/openapi.json is added by broker.web.server (openapi.add_openapi_route).
    return api
