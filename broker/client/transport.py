"""PC/SC through pyscard — the only module that imports pyscard (lazily, so the rest of the
client imports without it).

Readers, card presence, connections, and PC/SC failures mapped to CardError subclasses: no
reader / no service, no card, card removed or reset mid-operation, reader busy (sharing
violation).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from broker.client.errors import (
    CardError,
    CardRemovedError,
    CardStackMissingError,
    MultipleCardsError,
    NoCardError,
    NoReaderError,
    SharingViolationError,
)

POLL_INTERVAL_S = 0.25


class PcscCode(enum.IntEnum):
    """The PC/SC return codes the client tells apart (winscard / pcsc-lite)."""

    E_READER_UNAVAILABLE = 0x80100017
    E_SHARING_VIOLATION = 0x8010000B
    E_NO_SMARTCARD = 0x8010000C
    E_NO_SERVICE = 0x8010001D
    E_SERVICE_STOPPED = 0x8010001E
    E_NO_READERS_AVAILABLE = 0x8010002E
    W_UNRESPONSIVE_CARD = 0x80100066
    W_UNPOWERED_CARD = 0x80100067
    W_RESET_CARD = 0x80100068
    W_REMOVED_CARD = 0x80100069


_REMOVED = {PcscCode.W_REMOVED_CARD, PcscCode.W_RESET_CARD, PcscCode.W_UNPOWERED_CARD,
            PcscCode.E_NO_SMARTCARD, PcscCode.E_READER_UNAVAILABLE}


def _pyscard() -> Any:
    try:
        from smartcard import CardConnection, Exceptions, System
    except ImportError:
        raise CardStackMissingError(message="pyscard is not installed: pip install "
                                            "'smartcard-broker[card]'") from None
    return System, Exceptions, CardConnection.CardConnection


def _hresult(exc: BaseException) -> int | None:
    code = getattr(exc, "hresult", None)
    if isinstance(code, int) and code not in (0, -1):
        return code & 0xFFFFFFFF
    return None


def map_pcsc_error(exc: BaseException, reader: str | None = None,
                   during_transmit: bool = False) -> CardError:
    """The CardError for a pyscard exception (by PC/SC code, else by its text)."""
    code = _hresult(exc)
    text = str(exc)
    where = f" in {reader}" if reader else ""
    if code == PcscCode.E_SHARING_VIOLATION or "sharing violation" in text.lower():
        return SharingViolationError(message=f"The reader{where} is in use by another program.")
    if code in (PcscCode.E_NO_SERVICE, PcscCode.E_SERVICE_STOPPED):
        return NoReaderError(message="The PC/SC service (pcscd) is not running.")
    if code == PcscCode.E_NO_READERS_AVAILABLE:
        return NoReaderError(message="No smart-card reader is connected.")
    if during_transmit or code in _REMOVED or "removed" in text.lower():
        return CardRemovedError(message=f"The smart card{where} was removed or reset.")
    if code == PcscCode.W_UNRESPONSIVE_CARD or "unresponsive" in text.lower():
        return NoCardError(message=f"The card{where} does not answer.")
    return NoCardError(message=f"No usable smart card{where}.")


def _system_readers() -> list[Any]:
    system, exceptions, _ = _pyscard()
    # pyscard keeps the context errors in smartcard.pcsc, not in smartcard.Exceptions
    from smartcard.pcsc.PCSCExceptions import EstablishContextException
    from smartcard.pcsc.PCSCExceptions import ListReadersException as PcscListReadersException

    try:
        return list(system.readers())
    except EstablishContextException:
        raise NoReaderError(message="The PC/SC service (pcscd) is not running.") from None
    except (exceptions.ListReadersException, PcscListReadersException) as exc:
        if _hresult(exc) == PcscCode.E_NO_READERS_AVAILABLE:
            return []
        raise map_pcsc_error(exc) from None


def readers() -> list[str]:
    """Names of the PC/SC readers (empty when none); NoReaderError when pcscd is not running."""
    return [str(r) for r in _system_readers()]


def _reader_objects(name: str | None) -> list[Any]:
    everything = _system_readers()
    objs = [r for r in everything if name is None or str(r) == name]
    if not objs:
        known = ", ".join(f'"{r}"' for r in everything)
        raise NoReaderError(message=f"No smart-card reader{' named ' + repr(name) if name else ''}"
                                    " is connected" + (f"; the readers are: {known}"
                                                       if name and known else "") + ".")
    return objs


def readers_with_card(reader: str | None = None) -> list[str]:
    """Names of the readers (or the named one) that hold a card."""
    return [str(r) for r in _reader_objects(reader) if _present(r)]


def _present(reader: Any) -> bool:
    """Whether a card sits in ``reader`` (a shared connect that fails means no card)."""
    _, exceptions, _ = _pyscard()
    conn = reader.createConnection()
    try:
        conn.connect()
    except exceptions.CardConnectionException as exc:
        # a card another program holds exclusively is still a card in the reader
        return isinstance(map_pcsc_error(exc), SharingViolationError)
    except exceptions.NoCardException:
        return False
    try:
        conn.disconnect()
    except exceptions.CardConnectionException:
        pass  # already released: nothing more to do
    return True


def card_count(reader: str | None = None) -> int:
    """How many readers (or the named one) hold a card; 0 when there is no reader.
    The broker refuses two or more."""
    try:
        objs = _reader_objects(reader)
    except NoReaderError:
        if reader is None and not _service_down():
            return 0
        raise
    return sum(1 for r in objs if _present(r))


def service_available() -> bool:
    """Whether pcscd answers (it may be restarting)."""
    try:
        _system_readers()
    except NoReaderError:
        return False
    except CardError:
        return True  # it answered, with some other complaint
    return True


def _service_down() -> bool:
    try:
        _system_readers()
    except NoReaderError:
        return True
    return False


#: Seconds between the countdown's reports while waiting for a card.
COUNTDOWN_EVERY_S = 10.0


def wait_for_card(reader: str | None = None, timeout: float = 60.0,
                  countdown: Callable[[float], None] | None = None) -> None:
    """Block until a card is present; NoCardError after ``timeout`` seconds. ``countdown``
    hears the seconds left every COUNTDOWN_EVERY_S (first at once)."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic()
    while True:
        if card_count(reader) > 0:
            return
        now = time.monotonic()
        if now >= deadline:
            raise NoCardError(message=f"No smart card was inserted within {timeout:g} s.")
        if countdown is not None and now >= next_report:
            countdown(deadline - now)
            next_report = now + COUNTDOWN_EVERY_S
        time.sleep(POLL_INTERVAL_S)


def wait_for_removal(reader: str | None = None, timeout: float = 60.0) -> bool:
    """Block until no card is present; True if that happened within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if card_count(reader) == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


class PcscConnection:
    """A connection to the card in one reader: ``atr``, ``transmit``, ``disconnect``,
    ``reader``. NoCardError / SharingViolationError on connect, CardRemovedError on transmit."""

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
            raise map_pcsc_error(exc, self.reader) from None
        self.atr = bytes(self._conn.getATR())

    def transmit(self, apdu: bytes) -> bytes:
        try:
            data, sw1, sw2 = self._conn.transmit(list(apdu))
        except self._exceptions.CardConnectionException as exc:
            raise map_pcsc_error(exc, self.reader, during_transmit=True) from None
        return bytes(data) + bytes([sw1, sw2])

    def disconnect(self) -> None:
        try:
            self._conn.disconnect()
        except self._exceptions.CardConnectionException:
            pass  # the card or reader is already gone: nothing to release


def connect(reader: str | None = None) -> PcscConnection:
    """Connect to the card in ``reader``, or to the only reader holding a card.
    NoReaderError, NoCardError, MultipleCardsError, SharingViolationError."""
    objs = [r for r in _reader_objects(reader) if _present(r)]
    if not objs:
        raise NoCardError(message="Insert your smart card.")
    if len(objs) > 1:
        raise MultipleCardsError()
    return PcscConnection(objs[0])
