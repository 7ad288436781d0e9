"""Engine, sessions and transactions with retries; an async face for the reactor.

Every unit of database work is a function ``fn(session) -> T`` run inside one transaction by
:meth:`Database.transaction` (blocking, for the CLI and worker threads) or :meth:`Database.run`
(returns a Deferred; the work runs in a thread pool so the reactor thread never waits on the
database). Serialization failures, deadlocks and SQLite's "database is locked" are retried with
jittered backoff, like Synapse's storage layer.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
log = logging.getLogger(__name__)

_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def create_broker_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine for a SQLite or PostgreSQL URL with the settings the broker relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
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

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # One writer at a time, taken up front: no lock upgrades, no SQLITE_BUSY mid-way.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                         pool_recycle=1800, connect_args={"connect_timeout": 5})


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
    """The broker's handle on its store: engine, session factory, thread pool."""

    def __init__(self, url: str, *, pool_size: int = 10, retries: int = 5,
                 threadpool: Any = None) -> None:
        self.url = url
        self.engine = create_broker_engine(url, pool_size=pool_size)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.retries = retries
        self.threadpool = threadpool

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def transaction(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one transaction, committing on success; retry transient failures."""
        attempt = 0
        while True:
            try:
                with self.sessionmaker() as session, session.begin():
                    return fn(session)
            except DBAPIError as exc:
                if attempt >= self.retries or not is_retryable(exc):
                    raise
                attempt += 1
                delay = min(0.5, 0.01 * (2 ** attempt)) * (0.5 + random.random())
                log.info("retrying transaction after transient failure",
                         extra={"attempt": attempt})
                time.sleep(delay)

    def run(self, fn: Callable[[Session], T]) -> Any:
        """Run ``fn`` in a transaction in the thread pool; a Deferred firing with its result."""
        from twisted.internet import reactor, threads

        if self.threadpool is None:
            return threads.deferToThread(self.transaction, fn)
        return threads.deferToThreadPool(reactor, self.threadpool, self.transaction, fn)

    def ping(self) -> None:
        """Raise if the database cannot be reached (used by /readyz)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
