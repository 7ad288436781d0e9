"""What OpenSC does with the simulated CAC (its ``cac`` driver, "CAC-2 alternate token" path)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from broker.cardsim import CacCard, KeySlot
from broker.cardsim.vpcd import VpcdLink
from tests.unit.cardsim.certs import cert, key

pytestmark = pytest.mark.pcsc


def run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def rsa_cac(**kwargs: object) -> CacCard:
    return CacCard(KeySlot(key("rsa-2048"), cert("rsa-2048")),
                   KeySlot(key("rsa-2048", 1), cert("rsa-2048", 1)),
                   KeySlot(key("rsa-2048", 2), cert("rsa-2048", 2), compress=True),
                   **kwargs)  # type: ignore[arg-type]


def test_opensc_names_it_a_cac(vpcd_card: Callable[..., VpcdLink]) -> None:
    card = rsa_cac()
    vpcd_card(card)
    out = run("opensc-tool", "-a", "-n")
    assert card.atr.hex(":") in out and "Common Access Card (CAC)" in out


def test_pkcs15_tool_lists_the_three_cac_certificates_and_the_pin(
        vpcd_card: Callable[..., VpcdLink]) -> None:
    vpcd_card(rsa_cac())
    out = run("pkcs15-tool", "-D")
    for expected in ("PIN [PIN]", "Private RSA Key [CAC ID Certificate]",
                     "X.509 Certificate [CAC ID Certificate]",
                     "X.509 Certificate [CAC Email Signature Certificate]",
                     "X.509 Certificate [CAC Email Encryption Certificate]"):
        assert expected in out, expected


def test_pkcs11_rsa_signature_with_the_identity_key_verifies(
        vpcd_card: Callable[..., VpcdLink], pkcs11_module: str, tmp_path: Path) -> None:
    card = rsa_cac()
    vpcd_card(card)
    (tmp_path / "msg").write_bytes(b"cac login")
    out = run("pkcs11-tool", "--module", pkcs11_module, "--login", "--pin", "123456", "--sign",
              "-m", "SHA256-RSA-PKCS", "--id", "0001", "-i", str(tmp_path / "msg"),
              "-o", str(tmp_path / "sig"))
    assert (tmp_path / "sig").exists(), out
    cert("rsa-2048").public_key().verify((tmp_path / "sig").read_bytes(),  # type: ignore
                                         b"cac login", padding.PKCS1v15(), hashes.SHA256())


def test_pkcs11_wrong_pin_on_the_cac_decrements_the_counter(
        vpcd_card: Callable[..., VpcdLink], pkcs11_module: str) -> None:
    card = rsa_cac()
    vpcd_card(card)
    out = run("pkcs11-tool", "--module", pkcs11_module, "--login", "--pin", "000000", "-O")
    assert "CKR_PIN_INCORRECT" in out
    assert card.pin.remaining == 2


def test_dual_card_is_read_by_opensc_as_piv(vpcd_card: Callable[..., VpcdLink]) -> None:
    vpcd_card(rsa_cac(dual=True))
    out = run("opensc-tool", "-n")
    # OpenSC 0.23 takes a card that answers the PIV AID as PIV, even with CAC applets
    assert "Personal Identity Verification Card" in out
