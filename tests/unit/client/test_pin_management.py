"""PIN change and PUK unblock on PIV and CAC, client against the simulator in process."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from broker.cardsim import CacCard, InProcessConnection, PivCard
from broker.client import transport
from broker.client.card import open_card
from broker.client.cli import main
from broker.client.errors import (
    InvalidPinError,
    InvalidPukError,
    PinBlockedError,
    PinFormatError,
    PukBlockedError,
)


@pytest.fixture(params=["piv", "cac"])
def card(request: pytest.FixtureRequest, piv_card: PivCard, cac_card: CacCard) -> PivCard | CacCard:
    return piv_card if request.param == "piv" else cac_card


def test_change_pin_then_only_the_new_pin_verifies(card: PivCard | CacCard) -> None:
    sc = open_card(InProcessConnection(card))
    sc.change_pin("123456", "24681357")
    with pytest.raises(InvalidPinError):
        sc.verify_pin("123456")
    sc.verify_pin("24681357")


def test_change_pin_with_a_wrong_pin_counts_down(card: PivCard | CacCard) -> None:
    sc = open_card(InProcessConnection(card))
    with pytest.raises(InvalidPinError) as err:
        sc.change_pin("000000", "24681357")
    assert err.value.attempts_remaining == 2 and card.pin.remaining == 2


def test_a_new_pin_of_the_wrong_format_is_refused_before_the_card(card: PivCard | CacCard) -> None:
    sc = open_card(InProcessConnection(card))
    with pytest.raises(PinFormatError):
        sc.change_pin("123456", "12ab")
    assert card.pin.remaining == 3


def test_puk_unblocks_a_blocked_pin(card: PivCard | CacCard) -> None:
    sc = open_card(InProcessConnection(card))
    for _ in range(3):
        with pytest.raises((InvalidPinError, PinBlockedError)):
            sc.verify_pin("000000")
    with pytest.raises(PinBlockedError):
        sc.verify_pin("123456")
    sc.unblock_pin("12345678", "13572468")
    assert sc.pin_attempts_remaining() == 3
    sc.verify_pin("13572468")


def test_wrong_puk_says_tries_left_then_blocks(card: PivCard | CacCard) -> None:
    sc = open_card(InProcessConnection(card))
    for left in (2, 1):
        with pytest.raises(InvalidPukError) as err:
            sc.unblock_pin("87654321", "13572468")
        assert err.value.attempts_remaining == left
    with pytest.raises(PukBlockedError):
        sc.unblock_pin("87654321", "13572468")
    with pytest.raises(PukBlockedError):
        sc.unblock_pin("12345678", "13572468")  # blocked: even the right PUK is refused


class NamedConnection(InProcessConnection):
    reader = "Test Reader 00"


def test_cli_change_pin_and_wrong_pin_message(monkeypatch: pytest.MonkeyPatch,
                                              card: PivCard | CacCard) -> None:
    monkeypatch.setattr(transport, "connect", lambda reader=None: NamedConnection(card))
    bad = CliRunner().invoke(main, ["card", "change-pin", "--stdin"], input="000000\n111111\n")
    assert bad.exit_code == 1
    assert bad.output.strip() == "error: Wrong PIN: 2 attempt(s) left before the card blocks."
    ok = CliRunner().invoke(main, ["card", "change-pin", "--stdin"], input="123456\n111111\n")
    assert ok.exit_code == 0 and "PIN changed" in ok.output and "111111" not in ok.output


def test_cli_unblock_pin_says_puk_tries_left(monkeypatch: pytest.MonkeyPatch,
                                             card: PivCard | CacCard) -> None:
    monkeypatch.setattr(transport, "connect", lambda reader=None: NamedConnection(card))
    bad = CliRunner().invoke(main, ["card", "unblock-pin", "--stdin"],
                             input="11111111\n222222\n")
    assert bad.exit_code == 1 and "Wrong PUK: 2 attempt(s) left" in bad.output
    ok = CliRunner().invoke(main, ["card", "unblock-pin", "--stdin"],
                            input="12345678\n222222\n")
    assert ok.exit_code == 0 and "PIN unblocked" in ok.output
