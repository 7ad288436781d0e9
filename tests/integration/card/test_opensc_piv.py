"""OpenSC and pyscard take the simulated PIV card for a real one (through pcscd's vpcd reader)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from broker.cardsim import KeySlot, PivCard, Slot
from broker.cardsim.vpcd import VpcdLink
from tests.integration.card.conftest import wait_for_card
from tests.unit.cardsim.certs import cert, key

pytestmark = pytest.mark.pcsc

MESSAGE = b"smartcard-broker signs this"


def run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def full_piv() -> PivCard:
    return PivCard(key("ec-p256"), cert("ec-p256"),
                   slots={Slot.SIGNATURE: KeySlot(key("ec-p384"), cert("ec-p384")),
                          Slot.KEY_MANAGEMENT: KeySlot(key("rsa-2048"), cert("rsa-2048"),
                                                      compress=True),
                          Slot.CARD_AUTH: KeySlot(key("ec-p256", 1), cert("ec-p256", 1))})


def test_opensc_tool_shows_the_atr_and_a_piv_card(vpcd_card: Callable[..., VpcdLink]) -> None:
    card = PivCard(key("ec-p256"), cert("ec-p256"))
    vpcd_card(card)
    out = run("opensc-tool", "-a", "-n")
    assert card.atr.hex(":") in out
    assert "Personal Identity Verification Card" in out


def test_pkcs15_tool_lists_pin_puk_keys_and_certificates(
        vpcd_card: Callable[..., VpcdLink]) -> None:
    vpcd_card(full_piv())
    out = run("pkcs15-tool", "-D")
    for expected in ("PIN [PIN]", "PIN [PIV PUK]", "Private EC Key [PIV AUTH key]",
                     "X.509 Certificate [Certificate for PIV Authentication]",
                     "Private EC Key [SIGN key]", "Private RSA Key [KEY MAN key]",
                     "Private EC Key [CARD AUTH key]",
                     "X.509 Certificate [Certificate for Digital Signature]",
                     "X.509 Certificate [Certificate for Key Management]",
                     "X.509 Certificate [Certificate for Card Authentication]"):
        assert expected in out, expected


def test_opensc_reads_a_gzip_compressed_certificate(vpcd_card: Callable[..., VpcdLink]) -> None:
    vpcd_card(full_piv())
    out = run("pkcs15-tool", "--read-certificate", "03")  # OpenSC's id for the 9D certificate
    pem = cert("rsa-2048").public_bytes(serialization.Encoding.PEM).decode()
    assert pem.strip() in out, out


def test_pkcs11_tool_lists_the_token_and_objects(vpcd_card: Callable[..., VpcdLink],
                                                 pkcs11_module: str) -> None:
    vpcd_card(PivCard(key("ec-p256"), cert("ec-p256")))
    out = run("pkcs11-tool", "--module", pkcs11_module, "-L", "-O")
    assert "Virtual PCD 00 00" in out and "token manufacturer : piv_II" in out
    assert "Certificate Object; type = X.509 cert" in out
    assert "label:      Certificate for PIV Authentication" in out
    assert "Public Key Object; EC" in out


def sign(module: str, tmp_path: Path, mechanism: str, *extra: str,
         pin: str = "123456") -> tuple[bytes, str]:
    (tmp_path / "msg").write_bytes(MESSAGE)
    sig = tmp_path / "sig"
    sig.unlink(missing_ok=True)
    out = run("pkcs11-tool", "--module", module, "--login", "--pin", pin, "--sign",
              "-m", mechanism, "--id", "01", "-i", str(tmp_path / "msg"), "-o", str(sig), *extra)
    return (sig.read_bytes() if sig.exists() else b""), out


def test_pkcs11_ecdsa_signature_verifies_with_the_card_certificate(
        vpcd_card: Callable[..., VpcdLink], pkcs11_module: str, tmp_path: Path) -> None:
    card = PivCard(key("ec-p256"), cert("ec-p256"))
    vpcd_card(card)
    signature, out = sign(pkcs11_module, tmp_path, "ECDSA-SHA256", "--signature-format",
                          "openssl")
    assert signature, out
    cert("ec-p256").public_key().verify(signature, MESSAGE,  # type: ignore[call-arg]
                                        ec.ECDSA(hashes.SHA256()))
    assert card.stats.apdus > 0


def test_pkcs11_rsa_signature_verifies_with_the_card_certificate(
        vpcd_card: Callable[..., VpcdLink], pkcs11_module: str, tmp_path: Path) -> None:
    vpcd_card(PivCard(key("rsa-2048"), cert("rsa-2048")))
    signature, out = sign(pkcs11_module, tmp_path, "SHA256-RSA-PKCS")
    assert signature, out
    cert("rsa-2048").public_key().verify(signature, MESSAGE,  # type: ignore[call-arg]
                                         padding.PKCS1v15(), hashes.SHA256())


def test_pkcs11_wrong_pin_decrements_the_counter(vpcd_card: Callable[..., VpcdLink],
                                                 pkcs11_module: str, tmp_path: Path) -> None:
    card = PivCard(key("ec-p256"), cert("ec-p256"))
    vpcd_card(card)
    signature, out = sign(pkcs11_module, tmp_path, "ECDSA-SHA256", pin="654321")
    assert not signature and "CKR_PIN_INCORRECT" in out
    assert card.pin.remaining == 2


def test_pyscard_sees_the_card_and_its_removal(vpcd_card: Callable[..., VpcdLink]) -> None:
    from smartcard.System import readers

    card = PivCard(key("ec-p256"), cert("ec-p256"))
    link = vpcd_card(card)
    reader = next(r for r in readers() if str(r) == link.reader)
    conn = reader.createConnection()
    conn.connect()
    assert bytes(conn.getATR()) == card.atr
    data, sw1, sw2 = conn.transmit(list(bytes.fromhex("00a4040009a00000030800001000")))
    assert (sw1, sw2) == (0x90, 0x00) and data[0] == 0x61
    conn.disconnect()
    link.remove()
    assert wait_for_card(link.reader, present=False)
    link.insert()  # right away: the link itself waits out vpcd's presence poll
    assert wait_for_card(link.reader, present=True)
    assert not card.verified


def test_pkcs11_p384_signature_verifies(vpcd_card: Callable[..., VpcdLink], pkcs11_module: str,
                                        tmp_path: Path) -> None:
    vpcd_card(PivCard(key("ec-p384"), cert("ec-p384")))
    signature, out = sign(pkcs11_module, tmp_path, "ECDSA-SHA384", "--signature-format",
                          "openssl")
    assert signature, out
    cert("ec-p384").public_key().verify(signature, MESSAGE,  # type: ignore[call-arg]
                                        ec.ECDSA(hashes.SHA384()))
