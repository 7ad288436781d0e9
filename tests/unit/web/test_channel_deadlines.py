"""BrokerChannel's deadlines and limits. The channel comes from BrokerSite.buildProtocol with a
Clock as the Site's reactor, so the deadlines run on ``self.callLater`` the way Twisted sets it
(no global reactor, no sleeping)."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from broker.web.http import BrokerChannel
from broker.web.server import BrokerSite


def _channel(clock: Clock) -> tuple[BrokerChannel, StringTransport]:
    site = BrokerSite(Resource(), reactor=clock)
    channel = site.buildProtocol(None)
    assert isinstance(channel, BrokerChannel)
    channel.head_timeout_s, channel.body_timeout_s = 10.0, 30.0
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def _code(answer: bytes) -> str:
    return str(json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"])


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
    assert seconds == 30 and _code(answer) == "request_timeout"


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


def test_a_head_trickled_one_header_at_a_time_meets_the_same_deadline() -> None:
    clock = Clock()
    channel, transport = _channel(clock)
    channel.dataReceived(b"GET /x HTTP/1.1\r\n")
    for _ in range(9):  # Twisted's idle timeout would restart at each of these
        clock.advance(1)
        channel.dataReceived(b"X-Slow: 1\r\n")
    assert transport.value() == b""
    clock.advance(1.1)
    assert transport.value().startswith(b"HTTP/1.1 408")


def test_a_peer_that_does_not_read_the_refusal_is_aborted() -> None:
    clock = Clock()
    channel, transport = _channel(clock)
    transport.connected = True
    channel.dataReceived(b"GET /x HTTP/1.1\r\n")
    clock.advance(10.1)
    assert transport.disconnecting and not getattr(transport, "aborted", False)
    aborted: list[bool] = []
    transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
    clock.advance(2.0)
    assert aborted == [True]


def test_a_head_over_the_total_size_is_431() -> None:
    channel, transport = _channel(Clock())
    header = b"X-Big: " + b"a" * 1000 + b"\r\n"
    channel.dataReceived(b"GET /x HTTP/1.1\r\n" + header * 17 + b"\r\n")
    assert transport.value().startswith(b"HTTP/1.1 431")
    assert _code(transport.value()) == "headers_too_large"


def test_one_over_long_header_line_is_431() -> None:
    channel, transport = _channel(Clock())
    channel.dataReceived(b"GET /x HTTP/1.1\r\nX-Big: " + b"a" * (BrokerChannel.MAX_LENGTH + 1))
    assert transport.value().startswith(b"HTTP/1.1 431")


def test_a_head_just_under_the_limit_is_served() -> None:
    channel, transport = _channel(Clock())
    line = b"GET /x HTTP/1.1"
    header = b"X-Fill: " + b"a" * (BrokerChannel.totalHeadersSize - len(line) - 8 - 8)
    channel.dataReceived(line + b"\r\n" + header + b"\r\nHost: x\r\n\r\n")
    assert not transport.value().startswith(b"HTTP/1.1 431"), transport.value()[:60]


def test_an_oversized_content_length_is_413_before_the_body() -> None:
    channel, transport = _channel(Clock())
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413")
    assert _code(transport.value()) == "request_too_large"
