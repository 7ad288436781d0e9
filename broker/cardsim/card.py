"""The card core every simulated card shares: APDU framing, chaining, applets, PIN, counters.

A :class:`VirtualCard` holds applets selected by AID (``00 A4 04 00``, a prefix of at least
5 bytes selects the first match). It parses short and extended APDUs, collects command chains
(CLA bit 0x10), hands answers over 256 bytes out in pieces with ``61xx`` + GET RESPONSE (C0),
and counts APDUs and bytes in :attr:`VirtualCard.stats`. ``process_apdu`` never raises: a bug
in an applet answers ``6F00``. Power off, reset and removal deselect and forget the PIN.
"""

from __future__ import annotations

import enum
import hmac
import logging
import threading
from dataclasses import dataclass, field
from typing import Protocol

from broker.iso7816 import SW

log = logging.getLogger("broker.cardsim")

MAX_CHAIN = 8192  # longest command chain the card accepts (RSA-4096 blocks are 512 bytes)


class Ins(enum.IntEnum):
    """Instructions the card core handles itself."""

    SELECT = 0xA4
    GET_RESPONSE = 0xC0


class CardStatus(Exception):  # noqa: N818 - a status word, not a failure of the simulator
    """An applet's non-9000 answer; ``sw`` is the 16-bit status word."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"SW {sw:04X}")
        self.sw = sw


def retries_sw(left: int) -> int:
    """63Cx for x tries left, 6983 when none are."""
    return SW.AUTH_METHOD_BLOCKED if left <= 0 else 0x63C0 | min(left, 15)


@dataclass(frozen=True)
class Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    @classmethod
    def parse(cls, apdu: bytes) -> Command:
        """Parse a short or extended command APDU; CardStatus(6700) when the lengths lie."""
        if len(apdu) < 4:
            raise CardStatus(SW.WRONG_LENGTH)
        cla, ins, p1, p2 = apdu[:4]
        body = apdu[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, le=body[0] or 256)
        if body[0] != 0:  # short Lc
            lc = body[0]
            rest = body[1:]
            if len(rest) == lc:
                return cls(cla, ins, p1, p2, rest)
            if len(rest) == lc + 1:
                return cls(cla, ins, p1, p2, rest[:lc], rest[lc] or 256)
            raise CardStatus(SW.WRONG_LENGTH)
        # extended: 00 then two bytes
        if len(body) == 3:
            return cls(cla, ins, p1, p2, le=int.from_bytes(body[1:3], "big") or 65536)
        lc = int.from_bytes(body[1:3], "big")
        rest = body[3:]
        if lc and len(rest) == lc:
            return cls(cla, ins, p1, p2, rest)
        if lc and len(rest) == lc + 2:
            return cls(cla, ins, p1, p2, rest[:lc], int.from_bytes(rest[lc:], "big") or 65536)
        raise CardStatus(SW.WRONG_LENGTH)


@dataclass
class CardStats:
    """What crossed the card's contacts: APDUs received, bytes in (commands) and out."""

    apdus: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def clear(self) -> None:
        self.apdus = self.bytes_in = self.bytes_out = 0


@dataclass
class PinCounter:
    """A reference (PIN or PUK) with a real retry counter; ``value`` never appears in logs."""

    value: str = field(repr=False)
    limit: int = 3
    remaining: int = -1

    def __post_init__(self) -> None:
        if self.remaining < 0:
            self.remaining = self.limit

    @property
    def blocked(self) -> bool:
        return self.remaining <= 0

    def check(self, candidate: bytes) -> bool:
        """Compare, count down on a mismatch, reset the counter on a match; False when blocked."""
        if self.blocked:
            return False
        if hmac.compare_digest(candidate, self.value.encode()):
            self.remaining = self.limit
            return True
        self.remaining -= 1
        return False

    def status_sw(self) -> int:
        return retries_sw(self.remaining)

    def replace(self, new: str) -> None:
        self.value = new
        self.remaining = self.limit


def pin_from_block(block: bytes) -> bytes:
    """An 8-byte PIV PIN block (digits padded with FF) → the PIN; CardStatus(6A80) if malformed."""
    if len(block) != 8:
        raise CardStatus(SW.WRONG_DATA)
    pin = block.rstrip(b"\xff")
    if not pin or b"\xff" in pin:
        raise CardStatus(SW.WRONG_DATA)
    return pin


@dataclass
class SecurityState:
    """What the card has verified since power-on; shared by all applets of a card."""

    pin_verified: bool = False

    def clear(self) -> None:
        self.pin_verified = False


class Applet(Protocol):
    """One application on the card, selected by AID."""

    aid: bytes

    def select(self, cmd: Command) -> bytes:
        """The SELECT answer body (FCI/APT); may raise CardStatus."""
        ...

    def handle(self, cmd: Command) -> bytes:
        """Answer a command while selected (response body); raise CardStatus for non-9000."""
        ...

    def reset(self) -> None:
        ...


class VirtualCard:
    """A card with applets behind one ATR. Thread-safe: one APDU at a time."""

    def __init__(self, applets: list[Applet], atr: bytes, security: SecurityState) -> None:
        self.applets = applets
        self.atr = atr
        self.security = security
        self.stats = CardStats()
        self.powered = True
        self.selected: Applet | None = None
        self._pending = b""
        self._chain: tuple[tuple[int, int, int, int], bytes] | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ power
    def reset(self) -> None:
        """Warm/cold reset or removal: nothing selected, PIN not verified, buffers dropped."""
        with self._lock:
            self.selected = None
            self._pending = b""
            self._chain = None
            self.security.clear()
            for applet in self.applets:
                applet.reset()

    def power_on(self) -> bytes:
        self.reset()
        self.powered = True
        return self.atr

    def power_off(self) -> None:
        self.reset()
        self.powered = False

    # ------------------------------------------------------------------ APDUs
    def process_apdu(self, apdu: bytes) -> bytes:
        """Answer one command APDU with response data + SW1 SW2. Never raises."""
        with self._lock:
            apdu = bytes(apdu)
            self.stats.apdus += 1
            self.stats.bytes_in += len(apdu)
            try:
                out = self._process(apdu)
            except CardStatus as status:
                out = status.sw.to_bytes(2, "big")
            except Exception:  # an applet bug answers 6F00 instead of killing the reader
                log.exception("card failed on an APDU (INS %02X)", apdu[1] if len(apdu) > 1 else 0)
                self._pending = b""
                out = SW.UNKNOWN.bytes()
            self.stats.bytes_out += len(out)
            return out

    def _process(self, apdu: bytes) -> bytes:
        cmd = Command.parse(apdu)
        if cmd.cla == 0xFF or cmd.cla & 0x60:
            # not an interindustry class we speak (FF is the reader's own pseudo-APDU)
            raise CardStatus(SW.CLA_NOT_SUPPORTED)
        if cmd.ins == Ins.GET_RESPONSE:
            return self._next_piece(cmd)
        self._pending = b""
        header = (cmd.cla & ~0x10, cmd.ins, cmd.p1, cmd.p2)
        if cmd.cla & 0x10:  # command chaining: keep collecting until the last piece
            if self._chain is not None and self._chain[0] != header:
                self._chain = None
                raise CardStatus(SW.CONDITIONS_NOT_SATISFIED)
            collected = (self._chain[1] if self._chain else b"") + cmd.data
            if len(collected) > MAX_CHAIN:
                self._chain = None
                raise CardStatus(SW.WRONG_LENGTH)
            self._chain = (header, collected)
            return SW.OK.bytes()
        if self._chain is not None:
            chained_header, collected = self._chain
            self._chain = None
            if chained_header != header:
                raise CardStatus(SW.CONDITIONS_NOT_SATISFIED)
            cmd = Command(cmd.cla, cmd.ins, cmd.p1, cmd.p2, collected + cmd.data, cmd.le)
        if cmd.ins == Ins.SELECT and cmd.p1 == 0x04:
            return self._respond(self._select(cmd), cmd)
        if self.selected is None:
            raise CardStatus(SW.CONDITIONS_NOT_SATISFIED if cmd.ins != Ins.SELECT
                             else SW.FILE_NOT_FOUND)
        return self._respond(self.selected.handle(cmd), cmd)

    def _select(self, cmd: Command) -> bytes:
        aid = cmd.data
        if len(aid) >= 5:
            for applet in self.applets:
                if applet.aid.startswith(aid):
                    body = applet.select(cmd)
                    if self.selected is not applet:
                        self.selected = applet
                    return body
        raise CardStatus(SW.FILE_NOT_FOUND)  # the current selection stays, as on real cards

    def _respond(self, body: bytes, cmd: Command) -> bytes:
        limit = 256 if cmd.le is None or cmd.le <= 256 else cmd.le
        if len(body) <= limit:
            return body + SW.OK.bytes()
        self._pending = body[limit:]
        return body[:limit] + bytes([0x61, min(len(self._pending), 256) & 0xFF])

    def _next_piece(self, cmd: Command) -> bytes:
        if not self._pending:
            raise CardStatus(SW.CONDITIONS_NOT_SATISFIED)
        size = 256 if cmd.le is None else min(cmd.le, 256)
        body, self._pending = self._pending[:size], self._pending[size:]
        if self._pending:
            return body + bytes([0x61, min(len(self._pending), 256) & 0xFF])
        return body + SW.OK.bytes()
