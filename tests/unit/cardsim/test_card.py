"""The card core: APDU parsing, chaining, malformed input never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.cardsim import PivCard
from broker.cardsim.card import CardStatus, Command, PinCounter
from tests.unit.cardsim.certs import cert, key
from tests.unit.cardsim.conftest import PIV_SELECT, Reader


@pytest.fixture(scope="module")
def card() -> PivCard:
    return PivCard(key("ec-p256"), cert("ec-p256"))


@pytest.mark.parametrize("apdu", ["", "00", "00a404"])
def test_apdus_shorter_than_a_header_are_wrong_length(card: PivCard, apdu: str) -> None:
    assert card.process_apdu(bytes.fromhex(apdu)) == b"\x67\x00"


@pytest.mark.parametrize("apdu", ["00a4040005a000", "00a40400 02 a0000308 00 00".replace(" ", "")])
def test_lc_that_does_not_match_the_data_is_wrong_length(card: PivCard, apdu: str) -> None:
    assert card.process_apdu(bytes.fromhex(apdu)) == b"\x67\x00"


def test_reader_pseudo_apdus_are_class_not_supported(card: PivCard) -> None:
    assert card.process_apdu(bytes.fromhex("ffca000000")) == b"\x6e\x00"


def test_unknown_instruction_is_not_supported(card: PivCard) -> None:
    reader = Reader(card)
    reader.send(PIV_SELECT)
    assert reader.send("00fd000000")[1] == 0x6D00  # OpenSC's YubiKey version probe


def test_extended_length_select_is_understood(card: PivCard) -> None:
    reader = Reader(card)
    assert reader.send("00a4040000000aa00000030800001000010000")[1] == 0x9000


def test_command_parsing_cases() -> None:
    assert Command.parse(bytes.fromhex("00b0000010")) == Command(0, 0xB0, 0, 0, b"", 16)
    assert Command.parse(bytes.fromhex("00a4040002a00000")) == \
        Command(0, 0xA4, 4, 0, b"\xa0\x00", 256)
    assert Command.parse(bytes.fromhex("00c0000000")).le == 256
    with pytest.raises(CardStatus):
        Command.parse(bytes.fromhex("0000000000000501"))


def test_a_chain_must_keep_its_header(card: PivCard) -> None:
    reader = Reader(card)
    reader.send(PIV_SELECT)
    assert reader.send("1087119a027c00")[1] == 0x9000
    assert reader.send("00cb3fff035c017e")[1] == 0x6985


def test_an_overlong_chain_is_refused(card: PivCard) -> None:
    reader = Reader(card)
    reader.send(PIV_SELECT)
    piece = bytes([0x10, 0x87, 0x07, 0x9D, 255]) + b"\x00" * 255
    sws = [reader.send(piece)[1] for _ in range(40)]
    assert 0x6700 in sws


def test_an_applet_bug_answers_6f00(card: PivCard, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = Reader(card)
    reader.send(PIV_SELECT)

    def boom(cmd: Command) -> bytes:
        raise RuntimeError("bug")

    monkeypatch.setattr(card.piv, "handle", boom)
    assert reader.send("00cb3fff035c017e")[1] == 0x6F00


def test_pin_counter_blocks_and_replace_restores() -> None:
    pin = PinCounter("123456", 2)
    assert not pin.check(b"1") and not pin.check(b"2")
    assert pin.blocked and not pin.check(b"123456")
    pin.replace("654321")
    assert pin.check(b"654321") and pin.remaining == 2


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_get_a_status_word_never_an_exception(apdu: bytes, select: bool) -> None:
    card = PivCard(key("ec-p256"), cert("ec-p256"))
    if select:
        card.process_apdu(PIV_SELECT)
    out = card.process_apdu(apdu)
    assert len(out) >= 2
    assert out[-2] in (0x90, 0x61, 0x62, 0x63, 0x67, 0x69, 0x6A, 0x6B, 0x6D, 0x6E, 0x6F)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0x20, 0x24, 0x2C, 0x87, 0xCB, 0xC0, 0xA4]), st.integers(0, 255),
       st.integers(0, 255), st.binary(max_size=260))
def test_well_framed_commands_with_junk_data_never_raise(ins: int, p1: int, p2: int,
                                                         data: bytes) -> None:
    card = PivCard(key("ec-p256"), cert("ec-p256"))
    card.process_apdu(PIV_SELECT)
    card.process_apdu(bytes.fromhex("002000800831323334353 6ffff".replace(" ", "")))
    apdu = bytes([0, ins, p1, p2])
    if data:
        apdu += (bytes([len(data)]) if len(data) < 256 else b"\x00" + len(data).to_bytes(2, "big"))
        apdu += data
    out = card.process_apdu(apdu)
    assert len(out) >= 2 and out[-2:] != b"\x6f\x00"
