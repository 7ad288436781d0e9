"""One bounded HTTP exchange, shared by the revocation fetcher (CRL, OCSP) and AIA caIssuers.

``timeout`` bounds the whole exchange, not each socket read: a watchdog shuts the socket when
it runs out, so a server that trickles one byte a second is cut at the deadline instead of
holding a login for as long as it keeps trickling. Answers over ``max_bytes`` are refused (by
Content-Length before reading, else while reading). Redirects are not followed.
"""

from __future__ import annotations

import http.client
import socket
import threading
from urllib.parse import urlsplit


class TransferError(Exception):
    """The URL could not be fetched completely, in time and within the size bound."""


def bounded_exchange(url: str, body: bytes | None, content_type: str | None, timeout: float,
                     max_bytes: int, schemes: tuple[str, ...] = ("http", "https")) -> bytes:
    """HTTP GET (``body`` None) or POST of ``url``; TransferError on any failure."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise TransferError(f"unsupported URL (only {'/'.join(schemes)}): {url[:60]!r}")
    try:
        port = parts.port
    except ValueError:
        raise TransferError(f"bad port in URL: {url[:60]!r}") from None
    cls = http.client.HTTPSConnection if parts.scheme.lower() == "https" \
        else http.client.HTTPConnection
    conn = cls(parts.hostname, port, timeout=timeout)
    timed_out = threading.Event()
    # Our own reference: http.client drops conn.sock once an HTTP/1.0 answer's headers are read
    # (will_close), while the response keeps reading from the same socket.
    sockets: list[socket.socket] = []

    def cut() -> None:
        timed_out.set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(timeout, cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        if conn.sock is not None:
            sockets.append(conn.sock)
        if timed_out.is_set():
            cut()
        headers = {"Content-Type": content_type} if content_type else {}
        conn.request("POST" if body is not None else "GET",
                     (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     body=body, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise TransferError(f"{url}: HTTP {resp.status}")
        length = resp.getheader("content-length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise TransferError(f"{url}: answer of {length} bytes is larger than {max_bytes} "
                                "bytes")
        data = resp.read(max_bytes + 1)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        if timed_out.is_set():
            raise TransferError(f"{url}: no complete answer within {timeout:g} s") from None
        raise TransferError(f"{url}: {exc}") from None
    finally:
        watchdog.cancel()
        conn.close()
    if timed_out.is_set():
        raise TransferError(f"{url}: no complete answer within {timeout:g} s")
    if len(data) > max_bytes:
        raise TransferError(f"{url}: answer larger than {max_bytes} bytes")
    return data
