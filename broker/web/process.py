"""How the process is wired: one Twisted service tree per `broker serve` process.

:class:`BrokerService` is a ``MultiService`` holding a ``StreamServerEndpointService`` per
listener (the client API; the admin API with the console and /metrics) and a ``TimerService``
per sweeper (``ctx.sweepers``: expiries, idle WorkSpaces, missed heartbeats). ``broker serve``
builds it with :func:`broker_service`, starts it when the reactor runs and stops it before the
reactor shuts down (SIGTERM, SIGINT). Stopping drains: the listeners stop accepting, the
sweepers stop once a sweep in progress ends, in-flight requests get up to
``server.shutdown_grace_s`` to finish, then the open connections close.

Listeners come from Twisted endpoint strings (``tcp:8443``, ``tcp:8444:interface=127.0.0.1``)
or, in a worker of ``--workers N``, from the socket the supervisor bound and passed in (an
``AdoptedStreamServerEndpoint``); either way the Site is wrapped in TLS, and the client one in
the PROXY protocol when configured.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from broker.service.context import BrokerContext
from broker.web import proxy_protocol
from broker.web.server import BrokerSite, ServerError, TlsContexts, TlsFiles, build_sites

log = logging.getLogger("broker.server")

#: After the grace period, how long closing connections get to flush their last bytes (TLS
#: close_notify included) before the service says it stopped.
CLOSE_FLUSH_S = 2.0


@implementer(IStreamServerEndpoint)
class Listener:
    """An endpoint that reports how listening went: :attr:`listening` fires with the port,
    or fails with the reason (``StreamServerEndpointService`` would only log it, and `serve`
    must print one error line and exit 2)."""

    def __init__(self, name: str, endpoint: Any) -> None:
        self.name = name
        self.endpoint = endpoint
        self.port: Any = None
        self.listening: defer.Deferred[Any] = defer.Deferred()

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        def up(port: Any) -> Any:
            self.port = port
            host = port.getHost()
            log.info("listening", extra={"api": self.name, "host": getattr(host, "host", ""),
                                         "port": getattr(host, "port", ""), "pid": os.getpid()})
            self.listening.callback(port)
            return port

        def down(failure: Any) -> None:
            self.listening.errback(failure)
            return None  # the service then has no port to stop

        return defer.maybeDeferred(self.endpoint.listen, factory).addCallbacks(up, down)


def sweep(ctx: Any, fn: Callable[[], object], one_at_a_time: defer.DeferredLock) -> Any:
    """One run of a sweeper in the thread pool, never two sweepers at once (they write the same
    tables). An error is logged and the timer goes on: a ``TimerService`` whose call fails
    would stop for good."""
    name = getattr(fn, "__name__", "?")

    def logged() -> None:
        try:
            fn()
        except Exception:
            log.exception("sweeper failed", extra={"sweeper": name})

    d = one_at_a_time.run(ctx.call, logged)
    d.addErrback(lambda f: log.error("sweep failed", extra={"sweeper": name,
                                                            "error": f.getErrorMessage()}))
    return d


class BrokerService(MultiService):
    """The broker process: listener services first, then sweeper timers; ``stopService``
    drains (see the module docstring)."""

    def __init__(self, sites: Sequence[BrokerSite], *, grace_s: float, clock: Any) -> None:
        super().__init__()
        self.sites = list(sites)
        self.grace_s = grace_s
        self.clock = clock
        self.listeners: list[Listener] = []
        self._one_sweep = defer.DeferredLock()

    def add_listener(self, name: str, endpoint: Any, factory: Any) -> None:
        """Serve ``factory`` on ``endpoint`` while the service runs (``listener-NAME``)."""
        listener = Listener(name, endpoint)
        self.listeners.append(listener)
        service = StreamServerEndpointService(listener, factory)
        service.setName(f"listener-{name}")
        service.setServiceParent(self)

    def add_sweeper(self, ctx: Any, fn: Callable[[], object], interval_s: float) -> None:
        """Run ``fn`` (blocking: in ``ctx``'s thread pool) at start and every ``interval_s``
        (``sweeper-NAME``)."""
        timer = TimerService(interval_s, sweep, ctx, fn, self._one_sweep)
        timer.clock = self.clock
        name = f"sweeper-{getattr(fn, '__name__', 'sweep')}"
        timer.setName(name if name not in self.namedServices else f"{name}-{len(self.services)}")
        timer.setServiceParent(self)

    def listening(self) -> defer.Deferred[Any]:
        """Fires once every listener listens; fails with the first reason one cannot."""
        d = defer.gatherResults([each.listening for each in self.listeners], consumeErrors=True)

        def first(failure: Any) -> Any:
            return failure.value.subFailure if failure.check(defer.FirstError) else failure

        return d.addErrback(first)

    def in_flight(self) -> int:
        return sum(site.in_flight for site in self.sites)

    @defer.inlineCallbacks
    def stopService(self) -> Any:  # noqa: N802 (twisted API)
        log.info("shutting down: no new connections, waiting for in-flight requests",
                 extra={"in_flight": self.in_flight()})
        # Every child at once: the ports stop accepting now, each timer ends after its sweep
        # (waited for below, alongside the requests, so a slow sweep adds no grace period).
        children = super().stopService()
        # A Deferred of our own, so the timeout cancels it and not the sites' waiters.
        idle: defer.Deferred[Any] = defer.Deferred()
        defer.gatherResults([site.wait_idle() for site in self.sites]).chainDeferred(idle)
        idle.addTimeout(self.grace_s, self.clock)
        try:
            yield idle
        except defer.TimeoutError:
            log.warning("shutdown grace period over with requests still running",
                        extra={"in_flight": self.in_flight()})
        for site in self.sites:
            site.close_connections()
        # Let TLS flush the last responses and close_notify before the reactor stops.
        deadline = self.clock.seconds() + CLOSE_FLUSH_S
        while any(site.channels for site in self.sites) and self.clock.seconds() < deadline:
            yield task.deferLater(self.clock, 0.05, lambda: None)
        yield children
        log.info("stopped")


def listen_endpoint(reactor: Any, name: str, endpoint: str,
                    inherited: dict[str, int] | None) -> Any:
    """The endpoint of one listener: the supervisor's socket when inherited, else the string's;
    ServerError for a string Twisted cannot parse."""
    if inherited and name in inherited:
        fd = inherited[name]
        sock = socket.socket(fileno=fd)  # only to read the family; detached, not closed
        family = sock.family
        sock.detach()
        return AdoptedStreamServerEndpoint(reactor, fd, family)
    try:
        return serverFromString(reactor, endpoint)
    except (ValueError, TypeError, KeyError) as exc:
        raise ServerError(message=f"bad {name} listen endpoint {endpoint!r}: {exc}") from None


def broker_service(ctx: BrokerContext, *, listen_on: str, admin_listen_on: str, tls: TlsFiles,
                   inherited: dict[str, int] | None = None, ticket_secret: bytes | None = None,
                   reactor: Any = None) -> BrokerService:
    """The service tree `broker serve` runs; ServerError when the TLS files or an endpoint are
    unusable. ``inherited`` maps listener names to socket fds a supervisor bound;
    ``ticket_secret``, a supervisor's, makes this worker's TLS tickets resume on its peers."""
    if reactor is None:
        from twisted.internet import reactor
    s = ctx.settings.server
    # One set of contexts (so of ticket keys and session caches) per listener.
    contexts = {name: TlsContexts(tls, resumption=s.tls_session_resumption,
                                  rotation_s=s.tls_ticket_key_rotation_s,
                                  ticket_secret=ticket_secret, listener=name)
                for name in ("client", "admin")}
    for each in contexts.values():
        each.getContext()  # unreadable files fail here, before listening
    if s.tls_session_resumption:
        log.info("TLS session resumption on", extra={
            "ticket_keys": "shared by workers" if contexts["client"].shared_ticket_keys
            else "per worker", "rotation_s": s.tls_ticket_key_rotation_s})
    client_site, admin_site = build_sites(ctx)
    top = BrokerService([client_site, admin_site], grace_s=s.shutdown_grace_s, clock=reactor)
    for name, site, endpoint in (("client", client_site, listen_on),
                                 ("admin", admin_site, admin_listen_on)):
        factory: Any = TLSMemoryBIOFactory(contexts[name], False, site)  # type: ignore[arg-type]
        if name == "client":  # who the client is, from a balancer's PROXY header
            factory = proxy_protocol.wrap(factory, s.proxy_protocol, s.proxy_balancers)
        top.add_listener(name, listen_endpoint(reactor, name, endpoint, inherited), factory)
    for fn in ctx.sweepers:  # one timer per sweeper (broker.service.wiring.install fills them)
        top.add_sweeper(ctx, fn, ctx.settings.sessions.sweep_interval_s)
    return top
