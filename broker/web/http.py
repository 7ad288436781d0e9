"""How bytes arrive: the request class (body limit, request id), JSON bodies and responses.

Route functions are wrapped by :func:`json_route`: it answers 413 for oversized bodies before any
parsing, parses and validates the body against a pydantic model that forbids unknown fields,
turns every :class:`~broker.errors.BrokerError` into the JSON error body with its status from
``broker.web.errors``, logs one access line with the request id, and records metrics. An
unexpected exception is logged with its traceback and answered 500 ``internal_error`` — the
client never sees a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError
from twisted.web.server import Request

from broker.errors import BrokerError
from broker.web.errors import body_for, error_body, status_for

log = logging.getLogger("broker.web")
M = TypeVar("M", bound=BaseModel)

HTTP_REQUESTS = Counter("broker_http_requests_total", "HTTP requests answered",
                        ["api", "route", "method", "status"])
HTTP_LATENCY = Histogram("broker_http_request_duration_seconds", "HTTP request latency",
                         ["api", "route"])

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class BrokerRequest(Request):
    """A request that stops buffering its body past ``max_body_bytes``."""

    max_body_bytes = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.too_large = False
        self._received = 0
        self.request_id = uuid.uuid4().hex

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


class BadRequest(BrokerError):
    code = "malformed_request"


def client_address(request: Request) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", None) or str(peer)


def write_json(request: Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    if body is None:
        return b""
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def read_json(request: Request) -> Any:
    """The request body as JSON, or BadRequest."""
    if getattr(request, "too_large", False):
        raise BrokerError("request_too_large",
                          f"The request body is larger than {BrokerRequest.max_body_bytes} bytes.")
    content = request.content
    if content is None:
        raise BadRequest(message="The request needs a JSON body.")
    content.seek(0)
    raw = content.read()
    if not raw:
        raise BadRequest(message="The request needs a JSON body.")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(message=f"The request body is not valid JSON: {exc}.") from None


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


Handler = Callable[..., Awaitable[tuple[int, Any]]]


def json_route(api: str, route: str) -> Callable[[Handler], Callable[..., Any]]:
    """Wrap an ``async def handler(request, **kw) -> (status, body)`` as a Klein route."""

    def wrap(handler: Handler) -> Callable[..., Any]:
        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> bytes:
            request = next(a for a in args if isinstance(a, Request))
            rid_in = request.getHeader(b"x-request-id")
            if rid_in and _REQUEST_ID_OK.match(rid_in.decode("ascii", "replace")):
                request.request_id = rid_in.decode()  # type: ignore[attr-defined]
            rid = getattr(request, "request_id", uuid.uuid4().hex)
            request.setHeader(b"x-request-id", rid.encode())
            started = time.monotonic()
            code = "ok"
            try:
                if getattr(request, "too_large", False):
                    raise BrokerError(
                        "request_too_large",
                        f"The request body is larger than {BrokerRequest.max_body_bytes} bytes.")
                status, body = await handler(*args, **kwargs)
                out = write_json(request, status, body)
                for header, value in getattr(request, "extra_headers", {}).items():
                    request.setHeader(header, value)
            except BrokerError as exc:
                status = status_for(exc.code)
                code = exc.code
                if status == 500:
                    log.error("unmapped error code", extra={"code": exc.code, "request_id": rid})
                retry_after = exc.details.get("retry_after_s")
                if retry_after is not None:
                    request.setHeader(b"retry-after", str(int(retry_after)).encode())
                out = write_json(request, status, body_for(exc))
            except Exception:
                log.exception("unhandled error", extra={"request_id": rid, "route": route})
                status, code = 500, "internal_error"
                out = write_json(request, 500, error_body(
                    "internal_error", "The broker hit an unexpected error; it has been logged.",
                    {"request_id": rid}))
            elapsed = time.monotonic() - started
            method = request.method.decode("ascii", "replace")
            HTTP_REQUESTS.labels(api, route, method, str(status)).inc()
            HTTP_LATENCY.labels(api, route).observe(elapsed)
            log.info("request", extra={
                "request_id": rid, "api": api, "method": method, "route": route,
                "status": status, "code": code, "duration_ms": round(elapsed * 1000, 2),
                "client": client_address(request)})
            return out

        return wrapper

    return wrap
