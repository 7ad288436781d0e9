from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from broker.cardsim import InProcessConnection, PivCard
from broker.client.errors import (
    CardRemovedError,
    InvalidPinError,
    NotSupportedError,
    PinBlockedError,
    PinFormatError,
    PinRequiredError,
)
from broker.client.piv import AID, KeyType, PivSession, SignatureAlgorithm, Slot, signature_input
from tests.unit.client.keys import cert, key
from tests.unit.client.verify import verify

ALL_ALGORITHMS = [a.value for a in SignatureAlgorithm]
RSA_ALGORITHMS = [a for a in ALL_ALGORITHMS if a.startswith("rsa-")]
EC_ALGORITHMS = [a for a in ALL_ALGORITHMS if a.startswith("ecdsa-")]


def der(c: object) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined]


def test_select_reads_the_application_property_template(piv_conn: InProcessConnection) -> None:
    piv = PivSession(piv_conn)
    assert piv.properties.aid is not None and piv.properties.aid in AID  # the PIX
    assert piv.properties.algorithms  # the card lists what it can do


def test_reads_every_slot_certificate_including_a_compressed_one(
        piv_conn: InProcessConnection) -> None:
    piv = PivSession(piv_conn)
    assert der(piv.read_certificate(Slot.AUTHENTICATION)) == der(cert("ec-p256"))
    assert der(piv.read_certificate(Slot.SIGNATURE)) == der(cert("ec-p384"))
    assert der(piv.read_certificate(Slot.KEY_MANAGEMENT)) == der(cert("rsa-2048"))
    assert der(piv.read_certificate(Slot.CARD_AUTH)) == der(cert("ec-p256", 1))


def test_an_empty_slot_reads_as_none() -> None:
    piv = PivSession(InProcessConnection(PivCard(key("ec-p256"), cert("ec-p256"))))
    assert piv.read_certificate(Slot.SIGNATURE) is None


def test_chuid_gives_fasc_n_guid_and_expiry(piv_card: PivCard,
                                           piv_conn: InProcessConnection) -> None:
    chuid = PivSession(piv_conn).read_chuid()
    assert chuid is not None
    assert chuid.fasc_n is not None and len(chuid.fasc_n) == 25
    assert chuid.guid is not None and len(chuid.guid) == 16
    assert chuid.expiry == "20301231"


def test_wrong_pins_count_down_3_2_1_then_the_pin_is_blocked(
        piv_conn: InProcessConnection) -> None:
    piv = PivSession(piv_conn)
    assert piv.pin_attempts_remaining() == 3
    for left in (2, 1):
        with pytest.raises(InvalidPinError) as info:
            piv.verify_pin("654321")
        assert info.value.attempts_remaining == left
        assert piv.pin_attempts_remaining() == left
        assert "654321" not in info.value.message
    with pytest.raises(PinBlockedError):
        piv.verify_pin("654321")
    assert piv.pin_attempts_remaining() == 0
    with pytest.raises(PinBlockedError):
        piv.verify_pin("123456")  # the right PIN no longer helps


def test_the_right_pin_resets_the_counter(piv_conn: InProcessConnection) -> None:
    piv = PivSession(piv_conn)
    with pytest.raises(InvalidPinError):
        piv.verify_pin("000000")
    piv.verify_pin("123456")
    assert piv.pin_attempts_remaining() == -1  # verified: the card does not say more
    piv_conn.disconnect()
    piv = PivSession(InProcessConnection(piv_conn.card))
    assert piv.pin_attempts_remaining() == 3


@pytest.mark.parametrize("pin", ["12345", "123456789", "12345a", "", "１２３４５６"])
def test_a_pin_that_is_not_6_to_8_digits_never_reaches_the_card(
        piv_conn: InProcessConnection, pin: str) -> None:
    piv = PivSession(piv_conn)
    before = piv.protocol.apdus
    with pytest.raises(PinFormatError):
        piv.verify_pin(pin)
    assert piv.protocol.apdus == before


@pytest.mark.parametrize(("slot", "kind", "algorithms"), [
    (Slot.KEY_MANAGEMENT, "rsa-2048", RSA_ALGORITHMS),
    (Slot.AUTHENTICATION, "ec-p256", EC_ALGORITHMS),
    (Slot.SIGNATURE, "ec-p384", EC_ALGORITHMS),
])
def test_signatures_verify_for_every_algorithm_the_key_allows(
        piv_conn: InProcessConnection, slot: Slot, kind: str, algorithms: list[str]) -> None:
    piv = PivSession(piv_conn)
    certificate = piv.read_certificate(slot)
    assert certificate is not None
    for algorithm in algorithms:
        piv.verify_pin("123456")  # 9C wants the PIN before every signature
        data = f"challenge for {algorithm}".encode()
        verify(certificate, piv.sign(slot, data, algorithm), data, algorithm)


def test_rsa_blocks_go_out_chained() -> None:
    block = signature_input(KeyType.RSA2048, b"x", "rsa-pkcs1-sha256")
    assert len(block) == 256  # with the TLV wrapping, more than one short APDU holds


def test_pss_signatures_differ_each_time_and_both_verify(piv_conn: InProcessConnection) -> None:
    piv = PivSession(piv_conn)
    piv.verify_pin("123456")
    a = piv.sign(Slot.KEY_MANAGEMENT, b"m", "rsa-pss-sha256")
    b = piv.sign(Slot.KEY_MANAGEMENT, b"m", "rsa-pss-sha256")
    assert a != b
    for s in (a, b):
        verify(cert("rsa-2048"), s, b"m", "rsa-pss-sha256")


def test_signing_without_the_pin_says_the_pin_is_needed(piv_conn: InProcessConnection) -> None:
    with pytest.raises(PinRequiredError):
        PivSession(piv_conn).sign(Slot.AUTHENTICATION, b"m", "ecdsa-sha256")


@pytest.mark.parametrize(("slot", "algorithm"), [
    (Slot.AUTHENTICATION, "rsa-pkcs1-sha256"),  # EC key
    (Slot.KEY_MANAGEMENT, "ecdsa-sha256"),      # RSA key
    (Slot.AUTHENTICATION, "ecdsa-sha1"),        # not a broker algorithm
    (Slot.AUTHENTICATION, "rsa-pkcs1-sha512"),
])
def test_algorithms_the_key_or_broker_cannot_use_are_refused(
        piv_conn: InProcessConnection, slot: Slot, algorithm: str) -> None:
    piv = PivSession(piv_conn)
    piv.verify_pin("123456")
    with pytest.raises(NotSupportedError) as info:
        piv.sign(slot, b"m", algorithm)
    assert info.value.code == "card_not_supported"


def test_ecdsa_hash_longer_than_the_curve_is_truncated_and_shorter_left_padded() -> None:
    assert len(signature_input(KeyType.ECCP256, b"m", "ecdsa-sha384")) == 32
    padded = signature_input(KeyType.ECCP384, b"m", "ecdsa-sha256")
    assert len(padded) == 48 and padded[:16] == bytes(16)


def test_sha384_on_p256_and_sha256_on_p384_verify(piv_conn: InProcessConnection) -> None:
    piv = PivSession(piv_conn)
    piv.verify_pin("123456")
    verify(cert("ec-p256"), piv.sign(Slot.AUTHENTICATION, b"m", "ecdsa-sha384"), b"m",
           "ecdsa-sha384")
    piv.verify_pin("123456")
    verify(cert("ec-p384"), piv.sign(Slot.SIGNATURE, b"m", "ecdsa-sha256"), b"m",
           "ecdsa-sha256")


def test_removing_the_card_mid_session_raises_card_removed(
        piv_conn: InProcessConnection) -> None:
    piv = PivSession(piv_conn)
    piv_conn.remove()
    with pytest.raises(CardRemovedError) as info:
        piv.read_certificate(Slot.AUTHENTICATION)
    assert info.value.code == "card_removed"


def test_key_type_is_named_from_the_certificate() -> None:
    assert KeyType.of(cert("rsa-2048").public_key()) is KeyType.RSA2048
    assert KeyType.of(cert("ec-p256").public_key()) is KeyType.ECCP256
    assert KeyType.of(cert("ec-p384").public_key()) is KeyType.ECCP384
    assert Slot.AUTHENTICATION.slot_id == "9a" and Slot.CARD_AUTH.object_id == 0x5FC101


def test_an_rsa_2048_signature_goes_out_as_a_chained_general_authenticate(
        piv_conn: InProcessConnection) -> None:
    sent: list[bytes] = []
    transmit = piv_conn.transmit

    def spy(apdu: bytes) -> bytes:
        sent.append(apdu)
        return transmit(apdu)

    piv_conn.transmit = spy  # type: ignore[method-assign]
    piv = PivSession(piv_conn)
    piv.verify_pin("123456")
    sent.clear()
    piv.sign(Slot.KEY_MANAGEMENT, b"m", "rsa-pkcs1-sha256", KeyType.RSA2048)
    general_auth = [a for a in sent if a[1] == 0x87]
    assert [a[0] for a in general_auth] == [0x10, 0x00]
    assert general_auth[0][2:4] == bytes([KeyType.RSA2048, Slot.KEY_MANAGEMENT])
