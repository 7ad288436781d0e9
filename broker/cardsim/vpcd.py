"""The link that puts a simulated card into pcscd's vsmartcard virtual reader (vpcd).

The card is a TCP client of vpcd (127.0.0.1:35963 is reader "Virtual PCD 00 00", 35964 the
second). Every message is a 2-byte big-endian length and a payload; a 1-byte payload from vpcd
is a control code (0 power off, 1 power on, 2 reset, 4 send the ATR), anything longer an APDU
answered with the response APDU. TCP_QUICKACK before each recv avoids ~48 ms of delayed-ACK per
APDU. Closing the socket is a card removal; the link reconnects with backoff if pcscd restarts.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from typing import Any

log = logging.getLogger("broker.cardsim.vpcd")
MAX_FRAME = 65536 + 16


class VpcdLink:
    def __init__(self, card: Any, host: str = "127.0.0.1", port: int = 35963) -> None:
        self.card = card
        self.host, self.port = host, port
        self._stop = threading.Event()
        self._inserted = threading.Event()
        self._inserted.set()
        self._connected = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> VpcdLink:
        self._thread = threading.Thread(target=self._run, name="vpcd-link", daemon=True)
        self._thread.start()
        return self

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def remove(self) -> None:
        """Take the card out of the reader (closes the link)."""
        self._inserted.clear()
        self._close()

    def insert(self) -> None:
        self._inserted.set()

    def stop(self) -> None:
        self._stop.set()
        self._inserted.set()
        self._close()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ------------------------------------------------------------------ loop
    def _close(self) -> None:
        sock, self._sock = self._sock, None
        self._connected.clear()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.card.reset()

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            if hasattr(socket, "TCP_QUICKACK"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("vpcd closed the connection")
            buf += chunk
        return buf

    def _send(self, sock: socket.socket, payload: bytes) -> None:
        sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            self._inserted.wait()
            if self._stop.is_set():
                return
            try:
                sock = socket.create_connection((self.host, self.port), timeout=5)
            except OSError:
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.2
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._connected.set()
            log.info("card inserted in vpcd reader", extra={"port": self.port})
            try:
                self._serve(sock)
            except (OSError, ConnectionError):
                pass
            finally:
                if self._sock is sock:
                    self._close()

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            (length,) = struct.unpack(">H", self._recv_exact(sock, 2))
            payload = self._recv_exact(sock, length) if length else b""
            if length == 1:
                code = payload[0]
                if code in (0, 2):  # power off, reset
                    self.card.reset()
                elif code == 1:
                    self.card.reset()
                elif code == 4:
                    self._send(sock, self.card.atr)
                continue
            if not payload:
                continue
            try:
                response = self.card.process_apdu(payload)
            except Exception:  # a card bug must not kill the reader link
                log.exception("card failed on an APDU")
                response = b"\x6f\x00"
            self._send(sock, response)
