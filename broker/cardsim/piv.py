"""A virtual PIV card (NIST SP 800-73-4) that OpenSC, pyscard and our client accept.

It answers SELECT of the PIV AID with an Application Property Template, GET DATA for the
Discovery object, the CHUID and the four key-slot certificates, VERIFY (PIN padded with FF to 8
bytes; 63Cx retries left; 6983 blocked), RESET RETRY COUNTER with the PUK, and GENERAL
AUTHENTICATE signatures in slots 9A/9C/9D/9E (raw RSA on a client-padded block; ECDSA on a
hash, answered DER-encoded). Long answers go out in pieces with 61xx + GET RESPONSE; long
commands may come chained (CLA bit 0x10). Removal or power-off forgets the verified PIN.
The card counts APDUs and bytes so benchmarks can compare clients.
"""

from __future__ import annotations

import enum
import gzip
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

PIV_AID = bytes.fromhex("a000000308000010000100")
PIV_AID_SHORT = bytes.fromhex("a00000030800001000")
ATR = bytes.fromhex("3bf81300008131fe15597562696b657934d4")  # a PIV card ATR shape


class Ins(enum.IntEnum):
    SELECT = 0xA4
    GET_DATA = 0xCB
    VERIFY = 0x20
    CHANGE_REFERENCE = 0x24
    RESET_RETRY = 0x2C
    GENERAL_AUTHENTICATE = 0x87
    GET_RESPONSE = 0xC0


class Slot(enum.IntEnum):
    AUTHENTICATION = 0x9A
    SIGNATURE = 0x9C
    KEY_MANAGEMENT = 0x9D
    CARD_AUTH = 0x9E

    @property
    def object_id(self) -> bytes:
        return {0x9A: b"\x5f\xc1\x05", 0x9C: b"\x5f\xc1\x0a", 0x9D: b"\x5f\xc1\x0b",
                0x9E: b"\x5f\xc1\x01"}[self.value]


CHUID_ID = b"\x5f\xc1\x02"
DISCOVERY_ID = b"\x7e"
SW_OK = b"\x90\x00"


def sw(code: int) -> bytes:
    return code.to_bytes(2, "big")


def tlv(tag: bytes, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = b"\x81" + bytes([n])
    else:
        length = b"\x82" + n.to_bytes(2, "big")
    return tag + length + value


def parse_tlvs(data: bytes) -> dict[int, bytes]:
    """One level of simple BER-TLV (one- or two-byte tags); ValueError on malformed input."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            if i >= len(data):
                raise ValueError("truncated tag")
            tag = (tag << 8) | data[i]
            i += 1
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


@dataclass
class CardStats:
    apdus: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class KeySlot:
    key: Any
    certificate: x509.Certificate
    compress: bool = False


def _alg_of(key: Any) -> int:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: 0x11, 384: 0x14}[key.curve.key_size]
    if isinstance(key, rsa.RSAPrivateKey):
        return {1024: 0x06, 2048: 0x07, 3072: 0x05}.get(key.key_size, 0x07)
    raise ValueError("unsupported key type")


@dataclass
class PivCard:
    """A PIV applet with keys and certificates it is given; PIN/PUK with real counters."""

    key: Any = None
    certificate: x509.Certificate | None = None
    pin: str = "123456"
    puk: str = "12345678"
    pin_tries: int = 3
    puk_tries: int = 3
    slots: dict[int, KeySlot] = field(default_factory=dict)
    card_uuid: bytes = field(default_factory=lambda: uuid.uuid4().bytes)
    fasc_n: bytes = bytes.fromhex("d4e739da739ced39ce739d836858210842108421c84210c3eb")
    atr: bytes = ATR
    stats: CardStats = field(default_factory=CardStats)

    def __post_init__(self) -> None:
        if self.key is not None and self.certificate is not None:
            self.slots.setdefault(Slot.AUTHENTICATION, KeySlot(self.key, self.certificate))
        self.pin_left = self.pin_tries
        self.puk_left = self.puk_tries
        self._lock = threading.Lock()
        self.reset()

    # ------------------------------------------------------------------ power
    def reset(self) -> None:
        """Power-on / reset / removal: applet deselected, PIN not verified."""
        self.selected = False
        self.verified = False
        self._pending = b""
        self._chain = b""

    # ------------------------------------------------------------------ APDU
    def process_apdu(self, apdu: bytes) -> bytes:
        with self._lock:
            self.stats.apdus += 1
            self.stats.bytes_in += len(apdu)
            out = self._process(apdu)
            self.stats.bytes_out += len(out)
            return out

    def _process(self, apdu: bytes) -> bytes:
        if len(apdu) < 4:
            return sw(0x6700)
        cla, ins, p1, p2 = apdu[:4]
        data = b""
        if len(apdu) > 5:
            lc = apdu[4]
            if lc == 0 and len(apdu) >= 7:  # extended length
                lc = int.from_bytes(apdu[5:7], "big")
                data = apdu[7:7 + lc]
            else:
                data = apdu[5:5 + lc]
            if len(data) != lc:
                return sw(0x6700)
        if ins == Ins.GET_RESPONSE:
            return self._next_piece()
        self._pending = b""
        if cla & 0x10:  # command chaining: keep collecting
            self._chain += data
            return SW_OK
        if self._chain:
            data, self._chain = self._chain + data, b""
        if cla & 0xEC:
            return sw(0x6E00)
        handler = {Ins.SELECT: self._select, Ins.GET_DATA: self._get_data,
                   Ins.VERIFY: self._verify, Ins.RESET_RETRY: self._reset_retry,
                   Ins.CHANGE_REFERENCE: self._change_reference,
                   Ins.GENERAL_AUTHENTICATE: self._general_authenticate}.get(ins)
        if handler is None:
            return sw(0x6D00)
        if ins != Ins.SELECT and not self.selected:
            return sw(0x6985)
        try:
            return handler(p1, p2, data)
        except ValueError:
            return sw(0x6A80)

    def _respond(self, body: bytes) -> bytes:
        if len(body) <= 256:
            return body + SW_OK
        self._pending = body[256:]
        rest = min(len(self._pending), 256)
        return body[:256] + bytes([0x61, rest & 0xFF])

    def _next_piece(self) -> bytes:
        if not self._pending:
            return sw(0x6985)
        body, self._pending = self._pending[:256], self._pending[256:]
        if self._pending:
            return body + bytes([0x61, min(len(self._pending), 256) & 0xFF])
        return body + SW_OK

    # ------------------------------------------------------------------ commands
    def _select(self, p1: int, p2: int, data: bytes) -> bytes:
        if p1 != 0x04 or not data or not PIV_AID.startswith(data) or len(data) < 5:
            self.selected = False
            return sw(0x6A82)
        self.selected = True
        apt = tlv(b"\x61", tlv(b"\x4f", bytes.fromhex("0000100001 00".replace(" ", "")))
                  + tlv(b"\x79", tlv(b"\x4f", bytes.fromhex("a000000308")))
                  + tlv(b"\x50", b"smartcard-broker virtual PIV")
                  + tlv(b"\xac", b"\x80\x01\x11\x80\x01\x14\x80\x01\x07\x06\x01\x00"))
        return self._respond(apt)

    def _object(self, oid: bytes) -> bytes | None:
        if oid == DISCOVERY_ID:
            return tlv(b"\x7e", tlv(b"\x4f", PIV_AID) + tlv(b"\x5f\x2f", b"\x40\x00"))
        if oid == CHUID_ID:
            body = (tlv(b"\x30", self.fasc_n) + tlv(b"\x34", self.card_uuid)
                    + tlv(b"\x35", b"20301231") + tlv(b"\x3e", b"") + tlv(b"\xfe", b""))
            return tlv(b"\x53", body)
        for slot, ks in self.slots.items():
            if Slot(slot).object_id == oid:
                der = ks.certificate.public_bytes(serialization.Encoding.DER)
                info = b"\x00"
                if ks.compress:
                    der, info = gzip.compress(der), b"\x01"
                return tlv(b"\x53", tlv(b"\x70", der) + tlv(b"\x71", info) + tlv(b"\xfe", b""))
        return None

    def _get_data(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) != (0x3F, 0xFF):
            return sw(0x6A86)
        tags = parse_tlvs(data)
        oid = tags.get(0x5C)
        if oid is None:
            return sw(0x6A80)
        obj = self._object(oid)
        return sw(0x6A82) if obj is None else self._respond(obj)

    def _verify(self, p1: int, p2: int, data: bytes) -> bytes:
        if p2 != 0x80:
            return sw(0x6A88)
        if p1 == 0xFF:  # reset the security status
            self.verified = False
            return SW_OK
        if not data:
            if self.pin_left == 0:
                return sw(0x6983)
            return SW_OK if self.verified else sw(0x63C0 | self.pin_left)
        if self.pin_left == 0:
            return sw(0x6983)
        if len(data) != 8:
            return sw(0x6A80)
        given = data.rstrip(b"\xff")
        if given == self.pin.encode():
            self.pin_left = self.pin_tries
            self.verified = True
            return SW_OK
        self.verified = False
        self.pin_left -= 1
        return sw(0x6983) if self.pin_left == 0 else sw(0x63C0 | self.pin_left)

    def _change_reference(self, p1: int, p2: int, data: bytes) -> bytes:
        if p2 != 0x80 or len(data) != 16:
            return sw(0x6A80)
        if self.pin_left == 0:
            return sw(0x6983)
        if data[:8].rstrip(b"\xff") != self.pin.encode():
            self.pin_left -= 1
            return sw(0x6983) if self.pin_left == 0 else sw(0x63C0 | self.pin_left)
        self.pin = data[8:].rstrip(b"\xff").decode("ascii", "replace")
        self.pin_left = self.pin_tries
        return SW_OK

    def _reset_retry(self, p1: int, p2: int, data: bytes) -> bytes:
        if p2 != 0x80 or len(data) != 16:
            return sw(0x6A80)
        if self.puk_left == 0:
            return sw(0x6983)
        if data[:8].rstrip(b"\xff") != self.puk.encode():
            self.puk_left -= 1
            return sw(0x6983) if self.puk_left == 0 else sw(0x63C0 | self.puk_left)
        self.puk_left = self.puk_tries
        self.pin = data[8:].rstrip(b"\xff").decode("ascii", "replace")
        self.pin_left = self.pin_tries
        return SW_OK

    def _general_authenticate(self, alg: int, slot: int, data: bytes) -> bytes:
        ks = self.slots.get(slot)
        if ks is None:
            return sw(0x6A88)
        if _alg_of(ks.key) != alg:
            return sw(0x6A80)
        if slot != Slot.CARD_AUTH and not self.verified:
            return sw(0x6982)
        outer = parse_tlvs(data)
        inner = parse_tlvs(outer.get(0x7C, b""))
        challenge = inner.get(0x81)
        if challenge is None or 0x82 not in inner:
            return sw(0x6A80)
        if isinstance(ks.key, ec.EllipticCurvePrivateKey):
            size = 32 if alg == 0x11 else 48
            digest = challenge[-size:].rjust(size, b"\0")
            algo = hashes.SHA256() if size == 32 else hashes.SHA384()
            signature = ks.key.sign(digest, ec.ECDSA(Prehashed(algo)))
        else:
            n = ks.key.private_numbers()
            if len(challenge) != (ks.key.key_size + 7) // 8:
                return sw(0x6A80)
            m = int.from_bytes(challenge, "big")
            if m >= n.public_numbers.n:
                return sw(0x6A80)
            signature = pow(m, n.d, n.public_numbers.n).to_bytes(len(challenge), "big")
        if slot == Slot.SIGNATURE:
            self.verified = False  # PIN always: each signature needs a fresh VERIFY
        return self._respond(tlv(b"\x7c", tlv(b"\x82", signature)))
