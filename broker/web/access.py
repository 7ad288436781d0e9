"""How an answered request is recorded: one access-log line and the metrics, by route template.

The route label is the template the request matched, spelled as in the OpenAPI document
(``/v1/auth/challenges/{challenge_id}/response``), taken from Klein's own routing table so the
two cannot drift apart. The raw path is never logged: it carries session and challenge ids.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from broker import metrics

log = logging.getLogger("broker.web")

_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
#: Answered without a route (unknown path or method).
UNMATCHED = "unmatched"


@functools.lru_cache(maxsize=512)
def openapi_template(rule: str) -> str:
    """``/v1/x/<workspace_id>/y`` (a werkzeug rule) → ``/v1/x/{workspace_id}/y``."""
    return _VARIABLE.sub(r"{\1}", rule)


def route_template(request: Any, fallback: str = UNMATCHED) -> str:
    """The OpenAPI template of the route ``request`` matched, else ``fallback``."""
    try:
        from klein.interfaces import IKleinRequest

        mapper = IKleinRequest(request).mapper
        rule, _ = mapper.match(return_rule=True)
    except Exception:  # werkzeug's NotFound/MethodNotAllowed, or not a Klein request
        return fallback
    return openapi_template(rule.rule)


def record(request: Any, api: str, status: int, code: str, elapsed_s: float,
           route: str | None = None, client: str = "") -> None:
    """The one access-log line and the metrics for an answered request (``route``: its
    declared template; else the one Klein matched)."""
    route = route or route_template(request)
    method = metrics.method_label(request.method)  # a closed set, in the log line too
    request.access_recorded = True
    metrics.record_request(api, route, method, status, code, elapsed_s)
    log.info("request", extra={
        "request_id": getattr(request, "request_id", ""), "api": api, "method": method,
        "route": route, "status": status, "code": code,
        "duration_ms": round(elapsed_s * 1000, 2), "client": client})
