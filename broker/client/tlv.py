"""BER-TLV as smart cards use it: strict, so a malformed answer is an error, never IndexError."""

from __future__ import annotations

from broker.client.errors import MalformedResponseError


def encode(tag: int, value: bytes) -> bytes:
    tag_bytes = tag.to_bytes((tag.bit_length() + 7) // 8 or 1, "big")
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n <= 0xFF:
        length = b"\x81" + bytes([n])
    elif n <= 0xFFFF:
        length = b"\x82" + n.to_bytes(2, "big")
    else:
        length = b"\x83" + n.to_bytes(3, "big")
    return tag_bytes + length + value


def decode(data: bytes) -> list[tuple[int, bytes]]:
    """Every top-level (tag, value) in ``data``; MalformedResponseError on any inconsistency."""
    out = []
    i, n = 0, len(data)
    while i < n:
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            while True:
                if i >= n:
                    raise MalformedResponseError(message="TLV tag runs past the data")
                b = data[i]
                tag = (tag << 8) | b
                i += 1
                if not b & 0x80:
                    break
                if tag > 0xFFFFFF:
                    raise MalformedResponseError(message="TLV tag too long")
        if i >= n:
            raise MalformedResponseError(message="TLV length missing")
        length = data[i]
        i += 1
        if length & 0x80:
            k = length & 0x7F
            if k == 0 or k > 3 or i + k > n:
                raise MalformedResponseError(message="bad TLV length")
            length = int.from_bytes(data[i:i + k], "big")
            i += k
        if i + length > n:
            raise MalformedResponseError(message="TLV value runs past the data")
        out.append((tag, data[i:i + length]))
        i += length
    return out


def find(data: bytes, tag: int) -> bytes | None:
    for t, v in decode(data):
        if t == tag:
            return v
    return None


def require(data: bytes, tag: int) -> bytes:
    value = find(data, tag)
    if value is None:
        raise MalformedResponseError(message=f"the card's answer lacks tag {tag:X}")
    return value
