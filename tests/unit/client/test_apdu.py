from __future__ import annotations

import pytest

from broker.client.apdu import ApduProtocol, CommandApdu, ResponseApdu
from broker.client.errors import ApduError, CardRemovedError, MalformedResponseError
from broker.errors import BrokerError


class ScriptedCard:
    """A connection answering from a script, recording every APDU it was sent."""

    atr = b"\x3b\x00"

    def __init__(self, *answers: str) -> None:
        self.answers = [bytes.fromhex(a) for a in answers]
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        return self.answers.pop(0)

    def disconnect(self) -> None:
        pass


@pytest.mark.parametrize(("cmd", "short"), [
    (CommandApdu(0, 0xA4, 4, 0, b"\xa0\x00"), "00a4040002a000"),
    (CommandApdu(0, 0xA4, 4, 0, b"\xa0\x00", 0), "00a4040002a00000"),
    (CommandApdu(0, 0x20, 0, 0x80), "00200080"),
    (CommandApdu(0, 0xC0, 0, 0, le=0x10), "00c0000010"),
    (CommandApdu(0, 0xC0, 0, 0, le=256), "00c0000000"),
])
def test_short_encoding(cmd: CommandApdu, short: str) -> None:
    assert cmd.encode().hex() == short


def test_extended_encoding_when_data_or_le_need_it() -> None:
    assert CommandApdu(0, 0x2A, 0x9E, 0x9A, b"\x01" * 300, 0).encode()[4:7] == b"\x00\x01\x2c"
    assert CommandApdu(0, 0x2A, 0x9E, 0x9A, b"\x01" * 300, 0).encode()[-2:] == b"\x00\x00"
    assert CommandApdu(0, 0xB0, 0, 0, le=1000).encode().hex() == "00b00000" + "0003e8"
    assert CommandApdu(0, 0xB0, 0, 0, b"\x01", 5).encode(extended=True).hex() == \
        "00b00000" + "000001" + "01" + "0005"


def test_response_parse_splits_status_word_and_refuses_short_answers() -> None:
    assert ResponseApdu.parse(bytes.fromhex("01029000")) == ResponseApdu(b"\x01\x02", 0x9000)
    with pytest.raises(MalformedResponseError):
        ResponseApdu.parse(b"\x90")


def test_data_over_255_bytes_is_chained_with_cla_bit_0x10() -> None:
    card = ScriptedCard("9000", "9000", "aa9000")
    resp = ApduProtocol(card).send(0x00, 0x87, 0x07, 0x9A, bytes(600))
    assert resp == ResponseApdu(b"\xaa", 0x9000)
    assert [a[0] for a in card.sent] == [0x10, 0x10, 0x00]
    assert [a[4] for a in card.sent] == [255, 255, 90]
    assert b"".join(a[5:5 + a[4]] for a in card.sent) == bytes(600)


def test_a_refused_chained_part_stops_the_exchange() -> None:
    card = ScriptedCard("6a80")
    resp = ApduProtocol(card).send(0x00, 0x87, 0x07, 0x9A, bytes(300))
    assert resp.sw == 0x6A80 and len(card.sent) == 1


def test_61xx_is_followed_by_get_response_until_9000() -> None:
    card = ScriptedCard("0102" + "6102", "0304" + "6101", "05" + "9000")
    resp = ApduProtocol(card).send(0x00, 0xCB, 0x3F, 0xFF, b"\x5c\x01\x7e")
    assert resp == ResponseApdu(bytes([1, 2, 3, 4, 5]), 0x9000)
    assert card.sent[1].hex() == "00c0000002" and card.sent[2].hex() == "00c0000001"


def test_6cxx_reissues_the_command_with_the_le_the_card_names() -> None:
    card = ScriptedCard("6c08", "0102030405060708" + "9000")
    resp = ApduProtocol(card).send(0x00, 0x84, 0x00, 0x00, le=0)
    assert resp.data == bytes(range(1, 9))
    assert card.sent[1].hex() == "0084000008"


def test_a_card_that_never_stops_sending_is_malformed() -> None:
    card = ScriptedCard(*["00" * 255 + "61ff"] * 300)
    with pytest.raises(MalformedResponseError):
        ApduProtocol(card).send(0x00, 0xCB, 0x3F, 0xFF, b"")


def test_counts_apdus_and_bytes_both_ways() -> None:
    card = ScriptedCard("01" + "6101", "02" + "9000")
    proto = ApduProtocol(card)
    proto.send(0x00, 0xCB, 0x3F, 0xFF, b"\x5c\x01\x7e")
    assert (proto.apdus, proto.bytes_out, proto.bytes_in) == (2, 9 + 5, 3 + 3)


def test_check_raises_apdu_error_with_the_status_word() -> None:
    proto = ApduProtocol(ScriptedCard("6a82"))
    with pytest.raises(ApduError) as info:
        proto.check(proto.send(0, 0xA4, 4, 0, b"\xa0"), "selection")
    assert info.value.sw == 0x6A82 and info.value.details == {"sw": "6A82"}
    assert info.value.code == "card_apdu_error"


def test_a_connection_reporting_card_removed_becomes_the_client_error() -> None:
    class Gone:
        atr = b""

        def transmit(self, apdu: bytes) -> bytes:
            raise BrokerError("card_removed", "The smart card was removed.")

        def disconnect(self) -> None:
            pass

    with pytest.raises(CardRemovedError):
        ApduProtocol(Gone()).send(0, 0xA4, 4, 0, b"")
