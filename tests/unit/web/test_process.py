"""The process's service tree (broker.web.process): listeners, sweeper timers and the drain on
stop, driven by a Clock and an in-memory reactor (no sockets, no sleeping)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor, StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from broker.web.process import BrokerService, listen_endpoint
from broker.web.server import BrokerSite, ServerError


class Held(Resource):
    """Answers only when the test says so: a request in flight."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Any] = []

    def render_GET(self, request: Any) -> Any:  # noqa: N802 (twisted API)
        self.waiting.append(request)
        return NOT_DONE_YET


class Port:
    """A listening port that notes when it is told to stop (the endpoint's edge)."""

    def __init__(self) -> None:
        self.stopped = False

    def stopListening(self) -> None:  # noqa: N802 (twisted API)
        self.stopped = True

    def getHost(self) -> Any:
        return None


class Endpoint:
    def __init__(self) -> None:
        self.port = Port()
        self.factories: list[Any] = []

    def listen(self, factory: Any) -> defer.Deferred[Port]:
        self.factories.append(factory)
        return defer.succeed(self.port)


class Context:
    """What a sweeper timer needs of the BrokerContext: ``call`` (the thread pool's edge)."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[None]] = []
        self.hold = False

    def call(self, fn: Any) -> defer.Deferred[Any]:
        if not self.hold:
            return defer.maybeDeferred(fn)
        d: defer.Deferred[Any] = defer.Deferred()
        d.addCallback(lambda _: fn())
        self.pending.append(d)
        return d


def _service(clock: Any, resource: Resource | None = None,
             grace_s: float = 5.0) -> tuple[BrokerService, BrokerSite]:
    site = BrokerSite(resource or Held(), api="client", reactor=clock)
    return BrokerService([site], grace_s=grace_s, clock=clock), site


def _request(site: BrokerSite, path: bytes = b"/held") -> tuple[Any, StringTransport]:
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return channel, transport


def test_each_listener_listens_when_the_service_starts() -> None:
    clock = Clock()
    top, site = _service(clock)
    client, admin = Endpoint(), Endpoint()
    top.add_listener("client", client, site)
    top.add_listener("admin", admin, site)
    top.startService()
    ports: list[Any] = []
    top.listening().addCallback(lambda up: ports.extend(up))
    assert ports == [client.port, admin.port]
    assert client.factories == [site] and admin.factories == [site]


def test_a_port_in_use_fails_listening_with_the_reason() -> None:
    taken = CannotListenError("127.0.0.1", 8443, OSError(98, "Address already in use"))
    top, site = _service(Clock())
    top.add_listener("client", serverFromString(RaisingMemoryReactor(listenException=taken),
                                                "tcp:8443:interface=127.0.0.1"), site)
    top.startService()
    failures: list[Any] = []
    top.listening().addErrback(failures.append)
    assert failures and failures[0].value is taken
    done: list[Any] = []
    top.stopService().addBoth(done.append)  # nothing listens, nothing to stop: no error
    assert done == [None]


def test_endpoint_strings_come_from_twisted_and_a_bad_one_is_a_server_error() -> None:
    reactor = MemoryReactorClock()
    endpoint = listen_endpoint(reactor, "client", "tcp:8443:interface=127.0.0.1", None)
    endpoint.listen(BrokerSite(Resource(), reactor=reactor))
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == \
        [(8443, "127.0.0.1")]
    with pytest.raises(ServerError, match="bad admin listen endpoint"):
        listen_endpoint(reactor, "admin", "nonsense:8444", None)


def test_stopping_stops_accepting_then_waits_for_the_request_in_flight() -> None:
    clock, held = Clock(), Held()
    top, site = _service(clock, held)
    endpoint = Endpoint()
    top.add_listener("client", endpoint, site)
    top.startService()
    _request(site)
    assert site.in_flight == 1
    stopped: list[Any] = []
    top.stopService().addBoth(stopped.append)
    assert endpoint.port.stopped, "the port stops accepting first"
    clock.advance(4.0)
    assert stopped == [] and site.in_flight == 1
    held.waiting[0].write(b"done")
    held.waiting[0].finish()
    assert site.in_flight == 0
    clock.advance(2.1)  # the connection flushes (StringTransport never reports it closed)
    assert stopped == [None]


def test_the_grace_period_bounds_the_wait(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    top, site = _service(clock, grace_s=5.0)
    top.startService()
    _, transport = _request(site)
    stopped: list[Any] = []
    with caplog.at_level(logging.INFO, logger="broker.server"):
        top.stopService().addBoth(stopped.append)
        clock.advance(5.0)
        assert transport.disconnecting, "the connection is closed after the grace period"
        clock.advance(2.1)
    assert stopped == [None]
    assert "grace period over" in caplog.text and "stopped" in caplog.text


def test_each_sweeper_runs_at_start_and_every_interval() -> None:
    clock, ctx = Clock(), Context()
    top, _ = _service(clock)
    runs: list[str] = []

    def expire_challenges() -> None:
        runs.append("challenges")

    def idle_workspaces() -> None:
        runs.append("workspaces")

    top.add_sweeper(ctx, expire_challenges, 60)
    top.add_sweeper(ctx, idle_workspaces, 60)
    top.startService()
    assert runs == ["challenges", "workspaces"]
    clock.advance(59)
    assert len(runs) == 2
    clock.advance(1)
    assert sorted(runs[2:]) == ["challenges", "workspaces"]
    assert sorted(s.name for s in top) == ["sweeper-expire_challenges", "sweeper-idle_workspaces"]


def test_a_failing_sweeper_is_logged_and_runs_again(caplog: pytest.LogCaptureFixture) -> None:
    clock, ctx = Clock(), Context()
    top, _ = _service(clock)
    runs: list[int] = []

    def broken() -> None:
        runs.append(1)
        raise RuntimeError("table gone")

    top.add_sweeper(ctx, broken, 10)
    with caplog.at_level(logging.ERROR, logger="broker.server"):
        top.startService()
        clock.advance(10)
    assert len(runs) == 2
    assert "sweeper failed" in caplog.text


def test_sweeps_never_overlap_and_stopping_waits_for_the_one_running() -> None:
    clock, ctx = Clock(), Context()
    ctx.hold = True  # each sweep waits in the "pool" until the test releases it
    top, _ = _service(clock)
    runs: list[str] = []
    top.add_sweeper(ctx, lambda: runs.append("a"), 10)
    top.add_sweeper(ctx, lambda: runs.append("b"), 10)
    top.startService()
    assert len(ctx.pending) == 1, "the second sweeper waits for the first"
    stopped: list[Any] = []
    top.stopService().addBoth(stopped.append)
    assert stopped == []
    ctx.pending.pop(0).callback(None)
    assert len(ctx.pending) == 1
    ctx.pending.pop(0).callback(None)
    clock.advance(2.1)
    assert runs == ["a", "b"] and stopped == [None]
    clock.advance(30)
    assert runs == ["a", "b"], "no sweep after the service stopped"


def test_serve_builds_one_listener_per_api_and_one_timer_per_sweeper(tmp_path: Any) -> None:
    import socket

    from broker.config import load_settings
    from broker.service.context import BrokerContext
    from broker.service.wiring import install
    from broker.web.process import broker_service
    from broker.web.proxy_protocol import BalancerProxyFactory
    from broker.web.server import dev_certificate

    settings = load_settings(None).replace("database", url=f"sqlite:///{tmp_path / 'b.db'}")
    ctx = BrokerContext(settings.replace("server", proxy_protocol="v2",
                                         proxy_balancers=["127.0.0.5"]))
    install(ctx)
    reactor = MemoryReactorClock()
    with socket.socket() as supervisors:  # --workers: the admin socket comes bound
        supervisors.bind(("127.0.0.1", 0))
        supervisors.listen(8)
        fd = supervisors.detach()
        top = broker_service(ctx, listen_on="tcp:18443:interface=127.0.0.1",
                             admin_listen_on="tcp:18444", tls=dev_certificate(tmp_path),
                             inherited={"admin": fd}, reactor=reactor)
        names = [service.name for service in top]
        assert names[:2] == ["listener-client", "listener-admin"]
        assert len(names) == 2 + len(ctx.sweepers) and len(ctx.sweepers) >= 4
        assert all(name.startswith("sweeper-") for name in names[2:])
        top.namedServices["listener-client"].startService()
        top.namedServices["listener-admin"].startService()
    [(port, factory, _, interface)] = reactor.tcpServers
    assert (port, interface) == (18443, "127.0.0.1")
    assert isinstance(factory, BalancerProxyFactory), "the client listener believes balancers"
    [(adopted_fd, family, admin_factory)] = reactor.adoptedPorts
    assert adopted_fd == fd and family == socket.AF_INET
    assert not isinstance(admin_factory, BalancerProxyFactory)
