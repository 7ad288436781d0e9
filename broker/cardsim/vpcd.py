"""The link that puts a simulated card into pcscd's vsmartcard virtual reader (vpcd).

The card is a TCP client of vpcd: port 35963 is reader "Virtual PCD 00 00", 35964 "Virtual PCD
00 01". Every message is a 2-byte big-endian length and a payload; a 1-byte payload from vpcd is
a control code (0 power off, 1 power on, 2 reset, 4 send the ATR), a longer one is a command APDU
answered with the response APDU. ``TCP_QUICKACK`` before each ``recv`` avoids the ~48 ms
delayed-ACK stall per APDU (vpcd writes length and payload separately). Closing the socket is a
card removal; when pcscd/vpcd is not there (yet, or restarted) the link retries with backoff.
vpcd listens on all interfaces: run this only on machines whose port 35963 is not exposed.
"""

from __future__ import annotations

import enum
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable

from broker.cardsim.card import VirtualCard
from broker.iso7816 import SW

log = logging.getLogger("broker.cardsim.vpcd")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 35963
MAX_FRAME = 65536 + 16  # an extended APDU plus header; anything longer is malformed
# vpcd notices a closed card socket only at its next presence poll (~0.44 s); a card that
# connects again sooner is never seen by pcscd, so a re-insertion on a port waits this long.
REINSERT_GAP = 1.0
_last_close: dict[tuple[str, int], float] = {}
_last_close_lock = threading.Lock()


class Control(enum.IntEnum):
    POWER_OFF = 0
    POWER_ON = 1
    RESET = 2
    GET_ATR = 4


def reader_name(port: int) -> str:
    """pcscd's name for the vpcd reader on ``port`` (35963 → "Virtual PCD 00 00")."""
    return f"Virtual PCD 00 {port - DEFAULT_PORT:02d}"


class VpcdLink:
    """Runs ``card`` in the vpcd reader from a background thread until :meth:`stop`.

    ``on_state(connected: bool)`` is called from the link thread when the card enters or
    leaves the reader (connection made or lost).
    """

    def __init__(self, card: VirtualCard, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 *, on_state: Callable[[bool], None] | None = None,
                 max_backoff: float = 2.0, reinsert_gap: float = REINSERT_GAP) -> None:
        self.card = card
        self.host, self.port = host, port
        self.on_state = on_state
        self.max_backoff = max_backoff
        self.reinsert_gap = reinsert_gap
        self._stop = threading.Event()
        self._inserted = threading.Event()
        self._inserted.set()
        self._connected = threading.Event()
        self._sock_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def reader(self) -> str:
        return reader_name(self.port)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ------------------------------------------------------------------ control
    def start(self) -> VpcdLink:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"vpcd-{self.port}",
                                            daemon=True)
            self._thread.start()
        return self

    def wait_connected(self, timeout: float = 10.0) -> str | None:
        """The reader name once the link is up, or None after ``timeout`` seconds."""
        return self.reader if self._connected.wait(timeout) else None

    def remove(self) -> None:
        """Take the card out of the reader (closes the link; no reconnect until insert())."""
        self._inserted.clear()
        self._close()
        self._set_state(False)

    def insert(self) -> None:
        self._inserted.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Remove the card and end the thread."""
        self._stop.set()
        self._inserted.set()
        self._close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> VpcdLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ loop
    def _close(self) -> None:
        with self._sock_lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with _last_close_lock:
                _last_close[(self.host, self.port)] = time.monotonic()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _set_state(self, connected: bool) -> None:
        with self._state_lock:
            if connected == self._connected.is_set():
                return
            if connected:
                self._connected.set()
            else:
                self._connected.clear()
        if self.on_state is not None:
            try:
                self.on_state(connected)
            except Exception:
                log.exception("on_state callback failed")

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            self._inserted.wait()
            if self._stop.is_set():
                break
            with _last_close_lock:
                closed_at = _last_close.get((self.host, self.port))
            if closed_at is not None:
                gap = closed_at + self.reinsert_gap - time.monotonic()
                if gap > 0 and self._stop.wait(gap):
                    break
            try:
                sock = socket.create_connection((self.host, self.port), timeout=3)
            except OSError as exc:
                log.debug("vpcd %s:%d not reachable (%s); retrying in %.1fs", self.host,
                          self.port, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.1
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._sock_lock:
                self._sock = sock
            self.card.power_on()
            self._set_state(True)
            log.info("card inserted in %s (vpcd %s:%d)", self.reader, self.host, self.port)
            try:
                self._serve(sock)
            except (OSError, ConnectionError) as exc:
                if not self._stop.is_set() and self._inserted.is_set():
                    log.info("vpcd link lost (%s); reconnecting", exc)
            finally:
                self._close()
                self.card.power_off()
                self._set_state(False)
        self._set_state(False)

    @staticmethod
    def _recv_exact(sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if hasattr(socket, "TCP_QUICKACK"):
                # delayed ACKs turn vpcd's two writes into a 40+ ms stall per APDU
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("vpcd closed the connection")
            buf += chunk
        return bytes(buf)

    @staticmethod
    def _send(sock: socket.socket, payload: bytes) -> None:
        sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            (length,) = struct.unpack(">H", self._recv_exact(sock, 2))
            payload = self._recv_exact(sock, length) if length else b""
            reply = self.answer(payload)
            if reply is not None:
                self._send(sock, reply)

    def answer(self, payload: bytes) -> bytes | None:
        """What the card sends back for one vpcd frame (None: nothing to send)."""
        if len(payload) == 1:
            code = payload[0]
            if code == Control.GET_ATR:
                return self.card.atr
            if code == Control.POWER_OFF:
                self.card.power_off()
            elif code in (Control.POWER_ON, Control.RESET):
                self.card.power_on()
            else:
                log.warning("unknown vpcd control code %d ignored", code)
            return None
        if len(payload) < 4 or len(payload) > MAX_FRAME:
            log.warning("malformed vpcd frame of %d bytes answered 6F00", len(payload))
            return SW.UNKNOWN.bytes()
        return self.card.process_apdu(payload)
