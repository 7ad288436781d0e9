"""The one private Twisted hook (broker.web.twisted_shim) holds on the installed Twisted: it
exists, Twisted still calls it for a request it cannot parse, and the answer is the JSON 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
import twisted
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site

from broker.web import twisted_shim
from broker.web.http import BrokerChannel, BrokerRequest


def _answer(channel: Any, data: bytes) -> bytes:
    site = Site(Resource())
    site.requestFactory = BrokerRequest
    channel.site = site
    channel.requestFactory = BrokerRequest
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return transport.value()


def test_the_private_hook_exists_in_the_installed_twisted() -> None:
    assert twisted_shim.hook_present(), (
        f"Twisted {twisted.__version__} has no HTTPChannel.{twisted_shim.HOOK}: update "
        "broker/web/twisted_shim.py")


def test_twisted_alone_answers_a_bare_400_through_the_hook() -> None:
    # What the shim replaces: if this changes, Twisted's bad-request path changed too.
    assert _answer(HTTPChannel(), b"NONSENSE\r\n\r\n") == b"HTTP/1.1 400 Bad Request\r\n\r\n"


@pytest.mark.parametrize("request_bytes", [
    b"NONSENSE\r\n\r\n",                                        # no method, path, version
    b"GET /x HTTP/1.1\r\nno colon here\r\n\r\n",                # header without a colon
    b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",  # two lengths
    b"GET /x HTTP/1.1\r\n" + b"a: b\r\n" * (BrokerChannel.maxHeaders + 1) + b"\r\n",
], ids=["request-line", "header-line", "content-length", "max-headers"])
def test_what_twisted_cannot_parse_gets_the_json_400(request_bytes: bytes) -> None:
    answer = _answer(BrokerChannel(), request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request")
    assert json.loads(body)["error"]["code"] == "malformed_request"


def test_the_proxy_header_parsers_hold_in_the_installed_twisted() -> None:
    v1 = twisted_shim.V1Parser()
    info: Any
    info, rest = v1.feed(b"PROXY TCP4 127.51.100.7 127.0.0.11 51000 8443\r\n\x16tls")
    assert info is not None and rest == b"\x16tls"
    assert (info.source.host, info.source.port) == ("127.51.100.7", 51000)
    assert (info.destination.host, info.destination.port) == ("127.0.0.11", 8443)
    v2 = twisted_shim.V2Parser()
    addrs = bytes([127, 51, 100, 8, 127, 0, 0, 11]) + (51000).to_bytes(2, "big") + \
        (8443).to_bytes(2, "big")
    header = twisted_shim.V2Parser.PREFIX + bytes([0x21, 0x11]) + len(addrs).to_bytes(2, "big")
    assert v2.feed(header) == (None, None)  # the 16-byte fixed part, then it waits
    info, rest = v2.feed(addrs + b"\x16")
    assert info is not None and info.source.host == "127.51.100.8" and rest == b"\x16"
    with pytest.raises(twisted_shim.InvalidProxyHeader):
        twisted_shim.V1Parser().feed(b"PROXY NONSENSE\r\n")
