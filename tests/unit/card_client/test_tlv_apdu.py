"""BER-TLV and the APDU layer: strict parsing, chaining, GET RESPONSE, 6Cxx."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.client import tlv
from broker.client.apdu import ApduProtocol
from broker.client.errors import ApduError, MalformedResponseError


@given(st.sampled_from([0x53, 0x7C, 0x5FC105, 0x7F49]), st.binary(max_size=70000))
def test_tlv_round_trip(tag: int, value: bytes) -> None:
    assert tlv.decode(tlv.encode(tag, value)) == [(tag, value)]


@pytest.mark.parametrize("data", [b"\x53", b"\x53\x05abc", b"\x53\x81",
                                  b"\x53\x84\x00\x00\x00\x01x", b"\x5f", b"\x5f\xc1",
                                  b"\x53\x82\xff"])
def test_malformed_tlv_is_an_error_not_an_index_error(data: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        tlv.decode(data)


@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    try:
        tlv.decode(data)
    except MalformedResponseError:
        pass


class Scripted:
    """A connection that records commands and plays back answers."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return self.answers.pop(0)


def test_long_commands_are_chained() -> None:
    conn = Scripted([b"\x90\x00", b"\x90\x00"])
    ApduProtocol(conn).send(0x00, 0x87, 0x07, 0x9A, bytes(300))
    assert conn.sent[0][0] == 0x10 and conn.sent[0][4] == 255
    assert conn.sent[1][0] == 0x00 and conn.sent[1][4] == 45


def test_61xx_is_followed_by_get_response() -> None:
    conn = Scripted([b"A" * 256 + b"\x61\x10", b"B" * 16 + b"\x90\x00"])
    resp = ApduProtocol(conn).send(0x00, 0xCB, 0x3F, 0xFF, b"\x5c\x01\x7e")
    assert resp.data == b"A" * 256 + b"B" * 16 and resp.sw == 0x9000
    assert conn.sent[1] == bytes([0x00, 0xC0, 0x00, 0x00, 0x10])


def test_6cxx_reissues_with_the_right_le() -> None:
    conn = Scripted([b"\x6c\x08", b"12345678\x90\x00"])
    assert ApduProtocol(conn).send(0x00, 0xCA, 0x00, 0x00).data == b"12345678"
    assert conn.sent[1][-1] == 0x08


def test_status_word_errors_carry_the_sw() -> None:
    proto = ApduProtocol(Scripted([b"\x6a\x82"]))
    resp = proto.send(0x00, 0xA4, 0x04, 0x00, b"\xa0\x00")
    with pytest.raises(ApduError) as err:
        proto.check(resp, "selection")
    assert err.value.sw == 0x6A82


def test_answer_shorter_than_a_status_word_is_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        ApduProtocol(Scripted([b"\x90"])).send(0x00, 0xA4, 0x04, 0x00)


def test_traffic_is_counted() -> None:
    proto = ApduProtocol(Scripted([b"\x90\x00"]))
    proto.send(0x00, 0xA4, 0x04, 0x00, b"\xa0\x00\x00\x03\x08")
    assert proto.apdus == 1 and proto.bytes_in == 2 and proto.bytes_out == 11
