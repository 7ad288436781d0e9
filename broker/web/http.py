"""How bytes arrive: the HTTP channel (deadlines and size limits), declared routes, strict JSON.

Every route is declared through :meth:`JsonApi.route` with the method, the path template exactly
as the OpenAPI document writes it (``/v1/sessions/{session_id}/heartbeat``) and who may call it
(:class:`Access`). The wrapper, in this order:

1. refuses an oversized body (413) before anything is parsed;
2. authenticates the caller as the route declares (a client auth token, or an admin token with
   read or write scope) **before the body is read** — a route cannot forget it, and a test fails
   on any route without a declaration;
3. runs the handler, which parses its body with :func:`read_model` (``application/json`` only,
   nesting depth, number size, duplicate keys and non-finite numbers refused, unknown fields
   refused);
4. turns every :class:`~broker.errors.BrokerError` into the JSON error body with its status from
   ``broker.web.errors``; an unexpected exception is logged with its traceback and answered 500
   ``internal_error`` — the client never sees a traceback.

Access-log lines carry the route *template* and never the raw path, which holds session and
challenge ids.

:class:`BrokerChannel` says no early, before a request reaches a route: a deadline for the
request head and one for the body, 431 for oversized headers, 413 for a ``Content-Length`` over
the limit without reading the body.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from broker.codes import Code
from broker.errors import BrokerError
from broker.web.access import record as record_access
from broker.web.errors import body_for, error_body, status_for
from broker.web.twisted_shim import BadRequestHook

log = logging.getLogger("broker.web")
M = TypeVar("M", bound=BaseModel)

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

#: Deepest JSON nesting a request body may have (the API's bodies need 3).
MAX_JSON_DEPTH = 16
#: Longest number literal (characters) a request body may hold.
MAX_NUMBER_CHARS = 32


class Access(enum.StrEnum):
    """Who may call a route; every route declares one."""

    #: No credentials: registration, login, public keys, health, documents.
    ANONYMOUS = "anonymous"
    #: A client auth token from login; the use case then checks that the token's user owns the
    #: session, WorkSpace or challenge the path names (404 when not).
    AUTH_TOKEN = "auth_token"
    #: An admin token of either scope.
    ADMIN_READ = "admin_read"
    #: An admin token of write scope.
    ADMIN_WRITE = "admin_write"
    #: A signed-in admin console session (cookie) of either scope; forms carry its CSRF token.
    CONSOLE_READ = "console_read"
    #: A signed-in admin console session whose admin token has write scope, plus its CSRF token.
    CONSOLE_WRITE = "console_write"


#: ``authenticate(bearer, access)`` → the principal the handler receives, or a BrokerError.
Authenticator = Callable[[str | None, Access], Awaitable[Any]]


class BadRequest(BrokerError):
    code = Code.MALFORMED_REQUEST


# --------------------------------------------------------------------------- the channel

def _raw_error(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps(error_body(code, message), separators=(",", ":")).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class BrokerChannel(BadRequestHook, HTTPChannel):
    """An HTTP/1.1 channel that refuses slow or oversized requests at once.

    * the request head (line + headers) must arrive within ``head_timeout_s`` of its first
      byte, the whole body (sized or chunked) within ``body_timeout_s`` of the end of the head
      (408, then closed). Twisted's own ``timeOut`` (``TimeoutMixin``) is an idle timeout that
      each byte resets, so a trickle never meets it; these deadlines are absolute. They run on
      ``self.callLater``, which the Site sets from its reactor, so a ``Clock`` drives them;
    * a header line or a head over ``totalHeadersSize`` bytes → 431 (Twisted's own check of
      that limit would answer 400; ours runs first);
    * a ``Content-Length`` over ``max_body_bytes`` → 413 before any of the body is read;
    * whatever Twisted cannot parse, ``maxHeaders`` headers included → 400 with the JSON error
      body (through the one private hook, :mod:`broker.web.twisted_shim`).
    """

    head_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_body_bytes: int = 65536
    totalHeadersSize = 16384  # noqa: N815 (twisted API: bytes of request line + headers)
    maxHeaders = 500  # noqa: N815 (twisted API: Twisted's default, said here)
    MAX_LENGTH = 16384  # LineReceiver: the longest single line

    def __init__(self) -> None:
        super().__init__()
        self._deadline: Any = None
        self._awaiting_head = True
        self._refused = False
        self._head_bytes = 0

    # -- deadlines
    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.callLater(seconds, functools.partial(self._too_slow, what))

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self, what: str) -> None:
        self._deadline = None
        self._refuse(408, "Request Timeout", "request_timeout",
                     f"The request {what} did not arrive in time.")

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        if self._refused or self.transport is None:
            return
        self._refused = True
        self._disarm()
        transport: Any = self.transport
        transport.write(_raw_error(status, reason, code, message))
        transport.loseConnection()
        # A peer that does not read its answer must not keep the connection either.
        self.callLater(2.0, self._abort)

    def _abort(self) -> None:
        transport: Any = self.transport
        if transport is not None and getattr(transport, "connected", False):
            transport.abortConnection()

    def bad_request(self) -> None:
        """Twisted could not parse the request (see :mod:`broker.web.twisted_shim`)."""
        self._refuse(400, "Bad Request", "malformed_request",
                     "The request line or headers are not valid HTTP/1.1.")

    # -- HTTPChannel hooks
    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (twisted API)
        if self._refused:
            return
        if self._awaiting_head and self._deadline is None and data:
            self._arm(self.head_timeout_s, "head")
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 (twisted API)
        if self._refused:
            return
        self._head_bytes += len(line)  # counted as Twisted counts it: without the CRLF
        if self._head_bytes > self.totalHeadersSize:
            self._refuse(431, "Request Header Fields Too Large", "headers_too_large",
                         f"The request head is larger than {self.totalHeadersSize} bytes.")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802 (twisted API)
        self._refuse(431, "Request Header Fields Too Large", "headers_too_large",
                     f"A request header line is longer than {self.MAX_LENGTH} bytes.")

    def headerReceived(self, line: bytes) -> bool:  # noqa: N802 (twisted API)
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            if value.isdigit() and int(value) > self.max_body_bytes:
                self._refuse(413, "Content Too Large", "request_too_large",
                             f"The request body is larger than {self.max_body_bytes} bytes.")
                return False
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:  # noqa: N802 (twisted API)
        self._awaiting_head = False
        self._head_bytes = 0
        self._disarm()
        if self.length != 0:  # a Content-Length, or None: a chunked body (however trickled)
            self._arm(self.body_timeout_s, "body")
        super().allHeadersReceived()

    def allContentReceived(self) -> None:  # noqa: N802 (twisted API)
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:  # noqa: N802 (twisted API)
        self._awaiting_head = True
        super().requestDone(request)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 (twisted API)
        self._disarm()
        super().connectionLost(reason)


class BrokerRequest(Request):
    """A request that stops buffering its body past ``max_body_bytes`` (chunked bodies)."""

    max_body_bytes = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.too_large = False
        self._received = 0
        # 32 hex digits like uuid4().hex, without building a UUID object per request.
        self.request_id = os.urandom(16).hex()

    def gotLength(self, length: int | None) -> None:  # noqa: N802 (twisted API)
        if length is not None and length > self.max_body_bytes:
            self.too_large = True
            length = 0  # never allocate for a body we will refuse
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (twisted API)
        self._received += len(data)
        if self._received > self.max_body_bytes:
            self.too_large = True
            return
        super().handleContentChunk(data)


class JsonRequest(BrokerRequest):
    """A request of a JSON-only API: Twisted does not parse a POST body as a form (it would
    parse every Content-Type with the email package first; read_json checks it). Passed to
    ``Request.__init__``, which overwrites a class attribute with its Site's setting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)


def client_address(request: Request) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", None) or str(peer)


def bearer(request: Request) -> str | None:
    """The Bearer credential of the Authorization header, if any."""
    header = request.getHeader(b"authorization")
    if header and header[:7].lower() == b"bearer ":
        token = header[7:].strip()
        return token.decode("ascii", "replace") if token else None
    return None


def write_json(request: Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    if body is None:
        return b""
    return json.dumps(body, separators=(",", ":"), default=str).encode()


# --------------------------------------------------------------------------- strict JSON

def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BadRequest(message=f"The request body repeats the key {key!r}.",
                             details={"fields": [key]})
        out[key] = value
    return out


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadRequest(message=f"A number in the request body has more than "
                                 f"{MAX_NUMBER_CHARS} characters.")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadRequest(message=f"A number in the request body has more than "
                                 f"{MAX_NUMBER_CHARS} characters.")
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(message="The request body holds a number out of range.")
    return value


def _constant(name: str) -> Any:
    raise BadRequest(message=f"{name} is not a JSON number.")


#: Characters no JSON string of a request may hold: NUL (PostgreSQL's text cannot store it) and
#: the C0 controls other than tab, line feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
#: Characters an identifier (path id, user name, code) may not hold: every C0 control and DEL.
IDENTIFIER_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _refuse_controls(value: Any) -> None:
    """BadRequest when a string (key or value) anywhere in ``value`` holds a control character
    other than tab, line feed or carriage return."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _CONTROL.search(item):
                raise BadRequest(message="The request body holds a control character (such as "
                                         "NUL) in a string.")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def loads_strict(raw: bytes) -> Any:
    """Parse a request body: UTF-8 JSON, nesting at most MAX_JSON_DEPTH, numbers of at most
    MAX_NUMBER_CHARS characters, no NaN/Infinity, no repeated keys, no NUL or other control
    character but tab, LF and CR in any string; else BadRequest."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(message="The request body is not UTF-8.") from None
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(message=f"The request body nests deeper than {MAX_JSON_DEPTH} "
                                     "levels.")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_int,
                          parse_float=_float, parse_constant=_constant)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        if isinstance(exc, BrokerError):
            raise
        raise BadRequest(message=f"The request body is not valid JSON: {exc}.") from None
    _refuse_controls(data)
    return data


def read_json(request: Request) -> Any:
    """The request body as JSON: 413 too large, 415 not application/json, 400 malformed."""
    if getattr(request, "too_large", False):
        raise BrokerError(Code.REQUEST_TOO_LARGE,
                          f"The request body is larger than {BrokerRequest.max_body_bytes} bytes.")
    content = request.content
    raw = b""
    if content is not None:
        content.seek(0)
        raw = content.read()
    if not raw:
        raise BadRequest(message="The request needs a JSON body.")
    ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if ctype != b"application/json":
        raise BrokerError(Code.UNSUPPORTED_MEDIA_TYPE,
                          "The request body must be sent as Content-Type: application/json.",
                          {"content_type": ctype.decode("latin-1")[:100]})
    return loads_strict(raw)


def parse_model(model: type[M], data: Any) -> M:
    """Validate ``data`` against ``model``; unknown fields and wrong types are malformed_request."""
    if not isinstance(data, dict):
        raise BadRequest(message="The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "body"
            kind = "is not allowed" if err["type"] == "extra_forbidden" else err["msg"].lower()
            problems.append(f"{where} {kind}")
        raise BadRequest(message="The request body is invalid: " + "; ".join(problems) + ".",
                         details={"fields": [".".join(str(p) for p in e["loc"])
                                             for e in exc.errors()]}) from None


def read_model(request: Request, model: type[M]) -> M:
    return parse_model(model, read_json(request))


def read_optional_model(request: Request, model: type[M]) -> M:
    """Like :func:`read_model`, but an empty body means the model's defaults."""
    content = request.content
    if content is not None:
        content.seek(0)
        if content.read(1):
            return read_model(request, model)
    return parse_model(model, {})


def int_param(value: str, name: str, *, low: int = 0, high: int = 2**31 - 1) -> int:
    """A decimal query parameter within [low, high], else malformed_request."""
    text = value.strip()
    if not re.fullmatch(r"-?[0-9]{1,12}", text) or not low <= int(text) <= high:
        raise BadRequest(message=f"Query parameter {name!r} must be an integer from {low} to "
                                 f"{high}.", details={"parameter": name})
    return int(text)


# --------------------------------------------------------------------------- throttles

class AddressThrottle:
    """Failures per client address in a sliding window, in this process's memory.

    :meth:`retry_after` says how long an address must wait (0: go ahead) once it has
    ``limit`` failures within ``window_s``; :meth:`failed` counts one. At most ``max_addresses``
    are remembered (the oldest forgotten first), so a flood of addresses cannot grow memory.
    ``clock`` is a ``reactor.seconds``-like callable (a ``Clock`` in tests).
    """

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float],
                 max_addresses: int = 10000) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.max_addresses = max_addresses
        self._failures: dict[str, list[float]] = {}

    def _recent(self, address: str) -> list[float]:
        horizon = self.clock() - self.window_s
        times = [t for t in self._failures.get(address, ()) if t > horizon]
        if times:
            self._failures[address] = times
        else:
            self._failures.pop(address, None)
        return times

    def retry_after(self, address: str) -> float:
        times = self._recent(address)
        if len(times) < self.limit:
            return 0.0
        return max(1.0, times[-self.limit] + self.window_s - self.clock())

    def failed(self, address: str) -> None:
        times = self._recent(address)
        times.append(self.clock())
        self._failures.pop(address, None)  # re-inserted last: the dict stays oldest-first
        self._failures[address] = times
        while len(self._failures) > self.max_addresses:
            del self._failures[next(iter(self._failures))]


# --------------------------------------------------------------------------- declared routes

Handler = Callable[..., Awaitable[tuple[int, Any]]]


@dataclass(frozen=True)
class RouteSpec:
    api: str
    method: str
    template: str
    access: Access


def request_id(request: Request) -> str:
    """The request's id: the client's X-Request-Id when it is well formed, else our own; sent
    back in the answer's X-Request-Id."""
    rid_in = request.getHeader(b"x-request-id")
    if rid_in and _REQUEST_ID_OK.match(rid_in.decode("ascii", "replace")):
        request.request_id = rid_in.decode()  # type: ignore[attr-defined]
    rid: str = getattr(request, "request_id", None) or os.urandom(16).hex()
    request.setHeader(b"x-request-id", rid.encode())
    return rid


#: What a route family answers for a failed request: (body, code for the access line).
Refusal = Callable[[Request, Exception, str, str], tuple[bytes, str]]


def routed(api: str, template: str, run: Callable[[Request, dict[str, Any]], Awaitable[bytes]],
           refuse: Refusal) -> Callable[..., Awaitable[bytes]]:
    """The one route wrapper of the JSON APIs and the console: the request id, the timing, the
    answer to an error (``refuse``: JSON for the APIs, an HTML page for the console) and
    exactly one access line and request metric per request."""

    async def wrapper(request: Request, **kwargs: Any) -> bytes:
        rid = request_id(request)
        started = time.monotonic()
        try:
            out, code = await run(request, kwargs), "ok"
        except Exception as exc:  # noqa: BLE001 (each family answers every error its way)
            out, code = refuse(request, exc, rid, template)
        record_access(request, api, int(request.code), code, time.monotonic() - started,
                      route=template, client=client_address(request))
        return out

    return wrapper


def json_refusal(request: Request, exc: Exception, rid: str, template: str) -> tuple[bytes, str]:
    """The JSON APIs' answer to an error: the code's status and body, or a logged 500."""
    if not isinstance(exc, BrokerError):
        log.exception("unhandled error", extra={"request_id": rid, "route": template},
                      exc_info=exc)
        return write_json(request, 500, error_body(
            "internal_error", "The broker hit an unexpected error; it has been logged.",
            {"request_id": rid})), "internal_error"
    status = status_for(exc.code)
    if status == 500:
        log.error("unmapped error code", extra={"code": exc.code, "request_id": rid})
    if status == 401:
        request.setHeader(b"www-authenticate", b'Bearer realm="smartcard-broker"')
    retry_after = exc.details.get("retry_after_s")
    if retry_after is not None:
        request.setHeader(b"retry-after", str(int(retry_after)).encode())
    return write_json(request, status, body_for(exc)), exc.code


@dataclass
class JsonApi:
    """One API (client or admin): a Klein app whose every route declares its access.

    :meth:`resource` serves it: the JSON routes dispatched without Klein on the hot path
    (:mod:`broker.web.dispatch`), everything else through the Klein app."""

    name: str
    app: Any
    authenticate: Authenticator | None = None
    routes: list[RouteSpec] = field(default_factory=list)
    #: (method, template, wrapped handler) of every JSON route, for :meth:`resource`.
    handlers: list[tuple[str, str, Callable[..., Any]]] = field(default_factory=list)

    def resource(self) -> Any:
        """The twisted.web resource answering this API."""
        from broker.web.dispatch import FastJsonResource

        root = FastJsonResource(self.app.resource())
        for method, template, handler in self.handlers:
            root.add(method, template, handler)
        return root

    def __post_init__(self) -> None:
        self.app.declared_routes = self.routes  # lets tests enumerate from the Klein app

    def route(self, template: str, method: str, *,
              access: Access) -> Callable[[Handler], Callable[..., Any]]:
        """Declare ``method template`` answered by ``handler(request, **path, principal=…)``."""
        if not isinstance(access, Access):
            raise TypeError(f"route {method} {template}: access must be an Access member")
        rule = re.sub(r"\{(\w+)\}", r"<\1>", template)

        def register(handler: Handler) -> Callable[..., Any]:
            wrapped = self._wrap(handler, template, access)
            self.app.route(rule, methods=[method])(wrapped)
            self.routes.append(RouteSpec(self.name, method, template, access))
            self.handlers.append((method, template, wrapped))
            return wrapped

        return register

    def raw_route(self, template: str, method: str, *,
                  access: Access) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A route whose handler writes its own non-JSON body (e.g. /metrics)."""
        rule = re.sub(r"\{(\w+)\}", r"<\1>", template)

        def register(handler: Callable[..., Any]) -> Callable[..., Any]:
            self.app.route(rule, methods=[method])(handler)
            self.routes.append(RouteSpec(self.name, method, template, access))
            return handler

        return register

    def _wrap(self, handler: Handler, template: str, access: Access) -> Callable[..., Any]:
        api = self.name

        async def run(request: Request, kwargs: dict[str, Any]) -> bytes:
            if getattr(request, "too_large", False):
                raise BrokerError(
                    Code.REQUEST_TOO_LARGE,
                    f"The request body is larger than {BrokerRequest.max_body_bytes} bytes.")
            if access is not Access.ANONYMOUS:
                if self.authenticate is None:
                    raise RuntimeError(f"{api} API has no authenticator for {template}")
                kwargs["principal"] = await self.authenticate(bearer(request), access)
            status, body = await handler(request, **kwargs)
            out = write_json(request, status, body)
            for header, value in getattr(request, "extra_headers", {}).items():
                request.setHeader(header, value)
            return out

        return functools.wraps(handler)(routed(api, template, run, json_refusal))
