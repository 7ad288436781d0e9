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

from broker.errors import BrokerError
from broker.service import admin, admin_tokens
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
from broker.web.http import BadRequest, json_route, parse_model, read_json

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


def bearer(request: Any) -> str | None:
    header = request.getHeader(b"authorization")
    if header and header[:7].lower() == b"bearer ":
        return header[7:].strip().decode("ascii", "replace")
    return None


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
    try:
        return int(args[key])
    except ValueError:
        raise BadRequest(message=f"Query parameter {key!r} must be an integer.",
                         details={"parameter": key}) from None


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


def build_admin_app(ctx: BrokerContext) -> Klein:
    app = Klein()

    async def call(request: Any, fn: Callable[[Session, str, Any, dict[str, str]], Any], *,
                   write: bool, model: type[BaseModel] | None = None,
                   query: tuple[str, ...] = ()) -> Any:
        """Authenticate, validate and run ``fn(session, actor, body, query)`` in one
        transaction."""
        token = bearer(request)
        data: Any = None
        body_error: BrokerError | None = None
        if model is not None:
            try:
                data = read_json(request)
            except BrokerError as exc:
                body_error = exc

        def work(session: Session) -> Any:
            identity = admin_tokens.authenticate(session, token, ctx.now())
            if write and not identity.can_write:
                raise ServiceError("admin_scope_insufficient",
                                   "This admin token may only read; changes need a write token.",
                                   {"scope": identity.scope})
            args = query_args(request, query)
            body = None
            if model is not None:
                if body_error is not None:
                    raise body_error
                body = parse_model(model, data)
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

    @app.route(f"{PREFIX}/directories", methods=["GET"])
    @json_route("admin", f"{PREFIX}/directories")
    async def directories_list(request: Any) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.list_directories(
            s, page_of(q), region=q.get("region")), write=False,
            query=PAGE_PARAMS + LIST_FILTERS[f"{PREFIX}/directories"])

    @app.route(f"{PREFIX}/directories", methods=["POST"])
    @json_route("admin", f"{PREFIX}/directories")
    async def directories_create(request: Any) -> tuple[int, Any]:
        return 201, await call(request, lambda s, a, b, q: admin.create_directory(
            s, ctx, b.model_dump(), a), write=True, model=DirectoryCreate)

    @app.route(f"{PREFIX}/directories/<directory_id>", methods=["GET"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}")
    async def directories_get(request: Any, directory_id: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.get_directory(s, directory_id),
                               write=False)

    @app.route(f"{PREFIX}/directories/<directory_id>", methods=["PATCH"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}")
    async def directories_update(request: Any, directory_id: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.update_directory(
            s, ctx, directory_id, fields(b), a), write=True, model=DirectoryPatch)

    @app.route(f"{PREFIX}/directories/<directory_id>", methods=["DELETE"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}")
    async def directories_delete(request: Any, directory_id: str) -> tuple[int, Any]:
        await call(request, lambda s, a, b, q: admin.delete_directory(s, directory_id, a),
                   write=True)
        return 204, None

    # ------------------------------------------------------------------ trust and CRLs

    @app.route(f"{PREFIX}/directories/<directory_id>/trust", methods=["GET"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/trust")
    async def trust_list(request: Any, directory_id: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.list_trust(
            s, directory_id, page_of(q), kind=q.get("kind")), write=False,
            query=PAGE_PARAMS + ("kind",))

    @app.route(f"{PREFIX}/directories/<directory_id>/trust", methods=["POST"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/trust")
    async def trust_add(request: Any, directory_id: str) -> tuple[int, Any]:
        added = await call(request, lambda s, a, b, q: admin.add_trust(
            s, directory_id, b.pem, b.kind, a), write=True, model=TrustUpload)
        return 201, {"items": added}

    @app.route(f"{PREFIX}/directories/<directory_id>/trust/<fingerprint>", methods=["DELETE"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/trust/{{fingerprint}}")
    async def trust_remove(request: Any, directory_id: str, fingerprint: str) -> tuple[int, Any]:
        await call(request, lambda s, a, b, q: admin.remove_trust(s, directory_id, fingerprint,
                                                                  a), write=True)
        return 204, None

    @app.route(f"{PREFIX}/directories/<directory_id>/crls", methods=["GET"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/crls")
    async def crls_list(request: Any, directory_id: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.list_crls(
            s, directory_id, page_of(q)), write=False, query=PAGE_PARAMS)

    @app.route(f"{PREFIX}/directories/<directory_id>/crls", methods=["POST"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/crls")
    async def crls_add(request: Any, directory_id: str) -> tuple[int, Any]:
        return 201, await call(request, lambda s, a, b, q: admin.add_crl(
            s, directory_id, b.crl, a), write=True, model=CrlUpload)

    @app.route(f"{PREFIX}/directories/<directory_id>/crls/<fingerprint>", methods=["DELETE"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/crls/{{fingerprint}}")
    async def crls_remove(request: Any, directory_id: str, fingerprint: str) -> tuple[int, Any]:
        await call(request, lambda s, a, b, q: admin.remove_crl(s, directory_id, fingerprint, a),
                   write=True)
        return 204, None

    # ------------------------------------------------------------------ users

    @app.route(f"{PREFIX}/directories/<directory_id>/users", methods=["GET"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/users")
    async def users_list(request: Any, directory_id: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.list_users(
            s, directory_id, page_of(q), disabled=parse_bool(q, "disabled")), write=False,
            query=PAGE_PARAMS + ("disabled",))

    @app.route(f"{PREFIX}/directories/<directory_id>/users", methods=["POST"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/users")
    async def users_create(request: Any, directory_id: str) -> tuple[int, Any]:
        return 201, await call(request, lambda s, a, b, q: admin.create_user(
            s, directory_id, b.model_dump(), a), write=True, model=UserCreate)

    @app.route(f"{PREFIX}/directories/<directory_id>/users/<username>", methods=["GET"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/users/{{username}}")
    async def users_get(request: Any, directory_id: str, username: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.get_user(
            s, directory_id, username), write=False)

    @app.route(f"{PREFIX}/directories/<directory_id>/users/<username>", methods=["PATCH"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/users/{{username}}")
    async def users_update(request: Any, directory_id: str, username: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.update_user(
            s, directory_id, username, fields(b), a), write=True, model=UserPatch)

    @app.route(f"{PREFIX}/directories/<directory_id>/users/<username>", methods=["DELETE"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/users/{{username}}")
    async def users_delete(request: Any, directory_id: str, username: str) -> tuple[int, Any]:
        await call(request, lambda s, a, b, q: admin.delete_user(s, directory_id, username, a),
                   write=True)
        return 204, None

    # ------------------------------------------------------------------ WorkSpaces

    @app.route(f"{PREFIX}/workspaces", methods=["GET"])
    @json_route("admin", f"{PREFIX}/workspaces")
    async def workspaces_list(request: Any) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.list_workspaces(
            s, page_of(q), directory=q.get("directory"), user=q.get("user"),
            state=q.get("state"), protocol=q.get("protocol")), write=False,
            query=PAGE_PARAMS + LIST_FILTERS[f"{PREFIX}/workspaces"])

    @app.route(f"{PREFIX}/workspaces", methods=["POST"])
    @json_route("admin", f"{PREFIX}/workspaces")
    async def workspaces_create(request: Any) -> tuple[int, Any]:
        return 201, await call(request, lambda s, a, b, q: admin.create_workspace(
            s, ctx, b.model_dump(), a), write=True, model=WorkSpaceCreate)

    @app.route(f"{PREFIX}/workspaces/<workspace_id>", methods=["GET"])
    @json_route("admin", f"{PREFIX}/workspaces/{{workspace_id}}")
    async def workspaces_get(request: Any, workspace_id: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.get_workspace(s, workspace_id),
                               write=False)

    @app.route(f"{PREFIX}/workspaces/<workspace_id>", methods=["PATCH"])
    @json_route("admin", f"{PREFIX}/workspaces/{{workspace_id}}")
    async def workspaces_update(request: Any, workspace_id: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.update_workspace(
            s, ctx, workspace_id, fields(b), a), write=True, model=WorkSpacePatch)

    @app.route(f"{PREFIX}/workspaces/<workspace_id>", methods=["DELETE"])
    @json_route("admin", f"{PREFIX}/workspaces/{{workspace_id}}")
    async def workspaces_delete(request: Any, workspace_id: str) -> tuple[int, Any]:
        await call(request, lambda s, a, b, q: admin.delete_workspace(s, workspace_id, a),
                   write=True)
        return 204, None

    @app.route(f"{PREFIX}/workspaces/<workspace_id>/start", methods=["POST"])
    @json_route("admin", f"{PREFIX}/workspaces/{{workspace_id}}/start")
    async def workspaces_start(request: Any, workspace_id: str) -> tuple[int, Any]:
        return 202, await call(request, lambda s, a, b, q: admin.start_workspace(
            s, ctx, workspace_id, a), write=True)

    @app.route(f"{PREFIX}/workspaces/<workspace_id>/stop", methods=["POST"])
    @json_route("admin", f"{PREFIX}/workspaces/{{workspace_id}}/stop")
    async def workspaces_stop(request: Any, workspace_id: str) -> tuple[int, Any]:
        return 202, await call(request, lambda s, a, b, q: admin.stop_workspace(
            s, ctx, workspace_id, a), write=True)

    # ------------------------------------------------------------------ registration codes

    @app.route(f"{PREFIX}/registration-codes", methods=["GET"])
    @json_route("admin", f"{PREFIX}/registration-codes")
    async def codes_list(request: Any) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.list_codes(
            s, page_of(q), directory=q.get("directory"), state=q.get("state")), write=False,
            query=PAGE_PARAMS + LIST_FILTERS[f"{PREFIX}/registration-codes"])

    @app.route(f"{PREFIX}/directories/<directory_id>/registration-codes", methods=["POST"])
    @json_route("admin", f"{PREFIX}/directories/{{directory_id}}/registration-codes")
    async def codes_issue(request: Any, directory_id: str) -> tuple[int, Any]:
        issued = await call(request, lambda s, a, b, q: admin.issue_codes(
            s, ctx, directory_id, b.count, a), write=True, model=CodeIssue)
        return 201, {"items": issued}

    @app.route(f"{PREFIX}/registration-codes/rotate", methods=["POST"])
    @json_route("admin", f"{PREFIX}/registration-codes/rotate")
    async def codes_rotate(request: Any) -> tuple[int, Any]:
        return 201, await call(request, lambda s, a, b, q: admin.rotate_code(
            s, ctx, b.code, a), write=True, model=CodeRef)

    @app.route(f"{PREFIX}/registration-codes/revoke", methods=["POST"])
    @json_route("admin", f"{PREFIX}/registration-codes/revoke")
    async def codes_revoke(request: Any) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.revoke_code(
            s, ctx, b.code, a), write=True, model=CodeRef)

    # ------------------------------------------------------------------ sessions

    @app.route(f"{PREFIX}/sessions", methods=["GET"])
    @json_route("admin", f"{PREFIX}/sessions")
    async def sessions_list(request: Any) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.list_sessions(
            s, page_of(q), directory=q.get("directory"), workspace=q.get("workspace"),
            user=q.get("user"), state=q.get("state"), auth_method=q.get("auth_method")),
            write=False, query=PAGE_PARAMS + LIST_FILTERS[f"{PREFIX}/sessions"])

    @app.route(f"{PREFIX}/sessions/<session_id>", methods=["GET"])
    @json_route("admin", f"{PREFIX}/sessions/{{session_id}}")
    async def sessions_get(request: Any, session_id: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.get_session(s, session_id),
                               write=False)

    @app.route(f"{PREFIX}/sessions/<session_id>/terminate", methods=["POST"])
    @json_route("admin", f"{PREFIX}/sessions/{{session_id}}/terminate")
    async def sessions_terminate(request: Any, session_id: str) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.terminate_session(
            s, ctx, session_id, a), write=True)

    # ------------------------------------------------------------------ audit

    @app.route(f"{PREFIX}/audit-events", methods=["GET"])
    @json_route("admin", f"{PREFIX}/audit-events")
    async def audit_list(request: Any) -> tuple[int, Any]:
        return 200, await call(request, lambda s, a, b, q: admin.list_audit(
            s, page_of(q), directory=q.get("directory"), username=q.get("username"),
            kind=q.get("kind"), outcome=q.get("outcome"), actor=q.get("actor"),
            since=parse_time(q, "since"), until=parse_time(q, "until")), write=False,
            query=PAGE_PARAMS + LIST_FILTERS[f"{PREFIX}/audit-events"])

    # GET /admin/v1/openapi.json is added by broker.web.server (openapi.add_openapi_route).
    return app
