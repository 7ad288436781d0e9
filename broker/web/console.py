"""The admin web console at /console/ on the admin listener: server-rendered pages (Jinja2).

Every list, filter, form and button comes from the resource declarations in
:mod:`broker.admin` (fields with labels, help, choices and limits; list filters;
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

import functools
import hmac
import json
import logging
import re
import secrets
from importlib import resources as package_files
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from klein import Klein
from sqlalchemy.orm import Session

from broker import metrics
from broker.admin.framework import Call
from broker.codes import Code
from broker.errors import BrokerError
from broker.kinds import Scope
from broker.service import console
from broker.service.context import BrokerContext
from broker.service.errors import ServiceError
from broker.web.console_charts import (
    _deadline_class,
    _when,
    login_chart,
    reason_bars,
)
from broker.web.console_forms import (
    PREFIX,
    ConsoleRefused,
    _done,
    _return_to,
    body_form,
    body_from_form,
    create_values,
    default_of,
    field_input,
    first,
    form_values,
    row_value,
    row_values,
    set_cookie,
    typed_values,
)
from broker.web.console_pages import (
    ADVANCED_PKI,
    FORM_TITLES,
    OWNER_FIELDS,
    PAGES,
    ROW_OP_STATES,
    PageData,
    _page,
    _resource_of,
    owner_choices,
)
from broker.web.http import Access, AddressThrottle, BadRequest, JsonApi, client_address, routed

log = logging.getLogger("broker.console")

COOKIE = b"__Host-console"
SIGNIN_COOKIE = b"__Host-console-signin"

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

# --------------------------------------------------------------------------- the app

class ConsoleApp(PageData):
    """The console's routes, declared on a JsonApi so the route test sees every one."""

    def __init__(self, ctx: BrokerContext) -> None:
        self.ctx = ctx
        self.api = JsonApi("console", Klein())
        self.env = Environment(loader=PackageLoader("broker.web", "console_templates"),
                               autoescape=select_autoescape(default=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(pages=PAGES, prefix=PREFIX, field_input=field_input,
                                default_of=default_of, row_op_states=ROW_OP_STATES,
                                row_value=row_value, read_only_reason=READ_ONLY_REASON,
                                advanced_pki=ADVANCED_PKI, owner_fields=OWNER_FIELDS,
                                form_titles=FORM_TITLES, typed_values=typed_values,
                                create_values=create_values, row_values=row_values)
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
            async def run(request: Any, kwargs: dict[str, Any]) -> bytes:
                for name, value in SECURITY_HEADERS.items():
                    request.setHeader(name, value)
                if access in (Access.CONSOLE_READ, Access.CONSOLE_WRITE):
                    kwargs["identity"] = await self._identity(request, method, access)
                out: bytes = await handler(request, **kwargs)
                return out

            def refuse(request: Any, exc: Exception, rid: str, route: str) -> tuple[bytes, str]:
                if isinstance(exc, ConsoleRefused):
                    if method == "GET" and exc.details.get("sign_in"):
                        return self.redirect(request, f"{PREFIX}/sign-in"), exc.code
                    request.setResponseCode(403)
                    return self.render(request, "refused.html", None,
                                       message=exc.message), exc.code
                if isinstance(exc, BrokerError):
                    request.setResponseCode(400)
                    return self.render(request, "refused.html", None,
                                       message=exc.message), exc.code
                log.exception("console error", extra={"route": route, "request_id": rid},
                              exc_info=exc)
                request.setResponseCode(500)
                return self.render(request, "refused.html", None,
                                   message="The broker hit an unexpected error; it has been "
                                           "logged."), "internal_error"

            wrapper = functools.wraps(handler)(routed("console", template, run, refuse))
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
            from broker.admin.ldap_users import test_lookup as lookup

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
            owners = None
            if any((resource.name, f.path) in OWNER_FIELDS for f in resource.body_fields(update)):
                owners = await ctx.call(ctx.db.read,
                                        lambda s: owner_choices(s, str(row.get("directory"))))
            return self.render(request, "edit.html", identity, page=page, resource=resource,
                               op=update, row=row, path_values=path,
                               fields=resource.body_fields(update), notes=self.notes(page),
                               directories=[], owners=owners)

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
