"""Which card is in the reader: PIV or CAC through :mod:`broker.client.card`, any other card
through its PKCS#11 module (:mod:`broker.client.pkcs11card`) unless --strict-card-types.

Apart from card.py so that the PKCS#11 card, which reuses card.py's certificate helpers, is not
imported by the module it imports (tests/unit/test_import_cycles.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.client.apdu import Connection
from broker.client.card import SmartCard
from broker.client.errors import ApduError, CardError, NotSupportedError
from broker.client.pkcs11card import UNTESTED_WARNING, Pkcs11Card

#: What --strict-card-types says about a card that is neither PIV nor CAC.
STRICT_REFUSAL = ("This card has neither a PIV application nor CAC PKI applets, and "
                  "--strict-card-types allows no other card type.")


def open_any_card(connection: Connection, *, strict: bool = False,
                  warn: Callable[[str], None] | None = None,
                  module: str | None = None) -> Any:
    """PIV or CAC as :func:`open_card`; any other card through its PKCS#11 module (OpenSC),
    after ``warn`` got the one-line "not fully tested" warning. ``strict`` refuses other cards
    (NotSupportedError, code card_not_supported). The PC/SC ``connection`` is released before
    the PKCS#11 module opens the reader."""
    refusal: CardError
    try:
        return SmartCard(connection)
    except NotSupportedError as exc:
        if exc.code != NotSupportedError.code:
            raise
        refusal = exc
    except ApduError as exc:  # a card that answers the CAC probe with e.g. 6D00: not a CAC
        refusal = exc
    reader = getattr(connection, "reader", None)
    atr = bytes(getattr(connection, "atr", b""))
    connection.disconnect()
    if strict:
        raise NotSupportedError(message=STRICT_REFUSAL)
    if reader is None:  # an in-process card has no PKCS#11 module to fall back to
        raise refusal
    card = Pkcs11Card(str(reader), atr, module)
    (warn or _stderr)(UNTESTED_WARNING.format(token=card.token_label))
    return card


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)
