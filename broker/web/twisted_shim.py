"""The private Twisted names the edge still needs, kept here and nowhere else: one hook of
the HTTP channel, and the PROXY-protocol header parsers.

**The bad-request answer.**

``twisted.web.http.HTTPChannel`` answers a request it cannot parse (a bad request line, a
header without a colon, a header value holding NUL/CR/LF, more than ``maxHeaders`` headers, a
bad ``Content-Length`` or ``Transfer-Encoding``) by calling its private
``_respondToBadRequestAndDisconnect``, which writes a bare ``400 Bad Request`` without a body.
Twisted has no public hook for that answer, and the API promises the JSON error body on every
error, so :class:`BadRequestHook` overrides that one method and forwards it to the channel's
own ``bad_request()``.

tests/unit/web/test_twisted_shim.py checks the installed Twisted: the method exists and a
malformed request still reaches it. If a Twisted release renames it, that test fails; until it
is fixed, a malformed request gets Twisted's bare 400 (same status, connection still closed).

**The PROXY-protocol parsers.** Twisted's only public PROXY-protocol API is ``proxyEndpoint``,
which demands a header on every connection and believes it from anyone; the broker believes
one only from ``server.proxy_balancers`` and serves direct clients as they are
(:mod:`broker.web.proxy_protocol`). So it drives Twisted's header parsers itself: ``V1Parser``
and ``V2Parser`` (``feed(bytes)`` → ``(info or None, the bytes after the header)``, ``info``
with ``source`` and ``destination`` addresses) and their ``InvalidProxyHeader``, from the
private modules of :mod:`twisted.protocols.haproxy`. The same test checks those against the
installed Twisted; if they move, the import below fails at start, loudly.
"""

from __future__ import annotations

from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.web.http import HTTPChannel

__all__ = ["HOOK", "BadRequestHook", "InvalidProxyHeader", "V1Parser", "V2Parser",
           "hook_present"]

#: The private ``HTTPChannel`` method :class:`BadRequestHook` overrides.
HOOK = "_respondToBadRequestAndDisconnect"


def hook_present() -> bool:
    """Whether the installed Twisted's ``HTTPChannel`` still has :data:`HOOK`."""
    return callable(getattr(HTTPChannel, HOOK, None))


class BadRequestHook:
    """Mixin, listed before ``HTTPChannel`` in the bases: Twisted's bad-request answer calls
    the subclass's ``bad_request()`` instead."""

    def bad_request(self) -> None:
        raise NotImplementedError

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 (Twisted's private name)
        self.bad_request()
