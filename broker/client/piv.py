"""PIV (NIST SP 800-73-4) on top of the APDU layer: select, read objects, PIN, sign.

yubikit-style: slots, object ids, key types and instruction bytes are named; errors carry what
callers need (InvalidPinError.attempts_remaining). Signing follows the broker's algorithm names:
the client hashes (and, for RSA, pads: PKCS#1 v1.5 DigestInfo or EMSA-PSS) and the card performs
the raw private-key operation, answering 7C{82 signature}.
"""

from __future__ import annotations

import enum
import hashlib
import os
import zlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.client import tlv
from broker.client.apdu import ApduProtocol, Connection
from broker.client.errors import (
    ApduError,
    InvalidPinError,
    InvalidPukError,
    MalformedResponseError,
    NotSupportedError,
    PinBlockedError,
    PinFormatError,
    PinRequiredError,
    PukBlockedError,
)
from broker.iso7816 import SW

AID = bytes.fromhex("a000000308000010000100")
MAX_CERT = 16 * 1024  # a decompressed certificate larger than this is refused (gzip bomb)

TAG_APT = 0x61
TAG_AID = 0x4F
TAG_APP_LABEL = 0x50
TAG_ALGORITHMS = 0xAC
TAG_ALGORITHM = 0x80
TAG_OBJECT_ID = 0x5C
TAG_OBJECT_DATA = 0x53
TAG_CERTIFICATE = 0x70
TAG_CERT_INFO = 0x71
TAG_LRC = 0xFE
TAG_DYN_AUTH = 0x7C
TAG_AUTH_WITNESS = 0x80
TAG_AUTH_CHALLENGE = 0x81
TAG_AUTH_RESPONSE = 0x82
TAG_FASC_N = 0x30
TAG_GUID = 0x34
TAG_EXPIRY = 0x35
CERT_INFO_COMPRESSED = 0x01
PIN_REF = 0x80
PUK_REF = 0x81
PIN_PAD = 0xFF


class Ins(enum.IntEnum):
    SELECT = 0xA4
    GET_DATA = 0xCB
    VERIFY = 0x20
    CHANGE_REFERENCE = 0x24
    RESET_RETRY = 0x2C
    GENERAL_AUTHENTICATE = 0x87


class ObjectId(enum.IntEnum):
    CARD_AUTH_CERT = 0x5FC101
    CHUID = 0x5FC102
    AUTHENTICATION_CERT = 0x5FC105
    SIGNATURE_CERT = 0x5FC10A
    KEY_MANAGEMENT_CERT = 0x5FC10B
    DISCOVERY = 0x7E


class Slot(enum.IntEnum):
    AUTHENTICATION = 0x9A
    SIGNATURE = 0x9C
    KEY_MANAGEMENT = 0x9D
    CARD_AUTH = 0x9E

    @property
    def object_id(self) -> ObjectId:
        return _SLOT_OBJECTS[self]

    @property
    def label(self) -> str:
        return _SLOT_LABELS[self]

    @property
    def slot_id(self) -> str:
        """The slot as the broker and OpenSC name it: two lower-case hex digits, e.g. "9a"."""
        return f"{self.value:02x}"


_SLOT_OBJECTS = {Slot.AUTHENTICATION: ObjectId.AUTHENTICATION_CERT,
                 Slot.SIGNATURE: ObjectId.SIGNATURE_CERT,
                 Slot.KEY_MANAGEMENT: ObjectId.KEY_MANAGEMENT_CERT,
                 Slot.CARD_AUTH: ObjectId.CARD_AUTH_CERT}
_SLOT_LABELS = {Slot.AUTHENTICATION: "PIV Authentication", Slot.SIGNATURE: "Digital Signature",
                Slot.KEY_MANAGEMENT: "Key Management", Slot.CARD_AUTH: "Card Authentication"}


class KeyType(enum.IntEnum):
    """PIV cryptographic algorithm identifiers (SP 800-78-4 table 6-2)."""

    RSA1024 = 0x06
    RSA2048 = 0x07
    RSA3072 = 0x05
    RSA4096 = 0x16
    ECCP256 = 0x11
    ECCP384 = 0x14

    @property
    def is_rsa(self) -> bool:
        return self in _RSA_BYTES

    @property
    def block_size(self) -> int:
        """Bytes the card expects: the RSA modulus size, or the EC field size."""
        return _RSA_BYTES.get(self) or {KeyType.ECCP256: 32, KeyType.ECCP384: 48}[self]

    @classmethod
    def of(cls, public_key: object) -> KeyType:
        """The key type of a certificate's public key; NotSupportedError for anything else."""
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            found = {"secp256r1": cls.ECCP256, "secp384r1": cls.ECCP384}.get(public_key.curve.name)
        elif isinstance(public_key, rsa.RSAPublicKey):
            found = {1024: cls.RSA1024, 2048: cls.RSA2048, 3072: cls.RSA3072,
                     4096: cls.RSA4096}.get(public_key.key_size)
        else:
            found = None
        if found is None:
            raise NotSupportedError(message="The card holds a key type this client cannot use.")
        return found


_RSA_BYTES = {KeyType.RSA1024: 128, KeyType.RSA2048: 256, KeyType.RSA3072: 384,
              KeyType.RSA4096: 512}


class SignatureAlgorithm(enum.StrEnum):
    """Signature algorithm names: a contract with the broker (``signature_algorithms``)."""

    RSA_PKCS1_SHA256 = "rsa-pkcs1-sha256"
    RSA_PKCS1_SHA384 = "rsa-pkcs1-sha384"
    RSA_PSS_SHA256 = "rsa-pss-sha256"
    RSA_PSS_SHA384 = "rsa-pss-sha384"
    ECDSA_SHA256 = "ecdsa-sha256"
    ECDSA_SHA384 = "ecdsa-sha384"

    @property
    def hash_name(self) -> str:
        return self.value.rsplit("-", 1)[1]

    @property
    def family(self) -> str:
        return self.value.rsplit("-", 1)[0]

    @classmethod
    def parse(cls, name: str) -> SignatureAlgorithm:
        try:
            return cls(name)
        except ValueError:
            raise NotSupportedError(message=f"Unsupported signature algorithm {name!r}.",
                                    details={"algorithm": name}) from None


# DER DigestInfo prefixes (RFC 8017 §9.2 note 1)
_DIGEST_INFO = {"sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
                "sha384": bytes.fromhex("3041300d060960864801650304020205000430")}


@dataclass(frozen=True)
class ApplicationProperties:
    """What SELECT of the PIV application says about itself (the APT, tag 61)."""

    aid: bytes | None
    label: str | None
    algorithms: tuple[int, ...]


@dataclass(frozen=True)
class Chuid:
    fasc_n: bytes | None
    guid: bytes | None
    expiry: str | None  # YYYYMMDD as the card stores it


def _digest(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


def pkcs1_v15_block(digest: bytes, hash_name: str, k: int) -> bytes:
    """EMSA-PKCS1-v1_5 (RFC 8017 §9.2): 00 01 FF… 00 DigestInfo, ``k`` bytes."""
    t = _DIGEST_INFO[hash_name] + digest
    if k < len(t) + 11:
        raise NotSupportedError(message="RSA key too small for this digest")
    return b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def emsa_pss(message_hash: bytes, hash_name: str, em_bits: int) -> bytes:
    """EMSA-PSS encoding (RFC 8017 §9.1.1), salt length = hash length, MGF1 with the same hash."""
    h_len = len(message_hash)
    em_len = (em_bits + 7) // 8
    if em_len < 2 * h_len + 2:
        raise NotSupportedError(message="RSA key too small for PSS with this digest")
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


def signature_input(key_type: KeyType, message: bytes, algorithm: str) -> bytes:
    """What the card's raw private-key operation gets for ``message`` under ``algorithm``:
    the padded block for RSA, the (FIPS 186 truncated or left-padded) hash for ECDSA."""
    alg = SignatureAlgorithm.parse(algorithm)
    digest = _digest(alg.hash_name, message)
    if alg.family == "ecdsa":
        if key_type.is_rsa:
            raise NotSupportedError(message=f"{alg.value} needs an EC key; this one is RSA.")
        size = key_type.block_size
        return digest[:size].rjust(size, b"\0")  # leftmost bits of the hash, as FIPS 186 says
    if not key_type.is_rsa:
        raise NotSupportedError(message=f"{alg.value} needs an RSA key; this one is EC.")
    k = key_type.block_size
    if alg.family == "rsa-pkcs1":
        return pkcs1_v15_block(digest, alg.hash_name, k)
    return emsa_pss(digest, alg.hash_name, k * 8 - 1).rjust(k, b"\0")


class PivSession:
    """A PIV application on a card connection; selects it on creation (ApduError if absent)."""

    def __init__(self, connection: Connection, protocol: ApduProtocol | None = None) -> None:
        self.connection = connection
        self.protocol = protocol or ApduProtocol(connection)
        self.properties = self.select()

    def select(self) -> ApplicationProperties:
        """SELECT the PIV AID and parse its Application Property Template."""
        resp = self.protocol.send(0x00, Ins.SELECT, 0x04, 0x00, AID)
        data = self.protocol.check(resp, "PIV application selection")
        apt = tlv.find(data, TAG_APT) if data else None
        if apt is None:
            return ApplicationProperties(None, None, ())
        items = dict(tlv.decode(apt))
        label = items.get(TAG_APP_LABEL)
        algs: tuple[int, ...] = ()
        if TAG_ALGORITHMS in items:
            algs = tuple(v[0] for t, v in tlv.decode(items[TAG_ALGORITHMS])
                         if t == TAG_ALGORITHM and v)
        return ApplicationProperties(items.get(TAG_AID),
                                     label.decode("utf-8", "replace") if label else None, algs)

    def get_object(self, object_id: int) -> bytes | None:
        """The content of data object ``object_id`` (inside its 53 wrapper); None if absent."""
        oid = object_id.to_bytes(3 if object_id > 0xFFFF else 1, "big")
        resp = self.protocol.send(0x00, Ins.GET_DATA, 0x3F, 0xFF, tlv.encode(TAG_OBJECT_ID, oid))
        if resp.sw == SW.FILE_NOT_FOUND:
            return None
        data = self.protocol.check(resp, "data object read")
        if object_id == ObjectId.DISCOVERY:
            return tlv.require(data, 0x7E)
        return tlv.require(data, TAG_OBJECT_DATA)

    def read_chuid(self) -> Chuid | None:
        body = self.get_object(ObjectId.CHUID)
        if body is None:
            return None
        items = dict(tlv.decode(body))
        expiry = items.get(TAG_EXPIRY)
        return Chuid(items.get(TAG_FASC_N), items.get(TAG_GUID),
                     expiry.decode("ascii", "replace") if expiry else None)

    def read_certificate(self, slot: Slot) -> x509.Certificate | None:
        """The certificate in ``slot`` (gzip-decompressed when marked so); None if empty.
        MalformedResponseError for an unreadable or oversized certificate."""
        body = self.get_object(Slot(slot).object_id)
        if body is None:
            return None
        items = dict(tlv.decode(body))
        der = items.get(TAG_CERTIFICATE)
        if not der:
            return None  # an empty container: no certificate loaded in this slot
        if items.get(TAG_CERT_INFO, b"\x00")[:1] == bytes([CERT_INFO_COMPRESSED]):
            der = decompress_certificate(der)
        try:
            return x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
            raise MalformedResponseError(message=f"Slot {Slot(slot).slot_id} holds no readable "
                                                 "certificate.") from None

    def verify_pin(self, pin: str) -> None:
        """VERIFY the PIN (6–8 digits, FF-padded to 8). InvalidPinError(attempts left),
        PinBlockedError, PinFormatError; the PIN appears in no message."""
        if not (6 <= len(pin) <= 8 and pin.isascii() and pin.isdigit()):
            raise PinFormatError(message="A PIV PIN is 6 to 8 digits.")
        block = pin.encode("ascii").ljust(8, bytes([PIN_PAD]))
        resp = self.protocol.send(0x00, Ins.VERIFY, 0x00, PIN_REF, block, le=None)
        check_pin_status(resp.sw)

    def pin_attempts_remaining(self) -> int:
        """Tries left (empty VERIFY); -1 when the PIN is already verified (the card won't say)."""
        resp = self.protocol.send(0x00, Ins.VERIFY, 0x00, PIN_REF, b"", le=None)
        return pin_attempts_from_sw(resp.sw)

    def change_pin(self, old: str, new: str) -> None:
        """CHANGE REFERENCE DATA for the PIN; InvalidPinError / PinBlockedError for ``old``,
        PinFormatError for either."""
        change_pin(self.protocol, Ins.CHANGE_REFERENCE, old, new)

    def unblock_pin(self, puk: str, new: str) -> None:
        """RESET RETRY COUNTER: the PUK sets a new PIN; InvalidPukError, PukBlockedError."""
        unblock_pin(self.protocol, Ins.RESET_RETRY, puk, new)

    def sign(self, slot: Slot, message: bytes, algorithm: str,
             key_type: KeyType | None = None) -> bytes:
        """Sign ``message`` with the key in ``slot`` (its type read from the slot's certificate
        unless given). RSA: signature bytes; ECDSA: DER. PinRequiredError, NotSupportedError."""
        slot = Slot(slot)
        if key_type is None:
            cert = self.read_certificate(slot)
            if cert is None:
                raise NotSupportedError("card_no_certificate",
                                        f"Slot {slot.slot_id} holds no certificate.")
            key_type = KeyType.of(cert.public_key())
        block = signature_input(key_type, message, algorithm)
        return self.authenticate(key_type, slot, block)

    def authenticate(self, key_type: KeyType, slot: Slot, challenge: bytes) -> bytes:
        """GENERAL AUTHENTICATE 7C{82 00, 81 challenge} → the card's 7C{82 response}."""
        body = tlv.encode(TAG_DYN_AUTH, tlv.encode(TAG_AUTH_RESPONSE, b"")
                          + tlv.encode(TAG_AUTH_CHALLENGE, challenge))
        resp = self.protocol.send(0x00, Ins.GENERAL_AUTHENTICATE, key_type, slot, body)
        if resp.sw == SW.SECURITY_STATUS_NOT_SATISFIED:
            raise PinRequiredError()
        data = self.protocol.check(resp, "signature")
        return tlv.require(tlv.require(data, TAG_DYN_AUTH), TAG_AUTH_RESPONSE)


def decompress_certificate(data: bytes) -> bytes:
    """gzip or zlib, at most MAX_CERT bytes out; MalformedResponseError otherwise."""
    try:
        d = zlib.decompressobj(32 + zlib.MAX_WBITS)  # auto-detects gzip and zlib headers
        out = d.decompress(data, MAX_CERT)
    except zlib.error:
        raise MalformedResponseError(message="The card's compressed certificate is corrupt.") \
            from None
    if d.unconsumed_tail:
        raise MalformedResponseError(message="The card's compressed certificate is too large.")
    return out


def pin_block(pin: str, what: str = "PIN") -> bytes:
    """6–8 ASCII digits padded with FF to 8 bytes; PinFormatError (the PIN in no message)."""
    if not (6 <= len(pin) <= 8 and pin.isascii() and pin.isdigit()):
        raise PinFormatError(message=f"A {what} is 6 to 8 digits.")
    return pin.encode("ascii").ljust(8, bytes([PIN_PAD]))


def change_pin(protocol: ApduProtocol, ins: int, old: str, new: str) -> None:
    """CHANGE REFERENCE DATA ``00 24 00 80`` with old and new PIN blocks (PIV and CAC)."""
    resp = protocol.send(0x00, ins, 0x00, PIN_REF, pin_block(old) + pin_block(new, "new PIN"),
                         le=None)
    check_pin_status(resp.sw)


def unblock_pin(protocol: ApduProtocol, ins: int, puk: str, new: str) -> None:
    """RESET RETRY COUNTER ``00 2C 00 80`` with the PUK and the new PIN (PIV and CAC)."""
    if not (len(puk) == 8 and puk.isascii() and puk.isdigit()):
        raise PinFormatError(message="A PUK is 8 digits.")
    resp = protocol.send(0x00, ins, 0x00, PIN_REF, puk.encode("ascii")
                         + pin_block(new, "new PIN"), le=None)
    if resp.sw == SW.OK:
        return
    if resp.sw == SW.AUTH_METHOD_BLOCKED or resp.sw == 0x63C0:
        raise PukBlockedError()
    if resp.sw >> 4 == 0x63C:
        raise InvalidPukError(resp.sw & 0x0F)
    raise ApduError(resp.sw, "PIN unblock")


def check_pin_status(sw: int) -> None:
    """Map a VERIFY status word: 63Cx → InvalidPinError(x), 6983/63C0 → PinBlockedError."""
    if sw == SW.OK:
        return
    if sw == SW.AUTH_METHOD_BLOCKED or sw == 0x63C0:
        raise PinBlockedError()
    if sw >> 4 == 0x63C:
        raise InvalidPinError(sw & 0x0F)
    raise ApduError(sw, "PIN verification")


def pin_attempts_from_sw(sw: int) -> int:
    """Tries left from an empty VERIFY's status word (-1: already verified)."""
    if sw == SW.OK:
        return -1
    if sw == SW.AUTH_METHOD_BLOCKED:
        return 0
    if sw >> 4 == 0x63C:
        return sw & 0x0F
    raise ApduError(sw, "PIN status query")
