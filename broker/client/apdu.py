"""Command and response APDUs: chaining for long commands, GET RESPONSE for long answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.client.errors import ApduError, MalformedResponseError

INS_GET_RESPONSE = 0xC0
MAX_RESPONSE = 64 * 1024


@dataclass(frozen=True)
class ResponseApdu:
    data: bytes
    sw: int

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise MalformedResponseError(message="the card's answer is shorter than a status word")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))


class ApduProtocol:
    """Sends commands over a connection (``transmit(bytes) -> bytes``) and counts traffic."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.apdus = 0
        self.bytes_out = 0
        self.bytes_in = 0

    def _raw(self, apdu: bytes) -> ResponseApdu:
        self.apdus += 1
        self.bytes_out += len(apdu)
        raw = self.connection.transmit(apdu)
        self.bytes_in += len(raw)
        return ResponseApdu.parse(raw)

    def send(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
             le: int | None = 0) -> ResponseApdu:
        """Send with chaining (data over 255 bytes) and follow 61xx with GET RESPONSE."""
        chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
        for chunk in chunks[:-1]:
            resp = self._raw(bytes([cla | 0x10, ins, p1, p2, len(chunk)]) + chunk)
            if resp.sw != 0x9000:
                return resp
        last = chunks[-1]
        apdu = bytes([cla, ins, p1, p2]) + (bytes([len(last)]) + last if last else b"")
        if le is not None:
            apdu += bytes([le & 0xFF])
        resp = self._raw(apdu)
        if resp.sw >> 8 == 0x6C:  # wrong Le: re-issue with the length the card names
            resp = self._raw(apdu[:-1] + bytes([resp.sw & 0xFF]))
        body = resp.data
        while resp.sw >> 8 == 0x61:
            resp = self._raw(bytes([0x00, INS_GET_RESPONSE, 0x00, 0x00, resp.sw & 0xFF]))
            body += resp.data
            if len(body) > MAX_RESPONSE:
                raise MalformedResponseError(message="the card's answer is too long")
        return ResponseApdu(body, resp.sw)

    def check(self, resp: ResponseApdu, what: str) -> bytes:
        if resp.sw != 0x9000:
            raise ApduError(resp.sw, what)
        return resp.data
