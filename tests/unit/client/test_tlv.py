from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.client import tlv
from broker.client.errors import MalformedResponseError

# one-byte tags whose low five bits are not 1F, and multi-byte tags as cards use them
single_tags = st.integers(0, 0xFF).filter(lambda t: t & 0x1F != 0x1F)
two_byte_tags = st.integers(0x1F, 0xFF).filter(lambda t: t & 0x1F == 0x1F).flatmap(
    lambda first: st.integers(0, 0x7F).map(lambda second: first << 8 | second))
three_byte_tags = st.integers(0x1F, 0xFF).filter(lambda t: t & 0x1F == 0x1F).flatmap(
    lambda first: st.tuples(st.integers(0x80, 0xFF), st.integers(0, 0x7F)).map(
        lambda rest: first << 16 | rest[0] << 8 | rest[1]))
tags = st.one_of(single_tags, two_byte_tags, three_byte_tags)


@given(st.lists(st.tuples(tags, st.binary(max_size=600)), max_size=5))
def test_encode_then_decode_gives_back_every_tag_and_value(items: list[tuple[int, bytes]]) -> None:
    data = b"".join(tlv.encode(t, v) for t, v in items)
    assert tlv.decode(data) == items


@given(st.binary(max_size=300))
def test_random_bytes_parse_or_raise_malformed_never_anything_else(data: bytes) -> None:
    try:
        tlv.decode(data)
    except MalformedResponseError:
        pass


@pytest.mark.parametrize(("n", "header"), [(0x7F, "7f"), (0x80, "8180"), (0xFF, "81ff"),
                                            (0x100, "820100"), (0x10000, "83010000")])
def test_long_form_lengths(n: int, header: str) -> None:
    encoded = tlv.encode(0x53, b"\xab" * n)
    assert encoded[1:1 + len(header) // 2].hex() == header
    assert tlv.decode(encoded) == [(0x53, b"\xab" * n)]


def test_multi_byte_tags_as_piv_uses_them() -> None:
    assert tlv.encode(0x5FC102, b"\x01") == bytes.fromhex("5fc1020101")
    assert tlv.decode(bytes.fromhex("5fc10200")) == [(0x5FC102, b"")]
    assert tlv.decode(bytes.fromhex("7f490100")) == [(0x7F49, b"\x00")]


@pytest.mark.parametrize("raw", [
    "53",            # no length
    "5305aabb",      # value shorter than its length
    "5381",          # long form without its length byte
    "538201",        # long form cut short
    "5384000000",    # four length bytes: more than a card object can be
    "5380",          # indefinite length is not used by smart cards
    "5f",            # multi-byte tag cut short
    "5fc1",          # multi-byte tag cut short
    "5f8181818100",  # tag longer than three bytes
])
def test_truncated_or_overlong_input_is_malformed(raw: str) -> None:
    with pytest.raises(MalformedResponseError):
        tlv.decode(bytes.fromhex(raw))


def test_require_names_the_missing_tag() -> None:
    with pytest.raises(MalformedResponseError, match="7C"):
        tlv.require(tlv.encode(0x53, b""), 0x7C)
    assert tlv.find(tlv.encode(0x53, b"x"), 0x70) is None
