"""Test databases: a SQLite file per test, or a fresh schema in the real PostgreSQL.

A migrated database is a copy of one migrated once per run: a SQLite file copied
(migrated_sqlite_template), a PostgreSQL schema recreated from a pg_dump of a migrated template
schema (clone_postgres_template) — one round trip instead of the migrations' dozens.

PostgreSQL is found at $BROKER_TEST_POSTGRES_URL (default the machine's trust-auth server,
database `test`). Each test gets its own schema, so tests (and parallel sessions) never see each
other's rows; when the server is absent the PostgreSQL variants skip with the reason.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

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
        _drop_schema(admin, schema)
        admin.dispose()


def _drop_schema(admin: Any, schema: str, attempts: int = 5) -> None:
    """DROP SCHEMA … CASCADE, again after a deadlock or a lock wait: a broker process that is
    just stopping (or another run's DROP on the shared server) may still hold a lock on one of
    the schema's tables, and PostgreSQL then picks the DROP as the deadlock's victim."""
    from sqlalchemy.exc import OperationalError

    for attempt in range(attempts):
        try:
            with admin.connect() as conn:
                conn.execute(text("SET lock_timeout = '5s'"))
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            return
        except OperationalError as exc:  # 40P01 deadlock_detected, 55P03 lock_not_available
            code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
            if code not in ("40P01", "55P03") or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


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


def postgres_schema(url: str) -> str | None:
    """The schema a postgres_schema_url() URL puts first on the search path."""
    marker = "options=" + quote("-csearch_path=")
    if marker not in url:
        return None
    return unquote(url.split(marker, 1)[1].split("&", 1)[0])


def libpq_url() -> str:
    """POSTGRES_URL as libpq (psql, pg_dump, psycopg.connect) spells it."""
    from sqlalchemy.engine import make_url

    return make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(
        hide_password=False)


_SCHEMA_TOKEN = "@@schema@@"
_pg_template: str | None = None


def postgres_template_sql() -> str:
    """SQL that recreates a schema migrated to head (tables, constraints, indexes, sequences,
    rows) in the schema named by _SCHEMA_TOKEN: a pg_dump of one schema migrated per run."""
    global _pg_template
    if _pg_template is None:
        from broker.store import migrate

        with postgres_schema_url() as url:
            migrate.upgrade(url)
            schema = postgres_schema(url)
            assert schema is not None
            dump = subprocess.run(
                ["pg_dump", "--dbname", libpq_url(), "--schema", schema, "--no-owner",
                 "--no-privileges", "--inserts"],
                capture_output=True, text=True, check=True, timeout=60).stdout
        lines = [line for line in dump.splitlines()
                 # psql meta-commands (\restrict) and the schema itself (the caller made it)
                 if not line.startswith("\\") and line != f"CREATE SCHEMA {schema};"]
        _pg_template = "\n".join(lines).replace(schema, _SCHEMA_TOKEN)
    return _pg_template


def clone_postgres_template(url: str) -> None:
    """Bring the (empty) schema of ``url`` to head by replaying the template's dump; the
    migrations themselves when pg_dump is not there."""
    import psycopg

    from broker.store import migrate

    schema = postgres_schema(url)
    if schema is None or shutil.which("pg_dump") is None:
        migrate.upgrade(url)
        return
    sql = postgres_template_sql().replace(_SCHEMA_TOKEN, schema)
    with psycopg.connect(libpq_url()) as conn:
        conn.execute(sql)
