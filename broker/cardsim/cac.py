"""A virtual CAC (Common Access Card, GSC-IS 2.1 PKI applets) — optionally also a PIV card.

The card is a "CAC-2 alternate token" as OpenSC's ``cac`` driver knows it: PKI applets and no
CCC/ACA. Our client (``broker/client/cac.py``) speaks exactly this protocol:

Applets (SELECT ``00 A4 04 00 <AID>``, answer empty + 9000; 6A82 if absent):
    ``A0 00 00 00 79 01 00`` PKI 0 — identity (CAC ID Certificate)
    ``A0 00 00 00 79 01 01`` PKI 1 — digital signature (CAC Email Signature Certificate)
    ``A0 00 00 00 79 01 02`` PKI 2 — encryption (CAC Email Encryption Certificate)
    The CCC (``A0 00 00 01 16 DB 00``), ACA (``A0 00 00 00 79 10 00``) and the generic
    containers (``A0 00 00 00 79 02 xx``) are absent → 6A82. With ``dual=True`` the PIV AID is
    selectable too and its 9A/9C/9D slots are PKI 0/1/2 (same keys, same PIN and counter).

In a selected PKI applet (CLA 00 or 80):
    GET PROPERTIES ``00 56 01 00 00`` → SIMPLE-TLV: ``01 05 <family 10, version 4 bytes>``,
        ``40 01 <object count = 1>``, ``51 11 { 41 02 <object id>, 42 05 <buffer props:
        00 = TL/V buffers ...>, 43 04 <PKI props: xx xx 01 = private key present, xx> }``.
    READ BUFFER ``00 52 <offset hi> <offset lo> 02 <type> <count>``: type 01 = the tag/length
        (TL) buffer, 02 = the value (V) buffer. Each buffer starts with its own length as
        2 bytes little-endian; offset counts from that. Read at most 240 bytes at a time.
        TL buffer: SIMPLE-TLV headers ``70 <cert len>`` ``71 01`` ``FE 00``; V buffer: the
        DER certificate, then the cert-info byte (00 plain, 01 = certificate is gzip/zlib
        compressed), then nothing for FE. A SIMPLE-TLV length ≥ 255 is ``FF lo hi``.
    VERIFY ``00 20 00 00|80 <PIN>`` — the PIN as ASCII digits, FF padding to 8 bytes allowed;
        63Cx wrong (x tries left), 6983 blocked, empty data → 9000 if verified else 63Cx.
        The PIN is one per card (shared by the applets and the PIV side).
    SIGN/DECRYPT ``00 42 <P1> 00 <data>``: P1 80 = more data follows (chunks of ≤ 240 bytes,
        answered 9000), P1 00 = last chunk → the result. RSA: the data is the full padded block
        (k bytes) and the result the raw private-key operation. EC keys (not CAC-standard;
        OpenSC's cac driver is RSA-only): the data is the hash, the result DER ECDSA.
        6982 unless the PIN is verified; 6A80 for a wrong block size.
    CHANGE REFERENCE DATA ``00 24 00 80 <old PIN block> <new PIN block>`` and RESET RETRY
        COUNTER ``00 2C 00 80 <PUK, 8 digits> <new PIN block>``: 63Cx / 6983 for the
        reference checked (PIN, resp. PUK), as on PIV.
    GET CHALLENGE ``00 84 00 00 08`` → 8 random bytes. GET ACR (4C) → 6A82; CAC-1 GET
    CERTIFICATE (36) → 6D00, so OpenSC's ``cac1`` driver does not claim the card.
"""

from __future__ import annotations

import datetime as dt
import enum
import gzip
import secrets
import uuid

from broker.cardsim.card import (
    SW,
    Applet,
    CardStatus,
    Command,
    PinCounter,
    SecurityState,
    VirtualCard,
    pin_from_block,
)
from broker.cardsim.piv import DEMO_FASC_N, KeySlot, PivApplet, Slot, private_operation
from broker.cardsim.tlv import simple, simple_tl

CAC_RID = bytes.fromhex("a000000079")
CAC_PKI_AID_PREFIX = CAC_RID + b"\x01"
# A CAC-like ATR (JCOP family shape) that no OpenSC driver claims by ATR.
CAC_ATR = bytes.fromhex("3bdb9600801f030031c064b0f310000790009b")
CHUNK = 240


class CacIns(enum.IntEnum):
    VERIFY = 0x20
    CHANGE_REFERENCE = 0x24
    RESET_RETRY = 0x2C
    SIGN_DECRYPT = 0x42
    GET_ACR = 0x4C
    READ_BUFFER = 0x52
    GET_PROPERTIES = 0x56
    GET_CHALLENGE = 0x84
    SELECT = 0xA4


class BufferType(enum.IntEnum):
    TAG = 0x01
    VALUE = 0x02


class PkiApplet(enum.IntEnum):
    """The three CAC PKI applets and the PIV slot each one doubles as on a dual card."""

    IDENTITY = 0
    SIGNATURE = 1
    ENCRYPTION = 2

    @property
    def aid(self) -> bytes:
        return CAC_PKI_AID_PREFIX + bytes([self.value])

    @property
    def object_id(self) -> bytes:
        return bytes([0x01, self.value])

    @property
    def piv_slot(self) -> Slot:
        return (Slot.AUTHENTICATION, Slot.SIGNATURE, Slot.KEY_MANAGEMENT)[self.value]


class CacPkiApplet:
    def __init__(self, which: PkiApplet, slot: KeySlot, pin: PinCounter,
                 security: SecurityState, puk: PinCounter | None = None) -> None:
        self.which, self.slot, self.pin, self.security = which, slot, pin, security
        self.puk = puk
        self.aid = which.aid
        self._sign_buffer = b""
        der, info = slot.cert_der(), b"\x00"
        if slot.compress:
            der, info = gzip.compress(der, mtime=0), b"\x01"
        self.tl_buffer = simple_tl(0x70, len(der)) + simple_tl(0x71, 1) + simple_tl(0xFE, 0)
        self.v_buffer = der + info

    def reset(self) -> None:
        self._sign_buffer = b""

    def select(self, cmd: Command) -> bytes:
        self._sign_buffer = b""
        return b""

    def handle(self, cmd: Command) -> bytes:
        if cmd.cla not in (0x00, 0x80):
            raise CardStatus(SW.CLA_NOT_SUPPORTED)
        if cmd.ins == CacIns.SELECT and cmd.p1 == 0x02:  # select the object by its 2-byte id
            if cmd.data != self.which.object_id:
                raise CardStatus(SW.FILE_NOT_FOUND)
            return b""
        if cmd.ins == CacIns.GET_PROPERTIES:
            return self._properties(cmd)
        if cmd.ins == CacIns.READ_BUFFER:
            return self._read_buffer(cmd)
        if cmd.ins == CacIns.VERIFY:
            return self._verify(cmd)
        if cmd.ins == CacIns.SIGN_DECRYPT:
            return self._sign(cmd)
        if cmd.ins in (CacIns.CHANGE_REFERENCE, CacIns.RESET_RETRY):
            return self._pin_management(cmd)
        if cmd.ins == CacIns.GET_CHALLENGE:
            return secrets.token_bytes(8)
        if cmd.ins == CacIns.GET_ACR:
            raise CardStatus(SW.FILE_NOT_FOUND)
        raise CardStatus(SW.INS_NOT_SUPPORTED)

    def _properties(self, cmd: Command) -> bytes:
        if cmd.p1 not in (0x00, 0x01):
            raise CardStatus(SW.INCORRECT_P1P2)
        obj = (simple(0x41, self.which.object_id)
               + simple(0x42, b"\x00\x00\x00\x00\x00")  # TL and V buffers (not plain TLV)
               + simple(0x43, b"\x06\x10\x01\x00"))  # key algorithm, size code, key present
        return (simple(0x01, b"\x10\x02\x06\x02\x03") + simple(0x40, b"\x01")
                + simple(0x51, obj))

    def _read_buffer(self, cmd: Command) -> bytes:
        if len(cmd.data) != 2:
            raise CardStatus(SW.WRONG_DATA)
        kind, count = cmd.data
        if kind == BufferType.TAG:
            content = self.tl_buffer
        elif kind == BufferType.VALUE:
            content = self.v_buffer
        else:
            raise CardStatus(SW.WRONG_DATA)
        buffer = len(content).to_bytes(2, "little") + content
        offset = (cmd.p1 << 8) | cmd.p2
        if offset > len(buffer):
            raise CardStatus(SW.INCORRECT_P1P2)
        return buffer[offset:offset + count]

    def _verify(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x00 or cmd.p2 not in (0x00, 0x80):
            raise CardStatus(SW.INCORRECT_P1P2)
        if not cmd.data:
            if self.pin.blocked:
                raise CardStatus(SW.AUTH_METHOD_BLOCKED)
            if self.security.pin_verified:
                return b""
            raise CardStatus(self.pin.status_sw())
        candidate = cmd.data.rstrip(b"\xff")
        if not candidate or len(cmd.data) > 8:
            raise CardStatus(SW.WRONG_DATA)
        if self.pin.check(candidate):
            self.security.pin_verified = True
            return b""
        self.security.clear()
        raise CardStatus(self.pin.status_sw())

    def _pin_management(self, cmd: Command) -> bytes:
        """CHANGE REFERENCE DATA (old PIN block + new) and RESET RETRY COUNTER (8-digit PUK +
        new PIN block), both ``P1 00 P2 80``, each counting down the reference it checks."""
        if cmd.p1 != 0x00 or cmd.p2 != 0x80:
            raise CardStatus(SW.INCORRECT_P1P2)
        if len(cmd.data) != 16:
            raise CardStatus(SW.WRONG_DATA)
        ref = self.pin if cmd.ins == CacIns.CHANGE_REFERENCE else self.puk
        if ref is None:
            raise CardStatus(SW.REFERENCE_NOT_FOUND)
        old, new = pin_from_block(cmd.data[:8]), pin_from_block(cmd.data[8:])
        if not ref.check(old):
            raise CardStatus(ref.status_sw())
        if not (6 <= len(new) <= 8 and new.isdigit()):
            raise CardStatus(SW.WRONG_DATA)
        self.pin.replace(new.decode())
        return b""

    def _sign(self, cmd: Command) -> bytes:
        if cmd.p2 != 0x00 or cmd.p1 not in (0x00, 0x80):
            self._sign_buffer = b""
            raise CardStatus(SW.INCORRECT_P1P2)
        if not self.security.pin_verified:
            self._sign_buffer = b""
            raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
        data = self._sign_buffer + cmd.data
        if cmd.p1 == 0x80:
            if len(data) > 1024:
                self._sign_buffer = b""
                raise CardStatus(SW.WRONG_LENGTH)
            self._sign_buffer = data
            return b""
        self._sign_buffer = b""
        return private_operation(self.slot.key, data)


class CacCard(VirtualCard):
    """A CAC with up to three PKI applets (identity, signature, encryption) and one PIN.

    ``identity`` is required; ``signature`` and ``encryption`` are optional. ``dual=True`` adds
    the PIV applet with the same keys (9A = identity, 9C = signature, 9D = encryption).
    """

    def __init__(self, identity: KeySlot, signature: KeySlot | None = None,
                 encryption: KeySlot | None = None, *, pin: str = "123456",
                 puk: str = "12345678", pin_tries: int = 3, puk_tries: int = 3,
                 dual: bool = False, card_uuid: bytes | None = None,
                 fasc_n: bytes = DEMO_FASC_N, atr: bytes = CAC_ATR) -> None:
        security = SecurityState()
        self.pin = PinCounter(pin, pin_tries)
        self.puk = PinCounter(puk, puk_tries)
        keys = {PkiApplet.IDENTITY: identity, PkiApplet.SIGNATURE: signature,
                PkiApplet.ENCRYPTION: encryption}
        self.keys: dict[PkiApplet, KeySlot] = {
            which: k for which, k in keys.items() if k is not None}
        applets: list[Applet] = [CacPkiApplet(which, ks, self.pin, security, self.puk)
                                 for which, ks in self.keys.items()]
        self.piv: PivApplet | None = None
        if dual:
            self.piv = PivApplet({w.piv_slot: ks for w, ks in self.keys.items()}, self.pin,
                                 self.puk, security, card_uuid=card_uuid or uuid.uuid4().bytes,
                                 fasc_n=fasc_n, expiry=dt.date(2030, 12, 31),
                                 label="smartcard-broker virtual CAC/PIV")
            applets.append(self.piv)
        super().__init__(applets, atr, security)

    @property
    def verified(self) -> bool:
        return self.security.pin_verified
