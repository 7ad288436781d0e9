"""Command and response APDUs (ISO 7816-4): chaining for long commands, GET RESPONSE for long
answers, 6Cxx re-issue with the length the card names, and traffic counters for the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from broker.client.errors import ApduError, CardError, CardRemovedError, MalformedResponseError
from broker.errors import BrokerError
from broker.iso7816 import SW

INS_GET_RESPONSE = 0xC0
CLA_CHAINING = 0x10
SHORT_MAX = 255
EXTENDED_MAX = 65535
MAX_RESPONSE = 64 * 1024  # no PIV/CAC object is larger; a card that keeps sending is broken


class Connection(Protocol):
    """What the client needs of a card connection (PC/SC or the in-process simulator)."""

    atr: bytes

    def transmit(self, apdu: bytes) -> bytes: ...

    def disconnect(self) -> None: ...


@dataclass(frozen=True)
class CommandApdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None  # None: no Le field; 0: "up to 256" (short) / 65536 (extended)

    def encode(self, extended: bool = False) -> bytes:
        """Short encoding (Lc ≤ 255, Le ≤ 256) unless ``extended`` or the data needs it."""
        header = bytes([self.cla, self.ins, self.p1, self.p2])
        n = len(self.data)
        if n > EXTENDED_MAX:
            raise CardError("card_command_too_long", "command data over 65535 bytes")
        if self.le is not None and not 0 <= self.le <= 65536:
            raise ValueError("Le out of range")
        if not extended and n <= SHORT_MAX and (self.le is None or self.le <= 256):
            body = bytes([n]) + self.data if n else b""
            if self.le is not None:
                body += bytes([self.le & 0xFF])
            return header + body
        body = b"\x00" + n.to_bytes(2, "big") + self.data if n else b""
        if self.le is not None:
            le = (self.le & 0xFFFF).to_bytes(2, "big")
            body += le if n else b"\x00" + le
        return header + body

    def with_le(self, le: int) -> CommandApdu:
        return CommandApdu(self.cla, self.ins, self.p1, self.p2, self.data, le)


@dataclass(frozen=True)
class ResponseApdu:
    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == SW.OK

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise MalformedResponseError(message="the card's answer is shorter than a status word")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))


class ApduProtocol:
    """Sends commands over a connection and counts APDUs and bytes in both directions."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.apdus = 0
        self.bytes_out = 0
        self.bytes_in = 0

    def _raw(self, apdu: bytes) -> ResponseApdu:
        self.apdus += 1
        self.bytes_out += len(apdu)
        try:
            raw = self.connection.transmit(apdu)
        except CardError:
            raise
        except BrokerError as exc:
            # the simulator's own "card removed" becomes the client's, so callers catch one type
            if exc.code == CardRemovedError.code:
                raise CardRemovedError(message=exc.message) from None
            raise
        self.bytes_in += len(raw)
        return ResponseApdu.parse(raw)

    def transmit(self, command: CommandApdu) -> ResponseApdu:
        """Send ``command`` (chained when its data exceeds 255 bytes) and collect the whole
        answer: 6Cxx re-sends with the right Le, 61xx is followed by GET RESPONSE.
        A chained part answered with an error status ends the exchange with that status."""
        data = command.data
        chunks = [data[i:i + SHORT_MAX] for i in range(0, len(data), SHORT_MAX)] or [b""]
        for chunk in chunks[:-1]:
            part = CommandApdu(command.cla | CLA_CHAINING, command.ins, command.p1, command.p2,
                               chunk)
            resp = self._raw(part.encode())
            if not resp.ok:
                return resp
        last = CommandApdu(command.cla, command.ins, command.p1, command.p2, chunks[-1],
                           command.le)
        resp = self._raw(last.encode())
        if resp.sw1 == 0x6C:  # wrong Le: the card names the right one
            resp = self._raw(last.with_le(resp.sw2).encode())
        body = resp.data
        while resp.sw1 == 0x61:
            resp = self._raw(CommandApdu(0x00, INS_GET_RESPONSE, 0, 0, b"", resp.sw2).encode())
            body += resp.data
            if len(body) > MAX_RESPONSE:
                raise MalformedResponseError(message="the card's answer is too long")
        return ResponseApdu(body, resp.sw)

    def send(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
             le: int | None = 0) -> ResponseApdu:
        """Shorthand for :meth:`transmit` of ``CommandApdu(cla, ins, p1, p2, data, le)``."""
        return self.transmit(CommandApdu(cla, ins, p1, p2, data, le))

    def check(self, resp: ResponseApdu, what: str) -> bytes:
        """The answer's data; ApduError carrying the status word unless it is 9000."""
        if resp.sw != SW.OK:
            raise ApduError(resp.sw, what)
        return resp.data
