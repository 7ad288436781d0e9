"""The simulator as a card connection in this process (no PC/SC): for unit tests and the demo.

It offers the same duck-typed interface as the client's PC/SC connection — ``atr``,
``transmit(apdu) -> response``, ``disconnect()`` — so the client cannot tell them apart.
"""

from __future__ import annotations

from typing import Any

from broker.errors import BrokerError


class CardRemovedError(BrokerError):
    code = "card_removed"


class InProcessConnection:
    def __init__(self, card: Any) -> None:
        self.card = card
        self.present = True
        card.reset()
        self.atr: bytes = card.atr

    def transmit(self, apdu: bytes) -> bytes:
        if not self.present:
            raise CardRemovedError(message="The smart card was removed.")
        return bytes(self.card.process_apdu(bytes(apdu)))

    def remove(self) -> None:
        self.present = False
        self.card.reset()

    def insert(self) -> None:
        self.present = True
        self.card.reset()

    def disconnect(self) -> None:
        self.card.reset()
