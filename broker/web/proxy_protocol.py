"""The PROXY protocol (HAProxy's ``send-proxy`` / ``send-proxy-v2``) on the client listener.

Behind a TCP balancer every connection comes from the balancer, so per-address limits, the audit's
``client_address`` and the access log would all see one address. With ``server.proxy_protocol``
set, a connection from one of ``server.proxy_balancers`` must start with a PROXY header of that
version, and the client address it carries is what the broker sees from then on (``getPeer``).
A connection from any other address is served as it is, except that one starting with a PROXY
header is refused: only a balancer may say who the client is.

Parsing is Twisted's (the header parsers of :mod:`twisted.protocols.haproxy`, reached through
:mod:`broker.web.twisted_shim`: Twisted's public door, ``proxyEndpoint``, believes every
connection); this module only decides whom to believe, on Twisted's public ``ProtocolWrapper``.
The wrapper sits under TLS (TCP → PROXY → TLS → HTTP), as HAProxy in TCP mode sends the header
before the client's TLS bytes.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from twisted.internet import address
from twisted.internet.interfaces import ILoggingContext, IProtocolFactory
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from broker.config import ProxyNetwork, parse_balancers
from broker.web.twisted_shim import InvalidProxyHeader, V1Parser, V2Parser

log = logging.getLogger("broker.proxy")


#: A TLS record starts with 0x16 (handshake); a PROXY header with "P" (v1) or "\r" (v2).
_PROXY_FIRST_BYTES = (b"P", b"\r")
#: Bytes needed to tell the versions apart (Twisted's parser wants them in one piece).
_HEADER_PEEK = 16


class ProxyVersion(enum.StrEnum):
    OFF = "off"
    V1 = "v1"
    V2 = "v2"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class BalancerProxyProtocol(ProtocolWrapper):
    """Believes a PROXY header only from a configured balancer; see the module docstring."""

    factory: BalancerProxyFactory

    def __init__(self, factory: Any, wrappedProtocol: Any) -> None:  # noqa: N803 (twisted)
        super().__init__(factory, wrappedProtocol)
        self._from_balancer = False
        self._direct = False
        self._pending = b""
        self._parser: Any = None
        self._info: Any = None  # what the header said (source, destination)

    def _inner(self) -> Any:
        return self.wrappedProtocol

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 (twisted API)
        peer = transport.getPeer()
        self._from_balancer = self.factory.is_balancer(getattr(peer, "host", ""))
        super().makeConnection(transport)

    def _refuse(self, why: str) -> None:
        transport: Any = self.transport
        peer = transport.getPeer() if transport is not None else None
        log.warning("connection refused: %s", why,
                    extra={"peer": getattr(peer, "host", str(peer))})
        self.loseConnection()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (twisted API)
        if self._info is not None or self._direct:
            self._inner().dataReceived(data)
            return
        if not self._from_balancer:
            if data[:1] in _PROXY_FIRST_BYTES:
                self._refuse("PROXY header from an address that is not a configured balancer "
                             "(server.proxy_balancers)")
                return
            self._direct = True
            self._inner().dataReceived(data)
            return
        if self._parser is None:
            self._pending += data
            if len(self._pending) < _HEADER_PEEK:
                return
            data, self._pending = self._pending, b""
            expected = (V2Parser.PREFIX if self.factory.version is ProxyVersion.V2
                        else V1Parser.PROXYSTR + b" ")
            if not data.startswith(expected):
                self._refuse(f"a balancer connection did not start with a PROXY "
                             f"{self.factory.version} header (HAProxy: send-proxy"
                             f"{'-v2' if self.factory.version is ProxyVersion.V2 else ''})")
                return
            self._parser = V2Parser() if self.factory.version is ProxyVersion.V2 else V1Parser()
        try:
            self._info, remaining = self._parser.feed(data)
        except InvalidProxyHeader:
            self._refuse("malformed PROXY header from a balancer")
            return
        if remaining:
            self._inner().dataReceived(remaining)

    def getHost(self) -> Any:  # noqa: N802 (twisted API)
        if self._info is not None and self._info.destination is not None:
            return self._info.destination
        return super().getHost()

    def getPeer(self) -> Any:  # noqa: N802 (twisted API)
        peer = super().getPeer()
        if self._info is not None and self._info.source is not None:
            peer = self._info.source
        host = getattr(peer, "host", None)
        ip = _ip(host) if isinstance(host, str) else None
        if ip is not None and str(ip) != host:  # "0:0:…:1" from the v2 parser → "::1"
            cls = address.IPv4Address if ip.version == 4 else address.IPv6Address
            return cls("TCP", str(ip), getattr(peer, "port", 0))
        return peer


class BalancerProxyFactory(WrappingFactory):
    protocol = BalancerProxyProtocol

    def __init__(self, wrapped: IProtocolFactory, version: ProxyVersion,
                 balancers: list[ProxyNetwork]) -> None:
        super().__init__(wrapped)
        self.version = version
        self.balancers = balancers

    def logPrefix(self) -> str:  # noqa: N802 (twisted API)
        inner = self.wrappedFactory
        prefix = inner.logPrefix() if ILoggingContext.providedBy(inner) \
            else type(inner).__name__
        return f"{prefix} (PROXY)"

    def is_balancer(self, host: str) -> bool:
        ip = _ip(host)
        return ip is not None and any(ip.version == net.version and ip in net
                                      for net in self.balancers)


def wrap(factory: Any, version: str, balancers: Iterable[str]) -> Any:
    """``factory`` behind the PROXY protocol, or unchanged when ``version`` is off."""
    v = ProxyVersion(version)
    if v is ProxyVersion.OFF:
        return factory
    return BalancerProxyFactory(factory, v, parse_balancers(balancers))
