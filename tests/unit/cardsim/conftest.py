from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.cardsim import InProcessConnection, KeySlot, PivCard, Slot
from tests.unit.cardsim.certs import cert, key

PIV_SELECT = bytes.fromhex("00a4040009a00000030800001000")


def pin_block(pin: str) -> bytes:
    return pin.encode().ljust(8, b"\xff")


class Reader:
    """Sends APDUs to a card in process and splits the answer into (data, sw)."""

    def __init__(self, card: object) -> None:
        self.conn = InProcessConnection(card)  # type: ignore[arg-type]

    def send(self, apdu: bytes | str) -> tuple[bytes, int]:
        raw = bytes.fromhex(apdu) if isinstance(apdu, str) else apdu
        out = self.conn.transmit(raw)
        assert len(out) >= 2
        return out[:-2], int.from_bytes(out[-2:], "big")

    def send_all(self, apdu: bytes | str) -> tuple[bytes, int]:
        """Send, then follow 61xx with GET RESPONSE like a client does."""
        data, sw = self.send(apdu)
        while sw >> 8 == 0x61:
            more, sw = self.send(bytes([0, 0xC0, 0, 0, sw & 0xFF]))
            data += more
        return data, sw

    def verify(self, pin: str = "123456") -> int:
        return self.send(b"\x00\x20\x00\x80\x08" + pin_block(pin))[1]


@pytest.fixture
def piv_card() -> PivCard:
    slots = {Slot.SIGNATURE: KeySlot(key("ec-p384"), cert("ec-p384")),
             Slot.KEY_MANAGEMENT: KeySlot(key("rsa-2048"), cert("rsa-2048"), compress=True),
             Slot.CARD_AUTH: KeySlot(key("ec-p256", 1), cert("ec-p256", 1))}
    return PivCard(key("ec-p256"), cert("ec-p256"), slots=slots)


@pytest.fixture
def piv(piv_card: PivCard) -> Reader:
    reader = Reader(piv_card)
    assert reader.send(PIV_SELECT)[1] == 0x9000
    return reader


@pytest.fixture
def make_reader() -> Callable[[object], Reader]:
    return Reader
