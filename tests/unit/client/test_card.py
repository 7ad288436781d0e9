from __future__ import annotations

import pytest

from broker.cardsim import CacCard, InProcessConnection, KeySlot
from broker.client.card import CardCertificate, default_algorithm, filter_by_issuers, open_card
from broker.client.errors import NotSupportedError
from tests.unit.client.keys import cert, key
from tests.unit.client.verify import verify


def test_a_piv_card_lists_its_slots_and_signs(piv_conn: InProcessConnection) -> None:
    card = open_card(piv_conn)
    assert card.kind == "piv"
    certs = card.certificates()
    assert [(c.slot_id, c.label) for c in certs] == [
        ("9a", "PIV Authentication"), ("9c", "Digital Signature"),
        ("9d", "Key Management"), ("9e", "Card Authentication")]
    for c in certs:
        algorithm = card.default_algorithm(c.certificate)
        card.verify_pin("123456")
        verify(c.certificate, card.sign(c.slot_id, b"tbs", algorithm), b"tbs", algorithm)


def test_a_cac_lists_its_applets_and_signs(cac_conn: InProcessConnection) -> None:
    card = open_card(cac_conn)
    assert card.kind == "cac" and card.read_chuid() is None
    certs = card.certificates()
    assert [c.slot_id for c in certs] == ["cac0", "cac1", "cac2"]
    card.verify_pin("123456")
    assert card.pin_attempts_remaining() == -1
    verify(certs[0].certificate, card.sign("cac0", b"tbs", "rsa-pss-sha256"), b"tbs",
           "rsa-pss-sha256")


def test_a_dual_interface_cac_is_used_as_piv() -> None:
    card = open_card(InProcessConnection(
        CacCard(KeySlot(key("ec-p384"), cert("ec-p384")), dual=True)))
    assert card.kind == "piv"
    [c] = card.certificates()
    assert c.slot_id == "9a"
    card.verify_pin("123456")
    verify(c.certificate, card.sign("9a", b"tbs", "ecdsa-sha384"), b"tbs", "ecdsa-sha384")


def test_default_algorithm_follows_the_key() -> None:
    assert default_algorithm(cert("ec-p256")) == "ecdsa-sha256"
    assert default_algorithm(cert("ec-p384")) == "ecdsa-sha384"
    assert default_algorithm(cert("rsa-2048")) == "rsa-pkcs1-sha256"


def test_filter_keeps_certificates_of_accepted_issuers_only() -> None:
    ours = CardCertificate("9a", "PIV Authentication", cert("ec-p256", 0, "Corp Issuing CA"))
    other = CardCertificate("9c", "Digital Signature", cert("ec-p384", 0, "Elsewhere CA"))
    assert filter_by_issuers([ours, other], ["CN=Corp Issuing CA"]) == [ours]
    assert filter_by_issuers([ours, other], ["CN=Nobody"]) == []
    assert filter_by_issuers([ours, other], []) == [ours, other]


def test_unknown_slot_and_algorithm_are_not_supported(piv_conn: InProcessConnection) -> None:
    card = open_card(piv_conn)
    card.verify_pin("123456")
    for slot, algorithm in (("zz", "ecdsa-sha256"), ("82", "ecdsa-sha256"),
                            ("9a", "ed25519")):
        with pytest.raises(NotSupportedError):
            card.sign(slot, b"m", algorithm)


def test_a_card_with_neither_piv_nor_cac_is_not_supported() -> None:
    class Blank:
        atr = b"\x3b\x00"

        def transmit(self, apdu: bytes) -> bytes:
            return bytes.fromhex("6a82")

        def disconnect(self) -> None:
            pass

    with pytest.raises(NotSupportedError) as info:
        open_card(Blank())
    assert info.value.code == "card_not_supported"


def test_signing_reuses_the_key_type_read_with_the_certificates(
        piv_conn: InProcessConnection) -> None:
    card = open_card(piv_conn)
    card.certificates()
    card.verify_pin("123456")
    before = card.protocol.apdus
    card.sign("9a", b"tbs", "ecdsa-sha256")
    assert card.protocol.apdus - before == 1  # GENERAL AUTHENTICATE only
