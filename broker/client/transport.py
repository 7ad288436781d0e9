"""PC/SC through pyscard — the only module that imports pyscard.

Readers, card presence, connections, and PC/SC failures mapped to CardError subclasses:
no reader, no card, card removed mid-operation, reader busy (sharing violation).
"""

from __future__ import annotations

import time
from typing import Any

from broker.client.errors import (
    CardError,
    CardRemovedError,
    NoCardError,
    NoReaderError,
    SharingViolationError,
)


def _pyscard() -> Any:
    try:
        import smartcard.System  # noqa: F401
        from smartcard import Exceptions, System
        from smartcard.CardConnection import CardConnection
    except ImportError:
        raise CardError("card_stack_missing", "pyscard is not installed: pip install "
                                              "'smartcard-broker[card]'") from None
    return System, Exceptions, CardConnection


def readers() -> list[str]:
    system, exceptions, _ = _pyscard()
    try:
        return [str(r) for r in system.readers()]
    except exceptions.EstablishContextException:
        raise NoReaderError(message="The PC/SC service (pcscd) is not running.") from None
    except Exception as exc:  # pyscard raises assorted errors when no reader is attached
        if "SCARD_E_NO_READERS_AVAILABLE" in str(exc) or "No readers" in str(exc):
            return []
        raise CardError("card_pcsc_error", f"PC/SC: {exc}") from None


def _reader_objects(name: str | None) -> list[Any]:
    system, _, _ = _pyscard()
    objs = [r for r in system.readers() if name is None or str(r) == name]
    if not objs:
        raise NoReaderError(message=f"No smart-card reader{' named ' + name if name else ''} "
                                    "is connected.")
    return objs


def _present(reader: Any) -> bool:
    _, exceptions, _ = _pyscard()
    conn = reader.createConnection()
    try:
        conn.connect()
        return True
    except (exceptions.NoCardException, exceptions.CardConnectionException):
        return False
    finally:
        try:
            conn.disconnect()
        except Exception:  # nothing to release when the connect failed
            pass


def card_count(reader: str | None = None) -> int:
    """How many readers hold a card (the broker refuses two or more)."""
    try:
        objs = _reader_objects(reader)
    except NoReaderError:
        return 0
    return sum(1 for r in objs if _present(r))


def wait_for_card(reader: str | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if card_count(reader) > 0:
            return
        time.sleep(0.25)
    raise NoCardError(message="No smart card was inserted in time.")


def wait_for_removal(reader: str | None = None, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if card_count(reader) == 0:
            return True
        time.sleep(0.25)
    return False


class PcscConnection:
    def __init__(self, reader: Any) -> None:
        _, exceptions, card_connection = _pyscard()
        self._exceptions = exceptions
        self.reader = str(reader)
        self._conn = reader.createConnection()
        try:
            self._conn.connect(card_connection.T1_protocol | card_connection.T0_protocol)
        except exceptions.NoCardException:
            raise NoCardError(message=f"No card in {self.reader}.") from None
        except exceptions.CardConnectionException as exc:
            if "sharing" in str(exc).lower():
                raise SharingViolationError(message=f"{self.reader} is in use by another "
                                                    "program.") from None
            raise NoCardError(message=f"Cannot connect to the card in {self.reader}: {exc}") \
                from None
        self.atr = bytes(self._conn.getATR())

    def transmit(self, apdu: bytes) -> bytes:
        try:
            data, sw1, sw2 = self._conn.transmit(list(apdu))
        except self._exceptions.CardConnectionException as exc:
            raise CardRemovedError(message=f"The card was removed or reset ({exc}).") from None
        return bytes(data) + bytes([sw1, sw2])

    def disconnect(self) -> None:
        try:
            self._conn.disconnect()
        except Exception:  # already gone
            pass


def connect(reader: str | None = None) -> PcscConnection:
    """Connect to the card in ``reader`` (or the only reader holding a card)."""
    objs = [r for r in _reader_objects(reader) if _present(r)]
    if not objs:
        raise NoCardError(message="Insert your smart card.")
    if len(objs) > 1:
        raise CardError("card_multiple", "Only one smart card at a time: remove the others.")
    return PcscConnection(objs[0])
