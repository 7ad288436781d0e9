"""A virtual OpenPGP card (OpenPGP smart card application 2.1 / 3.3): neither PIV nor CAC.

It stands for the "other types of smart cards" of the reference: the client does not speak its
protocol and reaches it through OpenSC's PKCS#11 module (OpenSC's ``openpgp`` driver), the way
such a card is used in practice. Only the authentication key is present, with the cardholder
certificate (DO 7F21) that OpenSC lists under the same ID (03).

What it answers (on top of :class:`~broker.cardsim.card.VirtualCard`: chaining, 61xx):

- SELECT ``D2 76 00 01 24 01`` (a prefix of the full 16-byte AID) → FCI ``6F { 84 AID }``.
- GET DATA ``00 CA <tag>``: ``4F`` AID, ``5E`` login data, ``65`` cardholder data, ``6E``
  application related data (``4F``, ``5F52`` historical bytes, ``73 { C0`` extended
  capabilities, ``C1``/``C2``/``C3`` algorithm attributes, ``C4`` PW status, ``C5``
  fingerprints, ``C6``, ``CD }``), ``7A`` signature counter, ``5F50`` URL, ``5F52``, ``C4``,
  ``7F21`` the DER certificate; any other tag → 6A88.
- GENERATE ASYMMETRIC KEY PAIR ``00 47 81 00 <A4 00 | B6 00 | B8 00>`` (read the public key)
  → ``7F49 { 81 n, 82 e }`` (RSA) or ``7F49 { 86 04||X||Y }`` (EC); 6A88 for a key slot that is
  empty; P1 80 (generate) → 6982.
- VERIFY ``00 20 00 81|82|83 <PIN in ASCII>``: PW1 for signing (81) and for the other keys (82)
  share one counter, PW3 (83) is the admin PIN; 63Cx wrong, 6983 blocked, empty data → 9000 if
  verified else 63Cx; P1 FF forgets the verification.
- INTERNAL AUTHENTICATE ``00 88 00 00 <data>`` with the authentication key, after VERIFY 82:
  RSA pads the DigestInfo with PKCS#1 v1.5 type 1 and signs; EC signs the hash and answers
  ``r || s`` (each the field size). 6982 without the PIN.
- SELECT DATA ``00 A5 <0|1|2> 04 60 04 5C 02 7F 21`` (version 3: which certificate 7F21 reads)
  → 9000; only occurrence 0 (authentication) holds one, the others read empty.
- PSO COMPUTE DIGITAL SIGNATURE (``2A 9E 9A``) and DECIPHER → 6A88 (no signature or
  decryption key); anything else → 6D00.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
)

from broker.cardsim.card import SW, CardStatus, Command, PinCounter, SecurityState, VirtualCard
from broker.cardsim.card import retries_sw as _retries_sw
from broker.cardsim.piv import KeySlot
from broker.cardsim.tlv import ber

RID_PIX = bytes.fromhex("d27600012401")
# Manufacturer FFFE: the OpenPGP card specification's range for test cards.
MANUFACTURER = bytes.fromhex("fffe")
# An ATR of our own that no OpenSC driver claims: OpenSC finds the card by selecting its AID.
# (T=1; historical bytes 80 "vPGP")
OPENPGP_ATR = bytes.fromhex("3b8580018076504750") + bytes([
    0x85 ^ 0x80 ^ 0x01 ^ 0x80 ^ 0x76 ^ 0x50 ^ 0x47 ^ 0x50])
# Historical bytes DO (5F52): category 00, card capabilities 73 00 00 00 (no chaining, no
# extended lengths), then the status indicator: life cycle 05 (operational) and 90 00.
HISTORICAL = bytes.fromhex("0073000000059000")
CURVE_OIDS = {"secp256r1": bytes.fromhex("2a8648ce3d030107"),
              "secp384r1": bytes.fromhex("2b81040022")}


class PgpIns(enum.IntEnum):
    VERIFY = 0x20
    PSO = 0x2A
    GENERATE_KEY = 0x47
    INTERNAL_AUTHENTICATE = 0x88
    SELECT_DATA = 0xA5
    GET_DATA = 0xCA


class KeyRef(enum.IntEnum):
    """The control reference templates of the three keys (GENERATE ASYMMETRIC KEY PAIR data)."""

    SIGNATURE = 0xB6
    DECRYPTION = 0xB8
    AUTHENTICATION = 0xA4


def algorithm_attributes(key: Any) -> bytes:
    """C1/C2/C3: RSA ``01 <n bits> 00 20 00``; ECDSA ``13 <curve OID>``."""
    if isinstance(key, rsa.RSAPrivateKey):
        return b"\x01" + key.key_size.to_bytes(2, "big") + b"\x00\x20\x00"
    return b"\x13" + CURVE_OIDS[key.curve.name]


def public_key_template(key: Any) -> bytes:
    """The 7F49 template GENERATE ASYMMETRIC KEY PAIR (read) answers."""
    pub = key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        n = nums.n.to_bytes((pub.key_size + 7) // 8, "big")
        e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
        return ber(0x7F49, ber(0x81, n) + ber(0x82, e))
    point = pub.public_bytes(serialization.Encoding.X962,
                             serialization.PublicFormat.UncompressedPoint)
    return ber(0x7F49, ber(0x86, point))


def fingerprint(key: Any) -> bytes:
    """20 bytes naming the key in C5 (OpenSC lists a key only when its fingerprint is set)."""
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(der).digest()  # noqa: S324 - an identifier, as OpenPGP's v4 ones are


def authenticate(key: Any, data: bytes) -> bytes:
    """INTERNAL AUTHENTICATE: PKCS#1 v1.5 type 1 padding + raw RSA, or ECDSA as ``r || s``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        if not data or len(data) > 64:
            raise CardStatus(SW.WRONG_DATA)
        from cryptography.hazmat.primitives import hashes

        algo = hashes.SHA256() if size == 32 else hashes.SHA384()
        digest = data[:size].rjust(size, b"\0")
        r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(algo))))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    width = (key.key_size + 7) // 8
    if not data or len(data) > width * 2 // 5:  # the spec's limit: 40 % of the modulus
        raise CardStatus(SW.WRONG_DATA)
    block = b"\x00\x01" + b"\xff" * (width - len(data) - 3) + b"\x00" + data
    nums = key.private_numbers()
    return pow(int.from_bytes(block, "big"), nums.d, nums.public_numbers.n).to_bytes(width, "big")


class OpenPgpApplet:
    """The OpenPGP application with an authentication key and its certificate."""

    def __init__(self, slot: KeySlot, pw1: PinCounter, pw3: PinCounter, *, serial: bytes,
                 name: str = "") -> None:
        self.slot = slot
        self.pw1 = pw1
        self.pw3 = pw3
        self.name = name
        # ECC needs version 3 (algorithm attributes with a curve OID); RSA is a 2.1 card.
        self.version = b"\x02\x01" if isinstance(slot.key, rsa.RSAPrivateKey) else b"\x03\x03"
        self.aid = RID_PIX + self.version + MANUFACTURER + serial + b"\x00\x00"
        self.verified: set[int] = set()
        self.occurrence = 0

    def reset(self) -> None:
        self.verified.clear()
        self.occurrence = 0

    def select(self, cmd: Command) -> bytes:
        return ber(0x6F, ber(0x84, self.aid))

    # ------------------------------------------------------------------ data objects
    def _pw_status(self) -> bytes:
        # PW1 valid for several signatures (01), max lengths 127/127/127, retry counters
        return bytes([0x01, 0x7F, 0x7F, 0x7F, max(self.pw1.remaining, 0), 0x00,
                      max(self.pw3.remaining, 0)])

    def _application_data(self) -> bytes:
        key = self.slot.key
        rsa_default = b"\x01\x08\x00\x00\x20\x00"
        # extended capabilities: no optional features; max challenge 0, max certificate
        # 2048 bytes, max command 255 and max response 256 bytes (short APDUs)
        caps = bytes.fromhex("0000" "0000" "0800" "00ff" "0100")
        discretionary = (ber(0xC0, caps) + ber(0xC1, rsa_default) + ber(0xC2, rsa_default)
                         + ber(0xC3, algorithm_attributes(key)) + ber(0xC4, self._pw_status())
                         + ber(0xC5, bytes(40) + fingerprint(key)) + ber(0xC6, bytes(60))
                         + ber(0xCD, bytes(12)))
        return ber(0x4F, self.aid) + ber(0x5F52, HISTORICAL) + ber(0x73, discretionary)

    def _get_data(self, tag: int) -> bytes:
        if tag == 0x004F:
            return self.aid
        if tag in (0x005E, 0x5F50):
            return b""
        if tag == 0x0065:
            return (ber(0x5B, self.name.encode()[:39]) + ber(0x5F2D, b"en")
                    + ber(0x5F35, b"9"))
        if tag == 0x006E:
            return self._application_data()
        if tag == 0x007A:
            return ber(0x93, bytes(3))
        if tag == 0x5F52:
            return HISTORICAL
        if tag == 0x00C4:
            return self._pw_status()
        if tag == 0x7F21:
            return self.slot.cert_der() if self.occurrence == 0 else b""
        raise CardStatus(SW.REFERENCE_NOT_FOUND)

    # ------------------------------------------------------------------ commands
    def handle(self, cmd: Command) -> bytes:
        if cmd.cla & 0x0C:  # secure messaging is not offered
            raise CardStatus(SW.CLA_NOT_SUPPORTED)
        if cmd.ins == PgpIns.GET_DATA:
            return self._get_data((cmd.p1 << 8) | cmd.p2)
        if cmd.ins == PgpIns.VERIFY:
            return self._verify(cmd)
        if cmd.ins == PgpIns.GENERATE_KEY:
            return self._read_public_key(cmd)
        if cmd.ins == PgpIns.INTERNAL_AUTHENTICATE:
            if cmd.p1 or cmd.p2:
                raise CardStatus(SW.INCORRECT_P1P2)
            if 0x82 not in self.verified:
                raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
            return authenticate(self.slot.key, cmd.data)
        if cmd.ins == PgpIns.SELECT_DATA:
            # version 3: which of the three cardholder certificates 7F21 means (AUT, DEC, SIG);
            # only the first holds one, the others read empty
            if cmd.p1 > 2 or not cmd.data.endswith(b"\x5c\x02\x7f\x21"):
                raise CardStatus(SW.REFERENCE_NOT_FOUND)
            self.occurrence = cmd.p1
            return b""
        if cmd.ins == PgpIns.PSO:
            raise CardStatus(SW.REFERENCE_NOT_FOUND)  # no signature / decryption key
        raise CardStatus(SW.INS_NOT_SUPPORTED)

    def _verify(self, cmd: Command) -> bytes:
        if cmd.p2 not in (0x81, 0x82, 0x83):
            raise CardStatus(SW.INCORRECT_P1P2)
        if cmd.p1 == 0xFF:
            self.verified.discard(cmd.p2)
            return b""
        if cmd.p1 != 0x00:
            raise CardStatus(SW.INCORRECT_P1P2)
        counter = self.pw3 if cmd.p2 == 0x83 else self.pw1
        if not cmd.data:
            if cmd.p2 in self.verified:
                return b""
            raise CardStatus(_retries_sw(counter.remaining))
        if counter.check(cmd.data):
            self.verified.add(cmd.p2)
            return b""
        self.verified.discard(cmd.p2)
        raise CardStatus(_retries_sw(counter.remaining))

    def _read_public_key(self, cmd: Command) -> bytes:
        if cmd.p1 == 0x80:
            raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)  # generating needs PW3
        if cmd.p1 != 0x81 or len(cmd.data) < 2:
            raise CardStatus(SW.INCORRECT_P1P2)
        if cmd.data[0] != KeyRef.AUTHENTICATION:
            raise CardStatus(SW.REFERENCE_NOT_FOUND)
        return public_key_template(self.slot.key)


class OpenPgpCard(VirtualCard):
    """An OpenPGP card whose authentication key is ``key`` with ``certificate`` in DO 7F21."""

    def __init__(self, key: Any, certificate: x509.Certificate, *, pin: str = "123456",
                 admin_pin: str = "12345678", pin_tries: int = 3, serial: bytes | None = None,
                 atr: bytes = OPENPGP_ATR) -> None:
        slot = KeySlot(key, certificate)
        self.pin = PinCounter(pin, pin_tries)
        self.admin_pin = PinCounter(admin_pin, 3)
        if serial is None:
            serial = hashlib.sha256(slot.cert_der()).digest()[:4]
        cn = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        self.openpgp = OpenPgpApplet(slot, self.pin, self.admin_pin, serial=serial,
                                     name=str(cn[0].value) if cn else "")
        super().__init__([self.openpgp], atr, SecurityState())
