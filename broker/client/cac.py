"""CAC (Common Access Card, GSC-IS 2.1) PKI applets: certificates, PIN, signing.

The protocol is the one OpenSC's ``cac`` driver speaks to a "CAC-2 alternate token" (PKI applets,
no CCC) and the simulator documents in ``broker/cardsim/cac.py``:

- SELECT ``00 A4 04 00 A0 00 00 00 79 01 0x`` picks PKI applet x (0 identity, 1 signature,
  2 encryption); 6A82 when the card lacks it.
- READ BUFFER ``00 52 <offset> 02 <type> <count>`` reads the TL (type 01) or V (type 02) buffer;
  each starts with its own length (2 bytes little-endian). TL holds SIMPLE-TLV headers
  (``70 <cert len> 71 01 FE 00``; a length ≥ 255 is ``FF lo hi``); V the DER certificate, then
  the cert-info byte (01: compressed).
- VERIFY is PIV's (``00 20 00 80``, FF-padded); SIGN/DECRYPT ``00 42 <80 more | 00 last> 00`` in
  chunks of at most 240 bytes takes the padded RSA block (or, on the simulator, an EC hash).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography import x509

from broker.client.apdu import ApduProtocol, Connection
from broker.client.errors import (
    ApduError,
    MalformedResponseError,
    NotSupportedError,
    PinFormatError,
    PinRequiredError,
)
from broker.client.piv import (
    CERT_INFO_COMPRESSED,
    KeyType,
    change_pin,
    check_pin_status,
    decompress_certificate,
    pin_attempts_from_sw,
    signature_input,
    unblock_pin,
)
from broker.iso7816 import SW

CAC_PKI_AID_PREFIX = bytes.fromhex("a00000007901")
CHUNK = 240  # CAC cards take and give at most this much per READ BUFFER / SIGN command
MAX_BUFFER = 16 * 1024
TAG_CERTIFICATE = 0x70
TAG_CERT_INFO = 0x71
P1_MORE = 0x80
P1_LAST = 0x00
PIN_REF = 0x80


class CacIns(enum.IntEnum):
    VERIFY = 0x20
    CHANGE_REFERENCE = 0x24
    RESET_RETRY = 0x2C
    SIGN_DECRYPT = 0x42
    READ_BUFFER = 0x52
    GET_PROPERTIES = 0x56
    SELECT = 0xA4


class BufferType(enum.IntEnum):
    TAG = 0x01
    VALUE = 0x02


class PkiApplet(enum.IntEnum):
    IDENTITY = 0
    SIGNATURE = 1
    ENCRYPTION = 2

    @property
    def aid(self) -> bytes:
        return CAC_PKI_AID_PREFIX + bytes([self.value])

    @property
    def slot_id(self) -> str:
        """How the facade names this applet's certificate: "cac0", "cac1", "cac2"."""
        return f"cac{self.value}"

    @property
    def label(self) -> str:
        return ("CAC ID Certificate", "CAC Email Signature Certificate",
                "CAC Email Encryption Certificate")[self.value]

    @classmethod
    def from_slot_id(cls, slot_id: str) -> PkiApplet:
        for applet in cls:
            if applet.slot_id == slot_id.lower():
                return applet
        raise NotSupportedError("card_no_certificate", f"No CAC applet named {slot_id!r}.")


def parse_simple_tlv_headers(data: bytes) -> list[tuple[int, int]]:
    """SIMPLE-TLV tag/length pairs (a TL buffer); a length byte FF is followed by 2 bytes LE."""
    out = []
    i, n = 0, len(data)
    while i < n:
        if i + 2 > n:
            raise MalformedResponseError(message="CAC TL buffer ends inside a header")
        tag, length = data[i], data[i + 1]
        i += 2
        if length == 0xFF:
            if i + 2 > n:
                raise MalformedResponseError(message="CAC TL buffer ends inside a length")
            length = int.from_bytes(data[i:i + 2], "little")
            i += 2
        out.append((tag, length))
    return out


@dataclass(frozen=True)
class CacCertificate:
    applet: PkiApplet
    certificate: x509.Certificate


class CacSession:
    """The PKI applets of a CAC. ``CacSession(conn)`` raises NotSupportedError when the card has
    no CAC PKI applet at all."""

    def __init__(self, connection: Connection, protocol: ApduProtocol | None = None) -> None:
        self.connection = connection
        self.protocol = protocol or ApduProtocol(connection)
        self._selected: PkiApplet | None = None
        self.applets = [a for a in PkiApplet if self._try_select(a)]
        if not self.applets:
            raise NotSupportedError(message="This card has neither a PIV application nor CAC "
                                            "PKI applets.")

    def _try_select(self, applet: PkiApplet) -> bool:
        resp = self.protocol.send(0x00, CacIns.SELECT, 0x04, 0x00, applet.aid)
        if resp.sw in (SW.FILE_NOT_FOUND, SW.WRONG_DATA, 0x6A86, 0x6A81):
            self._selected = None
            return False
        self.protocol.check(resp, "CAC applet selection")
        self._selected = applet
        return True

    def select(self, applet: PkiApplet) -> None:
        if self._selected is applet:
            return
        if not self._try_select(applet):
            raise NotSupportedError("card_no_certificate", f"The card has no {applet.label}.")

    def _read_buffer(self, kind: BufferType) -> bytes:
        head = self._read_chunk(kind, 0, 2)
        if len(head) != 2:
            raise MalformedResponseError(message="CAC buffer without its length")
        total = int.from_bytes(head, "little")
        if total > MAX_BUFFER:
            raise MalformedResponseError(message="CAC buffer too large")
        out = b""
        while len(out) < total:
            chunk = self._read_chunk(kind, 2 + len(out), min(CHUNK, total - len(out)))
            if not chunk:
                raise MalformedResponseError(message="CAC buffer shorter than announced")
            out += chunk
        return out[:total]

    def _read_chunk(self, kind: BufferType, offset: int, count: int) -> bytes:
        resp = self.protocol.send(0x00, CacIns.READ_BUFFER, offset >> 8, offset & 0xFF,
                                  bytes([kind, count]))
        return self.protocol.check(resp, "CAC buffer read")

    def read_certificate(self, applet: PkiApplet) -> x509.Certificate | None:
        """The applet's certificate (decompressed when marked so); None when the applet is
        absent or empty."""
        if applet not in self.applets:
            return None
        self.select(applet)
        headers = parse_simple_tlv_headers(self._read_buffer(BufferType.TAG))
        value = self._read_buffer(BufferType.VALUE)
        fields: dict[int, bytes] = {}
        pos = 0
        for tag, length in headers:
            if pos + length > len(value):
                raise MalformedResponseError(message="CAC value buffer shorter than its headers")
            fields.setdefault(tag, value[pos:pos + length])
            pos += length
        der = fields.get(TAG_CERTIFICATE)
        if not der:
            return None
        if fields.get(TAG_CERT_INFO, b"\x00")[:1] == bytes([CERT_INFO_COMPRESSED]):
            der = decompress_certificate(der)
        try:
            return x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
            raise MalformedResponseError(message=f"The {applet.label} is unreadable.") from None

    def certificates(self) -> list[CacCertificate]:
        out = []
        for applet in self.applets:
            cert = self.read_certificate(applet)
            if cert is not None:
                out.append(CacCertificate(applet, cert))
        return out

    def verify_pin(self, pin: str) -> None:
        """VERIFY the card PIN; InvalidPinError(attempts left), PinBlockedError, PinFormatError."""
        if not (4 <= len(pin) <= 8 and pin.isascii() and pin.isdigit()):
            raise PinFormatError(message="A CAC PIN is 4 to 8 digits.")
        resp = self.protocol.send(0x00, CacIns.VERIFY, 0x00, PIN_REF,
                                  pin.encode("ascii").ljust(8, b"\xff"), le=None)
        check_pin_status(resp.sw)

    def pin_attempts_remaining(self) -> int:
        resp = self.protocol.send(0x00, CacIns.VERIFY, 0x00, PIN_REF, b"", le=None)
        return pin_attempts_from_sw(resp.sw)

    def change_pin(self, old: str, new: str) -> None:
        """CHANGE REFERENCE DATA in the selected PKI applet (the PIN is the card's one)."""
        self.select(self.applets[0])
        change_pin(self.protocol, CacIns.CHANGE_REFERENCE, old, new)

    def unblock_pin(self, puk: str, new: str) -> None:
        """RESET RETRY COUNTER with the PUK in the selected PKI applet."""
        self.select(self.applets[0])
        unblock_pin(self.protocol, CacIns.RESET_RETRY, puk, new)

    def sign(self, applet: PkiApplet, message: bytes, algorithm: str,
             key_type: KeyType | None = None) -> bytes:
        """Sign with the applet's key (type from its certificate unless given)."""
        if key_type is None:
            cert = self.read_certificate(applet)
            if cert is None:
                raise NotSupportedError("card_no_certificate", f"The card has no {applet.label}.")
            key_type = KeyType.of(cert.public_key())
        block = signature_input(key_type, message, algorithm)
        self.select(applet)
        chunks = [block[i:i + CHUNK] for i in range(0, len(block), CHUNK)]
        for chunk in chunks[:-1]:
            self._sign_part(P1_MORE, chunk)
        return self._sign_part(P1_LAST, chunks[-1])

    def _sign_part(self, p1: int, chunk: bytes) -> bytes:
        resp = self.protocol.send(0x00, CacIns.SIGN_DECRYPT, p1, 0x00, chunk)
        if resp.sw == SW.SECURITY_STATUS_NOT_SATISFIED:
            raise PinRequiredError()
        if resp.sw != SW.OK:
            raise ApduError(resp.sw, "CAC signature")
        return resp.data
