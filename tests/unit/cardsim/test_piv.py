"""The virtual PIV card, instruction by instruction (SP 800-73-4), in process."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from broker.cardsim import CardRemovedError, InProcessConnection, PivCard
from broker.cardsim.tlv import ber, parse_ber
from tests.unit.cardsim.certs import cert, key
from tests.unit.cardsim.conftest import PIV_SELECT, Reader, pin_block


def get_data(tag: int) -> bytes:
    t = tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")
    body = ber(0x5C, t)
    return bytes([0x00, 0xCB, 0x3F, 0xFF, len(body)]) + body + b"\x00"


def general_authenticate(alg: int, slot: int, data: bytes) -> bytes:
    body = ber(0x7C, ber(0x82, b"") + ber(0x81, data))
    if len(body) > 255:
        return bytes([0x00, 0x87, alg, slot, 0x00]) + len(body).to_bytes(2, "big") + body
    return bytes([0x00, 0x87, alg, slot, len(body)]) + body + b"\x00"


def signature_of(answer: bytes) -> bytes:
    return parse_ber(parse_ber(answer)[0x7C])[0x82]


def rsa_pkcs1_block(message: bytes, size: int = 256) -> bytes:
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + \
        hashlib.sha256(message).digest()
    return b"\x00\x01" + b"\xff" * (size - 3 - len(digest_info)) + b"\x00" + digest_info


# ---------------------------------------------------------------------------- SELECT
def test_select_full_aid_answers_the_application_property_template(piv_card: PivCard) -> None:
    reader = Reader(piv_card)
    data, sw = reader.send("00a404000ba0000003080000100001 00".replace(" ", ""))
    assert sw == 0x9000
    apt = parse_ber(parse_ber(data)[0x61])
    assert apt[0x4F] == bytes.fromhex("000010000100")
    assert parse_ber(apt[0x79])[0x4F] == bytes.fromhex("a000000308")
    assert b"\x80\x01\x11" in apt[0xAC] and apt[0xAC].endswith(b"\x06\x01\x00")


def test_select_partial_aid_selects_piv(piv_card: PivCard) -> None:
    assert Reader(piv_card).send(PIV_SELECT)[1] == 0x9000


def test_select_unknown_aid_is_not_found(piv_card: PivCard) -> None:
    assert Reader(piv_card).send("00a4040007a0000000790100")[1] == 0x6A82


def test_commands_before_select_are_refused(piv_card: PivCard) -> None:
    assert Reader(piv_card).send(get_data(0x7E))[1] == 0x6985


# ---------------------------------------------------------------------------- GET DATA
def test_discovery_object_names_the_piv_aid(piv: Reader) -> None:
    data, sw = piv.send(get_data(0x7E))
    assert sw == 0x9000
    assert parse_ber(parse_ber(data)[0x7E])[0x4F] == bytes.fromhex("a000000308000010000100")


def test_chuid_carries_fasc_n_uuid_and_expiry(piv_card: PivCard, piv: Reader) -> None:
    data, sw = piv.send_all(get_data(0x5FC102))
    assert sw == 0x9000
    chuid = parse_ber(parse_ber(data)[0x53])
    assert len(chuid[0x30]) == 25
    assert chuid[0x34] == piv_card.piv.card_uuid
    assert chuid[0x35] == b"20301231"
    assert chuid[0x3E] == b""


@pytest.mark.parametrize(("tag", "kind", "n"), [(0x5FC105, "ec-p256", 0),
                                                (0x5FC10A, "ec-p384", 0),
                                                (0x5FC101, "ec-p256", 1)])
def test_certificate_objects_hold_the_slot_certificate(piv: Reader, tag: int, kind: str,
                                                       n: int) -> None:
    data, sw = piv.send_all(get_data(tag))
    assert sw == 0x9000
    obj = parse_ber(parse_ber(data)[0x53])
    assert obj[0x71] == b"\x00" and obj[0xFE] == b""
    assert x509.load_der_x509_certificate(obj[0x70]) == cert(kind, n)


def test_compressed_certificate_is_gzip_with_info_01(piv: Reader) -> None:
    data, sw = piv.send_all(get_data(0x5FC10B))
    assert sw == 0x9000
    obj = parse_ber(parse_ber(data)[0x53])
    assert obj[0x71] == b"\x01"
    assert x509.load_der_x509_certificate(gzip.decompress(obj[0x70])) == cert("rsa-2048")


def test_absent_object_is_not_found(piv: Reader) -> None:
    assert piv.send(get_data(0x5FC103))[1] == 0x6A82


def test_get_data_needs_p1p2_3fff(piv: Reader) -> None:
    assert piv.send("00cb000005 5c037e0000".replace(" ", ""))[1] == 0x6A86


def test_get_data_with_broken_tlv_is_incorrect_data(piv: Reader) -> None:
    assert piv.send("00cb3fff035c057e")[1] == 0x6A80


# ---------------------------------------------------------------------------- response chaining
def test_long_answers_come_in_pieces_with_get_response(piv: Reader) -> None:
    data, sw = piv.send(get_data(0x5FC105))
    der = cert("ec-p256").public_bytes(serialization.Encoding.DER)
    assert len(der) + 12 > 256, "the test certificate must not fit in one answer"
    assert sw >> 8 == 0x61 and len(data) == 256
    full, sw = piv.send_all(get_data(0x5FC105))
    assert sw == 0x9000 and der in full


def test_get_response_without_pending_data_is_refused(piv: Reader) -> None:
    assert piv.send("00c0000000")[1] == 0x6985


def test_rsa_certificate_reads_back_whole_over_several_get_responses() -> None:
    card = PivCard(key("rsa-2048"), cert("rsa-2048"))
    reader = Reader(card)
    reader.send(PIV_SELECT)
    data, sw = reader.send_all(get_data(0x5FC105))
    assert sw == 0x9000
    assert x509.load_der_x509_certificate(parse_ber(parse_ber(data)[0x53])[0x70]) == \
        cert("rsa-2048")


# ---------------------------------------------------------------------------- VERIFY
def test_empty_verify_reports_tries_left_until_verified(piv: Reader) -> None:
    assert piv.send("0020008000")[1] == 0x63C3
    assert piv.send("00200080")[1] == 0x63C3
    assert piv.verify() == 0x9000
    assert piv.send("00200080")[1] == 0x9000


def test_wrong_pin_counts_down_then_blocks(piv: Reader) -> None:
    assert piv.verify("000000") == 0x63C2
    assert piv.verify("000000") == 0x63C1
    assert piv.verify("000000") == 0x6983
    assert piv.verify("123456") == 0x6983
    assert piv.send("00200080")[1] == 0x6983


def test_right_pin_restores_the_counter(piv: Reader) -> None:
    assert piv.verify("000000") == 0x63C2
    assert piv.verify() == 0x9000
    assert piv.verify("000000") == 0x63C2


def test_verify_ff_logs_out(piv: Reader) -> None:
    assert piv.verify() == 0x9000
    assert piv.send("0020ff80")[1] == 0x9000
    assert piv.send("00200080")[1] == 0x63C3


@pytest.mark.parametrize("apdu", ["002000800412345678", "0020008008ffffffffffffffff",
                                  "00200080083132ff3334ffffff"])
def test_malformed_pin_blocks_are_incorrect_data(piv: Reader, apdu: str) -> None:
    assert piv.send(apdu)[1] == 0x6A80


def test_verify_other_reference_is_not_found(piv: Reader) -> None:
    assert piv.send(b"\x00\x20\x00\x81\x08" + pin_block("12345678"))[1] == 0x6A88


def test_pin_is_never_in_the_card_repr(piv_card: PivCard) -> None:
    assert "123456" not in repr(piv_card.pin) and "12345678" not in repr(piv_card.puk)


# ---------------------------------------------------------------------------- CHANGE / RESET
def test_change_pin_needs_the_old_pin(piv: Reader) -> None:
    body = pin_block("123456") + pin_block("654321")
    assert piv.send(b"\x00\x24\x00\x80\x10" + body)[1] == 0x9000
    assert piv.verify("123456") == 0x63C2
    assert piv.verify("654321") == 0x9000


def test_change_pin_with_wrong_old_pin_counts_down(piv: Reader) -> None:
    body = pin_block("111111") + pin_block("654321")
    assert piv.send(b"\x00\x24\x00\x80\x10" + body)[1] == 0x63C2


def test_change_puk(piv: Reader) -> None:
    body = pin_block("12345678") + pin_block("87654321")
    assert piv.send(b"\x00\x24\x00\x81\x10" + body)[1] == 0x9000


def test_puk_unblocks_a_blocked_pin(piv: Reader) -> None:
    for _ in range(3):
        piv.verify("000000")
    assert piv.verify() == 0x6983
    body = pin_block("12345678") + pin_block("246810")
    assert piv.send(b"\x00\x2c\x00\x80\x10" + body)[1] == 0x9000
    assert piv.verify("246810") == 0x9000


def test_wrong_puk_counts_down_and_blocks(piv: Reader) -> None:
    body = pin_block("00000000") + pin_block("246810")
    apdu = b"\x00\x2c\x00\x80\x10" + body
    assert [piv.send(apdu)[1] for _ in range(4)] == [0x63C2, 0x63C1, 0x6983, 0x6983]
    good = b"\x00\x2c\x00\x80\x10" + pin_block("12345678") + pin_block("246810")
    assert piv.send(good)[1] == 0x6983


def test_reset_retry_refuses_a_non_numeric_new_pin(piv: Reader) -> None:
    body = pin_block("12345678") + pin_block("abcdef")
    assert piv.send(b"\x00\x2c\x00\x80\x10" + body)[1] == 0x6A80


# ---------------------------------------------------------------------------- GENERAL AUTHENTICATE
def test_p256_signature_verifies_with_the_certificate(piv: Reader) -> None:
    digest = hashlib.sha256(b"challenge").digest()
    assert piv.verify() == 0x9000
    data, sw = piv.send(general_authenticate(0x11, 0x9A, digest))
    assert sw == 0x9000
    cert("ec-p256").public_key().verify(signature_of(data), b"challenge",  # type: ignore[call-arg]
                                        ec.ECDSA(hashes.SHA256()))


def test_p384_signature_in_the_signature_slot(piv: Reader) -> None:
    digest = hashlib.sha384(b"document").digest()
    assert piv.verify() == 0x9000
    data, sw = piv.send(general_authenticate(0x14, 0x9C, digest))
    assert sw == 0x9000
    cert("ec-p384").public_key().verify(signature_of(data), b"document",  # type: ignore[call-arg]
                                        ec.ECDSA(hashes.SHA384()))


def test_rsa_raw_operation_on_a_padded_block_verifies_as_pkcs1(piv: Reader) -> None:
    assert piv.verify() == 0x9000
    data, sw = piv.send_all(general_authenticate(0x07, 0x9D, rsa_pkcs1_block(b"key mgmt")))
    assert sw == 0x9000
    cert("rsa-2048").public_key().verify(signature_of(data), b"key mgmt",  # type: ignore[call-arg]
                                         padding.PKCS1v15(), hashes.SHA256())


def test_rsa_input_may_come_with_command_chaining(piv: Reader) -> None:
    assert piv.verify() == 0x9000
    body = ber(0x7C, ber(0x82, b"") + ber(0x81, rsa_pkcs1_block(b"chained")))
    first, rest = body[:200], body[200:]
    assert piv.send(bytes([0x10, 0x87, 0x07, 0x9D, len(first)]) + first)[1] == 0x9000
    data, sw = piv.send_all(bytes([0x00, 0x87, 0x07, 0x9D, len(rest)]) + rest + b"\x00")
    assert sw == 0x9000
    cert("rsa-2048").public_key().verify(signature_of(data), b"chained",  # type: ignore[call-arg]
                                         padding.PKCS1v15(), hashes.SHA256())


def test_rsa_block_of_wrong_size_is_incorrect_data(piv: Reader) -> None:
    assert piv.verify() == 0x9000
    assert piv.send(general_authenticate(0x07, 0x9D, b"\x00\x01" + b"\xff" * 100))[1] == 0x6A80


def test_signing_without_pin_is_refused(piv: Reader) -> None:
    assert piv.send(general_authenticate(0x11, 0x9A, b"\x01" * 32))[1] == 0x6982


def test_card_authentication_key_signs_without_pin(piv: Reader) -> None:
    data, sw = piv.send(general_authenticate(0x11, 0x9E, hashlib.sha256(b"door").digest()))
    assert sw == 0x9000
    cert("ec-p256", 1).public_key().verify(signature_of(data), b"door",  # type: ignore[call-arg]
                                           ec.ECDSA(hashes.SHA256()))


def test_signature_slot_needs_the_pin_before_each_signature(piv: Reader) -> None:
    digest = hashlib.sha384(b"x").digest()
    assert piv.verify() == 0x9000
    assert piv.send(general_authenticate(0x14, 0x9C, digest))[1] == 0x9000
    assert piv.send(general_authenticate(0x14, 0x9C, digest))[1] == 0x6982
    assert piv.verify() == 0x9000
    assert piv.send(general_authenticate(0x14, 0x9C, digest))[1] == 0x9000


def test_authentication_slot_signs_repeatedly_after_one_verify(piv: Reader) -> None:
    assert piv.verify() == 0x9000
    for _ in range(3):
        assert piv.send(general_authenticate(0x11, 0x9A, b"\x02" * 32))[1] == 0x9000


def test_wrong_algorithm_for_the_slot_is_refused(piv: Reader) -> None:
    assert piv.verify() == 0x9000
    assert piv.send(general_authenticate(0x14, 0x9A, b"\x01" * 48))[1] == 0x6A86


def test_empty_slot_is_reference_not_found() -> None:
    reader = Reader(PivCard(key("ec-p256"), cert("ec-p256")))
    reader.send(PIV_SELECT)
    reader.verify()
    assert reader.send(general_authenticate(0x11, 0x9C, b"\x01" * 32))[1] == 0x6A88


def test_general_authenticate_without_response_tag_is_incorrect_data(piv: Reader) -> None:
    assert piv.verify() == 0x9000
    body = ber(0x7C, ber(0x81, b"\x01" * 32))
    assert piv.send(bytes([0, 0x87, 0x11, 0x9A, len(body)]) + body)[1] == 0x6A80


# ---------------------------------------------------------------------------- removal and power
def test_removal_forgets_the_verified_pin(piv_card: PivCard) -> None:
    conn = InProcessConnection(piv_card)
    conn.transmit(PIV_SELECT)
    conn.transmit(b"\x00\x20\x00\x80\x08" + pin_block("123456"))
    conn.remove()
    with pytest.raises(CardRemovedError):
        conn.transmit(PIV_SELECT)
    conn.insert()
    assert conn.transmit(PIV_SELECT)[-2:] == b"\x90\x00"
    assert conn.transmit(bytes.fromhex("00200080"))[-2:] == b"\x63\xc3"


def test_pin_counter_survives_removal(piv_card: PivCard) -> None:
    conn = InProcessConnection(piv_card)
    conn.transmit(PIV_SELECT)
    conn.transmit(b"\x00\x20\x00\x80\x08" + pin_block("000000"))
    conn.remove()
    conn.insert()
    conn.transmit(PIV_SELECT)
    assert conn.transmit(bytes.fromhex("00200080"))[-2:] == b"\x63\xc2"


def test_disconnect_resets_and_refuses_further_commands(piv_card: PivCard) -> None:
    conn = InProcessConnection(piv_card)
    conn.transmit(PIV_SELECT)
    conn.disconnect()
    assert piv_card.selected is None
    with pytest.raises(CardRemovedError):
        conn.transmit(PIV_SELECT)


def test_connection_exposes_the_atr(piv_card: PivCard) -> None:
    assert InProcessConnection(piv_card).atr == piv_card.atr and piv_card.atr[0] == 0x3B


# ---------------------------------------------------------------------------- stats
def test_stats_count_apdus_and_bytes(piv_card: PivCard) -> None:
    reader = Reader(piv_card)
    out = reader.conn.transmit(PIV_SELECT)
    reader.conn.transmit(bytes.fromhex("00200080"))
    assert piv_card.stats.apdus == 2
    assert piv_card.stats.bytes_in == len(PIV_SELECT) + 4
    assert piv_card.stats.bytes_out == len(out) + 2
    piv_card.stats.clear()
    assert piv_card.stats.apdus == 0


def test_constructor_wants_key_and_certificate_together() -> None:
    with pytest.raises(ValueError, match="both"):
        PivCard(key("ec-p256"))
