"""A virtual PIV card (NIST SP 800-73-4) that OpenSC, pyscard and our client accept.

What it answers (all on top of :class:`~broker.cardsim.card.VirtualCard`: chaining, 61xx):

- SELECT ``A0 00 00 03 08 00 00 10 00 [01 00]`` (a prefix is enough) → Application Property
  Template ``61 { 4F PIX, 79 { 4F A0 00 00 03 08 }, 50 label, AC { 80 alg… 06 00 } }``.
- GET DATA ``00 CB 3F FF 5C <tag>``: Discovery ``7E``, CHUID ``5FC102`` (FASC-N, GUID = card
  UUID, expiry, empty signature), CCC ``5FC107``, certificates ``5FC105`` (9A), ``5FC10A`` (9C),
  ``5FC10B`` (9D), ``5FC101`` (9E) as ``53 { 70 cert, 71 00|01 (gzip), FE 00 }``; 6A82 absent.
- VERIFY ``00 20 00 80`` (PIN block: digits padded with FF to 8 bytes): 63Cx wrong, 6983 blocked,
  empty data → 9000 if verified else 63Cx; ``00 20 FF 80`` logs out.
- CHANGE REFERENCE DATA ``00 24 00 80|81`` and RESET RETRY COUNTER ``00 2C 00 80`` (PUK + new PIN),
  both counting down the reference they check.
- GENERAL AUTHENTICATE ``00 87 <alg> <slot> 7C { 82 00, 81 <data> }`` → ``7C { 82 <sig> }``:
  RSA (06 1024, 07 2048, 05 3072, 16 4096) is the raw private operation on the client-padded
  block; ECC (11 P-256, 14 P-384) signs the given hash, answered DER-encoded. 9A/9D need the
  PIN, 9C needs a VERIFY right before each signature (PIN always), 9E needs none → 6982.
- Anything else (OpenSC's vendor probes such as the YubiKey version) → 6D00.
"""

from __future__ import annotations

import datetime as dt
import enum
import gzip
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from broker.cardsim.card import (
    SW,
    CardStatus,
    Command,
    PinCounter,
    SecurityState,
    VirtualCard,
    pin_from_block,
    retries_sw,
)
from broker.cardsim.tlv import ber, parse_ber

PIV_AID = bytes.fromhex("a000000308000010000100")
PIV_AID_SHORT = PIV_AID[:9]
# A plausible contact PIV ATR that no OpenSC driver claims by ATR, so OpenSC probes by AID.
PIV_ATR = bytes.fromhex("3bf81300008131fe15597562696b657934d4")
DEMO_FASC_N = bytes.fromhex("d4e739da739ced39ce739d836858210842108421c84210c3eb")


class PivIns(enum.IntEnum):
    VERIFY = 0x20
    CHANGE_REFERENCE = 0x24
    RESET_RETRY = 0x2C
    GENERAL_AUTHENTICATE = 0x87
    GET_DATA = 0xCB


class KeyRef(enum.IntEnum):
    PIN = 0x80
    PUK = 0x81


class KeyType(enum.IntEnum):
    """SP 800-78 cryptographic mechanism identifiers."""

    RSA_1024 = 0x06
    RSA_2048 = 0x07
    RSA_3072 = 0x05
    RSA_4096 = 0x16
    ECC_P256 = 0x11
    ECC_P384 = 0x14

    @classmethod
    def of(cls, key: Any) -> KeyType:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return {256: cls.ECC_P256, 384: cls.ECC_P384}[key.curve.key_size]
        if isinstance(key, rsa.RSAPrivateKey):
            return {1024: cls.RSA_1024, 2048: cls.RSA_2048, 3072: cls.RSA_3072,
                    4096: cls.RSA_4096}[key.key_size]
        raise ValueError(f"unsupported key type {type(key).__name__}")


class ObjectId(enum.IntEnum):
    DISCOVERY = 0x7E
    CHUID = 0x5FC102
    CCC = 0x5FC107
    CERT_CARD_AUTH = 0x5FC101
    CERT_AUTHENTICATION = 0x5FC105
    CERT_SIGNATURE = 0x5FC10A
    CERT_KEY_MANAGEMENT = 0x5FC10B


class Slot(enum.IntEnum):
    AUTHENTICATION = 0x9A
    SIGNATURE = 0x9C
    KEY_MANAGEMENT = 0x9D
    CARD_AUTH = 0x9E

    @property
    def object_id(self) -> ObjectId:
        return {Slot.AUTHENTICATION: ObjectId.CERT_AUTHENTICATION,
                Slot.SIGNATURE: ObjectId.CERT_SIGNATURE,
                Slot.KEY_MANAGEMENT: ObjectId.CERT_KEY_MANAGEMENT,
                Slot.CARD_AUTH: ObjectId.CERT_CARD_AUTH}[self]

    @property
    def needs_pin(self) -> bool:
        return self is not Slot.CARD_AUTH

    @property
    def pin_always(self) -> bool:
        return self is Slot.SIGNATURE


@dataclass(frozen=True)
class KeySlot:
    """A private key and its certificate; ``compress`` stores the certificate gzip-compressed."""

    key: Any = None
    certificate: x509.Certificate | None = None
    compress: bool = False

    def __post_init__(self) -> None:
        if self.key is None or self.certificate is None:
            raise ValueError("a key slot needs both a key and a certificate")
        KeyType.of(self.key)

    @property
    def algorithm(self) -> KeyType:
        return KeyType.of(self.key)

    def cert_der(self) -> bytes:
        assert self.certificate is not None
        return self.certificate.public_bytes(serialization.Encoding.DER)


def private_operation(key: Any, data: bytes) -> bytes:
    """The card's signing primitive: raw RSA on a padded block, or ECDSA (DER) on a hash.

    CardStatus(6A80) when the block has the wrong size or is not below the modulus.
    """
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        if not data or len(data) > 64:
            raise CardStatus(SW.WRONG_DATA)
        # a longer hash is truncated to the field size, as ECDSA does; shorter is zero-padded
        digest = data[:size].rjust(size, b"\0")
        algo: hashes.HashAlgorithm = hashes.SHA256() if size == 32 else hashes.SHA384()
        return key.sign(digest, ec.ECDSA(Prehashed(algo)))
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    width = (key.key_size + 7) // 8
    if len(data) != width:
        raise CardStatus(SW.WRONG_DATA)
    m = int.from_bytes(data, "big")
    if m >= n:
        raise CardStatus(SW.WRONG_DATA)
    return pow(m, numbers.d, n).to_bytes(width, "big")


def cert_object(slot: KeySlot) -> bytes:
    """The PIV certificate container ``53 { 70 cert, 71 info, FE 00 }``."""
    der, info = slot.cert_der(), b"\x00"
    if slot.compress:
        der, info = gzip.compress(der, mtime=0), b"\x01"
    return ber(0x53, ber(0x70, der) + ber(0x71, info) + ber(0xFE, b""))


class PivApplet:
    """The PIV application; ``pin``/``puk``/``security`` may be shared with a CAC (dual card)."""

    aid = PIV_AID

    def __init__(self, slots: Mapping[int, KeySlot], pin: PinCounter, puk: PinCounter,
                 security: SecurityState, *, card_uuid: bytes, fasc_n: bytes,
                 expiry: dt.date, label: str = "smartcard-broker virtual PIV") -> None:
        self.slots = {Slot(s): ks for s, ks in slots.items()}
        self.pin, self.puk, self.security = pin, puk, security
        self.card_uuid, self.fasc_n, self.expiry, self.label = card_uuid, fasc_n, expiry, label

    def reset(self) -> None:
        pass

    def select(self, cmd: Command) -> bytes:
        algs = sorted({ks.algorithm for ks in self.slots.values()} or {KeyType.ECC_P256})
        ac = b"".join(ber(0x80, bytes([a])) for a in algs) + ber(0x06, b"\x00")
        return ber(0x61, ber(0x4F, PIV_AID[5:]) + ber(0x79, ber(0x4F, PIV_AID[:5]))
                   + ber(0x50, self.label.encode()) + ber(0xAC, ac))

    def handle(self, cmd: Command) -> bytes:
        try:
            ins = PivIns(cmd.ins)
        except ValueError:
            raise CardStatus(SW.INS_NOT_SUPPORTED) from None
        if cmd.cla & ~0x10:
            raise CardStatus(SW.CLA_NOT_SUPPORTED)
        try:
            return {PivIns.GET_DATA: self._get_data, PivIns.VERIFY: self._verify,
                    PivIns.CHANGE_REFERENCE: self._change_reference,
                    PivIns.RESET_RETRY: self._reset_retry,
                    PivIns.GENERAL_AUTHENTICATE: self._general_authenticate}[ins](cmd)
        except ValueError:  # malformed TLV in the command
            raise CardStatus(SW.WRONG_DATA) from None

    # ------------------------------------------------------------------ data objects
    def data_object(self, oid: int) -> bytes | None:
        if oid == ObjectId.DISCOVERY:
            return ber(0x7E, ber(0x4F, PIV_AID) + ber(0x5F2F, b"\x40\x00"))
        if oid == ObjectId.CHUID:
            body = (ber(0x30, self.fasc_n) + ber(0x34, self.card_uuid)
                    + ber(0x35, self.expiry.strftime("%Y%m%d").encode())
                    + ber(0x3E, b"") + ber(0xFE, b""))
            return ber(0x53, body)
        if oid == ObjectId.CCC:
            body = (ber(0xF0, b"\xa0\x00\x00\x01\x16\xff\x02" + self.card_uuid[:14])
                    + ber(0xF1, b"\x21") + ber(0xF2, b"\x21") + ber(0xF3, b"")
                    + ber(0xF4, b"\x00") + ber(0xF5, b"\x10") + ber(0xF6, b"")
                    + ber(0xF7, b"") + ber(0xFA, b"") + ber(0xFB, b"") + ber(0xFC, b"")
                    + ber(0xFD, b"") + ber(0xFE, b""))
            return ber(0x53, body)
        for slot, ks in self.slots.items():
            if slot.object_id == oid:
                return cert_object(ks)
        return None

    def _get_data(self, cmd: Command) -> bytes:
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF):
            raise CardStatus(SW.INCORRECT_P1P2)
        tag = parse_ber(cmd.data).get(0x5C)
        if tag is None or not 1 <= len(tag) <= 3:
            raise CardStatus(SW.WRONG_DATA)
        obj = self.data_object(int.from_bytes(tag, "big"))
        if obj is None:
            raise CardStatus(SW.FILE_NOT_FOUND)
        return obj

    # ------------------------------------------------------------------ PIN and PUK
    def _verify(self, cmd: Command) -> bytes:
        if cmd.p2 != KeyRef.PIN:
            raise CardStatus(SW.REFERENCE_NOT_FOUND)
        if cmd.p1 == 0xFF:  # reset the PIN's security status
            if cmd.data:
                raise CardStatus(SW.WRONG_LENGTH)
            self.security.clear()
            return b""
        if cmd.p1 != 0x00:
            raise CardStatus(SW.INCORRECT_P1P2)
        if not cmd.data:
            if self.pin.blocked:
                raise CardStatus(SW.AUTH_METHOD_BLOCKED)
            if self.security.pin_verified:
                return b""
            raise CardStatus(self.pin.status_sw())
        candidate = pin_from_block(cmd.data)
        if self.pin.check(candidate):
            self.security.pin_verified = True
            return b""
        self.security.clear()
        raise CardStatus(self.pin.status_sw())

    def _two_blocks(self, cmd: Command) -> tuple[bytes, bytes]:
        if cmd.p1 != 0x00 or len(cmd.data) != 16:
            raise CardStatus(SW.WRONG_DATA if cmd.p1 == 0 else SW.INCORRECT_P1P2)
        old, new = pin_from_block(cmd.data[:8]), pin_from_block(cmd.data[8:])
        return old, new

    def _change_reference(self, cmd: Command) -> bytes:
        ref = {int(KeyRef.PIN): self.pin, int(KeyRef.PUK): self.puk}.get(cmd.p2)
        if ref is None:
            raise CardStatus(SW.REFERENCE_NOT_FOUND)
        old, new = self._two_blocks(cmd)
        if not ref.check(old):
            raise CardStatus(ref.status_sw())
        if cmd.p2 == KeyRef.PIN and not (6 <= len(new) <= 8 and new.isdigit()):
            raise CardStatus(SW.WRONG_DATA)
        ref.replace(new.decode())
        return b""

    def _reset_retry(self, cmd: Command) -> bytes:
        if cmd.p2 != KeyRef.PIN:
            raise CardStatus(SW.REFERENCE_NOT_FOUND)
        puk, new = self._two_blocks(cmd)
        if not self.puk.check(puk):
            raise CardStatus(retries_sw(self.puk.remaining))
        if not (6 <= len(new) <= 8 and new.isdigit()):
            raise CardStatus(SW.WRONG_DATA)
        self.pin.replace(new.decode())
        return b""

    # ------------------------------------------------------------------ signing
    def _general_authenticate(self, cmd: Command) -> bytes:
        try:
            slot = Slot(cmd.p2)
        except ValueError:
            raise CardStatus(SW.REFERENCE_NOT_FOUND) from None
        ks = self.slots.get(slot)
        if ks is None:
            raise CardStatus(SW.REFERENCE_NOT_FOUND)
        if cmd.p1 != ks.algorithm:
            raise CardStatus(SW.INCORRECT_P1P2)
        template = parse_ber(cmd.data).get(0x7C)
        if template is None:
            raise CardStatus(SW.WRONG_DATA)
        inner = parse_ber(template)
        if 0x81 not in inner or inner.get(0x82) != b"":
            raise CardStatus(SW.WRONG_DATA)
        if slot.needs_pin and not self.security.pin_verified:
            raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
        signature = private_operation(ks.key, inner[0x81])
        if slot.pin_always:
            self.security.clear()  # PIN always: the next signature needs a fresh VERIFY
        return ber(0x7C, ber(0x82, signature))


class PivCard(VirtualCard):
    """A PIV card with the keys and certificates it is given.

    ``PivCard(key, certificate)`` puts one key in 9A (PIV Authentication); ``slots`` adds or
    overrides any of 9A/9C/9D/9E with :class:`KeySlot`. PIN and PUK have real counters.
    """

    def __init__(self, key: Any = None, certificate: x509.Certificate | None = None, *,
                 slots: Mapping[int, KeySlot] | None = None, pin: str = "123456",
                 puk: str = "12345678", pin_tries: int = 3, puk_tries: int = 3,
                 card_uuid: bytes | None = None, fasc_n: bytes = DEMO_FASC_N,
                 expiry: dt.date = dt.date(2030, 12, 31), atr: bytes = PIV_ATR) -> None:
        all_slots: dict[int, KeySlot] = {}
        if (key is None) != (certificate is None):
            raise ValueError("give both key and certificate, or neither")
        if key is not None:
            all_slots[Slot.AUTHENTICATION] = KeySlot(key, certificate)
        all_slots.update(slots or {})
        security = SecurityState()
        self.pin = PinCounter(pin, pin_tries)
        self.puk = PinCounter(puk, puk_tries)
        self.piv = PivApplet(all_slots, self.pin, self.puk, security,
                             card_uuid=card_uuid or uuid.uuid4().bytes, fasc_n=fasc_n,
                             expiry=expiry)
        super().__init__([self.piv], atr, security)

    @property
    def slots(self) -> dict[Slot, KeySlot]:
        return self.piv.slots

    @property
    def verified(self) -> bool:
        return self.security.pin_verified
