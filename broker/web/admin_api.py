"""The admin API (/admin/v1), bound to loopback by default, Bearer admin tokens.

Every route is generated from the resource declarations in :mod:`broker.admin`: one
route per declared :class:`~broker.admin.framework.Operation`, whose declared scope becomes
the route's :class:`~broker.web.http.Access` (admin read or admin write). The token is checked
by that declaration before the body is read (unknown or revoked → 401 admin_token_invalid; a read
token on a write → 403 admin_scope_insufficient); then the query and the strict body are
validated against the declaration (400 malformed_request, every problem named, messages and
patterns intact) and the use case runs in ONE transaction with the actor ``token:<name>``. Any
error rolls everything back, so a refused request writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from klein import Klein
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.admin.framework import Call, Operation, Resource
from broker.admin.pagination import DEFAULT_LIMIT, Filter, Page
from broker.admin.registry import RESOURCES
from broker.codes import Code
from broker.kinds import Scope
from broker.service import auth
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.store.db import is_unique_violation
from broker.web.http import Access, BadRequest, JsonApi, int_param, read_json

PREFIX = "/admin/v1"
PAGE_PARAMS = ("limit", "cursor", "offset")


def access_of(op: Operation) -> Access:
    """The route declaration of an operation's scope."""
    return Access.ADMIN_WRITE if op.scope is Scope.WRITE else Access.ADMIN_READ


def query_names(op: Operation) -> tuple[str, ...]:
    """The query parameters ``op`` accepts (paging and its filters, for lists)."""
    if op.out != "page":
        return ()
    return PAGE_PARAMS + tuple(f.name for f in op.filters)


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


def page_of(args: dict[str, str]) -> Page:
    limit = args.get("limit")
    offset = args.get("offset")
    return Page(limit=DEFAULT_LIMIT if limit is None else
                int_param(limit, "limit", low=0, high=1_000_000_000),
                cursor=args.get("cursor") or None,
                offset=None if offset is None else int_param(offset, "offset", low=0,
                                                             high=1_000_000_000))


def parse_filter(flt: Filter, text: str) -> Any:
    """A query value of the filter's declared type (bool: true/false; datetime: ISO 8601
    with a zone); malformed_request otherwise."""
    if flt.type is bool:
        if text.lower() not in ("true", "false"):
            raise BadRequest(message=f"Query parameter {flt.name!r} must be true or false.",
                             details={"parameter": flt.name})
        return text.lower() == "true"
    if flt.type is datetime:
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
        except ValueError:
            raise BadRequest(message=f"Query parameter {flt.name!r} must be an ISO 8601 time.",
                             details={"parameter": flt.name}) from None
        if value.tzinfo is None:
            raise BadRequest(message=f"Query parameter {flt.name!r} needs a time zone (e.g. Z).",
                             details={"parameter": flt.name})
        return value
    return text


def read_body(request: Any, resource: Resource, op: Operation) -> dict[str, Any]:
    """The operation's body validated by its declared model (an empty body is ``{}`` where
    every field has a default)."""
    if resource.body_model(op) is None:
        return {}
    content = request.content
    empty = True
    if content is not None:
        content.seek(0)
        empty = not content.read(1)
    data = {} if empty and op.body == "params" else read_json(request)
    try:
        return resource.parse_body(op, data, code=Code.MALFORMED_REQUEST)
    except ServiceError as exc:
        raise BadRequest(message=exc.message, details=exc.details) from None


def build_admin_api(ctx: BrokerContext) -> JsonApi:
    """The admin API: every declared operation of every admin resource, as a route."""

    async def authenticate(presented: str | None, access: Access) -> Any:
        return await ctx.call(auth.admin_principal, ctx, presented,
                              access is Access.ADMIN_WRITE)

    api = JsonApi("admin", Klein(), authenticate)
    for resource in RESOURCES.values():
        for op in resource.operations:
            declare(api, ctx, resource, op)
    return api


def declare(api: JsonApi, ctx: BrokerContext, resource: Resource, op: Operation) -> None:
    """One route for ``op``; the token was checked by the declaration before this runs."""
    allowed = query_names(op)

    async def handle(request: Any, principal: Any, **path: str) -> tuple[int, Any]:
        args = query_args(request, allowed)
        call = Call(f"token:{principal.name}", dict(path), read_body(request, resource, op),
                    {f.name: parse_filter(f, args[f.name]) for f in op.filters
                     if f.name in args}, page_of(args))

        def work(session: Session) -> Any:
            return op.run(session, ctx, call)

        try:
            result = await ctx.call(ctx.db.transaction, work)
        except IntegrityError as exc:
            if not is_unique_violation(exc):
                raise
            # A concurrent request created the same thing first.
            raise ServiceError(Code.CONFLICT, "That conflicts with an existing resource.") from None
        if op.out is None:
            return op.status, None
        return op.status, {"items": result} if op.out == "items" else result

    # Klein keys its endpoints by function name: each operation's must be its own.
    handle.__name__ = handle.__qualname__ = f"{resource.name.replace('-', '_')}_{op.name}"
    api.route(PREFIX + op.path, op.method, access=access_of(op))(handle)
