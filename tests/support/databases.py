"""Test databases: a SQLite file per test, or a fresh schema in the real PostgreSQL.

A migrated SQLite database is a copy of one file migrated once per run (migrated_sqlite_template).

PostgreSQL is found at $BROKER_TEST_POSTGRES_URL (default the machine's trust-auth server,
database `test`). Each test gets its own schema, so tests (and parallel sessions) never see each
other's rows; when the server is absent the PostgreSQL variants skip with the reason.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text

from tests.support.require import unavailable

POSTGRES_URL = os.environ.get("BROKER_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")

_pg_problem: str | None | bool = False  # False = not probed yet


def postgres_problem() -> str | None:
    """None when PostgreSQL is reachable, else why not (probed once per run)."""
    global _pg_problem
    if _pg_problem is False:
        try:
            engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_problem = None
        except Exception as exc:  # any failure means: skip, with the reason
            _pg_problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return _pg_problem  # type: ignore[return-value]


def require_postgres() -> None:
    problem = postgres_problem()
    if problem:
        unavailable("postgres", f"PostgreSQL not reachable at {POSTGRES_URL} ({problem}); "
                    "set BROKER_TEST_POSTGRES_URL to run these tests")


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A URL whose search_path is a new, empty schema; dropped afterwards."""
    require_postgres()
    schema = "t_" + secrets.token_hex(6)
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'broker.db'}"
    else:
        with postgres_schema_url() as url:
            yield url


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (None for any other URL)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url:
        return None
    return Path(url[len(prefix):])


def migrated_sqlite_template(folder: Path) -> Path:
    """A SQLite database migrated to head, checkpointed so the file alone holds everything."""
    from broker.store import migrate

    path = folder / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path


def copy_sqlite_template(template: Path, target: Path) -> None:
    shutil.copyfile(template, target)
