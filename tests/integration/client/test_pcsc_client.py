"""The client through real pcscd + vpcd + the simulator + pyscard."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from broker.cardsim import CacCard, KeySlot, PivCard, Slot
from broker.cardsim.vpcd import VpcdLink
from broker.client import transport
from broker.client.card import open_card
from broker.client.errors import (
    CardRemovedError,
    InvalidPinError,
    MultipleCardsError,
    NoCardError,
    NoReaderError,
)
from tests.support.require import unavailable
from tests.unit.client.keys import cert, key
from tests.unit.client.verify import verify

pytestmark = pytest.mark.pcsc

PORT_0, PORT_1 = 35963, 35964


def piv_card() -> PivCard:
    return PivCard(key("ec-p256"), cert("ec-p256"),
                   slots={Slot.KEY_MANAGEMENT: KeySlot(key("rsa-2048"), cert("rsa-2048"),
                                                       compress=True)})


def test_readers_list_both_vpcd_readers(vpcd_card: Callable[..., VpcdLink]) -> None:
    link = vpcd_card(piv_card())
    names = transport.readers()
    assert link.reader in names and "Virtual PCD 00 01" in names


def test_card_info_json_through_pcsc(vpcd_card: Callable[..., VpcdLink]) -> None:
    link = vpcd_card(piv_card())
    out = subprocess.run([sys.executable, "-m", "broker.client.cli", "card", "info",
                          "--reader", link.reader, "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["reader"] == link.reader and info["kind"] == "piv"
    assert info["pin_tries_left"] == 3 and info["card_uuid"]
    assert [c["slot"] for c in info["certificates"]] == ["9a", "9d"]


def test_sign_every_algorithm_and_verify(vpcd_card: Callable[..., VpcdLink]) -> None:
    link = vpcd_card(piv_card())
    conn = transport.connect(link.reader)
    try:
        card = open_card(conn)
        certs = {c.slot_id: c.certificate for c in card.certificates()}
        for slot_id, algorithms in (("9a", ["ecdsa-sha256", "ecdsa-sha384"]),
                                    ("9d", ["rsa-pkcs1-sha256", "rsa-pss-sha384"])):
            for algorithm in algorithms:
                card.verify_pin("123456")
                verify(certs[slot_id], card.sign(slot_id, b"tbs", algorithm), b"tbs",
                       algorithm)
    finally:
        conn.disconnect()


def test_cac_signs_through_pcsc(vpcd_card: Callable[..., VpcdLink]) -> None:
    link = vpcd_card(CacCard(KeySlot(key("rsa-2048"), cert("rsa-2048"))))
    conn = transport.connect(link.reader)
    try:
        card = open_card(conn)
        assert card.kind == "cac"
        [c] = card.certificates()
        card.verify_pin("123456")
        verify(c.certificate, card.sign(c.slot_id, b"tbs", "rsa-pkcs1-sha256"), b"tbs",
               "rsa-pkcs1-sha256")
    finally:
        conn.disconnect()


def test_wrong_pin_says_how_many_tries_are_left(vpcd_card: Callable[..., VpcdLink]) -> None:
    link = vpcd_card(piv_card())
    conn = transport.connect(link.reader)
    try:
        card = open_card(conn)
        with pytest.raises(InvalidPinError) as info:
            card.verify_pin("000000")
        assert info.value.attempts_remaining == 2
        assert card.pin_attempts_remaining() == 2
    finally:
        conn.disconnect()


def test_removal_mid_session_raises_card_removed_and_wait_for_removal_sees_it(
        vpcd_card: Callable[..., VpcdLink]) -> None:
    link = vpcd_card(piv_card())
    conn = transport.connect(link.reader)
    card = open_card(conn)
    card.certificates()
    link.remove()
    assert transport.wait_for_removal(link.reader, timeout=10)
    with pytest.raises(CardRemovedError):
        card.certificates()
    conn.disconnect()
    with pytest.raises(NoCardError):
        transport.connect(link.reader)
    # vpcd drops the old socket only at its next presence poll (~0.44 s): re-inserting sooner
    # leaves pcscd blind to the card
    time.sleep(1.5)
    link.insert()
    transport.wait_for_card(link.reader, timeout=10)


def test_two_cards_are_counted_and_refused_by_connect(
        vpcd_card: Callable[..., VpcdLink]) -> None:
    vpcd_card(piv_card(), port=PORT_0)
    vpcd_card(CacCard(KeySlot(key("ec-p256"), cert("ec-p256"))), port=PORT_1)
    assert transport.card_count() == 2
    with pytest.raises(MultipleCardsError):
        transport.connect()


def test_wait_for_card_times_out_when_no_card(pcsc_stack: str, vpcd_lock: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reader = "Virtual PCD 00 01"
    if not transport.wait_for_removal(reader, timeout=10):  # a previous holder's card leaving
        unavailable("pcsc", "a card stays in the second vpcd reader")
    polls = 0
    count = transport.card_count
    timeout = 0.6
    # Each poll sleeps POLL_INTERVAL_S, so a timeout that holds polls at most this often.
    most = int(timeout / transport.POLL_INTERVAL_S) + 2

    def counted(name: str | None = None) -> int:
        nonlocal polls
        polls += 1
        assert polls <= most, f"still polling after {polls} polls: the timeout does not hold"
        return count(name)

    monkeypatch.setattr(transport, "card_count", counted)
    with pytest.raises(NoCardError):
        transport.wait_for_card(reader, timeout=timeout)
    assert 1 <= polls <= most


def test_an_unknown_reader_is_no_reader(pcsc_stack: str) -> None:
    with pytest.raises(NoReaderError):
        transport.connect("No Such Reader 99")
