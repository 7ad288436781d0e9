"""The virtual CAC: PKI applets, GET PROPERTIES, READ BUFFER, VERIFY, SIGN/DECRYPT, dual PIV."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from broker.cardsim import CacCard, KeySlot
from tests.unit.cardsim.certs import cert, key
from tests.unit.cardsim.conftest import PIV_SELECT, Reader, pin_block
from tests.unit.cardsim.test_piv import general_authenticate, rsa_pkcs1_block, signature_of

PKI = ["a0000000790100", "a0000000790101", "a0000000790102"]


def select(aid: str) -> str:
    return f"00a40400{len(aid) // 2:02x}{aid}"


def simple_tlv(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(data):
        tag, n = data[i], data[i + 1]
        i += 2
        if n == 0xFF:
            n = int.from_bytes(data[i:i + 2], "little")
            i += 2
        out.append((tag, data[i:i + n]))
        i += n
    return out


def read_buffer(reader: Reader, kind: int) -> bytes:
    head, sw = reader.send(bytes([0, 0x52, 0, 0, 2, kind, 2]))
    assert sw == 0x9000
    size = int.from_bytes(head, "little")
    out, offset = b"", 2
    while len(out) < size:
        n = min(240, size - len(out))
        part, sw = reader.send(bytes([0, 0x52, offset >> 8, offset & 0xFF, 2, kind, n]))
        assert sw == 0x9000 and len(part) == n
        out += part
        offset += n
    return out


def read_certificate(reader: Reader) -> x509.Certificate:
    """Join the TL buffer (tags and lengths only) with the V buffer, as OpenSC does."""
    tl, v = read_buffer(reader, 1), read_buffer(reader, 2)
    i = pos = 0
    parts: dict[int, bytes] = {}
    while i < len(tl):
        tag, n = tl[i], tl[i + 1]
        i += 2
        if n == 0xFF:
            n = int.from_bytes(tl[i:i + 2], "little")
            i += 2
        parts[tag] = v[pos:pos + n]
        pos += n
    der = parts[0x70]
    if parts[0x71] == b"\x01":
        der = gzip.decompress(der)
    return x509.load_der_x509_certificate(der)


@pytest.fixture
def cac_card() -> CacCard:
    return CacCard(KeySlot(key("rsa-2048"), cert("rsa-2048")),
                   KeySlot(key("rsa-2048", 1), cert("rsa-2048", 1), compress=True),
                   KeySlot(key("ec-p256", 2), cert("ec-p256", 2)))


@pytest.fixture
def cac(cac_card: CacCard) -> Reader:
    return Reader(cac_card)


def sign(reader: Reader, block: bytes) -> tuple[bytes, int]:
    head, tail = block[:240], block[240:]
    if tail:
        assert reader.send(bytes([0, 0x42, 0x80, 0, len(head)]) + head)[1] == 0x9000
        return reader.send(bytes([0, 0x42, 0x00, 0, len(tail)]) + tail + b"\x00")
    return reader.send(bytes([0, 0x42, 0x00, 0, len(head)]) + head + b"\x00")


@pytest.mark.parametrize("aid", PKI)
def test_each_pki_applet_is_selectable(cac: Reader, aid: str) -> None:
    assert cac.send(select(aid)) == (b"", 0x9000)


@pytest.mark.parametrize("aid", ["a0000001 16db00".replace(" ", ""), "a0000000791000",
                                 "a0000000790200", "a0000000790103"])
def test_ccc_aca_generic_containers_and_unused_pki_are_absent(cac: Reader, aid: str) -> None:
    assert cac.send(select(aid))[1] == 0x6A82


def test_piv_is_absent_unless_dual(cac: Reader) -> None:
    assert cac.send(PIV_SELECT)[1] == 0x6A82


def test_cac1_get_certificate_is_not_supported(cac: Reader) -> None:
    cac.send(select(PKI[0]))
    assert cac.send("0036000002")[1] == 0x6D00


def test_get_properties_reports_one_pki_object_with_a_key(cac: Reader) -> None:
    cac.send(select(PKI[1]))
    data, sw = cac.send("0056010000")
    assert sw == 0x9000
    tlvs = dict(simple_tlv(data))
    assert tlvs[0x40] == b"\x01"
    obj = dict(simple_tlv(tlvs[0x51]))
    assert obj[0x41] == b"\x01\x01" and len(obj[0x42]) == 5 and obj[0x43][2] == 1


@pytest.mark.parametrize(("aid", "expected"), [(PKI[0], ("rsa-2048", 0)),
                                               (PKI[1], ("rsa-2048", 1)),
                                               (PKI[2], ("ec-p256", 2))])
def test_read_buffer_gives_back_each_certificate(cac: Reader, aid: str,
                                                 expected: tuple[str, int]) -> None:
    cac.send(select(aid))
    assert read_certificate(cac) == cert(*expected)


def test_read_buffer_past_the_end_is_refused(cac: Reader) -> None:
    cac.send(select(PKI[0]))
    assert cac.send("0052ff00020102")[1] == 0x6A86
    assert cac.send("00520000020302")[1] == 0x6A80


def test_sign_needs_the_pin(cac: Reader) -> None:
    cac.send(select(PKI[0]))
    block = rsa_pkcs1_block(b"m")
    assert cac.send(bytes([0, 0x42, 0x80, 0, 240]) + block[:240])[1] == 0x6982
    assert cac.send(bytes([0, 0x42, 0x00, 0, 16]) + block[240:])[1] == 0x6982


def test_verify_counts_down_and_blocks(cac: Reader) -> None:
    cac.send(select(PKI[0]))
    assert cac.send("00200000")[1] == 0x63C3
    assert [cac.send(b"\x00\x20\x00\x00\x06" + b"000000")[1] for _ in range(3)] == \
        [0x63C2, 0x63C1, 0x6983]
    assert cac.send(b"\x00\x20\x00\x00\x08" + pin_block("123456"))[1] == 0x6983


def test_rsa_signature_in_two_chunks_verifies(cac: Reader) -> None:
    cac.send(select(PKI[0]))
    assert cac.send(b"\x00\x20\x00\x00\x06123456")[1] == 0x9000
    data, sw = sign(cac, rsa_pkcs1_block(b"cac"))
    assert sw == 0x9000
    cert("rsa-2048").public_key().verify(data, b"cac",  # type: ignore[call-arg]
                                         padding.PKCS1v15(), hashes.SHA256())


def test_pin_is_one_per_card(cac: Reader) -> None:
    cac.send(select(PKI[0]))
    assert cac.send(b"\x00\x20\x00\x00\x08" + pin_block("123456"))[1] == 0x9000
    cac.send(select(PKI[1]))
    assert cac.send("00200000")[1] == 0x9000
    data, sw = sign(cac, rsa_pkcs1_block(b"sig"))
    assert sw == 0x9000
    cert("rsa-2048", 1).public_key().verify(data, b"sig",  # type: ignore[call-arg]
                                            padding.PKCS1v15(), hashes.SHA256())


def test_ec_key_signs_the_hash(cac: Reader) -> None:
    cac.send(select(PKI[2]))
    cac.send(b"\x00\x20\x00\x00\x06123456")
    data, sw = sign(cac, hashlib.sha256(b"ec").digest())
    assert sw == 0x9000
    cert("ec-p256", 2).public_key().verify(data, b"ec",  # type: ignore[call-arg]
                                           ec.ECDSA(hashes.SHA256()))


def test_removal_logs_out(cac_card: CacCard, cac: Reader) -> None:
    cac.send(select(PKI[0]))
    cac.send(b"\x00\x20\x00\x00\x06123456")
    cac.conn.remove()
    cac.conn.insert()
    cac.send(select(PKI[0]))
    assert cac.send("00200000")[1] == 0x63C3
    assert not cac_card.verified


def test_get_challenge_gives_eight_bytes(cac: Reader) -> None:
    cac.send(select(PKI[0]))
    data, sw = cac.send("0084000008")
    assert sw == 0x9000 and len(data) == 8


def test_dual_card_answers_piv_with_the_same_keys_and_pin() -> None:
    card = CacCard(KeySlot(key("ec-p256"), cert("ec-p256")), dual=True)
    reader = Reader(card)
    reader.send(select(PKI[0]))
    assert reader.send(b"\x00\x20\x00\x00\x06" + b"000000")[1] == 0x63C2
    assert reader.send(PIV_SELECT)[1] == 0x9000
    assert reader.send("00200080")[1] == 0x63C2
    assert reader.verify() == 0x9000
    data, sw = reader.send(general_authenticate(0x11, 0x9A, hashlib.sha256(b"d").digest()))
    assert sw == 0x9000
    cert("ec-p256").public_key().verify(signature_of(data), b"d",  # type: ignore[call-arg]
                                        ec.ECDSA(hashes.SHA256()))
