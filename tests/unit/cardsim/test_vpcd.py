"""The vpcd link against a fake vpcd on loopback: framing, control codes, bad frames, reconnect."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from broker.cardsim import PivCard
from broker.cardsim.vpcd import VpcdLink, reader_name
from tests.unit.cardsim.certs import cert, key
from tests.unit.cardsim.conftest import PIV_SELECT


class FakeVpcd:
    """The reader side of the vpcd protocol: a TCP server that the card connects to."""

    def __init__(self, port: int = 0) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self, timeout: float = 5.0) -> None:
        self.server.settimeout(timeout)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(timeout)

    def send(self, payload: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(struct.pack(">H", len(payload)) + payload)

    def recv(self) -> bytes:
        assert self.conn is not None
        head = self._exact(2)
        return self._exact(struct.unpack(">H", head)[0])

    def _exact(self, n: int) -> bytes:
        assert self.conn is not None
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def exchange(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.recv()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def card() -> PivCard:
    return PivCard(key("ec-p256"), cert("ec-p256"))


@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    fake = FakeVpcd()
    yield fake
    fake.close()


@pytest.fixture
def link(card: PivCard, vpcd: FakeVpcd) -> Iterator[VpcdLink]:
    lk = VpcdLink(card, port=vpcd.port, max_backoff=0.2).start()
    vpcd.accept()
    assert lk.wait_connected(5)
    yield lk
    lk.stop()


def test_get_atr_control_code_answers_the_atr(card: PivCard, vpcd: FakeVpcd,
                                              link: VpcdLink) -> None:
    assert vpcd.exchange(b"\x04") == card.atr


def test_apdus_are_answered_by_the_card(vpcd: FakeVpcd, link: VpcdLink) -> None:
    vpcd.send(b"\x01")  # power on: no answer
    assert vpcd.exchange(PIV_SELECT)[-2:] == b"\x90\x00"


def test_power_off_forgets_the_pin(card: PivCard, vpcd: FakeVpcd, link: VpcdLink) -> None:
    vpcd.exchange(PIV_SELECT)
    assert vpcd.exchange(bytes.fromhex("002000800831323334353 6ffff".replace(" ", "")))[-2:] \
        == b"\x90\x00"
    vpcd.send(b"\x00")
    vpcd.send(b"\x01")
    vpcd.exchange(PIV_SELECT)
    assert vpcd.exchange(bytes.fromhex("00200080")) == b"\x63\xc3"


@pytest.mark.parametrize("frame", [b"", b"\x00\xa4", b"\x00\xa4\x04"])
def test_malformed_frames_get_an_error_status_and_the_link_survives(vpcd: FakeVpcd,
                                                                    link: VpcdLink,
                                                                    frame: bytes) -> None:
    assert vpcd.exchange(frame) in (b"\x6f\x00", b"\x67\x00")
    assert vpcd.exchange(PIV_SELECT)[-2:] == b"\x90\x00"


def test_remove_closes_the_socket_and_insert_reconnects(vpcd: FakeVpcd, link: VpcdLink) -> None:
    link.remove()
    assert vpcd.conn is not None
    assert vpcd.conn.recv(1) == b""
    assert not link.connected
    link.insert()
    vpcd.accept()
    assert link.wait_connected(5)
    assert vpcd.exchange(b"\x04")


def test_link_reconnects_when_vpcd_restarts(card: PivCard) -> None:
    first = FakeVpcd()
    port = first.port
    states: list[bool] = []
    lk = VpcdLink(card, port=port, max_backoff=0.2, on_state=states.append).start()
    try:
        first.accept()
        assert lk.wait_connected(5)
        first.close()  # pcscd went away
        second = FakeVpcd(port)
        try:
            second.accept()
            assert second.exchange(b"\x04") == card.atr
            assert states[:2] == [True, False]
        finally:
            second.close()
    finally:
        lk.stop()


def test_link_keeps_retrying_while_nothing_listens(card: PivCard) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lk = VpcdLink(card, port=port, max_backoff=0.1).start()
    assert lk.wait_connected(0.5) is None
    done = threading.Event()
    threading.Thread(target=lambda: (lk.stop(), done.set())).start()
    assert done.wait(3)


def test_reader_names_follow_the_port() -> None:
    assert reader_name(35963) == "Virtual PCD 00 00"
    assert reader_name(35964) == "Virtual PCD 00 01"


def test_reinsertion_waits_out_vpcds_presence_poll(card: PivCard, vpcd: FakeVpcd) -> None:
    lk = VpcdLink(card, port=vpcd.port, reinsert_gap=0.4).start()
    try:
        vpcd.accept()
        assert lk.wait_connected(5)
        lk.remove()
        removed = time.monotonic()
        lk.insert()
        vpcd.accept()
        assert time.monotonic() - removed >= 0.35
    finally:
        lk.stop()
