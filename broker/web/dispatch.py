"""The client API's request dispatch without Klein on the hot path.

Klein (werkzeug's routing) stays the one registry of routes: the OpenAPI document, the route
tests and every request this module does not take read it. But binding werkzeug's URL map,
matching with its state machine and Klein's layers of Deferreds cost more CPU per login than
the JSON and the routing the broker needs (the profile is in docs/performance.md), so
:class:`FastJsonResource` answers the routes declared with :meth:`JsonApi.route` itself:

* a request whose method and plain path (no percent-encoding, no ``//``) match one declared
  template exactly is dispatched from a dict keyed by method and number of path segments,
  then by fixed segments, to the same wrapped handler Klein would call (the same access check,
  body limits, error mapping and access-log line);
* everything else (HEAD, a path with ``%``, a trailing slash, an unknown path or method, raw
  routes such as /metrics) goes to the Klein resource, so 404/405 answers, redirects and
  percent-decoding stay exactly Klein's.

A path variable matches one non-empty segment, as werkzeug's default converter does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

#: One declared route: its fixed segments by position, its variables by position, the handler.
Entry = tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...], Callable[..., Any]]


def compile_template(template: str) -> tuple[int, tuple[tuple[int, str], ...],
                                             tuple[tuple[int, str], ...]]:
    """``/v1/sessions/{session_id}/heartbeat`` → (segments, fixed (pos, text), vars (pos, name))."""
    parts = template.split("/")[1:]
    fixed, names = [], []
    for i, part in enumerate(parts):
        if part.startswith("{") and part.endswith("}"):
            names.append((i, part[1:-1]))
        else:
            fixed.append((i, part))
    return len(parts), tuple(fixed), tuple(names)


class FastJsonResource(Resource):
    """A leaf resource: declared JSON routes dispatched directly, the rest handed to Klein."""

    isLeaf = True  # noqa: N815 (twisted API)

    def __init__(self, fallback: Resource) -> None:
        super().__init__()
        self.fallback = fallback
        self.table: dict[tuple[bytes, int], list[Entry]] = {}

    def add(self, method: str, template: str, handler: Callable[..., Any]) -> None:
        count, fixed, names = compile_template(template)
        entries = self.table.setdefault((method.encode("ascii"), count), [])
        entries.append((fixed, names, handler))
        # As werkzeug: at the first position where two routes differ, a fixed segment beats a
        # variable (/v1/x/static before /v1/x/{id}).
        entries.sort(key=lambda e: [*sorted(pos for pos, _ in e[1]), count], reverse=True)

    def match(self, method: bytes, path: bytes) -> tuple[Callable[..., Any], dict[str, str]] | None:
        if b"%" in path or b"//" in path or not path.startswith(b"/"):
            return None
        try:
            parts = path.decode("ascii").split("/")[1:]
        except UnicodeDecodeError:
            return None
        entries = self.table.get((method, len(parts)))
        if not entries or not parts[-1]:
            return None
        for fixed, names, handler in entries:
            if all(parts[i] == text for i, text in fixed):
                values = {name: parts[i] for i, name in names}
                if all(values.values()):
                    return handler, values
        return None

    def render(self, request: Any) -> Any:
        found = self.match(request.method, request.path)
        if found is None:
            return self.fallback.render(request)
        handler, kwargs = found
        finished = [False]

        def done(_: object) -> None:
            finished[0] = True

        request.notifyFinish().addBoth(done)
        d: Deferred[bytes] = Deferred.fromCoroutine(handler(request, **kwargs))
        request.notifyFinish().addErrback(lambda _: d.cancel())

        def write(body: bytes) -> None:
            if finished[0]:
                return
            if body:
                request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            # The wrapper turns every exception into a JSON answer; only a cancelled call of a
            # client that went away (or a bug in writing) ends here.
            if finished[0] or failure.check(CancelledError):
                return
            request.processingFailed(failure)

        d.addCallbacks(write, failed)
        return NOT_DONE_YET
