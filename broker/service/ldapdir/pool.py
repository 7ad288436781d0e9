"""Connections to an LDAP server: TLS set up, the service account's bind, a small pool per
directory, every wait bounded by one deadline per lookup, and server trouble turned into
``directory_unavailable``."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from broker.codes import Code
from broker.service.errors import ServiceError
from broker.service.ldapdir.certmap import unavailable
from broker.service.ldapdir.settings import POOL_SIZE, LdapSettings

# --------------------------------------------------------------------------- connections

class Deadline:
    """One bound of ``timeout_s`` for a whole lookup: the connect, TLS handshake and bind of a
    new connection, each search, and the retry after a dropped pooled connection all take
    from it, so a lookup never waits longer than ``timeout_s`` in all."""

    #: Less than this left is no time for another round trip: unavailable at once.
    MARGIN_S = 0.01

    def __init__(self, s: LdapSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = s
        self.clock = clock
        self.end = clock() + s.timeout_s

    def left(self) -> float:
        """Seconds left; directory_unavailable when they are spent."""
        left = self.end - self.clock()
        if left < self.MARGIN_S:
            raise unavailable(self.settings, f"no answer within {self.settings.timeout_s} s")
        return left


def read_bind_password(path: str) -> str:
    """The service account's password; refused when others may read the file (like ssh)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ServiceError(Code.DIRECTORY_UNAVAILABLE,
                           f"cannot read bind_password_file {path}: "
                           f"{exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ServiceError(Code.DIRECTORY_UNAVAILABLE,
                               f"bind_password_file {path} is readable by group or others "
                               f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return data.decode("utf-8").rstrip("\r\n")


def _connect(s: LdapSettings, wait_s: float | None = None) -> Any:
    """A new connection with TLS set up (ldaps or StartTLS), not yet bound; its connect and
    synchronous calls wait at most ``wait_s`` (default ``timeout_s``)."""
    import ldap

    wait = float(s.timeout_s if wait_s is None else wait_s)
    conn = ldap.initialize(s.url)
    conn.timeout = wait  # every synchronous call waits at most this long for a result
    conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
    conn.set_option(ldap.OPT_REFERRALS, 0)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, wait)
    conn.set_option(ldap.OPT_TIMEOUT, wait)
    conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
    if s.ca_file:
        conn.set_option(ldap.OPT_X_TLS_CACERTFILE, s.ca_file)
    conn.set_option(ldap.OPT_X_TLS_PROTOCOL_MIN, ldap.OPT_X_TLS_PROTOCOL_TLS1_2)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    if s.start_tls:
        conn.start_tls_s()
    return conn


def _bind(s: LdapSettings, conn: Any) -> None:
    if s.bind_dn and s.bind_password_file:
        conn.simple_bind_s(s.bind_dn, read_bind_password(s.bind_password_file))
    else:
        conn.simple_bind_s("", "")


class _Pool:
    """Bound connections of one directory's settings (at most POOL_SIZE idle).

    libldap bounds the TCP connect (OPT_NETWORK_TIMEOUT) and each operation (the timeout of
    python-ldap's synchronous calls) but not the TLS handshake of ldaps:// or StartTLS: a
    server that accepts and never answers would hold the calling thread forever. So a new
    connection is opened on a connector thread of its own while the caller waits at most
    ``timeout_s``; while an attempt its caller gave up on still hangs, further callers fail
    at once instead of starting more (at most one stuck thread per directory's settings).
    Attempts that merely overlap (a burst of first logins) all proceed."""

    def __init__(self, s: LdapSettings) -> None:
        self.settings = s
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        #: Threads whose caller stopped waiting (a silent server): while one lives, new
        #: connections are not attempted, so at most one thread per directory hangs.
        self._stuck: list[threading.Thread] = []

    def bounded(self, fn: Callable[[], Any], keep: Callable[[Any], None] | None = None,
                deadline: Deadline | None = None) -> Any:
        """``fn()`` on a thread of its own while the caller waits at most what is left of
        ``deadline`` (a new one of ``timeout_s`` when none is given); while an earlier call
        its caller gave up on still hangs, fail at once (concurrent calls that are merely
        running proceed). A late result goes to ``keep``."""
        s = self.settings
        wait = (deadline or Deadline(s)).left()
        box: dict[str, Any] = {}
        taken = threading.Event()
        done = threading.Event()

        def call() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                box["error"] = exc
            with self._lock:
                if taken.is_set() and "value" in box and keep is not None:
                    keep(box.pop("value"))
            done.set()

        with self._lock:
            self._stuck = [t for t in self._stuck if t.is_alive()]
            if self._stuck:
                raise unavailable(s, "an earlier connection attempt is still unanswered")
            worker = threading.Thread(target=call, name=f"ldap-{s.directory_id}", daemon=True)
        worker.start()
        if not done.wait(wait):
            with self._lock:
                taken.set()
                self._stuck.append(worker)  # its caller gave up: the next ones fail at once
            raise unavailable(s, f"no answer within {s.timeout_s} s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _open(self, deadline: Deadline) -> Any:
        wait = deadline.left()

        def connect() -> Any:
            conn = _connect(self.settings, wait)
            _bind(self.settings, conn)
            return conn

        def keep(conn: Any) -> None:  # late, but good (called under the lock)
            if len(self._idle) < POOL_SIZE:
                self._idle.append(conn)

        return self.bounded(connect, keep, deadline)

    @contextmanager
    def connection(self, deadline: Deadline | None = None) -> Iterator[Any]:
        """A bound connection: an idle one, or a new one opened within ``deadline``."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open(deadline or Deadline(self.settings))
        ok = False
        try:
            yield conn
            ok = True
        finally:
            if ok:
                with self._lock:
                    if len(self._idle) < POOL_SIZE:
                        self._idle.append(conn)
                        conn = None
            if conn is not None:
                try:
                    conn.unbind_s()
                except Exception:  # noqa: BLE001 - the connection is being dropped anyway
                    pass

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            try:
                conn.unbind_s()
            except Exception:  # noqa: BLE001
                pass


def _ldap_call(s: LdapSettings, fn: Callable[[], Any]) -> Any:
    """Run an LDAP call; server trouble becomes directory_unavailable (never a traceback)."""
    import ldap

    try:
        return fn()
    except ServiceError:
        raise
    except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR, ldap.UNAVAILABLE,
            ldap.BUSY, ldap.TIMELIMIT_EXCEEDED) as exc:
        raise unavailable(s, _describe(exc)) from None
    except ldap.INVALID_CREDENTIALS:
        raise unavailable(s, "the service account's bind was refused") from None
    except ldap.LDAPError as exc:
        raise unavailable(s, _describe(exc)) from None
    except (ValueError, OSError) as exc:  # libldap refused the TLS setup (e.g. ca_file)
        raise unavailable(s, f"TLS setup failed ({type(exc).__name__}: {exc}); check "
                          "ca_file") from None


def _describe(exc: Exception) -> str:
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    text = info.get("desc", type(exc).__name__)
    if info.get("info"):
        text += f": {info['info']}"
    return str(text)[:300]


