"""The virtual OpenPGP card, instruction by instruction, in process; and the client's refusal of
it under --strict-card-types (the PKCS#11 path itself needs pcscd: tests/integration/pcsc)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from broker.cardsim import InProcessConnection, OpenPgpCard
from broker.cardsim.tlv import parse_ber
from tests.unit.cardsim.certs import cert, key
from tests.unit.cardsim.conftest import Reader

SELECT = bytes.fromhex("00a4040006d27600012401")
DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def pgp(kind: str) -> tuple[OpenPgpCard, Reader]:
    card = OpenPgpCard(key(kind), cert(kind))
    reader = Reader(card)
    fci, sw = reader.send(SELECT)
    assert sw == 0x9000
    assert parse_ber(parse_ber(fci)[0x6F])[0x84] == card.openpgp.aid
    return card, reader


def verify(reader: Reader, ref: int, pin: str = "123456") -> int:
    return reader.send(bytes([0, 0x20, 0, ref, len(pin)]) + pin.encode())[1]


def internal_authenticate(reader: Reader, data: bytes) -> tuple[bytes, int]:
    return reader.send(bytes([0, 0x88, 0, 0, len(data)]) + data + b"\x00")


@pytest.mark.parametrize("kind,version", [("rsa-2048", b"\x02\x01"), ("ec-p256", b"\x03\x03")])
def test_application_data_names_the_version_key_and_pin_tries(kind: str, version: bytes) -> None:
    card, reader = pgp(kind)
    assert card.openpgp.aid[6:8] == version
    data, sw = reader.send_all("00ca006e00")
    assert sw == 0x9000
    top = parse_ber(data)
    assert top[0x4F] == card.openpgp.aid
    inner = parse_ber(top[0x73])
    assert inner[0xC3][0] == (0x01 if kind.startswith("rsa") else 0x13)
    assert inner[0xC4][4:] == bytes([3, 0, 3])
    assert inner[0xC5][:40] == bytes(40) and inner[0xC5][40:] != bytes(20)  # only the AUT key


def test_certificate_and_public_key_are_readable_without_pin() -> None:
    card, reader = pgp("rsa-2048")
    der, sw = reader.send_all("00ca7f2100")
    assert sw == 0x9000 and der == card.openpgp.slot.cert_der()
    pub, sw = reader.send_all("00478100 02a400 00".replace(" ", ""))
    assert sw == 0x9000
    n = parse_ber(parse_ber(pub)[0x7F49])[0x81]
    assert int.from_bytes(n, "big") == key("rsa-2048").public_key().public_numbers().n
    assert reader.send("00478100 02b600 00".replace(" ", ""))[1] == 0x6A88  # no signature key
    assert reader.send("00478000 02a400 00".replace(" ", ""))[1] == 0x6982  # no generating
    assert reader.send("00ca010100")[1] == 0x6A88


def test_internal_authenticate_needs_pw1_and_signs_pkcs1() -> None:
    _, reader = pgp("rsa-2048")
    digest = hashlib.sha256(b"challenge").digest()
    assert internal_authenticate(reader, DIGEST_INFO + digest)[1] == 0x6982
    assert verify(reader, 0x82) == 0x9000
    sig, sw = internal_authenticate(reader, DIGEST_INFO + digest)
    assert sw == 0x9000
    cert("rsa-2048").public_key().verify(sig, b"challenge", padding.PKCS1v15(),  # type: ignore[union-attr]
                                         hashes.SHA256())


def test_internal_authenticate_ecdsa_answers_r_and_s() -> None:
    _, reader = pgp("ec-p256")
    digest = hashlib.sha256(b"challenge").digest()
    assert verify(reader, 0x82) == 0x9000
    raw, sw = internal_authenticate(reader, digest)
    assert sw == 0x9000 and len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public = cert("ec-p256").public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    with pytest.raises(InvalidSignature):
        public.verify(der, hashlib.sha256(b"other").digest(),
                      ec.ECDSA(Prehashed(hashes.SHA256())))


def test_wrong_pin_counts_down_blocks_and_reset_forgets() -> None:
    card, reader = pgp("rsa-2048")
    assert verify(reader, 0x82, "000000") == 0x63C2
    assert verify(reader, 0x81, "000000") == 0x63C1  # PW1 81 and 82 share one counter
    assert reader.send("0020008200")[1] == 0x63C1  # status query: not verified
    assert verify(reader, 0x82) == 0x9000 and card.pin.remaining == 3
    assert reader.send("0020008200")[1] == 0x9000
    card.reset()
    reader.send(SELECT)
    assert reader.send("0020008200")[1] == 0x63C3
    for _ in range(3):
        verify(reader, 0x82, "000000")
    assert verify(reader, 0x82) == 0x6983  # blocked: even the right PIN


def test_version_3_certificate_occurrences() -> None:
    card, reader = pgp("ec-p256")
    assert reader.send("00a5010406 60045c027f21".replace(" ", ""))[1] == 0x9000
    assert reader.send_all("00ca7f2100") == (b"", 0x9000)
    assert reader.send("00a5000406 60045c027f21".replace(" ", ""))[1] == 0x9000
    assert reader.send_all("00ca7f2100")[0] == card.openpgp.slot.cert_der()


def test_client_refuses_it_under_strict_card_types_and_without_a_reader() -> None:
    from broker.client.any_card import STRICT_REFUSAL, open_any_card
    from broker.client.errors import NotSupportedError

    card = OpenPgpCard(key("rsa-2048"), cert("rsa-2048"))
    with pytest.raises(NotSupportedError) as strict:
        open_any_card(InProcessConnection(card), strict=True)
    assert strict.value.code == "card_not_supported" and strict.value.message == STRICT_REFUSAL
    # an in-process card has no PC/SC reader for a PKCS#11 module to open: the PIV/CAC refusal
    with pytest.raises(NotSupportedError) as other:
        open_any_card(InProcessConnection(card))
    assert "neither a PIV application nor CAC" in other.value.message
    assert card.pin.remaining == 3


def test_a_card_answering_6d00_to_every_applet_is_not_cac_either() -> None:
    """Other cards need not answer 6A82 to the CAC probe: 6D00 still means "neither"."""
    from broker.client.any_card import STRICT_REFUSAL, open_any_card
    from broker.client.errors import ApduError, NotSupportedError

    class Mute:
        atr = b"\x3b\x00"
        disconnected = False

        def transmit(self, apdu: bytes) -> bytes:
            return b"\x6d\x00"

        def disconnect(self) -> None:
            self.disconnected = True

    conn = Mute()
    with pytest.raises(NotSupportedError) as strict:
        open_any_card(conn, strict=True)  # type: ignore[arg-type]
    assert strict.value.message == STRICT_REFUSAL and conn.disconnected
    with pytest.raises(ApduError):
        open_any_card(Mute())  # type: ignore[arg-type]  # no reader: the original refusal
