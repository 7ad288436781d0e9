"""The PROXY protocol wrapper: a header is believed only from a configured balancer."""

from __future__ import annotations

import socket
import struct

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from broker.config import ConfigError, load_settings
from broker.web import proxy_protocol

V2_PREFIX = b"\r\n\r\n\x00\r\nQUIT\n"
TLS_HELLO = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32


def v2_header(src: str, sport: int, dst: str = "127.0.0.11", dport: int = 8443) -> bytes:
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_PREFIX + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.data += data


def connect(peer: str, version: str = "v2", balancers: tuple[str, ...] = ("127.0.0.5",)
            ) -> tuple[object, Recorder, StringTransport]:
    inner = Recorder()
    factory = proxy_protocol.wrap(Factory.forProtocol(lambda: inner), version, balancers)
    proto = factory.buildProtocol(IPv4Address("TCP", peer, 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
    proto.makeConnection(transport)
    return proto, inner, transport


def test_balancer_header_gives_the_client_address() -> None:
    proto, inner, transport = connect("127.0.0.5")
    proto.dataReceived(v2_header("127.51.100.7", 51000) + TLS_HELLO)
    assert inner.data == TLS_HELLO
    assert proto.getPeer().host == "127.51.100.7"
    assert not transport.disconnecting


def test_header_split_across_reads_is_parsed() -> None:
    proto, inner, _ = connect("127.0.0.5")
    data = v2_header("127.51.100.8", 51000) + TLS_HELLO
    for i in range(0, len(data), 5):
        proto.dataReceived(data[i:i + 5])
    assert inner.data == TLS_HELLO and proto.getPeer().host == "127.51.100.8"


def test_v1_header_when_configured_v1() -> None:
    proto, inner, _ = connect("127.0.0.5", version="v1")
    proto.dataReceived(b"PROXY TCP4 127.0.113.9 127.0.0.11 5555 8443\r\n" + TLS_HELLO)
    assert proto.getPeer().host == "127.0.113.9" and inner.data == TLS_HELLO


def test_header_from_a_non_balancer_is_refused() -> None:
    proto, inner, transport = connect("127.0.0.66")
    proto.dataReceived(v2_header("127.51.100.7", 51000) + TLS_HELLO)
    assert transport.disconnecting and inner.data == b""
    assert proto.getPeer().host == "127.0.0.66"


def test_v1_header_from_a_non_balancer_is_refused() -> None:
    proto, inner, transport = connect("127.0.0.66")
    proto.dataReceived(b"PROXY TCP4 127.0.113.9 127.0.0.11 5555 8443\r\n")
    assert transport.disconnecting and inner.data == b""


def test_direct_client_is_served_with_its_own_address() -> None:
    proto, inner, transport = connect("127.0.0.66")
    proto.dataReceived(TLS_HELLO)
    assert inner.data == TLS_HELLO and not transport.disconnecting
    assert proto.getPeer().host == "127.0.0.66"


def test_balancer_connection_without_header_is_closed() -> None:
    proto, inner, transport = connect("127.0.0.5")
    proto.dataReceived(TLS_HELLO)
    assert transport.disconnecting and inner.data == b""


def test_balancer_sending_the_other_version_is_closed() -> None:
    proto, inner, transport = connect("127.0.0.5", version="v1")
    proto.dataReceived(v2_header("127.51.100.7", 51000) + TLS_HELLO)
    assert transport.disconnecting and inner.data == b""


def test_balancer_network_matches() -> None:
    proto, _, _ = connect("127.0.1.200", balancers=("127.0.1.0/24",))
    proto.dataReceived(v2_header("127.51.100.7", 51000) + TLS_HELLO)
    assert proto.getPeer().host == "127.51.100.7"


def test_off_leaves_the_factory_alone() -> None:
    f = Factory.forProtocol(Recorder)
    assert proxy_protocol.wrap(f, "off", ()) is f


@pytest.mark.parametrize(("body", "key"), [
    ('[server]\nproxy_protocol = "v3"\nproxy_balancers = ["127.0.0.5"]\n', "proxy_protocol"),
    ('[server]\nproxy_protocol = "v2"\n', "proxy_balancers"),
    ('[server]\nproxy_protocol = "v2"\nproxy_balancers = ["haproxy.local"]\n',
     "proxy_balancers"),
    ('[server]\nproxy_balancers = 5\n', "proxy_balancers"),
])
def test_bad_proxy_settings_name_the_key(tmp_path, body: str, key: str) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "broker.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert f"server.{key}" in err.value.message


def test_balancers_from_the_environment_are_comma_separated() -> None:
    s = load_settings(None, environ={
        "BROKER_SERVER_PROXY_PROTOCOL": "v2",
        "BROKER_SERVER_PROXY_BALANCERS": "127.0.0.5, 127.0.1.0/24"})
    assert s.server.proxy_balancers == ("127.0.0.5", "127.0.1.0/24")
