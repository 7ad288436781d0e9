"""The card side's own small TLV codec: BER-TLV (PIV) and SIMPLE-TLV (CAC buffers).

Only what the simulated cards need: one- and two-byte tags, definite lengths up to 3 bytes.
Parsing raises :class:`ValueError` on malformed input; the card turns that into 6A80.
"""

from __future__ import annotations


def ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return b"\x81" + bytes([n])
    if n < 0x10000:
        return b"\x82" + n.to_bytes(2, "big")
    return b"\x83" + n.to_bytes(3, "big")


def ber(tag: int, value: bytes) -> bytes:
    """Encode one BER-TLV; ``tag`` is the tag as an integer (0x5FC102 for a 3-byte tag)."""
    width = max(1, (tag.bit_length() + 7) // 8)
    return tag.to_bytes(width, "big") + ber_length(len(value)) + value


def parse_ber(data: bytes) -> dict[int, bytes]:
    """One level of BER-TLV as {tag: value} (last one wins); ValueError when malformed."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:  # multi-byte tag: continuation bytes have bit 8 set
            while True:
                if i >= len(data):
                    raise ValueError("truncated tag")
                tag = (tag << 8) | data[i]
                i += 1
                if not data[i - 1] & 0x80:
                    break
        if i >= len(data):
            raise ValueError("truncated length")
        n = data[i]
        i += 1
        if n & 0x80:
            k = n & 0x7F
            if k not in (1, 2, 3) or i + k > len(data):
                raise ValueError("bad length")
            n = int.from_bytes(data[i:i + k], "big")
            i += k
        if i + n > len(data):
            raise ValueError("value overruns the data")
        out[tag] = data[i:i + n]
        i += n
    return out


def simple_tl(tag: int, length: int) -> bytes:
    """A SIMPLE-TLV tag and length (GSC-IS): 1-byte length, or FF + 2 bytes little-endian."""
    if length < 0xFF:
        return bytes([tag, length])
    return bytes([tag, 0xFF]) + length.to_bytes(2, "little")


def simple(tag: int, value: bytes) -> bytes:
    return simple_tl(tag, len(value)) + value
