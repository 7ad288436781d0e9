"""BrokerChannel's deadlines run on the channel's own ``callLater``, so a Clock drives them."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Site

from broker.web.http import BrokerChannel, BrokerRequest


def _channel(clock: Clock) -> tuple[BrokerChannel, StringTransport]:
    site = Site(Resource())
    site.requestFactory = BrokerRequest
    channel = BrokerChannel()
    channel.callLater = clock.callLater  # type: ignore[method-assign]
    channel.site = site
    channel.head_timeout_s, channel.body_timeout_s = 10.0, 30.0
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_a_trickled_chunked_body_is_cut_at_the_body_deadline() -> None:
    clock = Clock()
    channel, transport = _channel(clock)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
    seconds = 0
    while not transport.value() and seconds < 40:  # one byte a second, forever
        channel.dataReceived(b"1\r\n{\r\n")
        clock.advance(1)
        seconds += 1
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
    assert seconds == 30 and b'"request_timeout"' in answer


def test_a_sized_body_has_the_same_deadline() -> None:
    clock = Clock()
    channel, transport = _channel(clock)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    clock.advance(29.9)
    assert transport.value() == b""
    clock.advance(0.2)
    assert transport.value().startswith(b"HTTP/1.1 408")


def test_a_slow_head_is_cut_at_the_head_deadline() -> None:
    clock = Clock()
    channel, transport = _channel(clock)
    channel.dataReceived(b"GET /x HTTP/1.1\r\n")
    clock.advance(9.9)
    assert transport.value() == b""
    clock.advance(0.2)
    assert transport.value().startswith(b"HTTP/1.1 408")
