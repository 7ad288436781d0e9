"""PIV (NIST SP 800-73-4) on top of the APDU layer: select, read objects, PIN, sign.

yubikit-style: slots, key types and instruction bytes are named; errors carry what callers
need (InvalidPinError.attempts_remaining). Signing follows the broker's algorithm names: the
client hashes (and, for RSA, pads: PKCS#1 v1.5 DigestInfo or EMSA-PSS) and the card performs the
raw private-key operation, answering 7C{82 signature}.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.client import tlv
from broker.client.apdu import ApduProtocol
from broker.client.errors import (
    ApduError,
    CardError,
    InvalidPinError,
    MalformedResponseError,
    PinBlockedError,
)

AID = bytes.fromhex("a000000308000010000100")
MAX_CERT = 16 * 1024


class Ins(enum.IntEnum):
    SELECT = 0xA4
    GET_DATA = 0xCB
    VERIFY = 0x20
    GENERAL_AUTHENTICATE = 0x87


class Slot(enum.IntEnum):
    AUTHENTICATION = 0x9A
    SIGNATURE = 0x9C
    KEY_MANAGEMENT = 0x9D
    CARD_AUTH = 0x9E

    @property
    def object_id(self) -> int:
        return {0x9A: 0x5FC105, 0x9C: 0x5FC10A, 0x9D: 0x5FC10B, 0x9E: 0x5FC101}[self.value]

    @property
    def label(self) -> str:
        return {0x9A: "PIV Authentication", 0x9C: "Digital Signature",
                0x9D: "Key Management", 0x9E: "Card Authentication"}[self.value]


class KeyType(enum.IntEnum):
    RSA1024 = 0x06
    RSA2048 = 0x07
    RSA3072 = 0x05
    ECCP256 = 0x11
    ECCP384 = 0x14

    @classmethod
    def of(cls, public_key: object) -> KeyType:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            return {256: cls.ECCP256, 384: cls.ECCP384}[public_key.curve.key_size]
        if isinstance(public_key, rsa.RSAPublicKey):
            return {1024: cls.RSA1024, 2048: cls.RSA2048, 3072: cls.RSA3072}[public_key.key_size]
        raise CardError("card_not_supported", "unsupported key type on the card")


CHUID = 0x5FC102
_DIGEST_INFO = {"sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
                "sha384": bytes.fromhex("3041300d060960864801650304020205000430")}


@dataclass(frozen=True)
class Chuid:
    fasc_n: bytes | None
    guid: bytes | None
    expiry: str | None


def _digest(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


def emsa_pss(message_hash: bytes, hash_name: str, em_bits: int) -> bytes:
    """EMSA-PSS encoding (RFC 8017 §9.1.1), salt length = hash length, MGF1 with the same hash."""
    h_len = len(message_hash)
    em_len = (em_bits + 7) // 8
    salt = os.urandom(h_len)
    h = _digest(hash_name, b"\0" * 8 + message_hash + salt)
    db = b"\0" * (em_len - 2 * h_len - 2) + b"\x01" + salt
    mask, counter = b"", 0
    while len(mask) < len(db):
        mask += _digest(hash_name, h + counter.to_bytes(4, "big"))
        counter += 1
    masked = bytes(a ^ b for a, b in zip(db, mask, strict=False))
    masked = bytes([masked[0] & (0xFF >> (8 * em_len - em_bits))]) + masked[1:]
    return masked + h + b"\xbc"


class PivSession:
    def __init__(self, connection: object) -> None:
        self.protocol = ApduProtocol(connection)
        self.select()

    def select(self) -> bytes:
        resp = self.protocol.send(0x00, Ins.SELECT, 0x04, 0x00, AID)
        return self.protocol.check(resp, "PIV application selection")

    def get_object(self, object_id: int) -> bytes | None:
        oid = object_id.to_bytes(3 if object_id > 0xFFFF else 1, "big")
        resp = self.protocol.send(0x00, Ins.GET_DATA, 0x3F, 0xFF, tlv.encode(0x5C, oid))
        if resp.sw == 0x6A82:
            return None
        data = self.protocol.check(resp, "data object read")
        return tlv.require(data, 0x53)

    def read_chuid(self) -> Chuid | None:
        body = self.get_object(CHUID)
        if body is None:
            return None
        items = dict(tlv.decode(body))
        expiry = items.get(0x35)
        return Chuid(items.get(0x30), items.get(0x34), expiry.decode("ascii", "replace")
                     if expiry else None)

    def read_certificate(self, slot: Slot) -> x509.Certificate | None:
        body = self.get_object(slot.object_id)
        if body is None:
            return None
        items = dict(tlv.decode(body))
        der = items.get(0x70)
        if der is None:
            raise MalformedResponseError(message="certificate object without a certificate")
        if items.get(0x71, b"\x00")[:1] == b"\x01":
            try:
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                der = d.decompress(der, MAX_CERT)
                if d.unconsumed_tail:
                    raise MalformedResponseError(message="compressed certificate too large")
            except (zlib.error, gzip.BadGzipFile):
                raise MalformedResponseError(message="bad compressed certificate") from None
        try:
            return x509.load_der_x509_certificate(der)
        except ValueError:
            raise MalformedResponseError(message=f"slot {slot.value:X} holds no readable "
                                                 "certificate") from None

    def verify_pin(self, pin: str) -> None:
        raw = pin.encode("ascii", "replace")
        if not 6 <= len(raw) <= 8 or not pin.isdigit():
            raise CardError("card_pin_format", "A PIV PIN is 6 to 8 digits.")
        resp = self.protocol.send(0x00, Ins.VERIFY, 0x00, 0x80, raw.ljust(8, b"\xff"), le=None)
        self._pin_status(resp.sw)

    def pin_attempts_remaining(self) -> int:
        resp = self.protocol.send(0x00, Ins.VERIFY, 0x00, 0x80, b"", le=None)
        if resp.sw == 0x9000:
            return -1  # already verified; the card does not say how many
        if resp.sw == 0x6983:
            return 0
        if resp.sw >> 4 == 0x63C:
            return resp.sw & 0x0F
        raise ApduError(resp.sw, "PIN status query")

    @staticmethod
    def _pin_status(sw: int) -> None:
        if sw == 0x9000:
            return
        if sw == 0x6983:
            raise PinBlockedError()
        if sw >> 4 == 0x63C:
            if sw & 0x0F == 0:
                raise PinBlockedError()
            raise InvalidPinError(sw & 0x0F)
        raise ApduError(sw, "PIN verification")

    def sign(self, slot: Slot, key_type: KeyType, message: bytes, algorithm: str) -> bytes:
        family, _, hash_name = algorithm.rpartition("-")
        if hash_name not in ("sha256", "sha384"):
            raise CardError("card_not_supported", f"unsupported algorithm {algorithm!r}")
        digest = _digest(hash_name, message)
        if family == "ecdsa":
            if key_type not in (KeyType.ECCP256, KeyType.ECCP384):
                raise CardError("card_not_supported", "ECDSA needs an EC key")
            size = 32 if key_type == KeyType.ECCP256 else 48
            block = digest[:size].rjust(size, b"\0")  # FIPS 186: leftmost bits of the hash
        else:
            if key_type not in (KeyType.RSA1024, KeyType.RSA2048, KeyType.RSA3072):
                raise CardError("card_not_supported", "RSA signatures need an RSA key")
            k = {KeyType.RSA1024: 128, KeyType.RSA2048: 256, KeyType.RSA3072: 384}[key_type]
            if family == "rsa-pkcs1":
                t = _DIGEST_INFO[hash_name] + digest
                block = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
            elif family == "rsa-pss":
                block = emsa_pss(digest, hash_name, k * 8 - 1).rjust(k, b"\0")
            else:
                raise CardError("card_not_supported", f"unsupported algorithm {algorithm!r}")
        body = tlv.encode(0x7C, tlv.encode(0x82, b"") + tlv.encode(0x81, block))
        resp = self.protocol.send(0x00, Ins.GENERAL_AUTHENTICATE, key_type, slot, body)
        if resp.sw == 0x6982:
            raise CardError("card_pin_required", "The card needs the PIN before it signs.")
        data = self.protocol.check(resp, "signature")
        return tlv.require(tlv.require(data, 0x7C), 0x82)
