"""The simulator as a card connection in this process (no PC/SC): unit tests and the demo.

Same duck-typed interface as the client's PC/SC connection — ``atr``, ``transmit(apdu) ->
response data + SW1 SW2``, ``disconnect()`` — so the client cannot tell them apart. ``remove()``
takes the card out: every ``transmit`` then raises :class:`CardRemovedError` until ``insert()``;
both reset the card (PIN no longer verified), as pulling a real card does.
"""

from __future__ import annotations

from broker.cardsim.card import VirtualCard
from broker.errors import BrokerError


class CardRemovedError(BrokerError):
    """The card is not in the reader (removed, or the connection was closed)."""

    code = "card_removed"


class InProcessConnection:
    def __init__(self, card: VirtualCard) -> None:
        self.card = card
        self.present = True
        self.connected = True
        self.atr: bytes = card.power_on()

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU; CardRemovedError when the card is out or disconnected."""
        if not self.present or not self.connected:
            raise CardRemovedError(message="The smart card was removed.")
        return self.card.process_apdu(bytes(apdu))

    def remove(self) -> None:
        self.present = False
        self.card.power_off()

    def insert(self) -> None:
        self.present = True
        self.connected = True
        self.atr = self.card.power_on()

    def disconnect(self) -> None:
        """Close the connection; the card is reset (logged out) as after SCardDisconnect(RESET)."""
        self.connected = False
        self.card.reset()
