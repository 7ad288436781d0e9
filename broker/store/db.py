"""Engine, sessions and transactions with retries (no Twisted here).

Every unit of database work is a function ``fn(session) -> T`` run inside one transaction by
:meth:`Database.transaction` (blocking: the CLI calls it directly, the server through
``BrokerContext.call`` in its thread pool, so the reactor thread never waits on the database).
The login hot path uses :meth:`Database.run` instead: ``fn(connection)`` with SQLAlchemy Core
statements built once (no ORM session, identity map or flush per call).
Serialization failures, deadlocks and SQLite's "database is locked" are retried with
jittered backoff, like Synapse's storage layer.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from broker.codes import Code
from broker.errors import BrokerError
from broker.metrics import TRANSACTION_RETRIES

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)

_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
#: Execution option marking the connections of read-only transactions.
READ_ONLY = "broker_read_only"
# connection exceptions (class 08), admin/crash shutdown, "cannot connect now" (starting up)
_UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03"}
#: unique_violation (PostgreSQL's SQLSTATE; SQLite reports it by extended result code).
_UNIQUE_SQLSTATE = "23505"
_SQLITE_UNIQUE = {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}
RETRY_AFTER_S = 2


class DatabaseUnavailable(BrokerError):
    """The database cannot be reached or dropped the connection: the call changed nothing
    (its transaction was rolled back) and may be retried. Answered 503 with Retry-After."""

    code = Code.SERVICE_UNAVAILABLE

    def __init__(self) -> None:
        super().__init__(message="The broker cannot reach its database right now; try again "
                                 "shortly.", details={"retry_after_s": RETRY_AFTER_S})


def create_broker_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine for a SQLite or PostgreSQL URL with the settings the broker relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # No folder is made here: a missing parent is an error the caller reports (a typo in
        # the URL must not silently create directories; `broker migrate` makes the state folder).
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Python's sqlite3 opens transactions lazily; take control so BEGIN IMMEDIATE works.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # SQLAlchemy's SQLite compiler drops table hints; this engine's renders them, so a
        # statement can name its index (``with_hint(table, "INDEXED BY ix_…", "sqlite")``).
        class _HintingCompiler(engine.dialect.statement_compiler):  # type: ignore[name-defined,misc]
            def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
                return text

        engine.dialect.statement_compiler = _HintingCompiler

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # One writer at a time, taken up front: no lock upgrades, no SQLITE_BUSY mid-way.
            # Read-only transactions (Database.read) never take the write lock: with WAL they
            # read a snapshot while a writer works.
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # READ COMMITTED whatever the server's default: the single-use UPDATEs and the counter
    # upserts are written for it, and reads rely on it to run without a transaction.
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size,
                           pool_recycle=1800, connect_args={"connect_timeout": 5},
                           isolation_level="READ COMMITTED")
    _ping_after_idle(engine, PING_AFTER_IDLE_S)
    return engine


#: A pooled connection idle this long is pinged before use (one round trip); busier ones are
#: not: under load a ping per transaction would cost a round trip per statement or two.
PING_AFTER_IDLE_S = 1.0


def _ping_after_idle(engine: Engine, idle_s: float) -> None:
    """Pessimistic disconnect handling for connections that sat idle (``pool_pre_ping`` pings
    every checkout). A connection that went bad while busy fails its next statement instead:
    SQLAlchemy then invalidates the whole pool and the call answers 503 (DatabaseUnavailable),
    so the pool still recovers from a database restart without one."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_s:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:  # any failure: the pool drops it and connects afresh
            raise DisconnectionError() from exc


def is_unavailable(exc: BaseException) -> bool:
    """True when the database is unreachable or the connection broke (not a bad statement)."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
    # psycopg reports refused/failed connections and lost servers without a SQLSTATE
    return isinstance(exc, OperationalError | InterfaceError) and \
        type(orig).__module__.startswith("psycopg")


def is_unique_violation(exc: BaseException) -> bool:
    """True when ``exc`` is a unique or primary-key violation: by SQLSTATE 23505 on
    PostgreSQL, by SQLite's extended result code (SQLITE_CONSTRAINT_UNIQUE or _PRIMARYKEY),
    never by the wording of the driver's message."""
    if not isinstance(exc, IntegrityError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return bool(sqlstate == _UNIQUE_SQLSTATE)
    return getattr(orig, "sqlite_errorname", None) in _SQLITE_UNIQUE


def is_retryable(exc: BaseException) -> bool:
    """True for transient failures worth retrying the whole transaction for."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if sqlstate in _RETRYABLE_SQLSTATES:
            return True
        if isinstance(exc, OperationalError) and "database is locked" in str(orig):
            return True
    return False


class Database:
    """The broker's handle on its store: engine, session factory, retries."""

    def __init__(self, url: str, *, pool_size: int = 10, retries: int = 5) -> None:
        self.url = url
        self.engine = create_broker_engine(url, pool_size=pool_size)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        read_options: dict[str, Any] = {READ_ONLY: True}
        if self.engine.dialect.name == "postgresql":
            # A read runs in autocommit: at READ COMMITTED (see create_broker_engine) each
            # statement sees its own snapshot with or without a transaction, so BEGIN and
            # COMMIT were two round trips that bought nothing (a single-statement read went
            # from three round trips to one).
            read_options["isolation_level"] = "AUTOCOMMIT"
        self.read_engine = self.engine.execution_options(**read_options)
        #: Writes that are one statement on PostgreSQL (atomic by itself) run in autocommit:
        #: no BEGIN and COMMIT round trips. SQLite keeps its write transaction (BEGIN IMMEDIATE
        #: is its write lock, and such a write may need several statements there).
        self.autocommit_engine = (self.engine.execution_options(isolation_level="AUTOCOMMIT")
                                  if self.engine.dialect.name == "postgresql" else self.engine)
        self.read_sessionmaker = sessionmaker(self.read_engine, expire_on_commit=False)
        self.retries = retries
        #: SQLite has one writer at a time (BEGIN IMMEDIATE). Threads of this process queue
        #: for it here, each woken the moment the writer before it commits; without this they
        #: poll in SQLite's busy handler, which sleeps 1, 2, 5, 10 … 100 ms between tries, so
        #: a busy thread pool turned each wait into tens of milliseconds of latency. Other
        #: processes sharing the file still meet the busy handler. None on PostgreSQL.
        self.writer = threading.RLock() if self.engine.dialect.name == "sqlite" else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def transaction(self, fn: Callable[[Session], T], *, name: str | None = None) -> T:
        """Run ``fn`` in one transaction, committing on success; retry transient failures.

        ``name`` (default: ``fn``'s name) names the transaction in the logs and the
        ``broker_db_transaction_retries_total`` metric, as Synapse's ``runInteraction`` does:
        the use case is a named function that receives the session, not a closure that passes
        results out through side channels."""
        return self._run(self.sessionmaker, fn, name, write=True)

    def read(self, fn: Callable[[Session], T], *, name: str | None = None) -> T:
        """Run ``fn`` in a transaction that only reads (on SQLite it takes no write lock)."""
        return self._run(self.read_sessionmaker, fn, name)

    def run(self, fn: Callable[[Connection], T], *, read_only: bool = False,
            autocommit: bool = False, name: str | None = None) -> T:
        """Run ``fn`` with a Core connection in one transaction, committing on success, with
        the same retries and naming as :meth:`transaction`; ``read_only`` as :meth:`read` (no
        SQLite write lock). For hot paths whose statements are built once: no ORM session.

        ``autocommit``: on PostgreSQL ``fn`` writes with ONE statement (a statement is atomic
        by itself; reads around it may follow), so it runs without BEGIN and COMMIT, two round
        trips fewer. SQLite runs ``fn`` in its write transaction as usual."""
        engine = (self.read_engine if read_only
                  else self.autocommit_engine if autocommit else self.engine)
        return self._run(engine.begin, fn, name, write=not read_only)

    def read_then_write(self, read: Callable[[Connection], R],
                        write: Callable[[Connection, R], T], *, autocommit: bool = False,
                        name: str | None = None) -> T:
        """``write(conn, read(conn))``: on PostgreSQL the read runs first in autocommit (at
        READ COMMITTED each statement sees its own snapshot and a read takes no lock, so inside
        the write transaction it saw nothing more), then the write in its transaction, or on
        the same connection when the write is one statement (``autocommit``, as :meth:`run`
        says). On SQLite both run in one write transaction (BEGIN IMMEDIATE: the read under the
        write lock, in process). Either may raise to refuse: nothing is written then."""
        if self.dialect == "postgresql" and not autocommit:
            found = self.run(read, read_only=True, name=name)
            return self.run(lambda conn: write(conn, found), name=name)
        # SQLite: one transaction; PostgreSQL in autocommit: one connection for both.
        return self.run(lambda conn: write(conn, read(conn)), autocommit=autocommit, name=name)

    def _run(self, factory: Any, fn: Callable[[Any], T], name: str | None,
             write: bool = False) -> T:
        name = name or getattr(fn, "__name__", None) or "transaction"
        attempt = 0
        writer = self.writer if write else None
        while True:
            # Waits as long as SQLite's own busy timeout would (30 s), then goes on to it. The
            # queue is held for one attempt: released before a retry's sleep.
            queued = writer is not None and writer.acquire(timeout=30)
            try:
                try:
                    with factory() as handle:
                        if isinstance(handle, Connection):  # engine.begin(): already in one
                            return fn(handle)
                        with handle.begin():
                            return fn(handle)
                finally:
                    if writer is not None and queued:
                        writer.release()
            except (DBAPIError, PoolTimeout) as exc:
                if is_unavailable(exc):
                    log.warning("database unavailable",
                                extra={"transaction": name,
                                       "error": type(getattr(exc, "orig", exc)).__name__})
                    raise DatabaseUnavailable() from exc
                if attempt >= self.retries or not is_retryable(exc):
                    raise
                attempt += 1
                TRANSACTION_RETRIES.labels(name).inc()
                delay = min(0.5, 0.01 * (2 ** attempt)) * (0.5 + random.random())
                log.info("retrying transaction after transient failure",
                         extra={"transaction": name, "attempt": attempt})
                time.sleep(delay)

    def ping(self) -> None:
        """Raise if the database cannot be reached (used by /readyz)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
