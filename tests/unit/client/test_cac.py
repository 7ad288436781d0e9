from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from broker.cardsim import CacCard, InProcessConnection, KeySlot
from broker.client.cac import CacSession, PkiApplet, parse_simple_tlv_headers
from broker.client.errors import (
    InvalidPinError,
    MalformedResponseError,
    NotSupportedError,
    PinBlockedError,
    PinRequiredError,
)
from tests.unit.client.keys import cert, key
from tests.unit.client.verify import verify


def der(c: object) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined]


def test_finds_the_pki_applets_and_reads_their_certificates(
        cac_conn: InProcessConnection) -> None:
    cac = CacSession(cac_conn)
    assert cac.applets == [PkiApplet.IDENTITY, PkiApplet.SIGNATURE, PkiApplet.ENCRYPTION]
    assert der(cac.read_certificate(PkiApplet.IDENTITY)) == der(cert("rsa-2048"))
    assert der(cac.read_certificate(PkiApplet.SIGNATURE)) == der(cert("ec-p256"))
    # compressed, and longer than one 240-byte READ BUFFER
    assert der(cac.read_certificate(PkiApplet.ENCRYPTION)) == der(cert("rsa-2048", 1))


def test_a_card_with_only_the_identity_applet() -> None:
    conn = InProcessConnection(CacCard(KeySlot(key("ec-p256"), cert("ec-p256"))))
    cac = CacSession(conn)
    assert cac.applets == [PkiApplet.IDENTITY]
    assert cac.read_certificate(PkiApplet.SIGNATURE) is None
    assert [c.applet for c in cac.certificates()] == [PkiApplet.IDENTITY]


def test_pin_counts_down_then_blocks(cac_conn: InProcessConnection) -> None:
    cac = CacSession(cac_conn)
    assert cac.pin_attempts_remaining() == 3
    for left in (2, 1):
        with pytest.raises(InvalidPinError) as info:
            cac.verify_pin("999999")
        assert info.value.attempts_remaining == left
    with pytest.raises(PinBlockedError):
        cac.verify_pin("999999")
    assert cac.pin_attempts_remaining() == 0


@pytest.mark.parametrize("algorithm", ["rsa-pkcs1-sha256", "rsa-pkcs1-sha384",
                                       "rsa-pss-sha256", "rsa-pss-sha384"])
def test_rsa_identity_signatures_verify(cac_conn: InProcessConnection, algorithm: str) -> None:
    cac = CacSession(cac_conn)
    cac.verify_pin("123456")
    verify(cert("rsa-2048"), cac.sign(PkiApplet.IDENTITY, b"challenge", algorithm),
           b"challenge", algorithm)


@pytest.mark.parametrize("algorithm", ["ecdsa-sha256", "ecdsa-sha384"])
def test_ec_signatures_verify(cac_conn: InProcessConnection, algorithm: str) -> None:
    cac = CacSession(cac_conn)
    cac.verify_pin("123456")
    verify(cert("ec-p256"), cac.sign(PkiApplet.SIGNATURE, b"challenge", algorithm),
           b"challenge", algorithm)


def test_signing_before_the_pin_says_so(cac_conn: InProcessConnection) -> None:
    with pytest.raises(PinRequiredError):
        CacSession(cac_conn).sign(PkiApplet.IDENTITY, b"m", "rsa-pkcs1-sha256")


def test_a_card_without_cac_applets_is_not_supported() -> None:
    class Blank:
        atr = b"\x3b\x00"

        def transmit(self, apdu: bytes) -> bytes:
            return bytes.fromhex("6a82")

        def disconnect(self) -> None:
            pass

    with pytest.raises(NotSupportedError):
        CacSession(Blank())


def test_simple_tlv_headers_with_long_lengths() -> None:
    assert parse_simple_tlv_headers(bytes.fromhex("70ff3412710 1fe00".replace(" ", ""))) == [
        (0x70, 0x1234), (0x71, 1), (0xFE, 0)]
    for bad in ("70", "70ff34"):
        with pytest.raises(MalformedResponseError):
            parse_simple_tlv_headers(bytes.fromhex(bad))
