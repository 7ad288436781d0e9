"""How the login flow reaches cards: through PC/SC (pyscard) or an in-process simulated card.

Both give the flow the same three operations — count the cards present, wait for one, open the
single one as a ``SmartCard`` — so the flow cannot tell a virtual card from a real reader.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from broker.client.errors import CardError


class PcscCards:
    """Cards in the PC/SC readers (optionally one named reader). A card that is neither PIV
    nor CAC opens through its PKCS#11 module after a warning, unless ``strict_card_types``."""

    def __init__(self, reader: str | None = None, strict_card_types: bool = False,
                 warn: Callable[[str], None] | None = None) -> None:
        self.reader = reader
        self.strict_card_types = strict_card_types
        self.warn = warn

    def count(self) -> int:
        import broker.client.transport as transport

        return transport.card_count(self.reader)

    def wait_for_card(self, timeout: float,
                      countdown: Callable[[float], None] | None = None) -> None:
        import broker.client.transport as transport

        transport.wait_for_card(self.reader, timeout, countdown)

    def reader_names(self) -> list[str]:
        """The readers a card is looked for in (the named one, else every one)."""
        import broker.client.transport as transport

        if self.reader:
            return [self.reader]
        try:
            return transport.readers()
        except CardError:
            return []

    def readers_with_card(self) -> list[str]:
        import broker.client.transport as transport

        return transport.readers_with_card(self.reader)

    def open(self) -> Any:
        import broker.client.transport as transport
        from broker.client.any_card import open_any_card

        count = self.count()
        if count == 0:
            raise CardError("card_absent", "Insert your smart card.")
        if count > 1:
            raise CardError("card_multiple", "Only one smart card at a time: remove the others.")
        return open_any_card(transport.connect(self.reader), strict=self.strict_card_types,
                             warn=self.warn)


class InProcessCards:
    """A simulated card object in this process (demo without pcscd, unit tests)."""

    def __init__(self, card: Any) -> None:
        self.card = card

    def count(self) -> int:
        return 1

    def wait_for_card(self, timeout: float,
                      countdown: Callable[[float], None] | None = None) -> None:
        time.sleep(0)

    def open(self) -> Any:
        from broker.cardsim.connection import InProcessConnection
        from broker.client.card import open_card

        return open_card(InProcessConnection(self.card))
