from __future__ import annotations

import pytest

from broker.cardsim import CacCard, InProcessConnection, KeySlot, PivCard, Slot
from tests.unit.client.keys import cert, key


@pytest.fixture
def piv_card() -> PivCard:
    """9A P-256, 9C P-384, 9D RSA-2048 stored compressed, 9E a second P-256."""
    slots = {Slot.SIGNATURE: KeySlot(key("ec-p384"), cert("ec-p384")),
             Slot.KEY_MANAGEMENT: KeySlot(key("rsa-2048"), cert("rsa-2048"), compress=True),
             Slot.CARD_AUTH: KeySlot(key("ec-p256", 1), cert("ec-p256", 1))}
    return PivCard(key("ec-p256"), cert("ec-p256"), slots=slots)


@pytest.fixture
def piv_conn(piv_card: PivCard) -> InProcessConnection:
    return InProcessConnection(piv_card)


@pytest.fixture
def cac_card() -> CacCard:
    """Identity RSA-2048, signature P-256, encryption RSA-2048 (second key) compressed."""
    return CacCard(KeySlot(key("rsa-2048"), cert("rsa-2048")),
                   KeySlot(key("ec-p256"), cert("ec-p256")),
                   KeySlot(key("rsa-2048", 1), cert("rsa-2048", 1), compress=True))


@pytest.fixture
def cac_conn(cac_card: CacCard) -> InProcessConnection:
    return InProcessConnection(cac_card)
