"""The admin web console at /console/ on the admin listener: server-rendered pages (Jinja2).

Every list, filter, form and button comes from the resource declarations in
:mod:`broker.service.admin` (fields with labels, help, choices and limits; list filters;
operations with their scopes); a page here only says which resources it shows. A change runs
the declared operation's use case exactly as the admin API does (one transaction, the same
validation and audit events), with the actor ``console:<token name>``.

Security, declared once per route (:meth:`ConsoleApp.page`): a console session cookie
(``__Host-``, HttpOnly, Secure, SameSite=Strict, expiring) resolved before the handler runs; every
POST carries the session's CSRF token (the sign-in form a double-submit one); changes need a
write-scope session; every answer has a strict Content-Security-Policy (scripts and styles only
from /console/static/) and ``no-store``. The admin token arrives only in the sign-in POST body and
is never logged or put in a URL.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources as package_files
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from klein import Klein
from markupsafe import Markup
from sqlalchemy.orm import Session

from broker import metrics
from broker.codes import Code
from broker.errors import BrokerError
from broker.kinds import Scope
from broker.service import admin, console
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.service.resources import REQUIRED, Call, Field, Operation, Page, Resource
from broker.web.http import Access, AddressThrottle, BadRequest, JsonApi, client_address

log = logging.getLogger("broker.console")

PREFIX = "/console"
COOKIE = b"__Host-console"
SIGNIN_COOKIE = b"__Host-console-signin"
PAGE_SIZE = 25

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    b"content-security-policy": CSP.encode(),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
    b"cross-origin-opener-policy": b"same-origin",
}
STATIC_TYPES = {".css": b"text/css; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
                ".svg": b"image/svg+xml", ".txt": b"text/plain; charset=utf-8"}
_STATIC_NAME = re.compile(r"^[a-z0-9-]+\.(css|js|svg|txt)$")
READ_ONLY_REASON = "Your admin token has read scope: you can see everything and change nothing."
#: Refused console sign-ins an address may make per window (per broker process) before it is
#: made to wait; counted in broker_throttled_total{what="console_sign_in"}.
SIGN_IN_FAILURES = 10
SIGN_IN_WINDOW_S = 300.0


@dataclass(frozen=True)
class ConsolePage:
    """One page of the console: which declared resources it shows."""

    slug: str
    title: str
    resources: tuple[str, ...]
    #: Refresh its lists every few seconds (states and sessions change on their own).
    live: bool = False


PAGES = (
    ConsolePage("directories", "Directories", ("directories",)),
    ConsolePage("trust", "Trust", ("trust", "crls")),
    ConsolePage("users", "Users", ("users",)),
    ConsolePage("workspaces", "WorkSpaces", ("workspaces",), live=True),
    ConsolePage("registration-codes", "Registration codes", ("registration-codes",)),
    ConsolePage("sessions", "Sessions", ("sessions",), live=True),
    ConsolePage("audit", "Audit log", ("audit-events",)),
)
PAGES_BY_SLUG = {p.slug: p for p in PAGES}
#: Lists that start at every directory, not the selected one: the audit log also holds events
#: of no directory (sign-ins, admin tokens); its directory filter still narrows it.
SITE_WIDE = frozenset({"audit-events"})
#: Row actions offered only in some states (the others show the button disabled, saying why).
ROW_OP_STATES = {("workspaces", "start"): ("STOPPED",), ("workspaces", "stop"): ("AVAILABLE",)}


class ConsoleRefused(BrokerError):
    """A console request refused before its handler: no session, bad CSRF token, read scope."""

    code = Code.ADMIN_TOKEN_INVALID


# --------------------------------------------------------------------------- forms from fields

def form_values(request: Any) -> dict[str, list[bytes]]:
    return {k.decode("utf-8", "replace"): list(v) for k, v in (request.args or {}).items()}


def body_form(request: Any) -> dict[str, list[bytes]]:
    """The fields of a form POST's body only (``request.args`` mixes in the query string)."""
    ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if ctype != b"application/x-www-form-urlencoded" or request.content is None:
        return {}
    request.content.seek(0)
    raw = request.content.read()
    return {k.decode("utf-8", "replace"): list(v)
            for k, v in parse_qs(raw, keep_blank_values=True).items()}


def first(values: dict[str, list[bytes]], name: str) -> str:
    got = values.get(name)
    return got[0].decode("utf-8", "replace") if got else ""


def field_input(f: Field) -> str:
    """How a console form shows a declared field."""
    if f.cli_input in ("file", "file_b64"):
        return "file"
    if f.type is bool:
        return "checkbox"
    if f.is_list:
        return "list"
    if f.choices:
        return "select"
    if f.type is int:
        return "number"
    if f.output is False and f.name == "password":
        return "password"
    return "text"


def body_from_form(resource: Resource, op: Operation, values: dict[str, list[bytes]]
                   ) -> dict[str, Any]:
    """The operation's body from a submitted form, shaped as the API's JSON body (groups
    nested); the declared model then validates it exactly as for the API."""
    body: dict[str, Any] = {}
    update = op.body == "update"
    for f in resource.body_fields(op):
        kind = field_input(f)
        text = first(values, f.path).strip()
        value: Any
        if kind not in ("checkbox", "file") and f.path not in values:
            continue  # not on the form: the declared default (create) or unchanged (update)
        if kind == "checkbox":
            value = f.path in values
        elif kind == "file":
            parts = [text] if text else []
            for blob in values.get(f.path + "__file", []):
                if not blob:
                    continue
                try:
                    parts.append(blob.decode("ascii"))
                except UnicodeDecodeError:  # DER: the declared field takes base64
                    parts.append(base64.b64encode(blob).decode())
            if not parts:
                continue
            value = "\n".join(parts)
        elif kind == "list":
            value = [p for p in re.split(r"[,\s]+", text) if p]
        elif kind == "number":
            if not text:
                continue
            if not re.fullmatch(r"-?[0-9]{1,9}", text):
                raise ServiceError(Code.VALIDATION_FAILED, f"{f.label} must be a whole number.",
                                   {"field": f.path})
            value = int(text)
        elif not text:
            if not f.nullable or not f.output or not update:
                continue  # secrets stay as they are; creates take the declared default
            value = None
        else:
            value = text
        (body.setdefault(f.group, {}) if f.group else body)[f.name] = value
    return body


def default_of(f: Field) -> Any:
    """The declared default a create form starts from (None where the field is required)."""
    return None if f.default is REQUIRED else f.default


def set_cookie(request: Any, name: bytes, value: bytes, max_age: int) -> None:
    """A ``__Host-`` cookie: Secure, HttpOnly, SameSite=Strict, Path=/, expiring."""
    request.addCookie(name, value, path=b"/", secure=True, httpOnly=True, sameSite="strict",
                      max_age=str(max_age).encode())


def row_value(row: dict[str, Any], path: str) -> Any:
    group, _, name = path.rpartition(".")
    where = row.get(group, {}) if group else row
    value = where.get(name) if isinstance(where, dict) else None
    # A mapping setting (ldap.attributes) as the text its form accepts; a top-level mapping
    # (an audit event's details) stays a mapping: the list shows it as evidence.
    if group and isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return value


def row_path(op: Operation, row: dict[str, Any]) -> dict[str, str] | None:
    """Path parameters of ``op`` for one listed row, or None when the row cannot name them."""
    out = {}
    for p in op.path_params:
        for key in (p, p.removesuffix("_id"), "id"):
            if row.get(key) not in (None, ""):
                out[p] = str(row[key])
                break
        else:
            return None
    return out


# --------------------------------------------------------------------------- the app

class ConsoleApp:
    """The console's routes, declared on a JsonApi so the route test sees every one."""

    def __init__(self, ctx: BrokerContext) -> None:
        self.ctx = ctx
        self.api = JsonApi("console", Klein())
        self.env = Environment(loader=PackageLoader("broker.web", "console_templates"),
                               autoescape=select_autoescape(default=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(pages=PAGES, prefix=PREFIX, field_input=field_input,
                                default_of=default_of, row_op_states=ROW_OP_STATES,
                                row_value=row_value, read_only_reason=READ_ONLY_REASON)
        self.env.filters["when"] = _when
        self.env.filters["deadline"] = _deadline_class
        self.env.filters["tojson_attr"] = lambda v: json.dumps(v, sort_keys=True)
        # Audit details as people read them: plain text (autoescaped), no \u0027 escapes.
        self.env.filters["readable_json"] = lambda v, indent=None: json.dumps(
            v, indent=indent, ensure_ascii=False, sort_keys=True)
        from twisted.internet import reactor

        clock: Any = reactor
        self.sign_in_throttle = AddressThrottle(SIGN_IN_FAILURES, SIGN_IN_WINDOW_S,
                                                clock.seconds)
        self._declare()

    # ------------------------------------------------------------------ declarations

    def page(self, template: str, method: str, *, access: Access) -> Any:
        """Declare a console route; the session, CSRF token and scope are checked here,
        before the handler runs."""

        def register(handler: Any) -> Any:
            @functools.wraps(handler)
            async def wrapper(request: Any, **kwargs: Any) -> bytes:
                started = time.monotonic()
                for name, value in SECURITY_HEADERS.items():
                    request.setHeader(name, value)
                status = 200
                try:
                    if access in (Access.CONSOLE_READ, Access.CONSOLE_WRITE):
                        kwargs["identity"] = await self._identity(request, method, access)
                    out = await handler(request, **kwargs)
                except ConsoleRefused as exc:
                    if method == "GET" and exc.details.get("sign_in"):
                        out = self.redirect(request, f"{PREFIX}/sign-in")
                    else:
                        request.setResponseCode(403)
                        out = self.render(request, "refused.html", None,
                                          message=exc.message)
                except BrokerError as exc:
                    request.setResponseCode(400)
                    out = self.render(request, "refused.html", None, message=exc.message)
                except Exception:
                    log.exception("console error", extra={"route": template})
                    request.setResponseCode(500)
                    out = self.render(request, "refused.html", None,
                                      message="The broker hit an unexpected error; it has "
                                              "been logged.")
                status = request.code
                log.info("request", extra={
                    "api": "console", "method": method, "route": template, "status": status,
                    "duration_ms": round((time.monotonic() - started) * 1000, 2),
                    "client": client_address(request)})
                return out

            wrapper.__name__ = wrapper.__qualname__ = "console_" + re.sub(
                r"\W", "_", f"{method}_{template}")
            self.api.raw_route(template, method, access=access)(wrapper)
            return wrapper

        return register

    async def _identity(self, request: Any, method: str, access: Access
                        ) -> console.ConsoleIdentity:
        secret = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")

        def work(session: Session) -> console.ConsoleIdentity:
            return console.resolve(session, secret or None, self.ctx.now(),
                                   take_flash=method == "GET")

        try:
            identity: console.ConsoleIdentity = await self.ctx.call(
                self.ctx.db.transaction, work)
        except ServiceError as exc:
            raise ConsoleRefused(message=exc.message, details={"sign_in": True}) from None
        if method != "GET" and not console.csrf_ok(identity, first(form_values(request),
                                                                   "csrf")):
            raise ConsoleRefused(message="This form is missing its CSRF token (or it is "
                                         "stale); reload the page and try again.")
        if access is Access.CONSOLE_WRITE and not identity.can_write:
            raise ConsoleRefused(message=READ_ONLY_REASON)
        return identity

    # ------------------------------------------------------------------ rendering

    def render(self, request: Any, name: str, identity: console.ConsoleIdentity | None,
               **values: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        flash = identity.flash if identity else None
        values.setdefault("path", request.path.decode("utf-8", "replace"))
        return self.env.get_template(name).render(
            identity=identity, flash=flash, **values).encode("utf-8")

    def redirect(self, request: Any, to: str) -> bytes:
        request.setResponseCode(303)
        request.setHeader(b"location", to.encode())
        return b""

    async def flash(self, identity: console.ConsoleIdentity, message: str) -> None:
        await self.ctx.call(self.ctx.db.transaction,
                            lambda s: console.set_flash(s, identity, message))

    # ------------------------------------------------------------------ routes

    def _declare(self) -> None:
        ctx = self.ctx

        @self.page(f"{PREFIX}/sign-in", "GET", access=Access.ANONYMOUS)
        async def sign_in_form(request: Any) -> bytes:
            nonce = secrets.token_urlsafe(24)
            set_cookie(request, SIGNIN_COOKIE, nonce.encode(), 600)
            return self.render(request, "sign_in.html", None, csrf=nonce, error=None)

        @self.page(f"{PREFIX}/sign-in", "POST", access=Access.ANONYMOUS)
        async def sign_in(request: Any) -> bytes:
            address = client_address(request)
            wait = self.sign_in_throttle.retry_after(address)
            if wait:
                metrics.THROTTLED.labels("console_sign_in").inc()
                request.setResponseCode(429)
                request.setHeader(b"retry-after", str(int(wait) + 1).encode())
                return self.render(request, "refused.html", None, message=(
                    "Too many refused sign-ins from this address; try again in "
                    f"{int(wait) + 1} seconds."))
            if "token" in parse_qs(urlsplit(request.uri).query.decode("latin-1")):
                raise BadRequest(message="The admin token is taken from the sign-in form's "
                                         "body only, never from the address (it would end up "
                                         "in logs and browser history).")
            values = body_form(request)  # token and CSRF token from the POST body only
            nonce = (request.getCookie(SIGNIN_COOKIE) or b"").decode("ascii", "replace")
            presented = first(values, "csrf")
            if not nonce or not presented or not hmac.compare_digest(nonce, presented):
                raise ConsoleRefused(message="The sign-in form is missing its CSRF token (or "
                                             "it is stale); reload the page and try again.")
            token = first(values, "token").strip()

            def work(session: Session) -> tuple[str, console.ConsoleIdentity]:
                return console.sign_in(session, token or None, ctx.now(), address)

            try:
                secret, identity = await ctx.call(ctx.db.transaction, work)
            except ServiceError:
                self.sign_in_throttle.failed(address)
                await ctx.call(ctx.db.transaction,
                               lambda s: console.sign_in_refused(s, address))
                request.setResponseCode(401)
                fresh = secrets.token_urlsafe(24)
                set_cookie(request, SIGNIN_COOKIE, fresh.encode(), 600)
                return self.render(request, "sign_in.html", None, csrf=fresh,
                                   error="That admin token is unknown or revoked.")
            set_cookie(request, COOKIE, secret.encode(),
                       int(console.ABSOLUTE.total_seconds()))
            set_cookie(request, SIGNIN_COOKIE, b"", 0)
            return self.redirect(request, f"{PREFIX}/")

        @self.page(f"{PREFIX}/sign-out", "POST", access=Access.CONSOLE_READ)
        async def sign_out(request: Any, identity: console.ConsoleIdentity) -> bytes:
            secret = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
            await ctx.call(ctx.db.transaction, lambda s: console.sign_out(s, secret))
            set_cookie(request, COOKIE, b"", 0)
            return self.redirect(request, f"{PREFIX}/sign-in")

        @self.page(f"{PREFIX}/directory", "POST", access=Access.CONSOLE_READ)
        async def select_directory(request: Any, identity: console.ConsoleIdentity) -> bytes:
            """The header's selector: the directory every list, filter and form uses, kept
            in the console session (read scope may choose too: it changes nothing)."""
            values = form_values(request)
            chosen = first(values, "directory_id")
            await ctx.call(ctx.db.transaction,
                           lambda s: console.select_directory(s, identity, chosen))
            return self.redirect(request, _return_to(first(values, "return_to"), f"{PREFIX}/"))

        @self.page(f"{PREFIX}/static/{{name}}", "GET", access=Access.ANONYMOUS)
        async def static(request: Any, name: str) -> bytes:
            if not _STATIC_NAME.match(name):
                raise ConsoleRefused(message="No such file.")
            try:
                data = package_files.files("broker.web").joinpath(
                    "console_static", name).read_bytes()
            except FileNotFoundError:
                request.setResponseCode(404)
                return b""
            request.setHeader(b"content-type", STATIC_TYPES["." + name.rsplit(".", 1)[1]])
            request.setHeader(b"cache-control", b"max-age=300")
            return bytes(data)

        @self.page(f"{PREFIX}/", "GET", access=Access.CONSOLE_READ)
        async def overview(request: Any, identity: console.ConsoleIdentity) -> bytes:
            data = await ctx.call(ctx.db.read, lambda s: console.overview(s, ctx))
            return self.render(request, "overview.html", identity, data=data,
                               chart=login_chart(data["logins"]),
                               reasons=reason_bars(data["logins"]["reasons"]))

        @self.page(f"{PREFIX}/{{slug}}", "GET", access=Access.CONSOLE_READ)
        async def resource_page(request: Any, slug: str,
                                identity: console.ConsoleIdentity) -> bytes:
            page = _page(slug)
            args = form_values(request)
            identity = await self.follow_link(identity, first(args, "directory_id"))
            chosen = identity.directory
            sections = await ctx.call(ctx.db.read,
                                      lambda s: self.sections(s, page, args, chosen))
            return self.render(request, "resources.html", identity, page=page,
                               sections=sections, notes=self.notes(page),
                               directories=list(identity.directories),
                               failed=None, ldap_users=await self.ldap_users(page, sections,
                                                                             args))

        @self.page(f"{PREFIX}/directories/test-lookup", "POST", access=Access.CONSOLE_READ)
        async def test_lookup(request: Any, identity: console.ConsoleIdentity) -> bytes:
            """Map a pasted or uploaded certificate as a login would: the same service
            function as ``broker admin directories test-lookup``. It changes nothing, so a
            read-scope session may use it (the form still carries the CSRF token)."""
            from broker.service.ldapdir import test_lookup as lookup

            values = form_values(request)
            # The form starts at the console's selected directory; testing in another one
            # selects it, so the header and the form agree afterwards.
            directory_id = first(values, "directory_id") or identity.directory
            identity = await self.follow_link(identity, directory_id)
            pem = first(values, "certificate").strip().encode("utf-8", "replace")
            blobs = [b for b in values.get("certificate__file", []) if b]
            data = blobs[0] if blobs and not pem else pem  # a file: PEM or DER
            result: dict[str, Any] = {"directory_id": directory_id}
            if not data:
                request.setResponseCode(400)
                result["error"] = {"code": str(Code.VALIDATION_FAILED),
                                   "message": "Paste a certificate (PEM) or choose a "
                                              "certificate file (PEM or DER)."}
            else:
                try:
                    result["found"] = await ctx.call(lookup, ctx, directory_id, data)
                except BrokerError as exc:
                    result["error"] = {"code": str(exc.code), "message": exc.message,
                                       "details": {k: v for k, v in exc.details.items()
                                                   if k in ("rule", "dn", "rules", "dns",
                                                            "groups")}}
            directories = await ctx.call(ctx.db.read, console.directory_ids)
            return self.render(request, "test_lookup.html", identity, result=result,
                               directories=directories)

        @self.page(f"{PREFIX}/{{slug}}/edit", "GET", access=Access.CONSOLE_READ)
        async def edit_page(request: Any, slug: str,
                            identity: console.ConsoleIdentity) -> bytes:
            page = _page(slug)
            args = form_values(request)
            resource = _resource_of(page, first(args, "resource"))
            get, update = resource.operation("get"), resource.operation_for_body("update")
            path = {p: first(args, "path." + p) for p in get.path_params}

            def work(session: Session) -> Any:
                return get.run(session, ctx, Call(identity.actor, path))

            row = await ctx.call(ctx.db.read, work)
            return self.render(request, "edit.html", identity, page=page, resource=resource,
                               op=update, row=row, path_values=path,
                               fields=resource.body_fields(update), notes=self.notes(page),
                               directories=[])

        @self.page(f"{PREFIX}/{{slug}}/do", "POST", access=Access.CONSOLE_WRITE)
        async def do(request: Any, slug: str, identity: console.ConsoleIdentity) -> bytes:
            page = _page(slug)
            values = form_values(request)
            resource = _resource_of(page, first(values, "resource"))
            try:
                op = resource.operation(first(values, "operation"))
            except KeyError:
                raise ConsoleRefused(message="No such operation.") from None
            if op.scope is not Scope.WRITE:
                raise ConsoleRefused(message="Only changes are submitted as forms.")
            back = _return_to(first(values, "return_to"), f"{PREFIX}/{page.slug}")
            try:
                path = {p: first(values, "path." + p) for p in op.path_params}
                body = resource.parse_body(op, body_from_form(resource, op, values))

                def work(session: Session) -> Any:
                    return op.run(session, ctx, Call(identity.actor, path, body))

                result = await ctx.call(ctx.db.transaction, work)
                await self.flash(identity, "ok:" + _done(resource, op, result, path))
            except BrokerError as exc:  # any expected refusal (service, backend, PKI)
                if op.body == "update":  # back to the form it came from, saying why
                    back = f"{PREFIX}/{page.slug}/edit?" + urlencode(
                        {"resource": resource.name, **{f"path.{k}": v for k, v in path.items()}})
                if op.body != "create":
                    await self.flash(identity, "error:" + exc.message)
                    return self.redirect(request, back)
                # A refused create is shown again with what was typed and why.
                request.setResponseCode(400)
                chosen = path.get("directory_id") or identity.directory
                sections = await ctx.call(ctx.db.read,
                                          lambda s: self.sections(s, page, {}, chosen))
                typed: dict[str, Any] = {f.path: first(values, f.path)
                                         for f in resource.body_fields(op)
                         if field_input(f) != "file"}
                typed.update({f.path: f.path in values for f in resource.body_fields(op)
                              if field_input(f) == "checkbox"})
                return self.render(request, "resources.html", identity, page=page,
                                   sections=sections, notes=self.notes(page),
                                   directories=list(identity.directories),
                                   failed={"resource": resource.name, "op": op.name,
                                           "values": typed, "error": exc.message},
                                   path=f"{PREFIX}/{page.slug}")
            return self.redirect(request, back)

    # ------------------------------------------------------------------ page data

    async def follow_link(self, identity: console.ConsoleIdentity, wanted: str
                          ) -> console.ConsoleIdentity:
        """A link's ``?directory_id=`` (an existing directory) becomes the selected directory,
        so the header, every list and every form agree with the page the link opened."""
        if not wanted or wanted not in identity.directories or wanted == identity.directory_id:
            return identity
        await self.ctx.call(self.ctx.db.transaction,
                            lambda s: console.select_directory(s, identity, wanted))
        return dataclasses.replace(identity, directory_id=wanted)

    async def ldap_users(self, page: ConsolePage, sections: list[dict[str, Any]],
                         args: dict[str, list[bytes]]) -> dict[str, Any] | None:
        """The users page of an LDAP-backed directory: read through its server (one bounded
        paged search, see :func:`broker.service.ldapdir.browse_users`); None elsewhere."""
        from broker.service.ldapdir import browse_users

        if page.slug != "users" or not sections or not sections[0]["chosen"]:
            return None
        chosen = sections[0]["chosen"]
        try:
            found: dict[str, Any] | None = await self.ctx.call(
                browse_users, self.ctx, chosen, first(args, "search").strip())
        except BrokerError as exc:
            return {"directory_id": chosen, "items": [], "problem": exc.message}
        return None if found is None else {"directory_id": chosen, **found}

    def notes(self, page: ConsolePage) -> dict[str, Any]:
        """Per region, what the policy says next to each smart-card toggle."""
        if "directories" not in page.resources:
            return {}
        return console.directory_notes(self.ctx.catalogue)

    def sections(self, session: Session, page: ConsolePage, args: dict[str, list[bytes]],
                 chosen: str) -> list[dict[str, Any]]:
        """One section per resource of the page: list, filters, paging, forms, row actions,
        all in the ``chosen`` directory (a ``directory`` filter starts at it; "any" widens)."""
        directories = console.directory_ids(session)
        out = []
        for name in page.resources:
            resource = admin.RESOURCES[name]
            list_op = resource.operation("list")
            path = {p: chosen for p in list_op.path_params}
            filters, shown = {}, {}
            for flt in list_op.filters:
                text = first(args, flt.name).strip()
                if flt.name == "directory" and flt.name not in args and \
                        name not in SITE_WIDE:
                    text = chosen
                shown[flt.name] = text
                if text:
                    filters[flt.name] = _filter_value(flt, text)
            if name == "sessions" and "state" not in args:
                filters["state"] = shown["state"] = "live"
            cursor = first(args, f"cursor.{name}") or None
            rows: dict[str, Any] = {"items": [], "next_cursor": None}
            problem = None
            if list_op.path_params and not chosen:
                problem = "Create a directory first."
            else:
                try:
                    rows = list_op.run(session, self.ctx, Call(
                        "", path, {}, filters, Page(limit=PAGE_SIZE, cursor=cursor)))
                except BrokerError as exc:
                    problem = exc.message
            listed = {p for p in list_op.path_params}
            row_ops, collection_ops, edit_op = [], [], None
            out_names = {f.name for f in resource.fields if f.output}
            for op in resource.operations:
                if op.scope is not Scope.WRITE:
                    continue
                if op.body == "update":
                    edit_op = op
                elif op.body == "create":
                    collection_ops.append(op)
                elif set(op.path_params) - listed and all(p.name in out_names
                                                          for p in op.params):
                    row_ops.append(op)
                elif op.params and all(p.name in out_names for p in op.params):
                    row_ops.append(op)
                else:
                    collection_ops.append(op)
            next_args = {k: first(args, k) for k in args if not k.startswith("cursor.")}
            next_link = None
            if rows.get("next_cursor"):
                next_link = "?" + urlencode({**next_args,
                                             f"cursor.{name}": rows["next_cursor"]})
            out.append({
                "resource": resource, "list_op": list_op, "rows": rows["items"],
                "columns": resource.console_columns, "filters": list_op.filters,
                "filter_values": shown, "path": path, "chosen": chosen,
                "directories": directories, "problem": problem,
                "row_ops": row_ops, "collection_ops": collection_ops, "edit_op": edit_op,
                "next_link": next_link,
                "first_link": ("?" + urlencode(next_args)) if cursor else None,
                "row_path": row_path,
                "live": page.live,
            })
        return out


def _page(slug: str) -> ConsolePage:
    page = PAGES_BY_SLUG.get(slug)
    if page is None:
        raise ConsoleRefused(message=f"There is no console page {slug!r}.")
    return page


def _resource_of(page: ConsolePage, name: str) -> Resource:
    if name not in page.resources:
        raise ConsoleRefused(message="That resource is not on this page.")
    return admin.RESOURCES[name]


def _filter_value(flt: Any, text: str) -> Any:
    if flt.type is bool:
        return text.lower() == "true"
    if flt.type is datetime:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ServiceError(Code.VALIDATION_FAILED, f"{flt.name} must be a date and time.",
                               {"field": flt.name}) from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return text


def _return_to(back: str, default: str) -> str:
    """Where a form goes back to: a console path only (no other site, no scheme-relative)."""
    if not back.startswith(f"{PREFIX}/") or "//" in back or "\\" in back:
        return default
    return back


#: Success messages for operations that return a list, where the console words them itself.
LIST_DONE = {("registration-codes", "issue"): "{count} registration {codes} issued in "
                                             "{directory}: {names}"}


def _done(resource: Resource, op: Operation, result: Any, path: dict[str, str]) -> str:
    """The success message of a change; it names the directory the change happened in."""
    directory = path.get("directory_id") or ""
    if not directory and isinstance(result, dict) and isinstance(result.get("directory"), str):
        directory = result["directory"]
    if isinstance(result, list):
        first_column = resource.list_columns[0] if resource.list_columns else "id"
        names = ", ".join(str(row_value(r, first_column)) for r in result if isinstance(r, dict))
        template = LIST_DONE.get((resource.name, op.name))
        if template:
            return template.format(count=len(result), directory=directory, names=names,
                                   codes="code" if len(result) == 1 else "codes")
        text = f"{op.summary.rstrip('.')}: {names}"
    else:
        text = f"{op.summary.rstrip('.')}: done."
        if op.message:
            try:
                text = op.message.format(**{**(result if isinstance(result, dict) else {}),
                                            **path})
            except (KeyError, IndexError):
                pass
    if directory and resource.name != "directories" and directory not in text:
        text += f" (directory {directory})"
    return text


def _when(value: Any) -> str:
    if not value:
        return ""
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _deadline_class(value: Any, warn_within: timedelta) -> str:
    """past / soon / ok for a declared deadline field (``Field.warn_within``)."""
    if not value:
        return ""
    at = datetime.fromisoformat(str(value))
    now = datetime.now(UTC)
    if at <= now:
        return "past"
    return "soon" if at - now < warn_within else "ok"


# --------------------------------------------------------------------------- charts (SVG)

OUTCOME_COLOURS = {"success": "#2e7d32", "refused": "#c62828", "error": "#6a1b9a"}


def login_chart(series: dict[str, Any], width: int = 720, height: int = 220
                ) -> dict[str, Any]:
    """Geometry of a stacked bar chart of logins per hour by outcome (rendered as inline SVG,
    so it reads without JavaScript and needs no inline script or style)."""
    buckets = series["buckets"]
    counts = series["counts"]
    totals = [sum(counts[o][i] for o in counts) for i in range(len(buckets))]
    top = max([1, *totals])
    left, bottom, plot_h = 36, 24, height - 40
    step = (width - left - 8) / max(1, len(buckets))
    bars = []
    for i, bucket in enumerate(buckets):
        y = height - bottom
        for outcome, values in counts.items():
            n = values[i]
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            bars.append({"x": round(left + i * step + 1, 1), "y": round(y, 1),
                         "w": round(max(step - 2, 1), 1), "h": round(h, 1),
                         "fill": OUTCOME_COLOURS.get(outcome, "#555"), "outcome": outcome,
                         "count": n, "hour": bucket,
                         "label": f"{_when(bucket)}: {n} {outcome}"})
    ticks = [{"x": round(left + i * step, 1), "label": _when(b)[11:16]}
             for i, b in enumerate(buckets) if i % 4 == 0]
    return {"width": width, "height": height, "bars": bars, "top": top, "ticks": ticks,
            "axis_y": height - bottom, "left": left,
            "legend": [{"outcome": o, "fill": OUTCOME_COLOURS.get(o, "#555"),
                        "total": sum(v)} for o, v in counts.items()],
            "total": sum(totals)}


def reason_bars(reasons: list[tuple[str, int]], width: int = 320) -> dict[str, Any]:
    """Horizontal bars: refusals by reason code."""
    top = max([1, *(n for _, n in reasons)])
    rows = [{"reason": r, "count": n, "y": 8 + i * 26, "w": round(120 * n / top, 1)}
            for i, (r, n) in enumerate(reasons[:12])]
    return {"width": width, "height": 16 + 26 * max(1, len(rows)), "rows": rows}


def as_markup(text: str) -> Markup:
    return Markup(text)
