"""The store: migrations up and down on both databases, and models == migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, select, text

from broker.store import migrate
from broker.store.db import Database
from broker.store.models import Base, Directory


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_creates_every_model_table_and_downgrade_removes_them(db_url: str) -> None:
    migrate.upgrade(db_url)
    assert tables(db_url) == set(Base.metadata.tables)
    migrate.downgrade(db_url, "base")
    assert tables(db_url) == set()
    migrate.upgrade(db_url)
    assert tables(db_url) == set(Base.metadata.tables)


def test_models_and_migrations_agree(migrated_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(migrated_url)
    try:
        with engine.connect() as conn:
            mc = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(mc, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models differ from migrations: {diff}"


def test_current_revision_is_head_after_upgrade(database: Database) -> None:
    assert migrate.current_revision(database.engine) == migrate.head_revision()


def test_transaction_commits_and_round_trips_utc_times(database: Database) -> None:
    database.transaction(lambda s: s.add(Directory(id="d1", name="D", region="us-east-1")))
    got = database.transaction(lambda s: s.get(Directory, "d1"))
    assert got.name == "D" and got.created_at.tzinfo is not None


def test_transaction_rolls_back_on_error(database: Database) -> None:
    def boom(s):  # type: ignore[no-untyped-def]
        s.add(Directory(id="d2", name="D", region="us-east-1"))
        s.flush()
        assert s.get(Directory, "d2") is not None  # written inside the transaction
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="^boom$"):  # the caller sees the error itself
        database.transaction(boom)
    assert database.transaction(lambda s: s.get(Directory, "d2")) is None


def _enum_columns() -> list[tuple[str, str, list[str]]]:
    from sqlalchemy import Enum

    return [(t.name, c.name, list(c.type.enums)) for t in Base.metadata.sorted_tables
            for c in t.columns if isinstance(c.type, Enum)]


def test_closed_sets_are_enum_columns_from_broker_kinds() -> None:
    """Every closed-set column is an Enum of a broker.kinds StrEnum, and the sets the
    migration constrains are exactly the models' (a new member needs a new revision)."""
    import importlib.util

    from broker import kinds

    found = {(t, c): tuple(v) for t, c, v in _enum_columns()}
    assert len(found) >= 16
    assert {("sessions", "state"), ("workspaces", "protocol"), ("challenges", "purpose"),
            ("audit_events", "outcome"), ("admin_tokens", "scope")} <= set(found)
    members = {tuple(m.value for m in e) for e in vars(kinds).values()
               if isinstance(e, type) and issubclass(e, kinds.enum.Enum) and e is not
               kinds.enum.Enum and e is not kinds.enum.StrEnum}
    assert set(found.values()) <= members
    from broker.shipped import migrations_dir

    constrained: dict[tuple[str, str], tuple[str, ...]] = {}
    for name in ("0007_closed_sets.py", "0009_client_and_os.py",
                 "0012_session_end_reason_ldap_flavour.py"):
        spec = importlib.util.spec_from_file_location(name[:5],
                                                      migrations_dir() / "versions" / name)
        assert spec is not None and spec.loader is not None
        revision = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(revision)
        constrained.update(revision.SETS)
    assert constrained == found


def test_the_database_refuses_a_value_outside_its_set(database: Any) -> None:
    """A typo in any writer (raw SQL included) is refused by the CHECK constraint; a good
    value of the same column is stored (positive control)."""
    from sqlalchemy.exc import IntegrityError

    from broker.store.models import AdminToken

    def add(scope: str) -> None:
        database.transaction(lambda s: s.execute(
            text("INSERT INTO admin_tokens (name, token_hash, scope, created_at) "
                 "VALUES (:n, :h, :s, :t)"),
            {"n": f"t-{scope}", "h": scope.ljust(64, "0"), "s": scope,
             "t": datetime.now(UTC)}))

    add("read")
    with pytest.raises(IntegrityError):
        add("wirte")
    names = database.transaction(lambda s: s.scalars(select(AdminToken.name)).all())
    assert names == ["t-read"]
    for table, column, _ in _enum_columns():
        checks = inspect(database.engine).get_check_constraints(table)
        assert any(column in (c.get("sqltext") or "") for c in checks), (table, column)


def test_sqlite_table_rebuilds_keep_every_child_row(tmp_path: Path) -> None:
    """0007 rebuilds tables on SQLite (copy, drop, rename); with foreign keys on, dropping
    directories would cascade to users. Data written at 0006 survives the upgrade."""
    from broker.store import migrate
    from broker.store.db import create_broker_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0006")
    engine = create_broker_engine(url)
    now = datetime.now(UTC).isoformat()
    with engine.begin() as c:
        c.execute(text("INSERT INTO directories (id, name, region, password_login, "
                       "sc_pre_session, sc_in_session, removal_action, revocation_crl, "
                       "revocation_ocsp, revocation_fail_mode, certmap, required_eku, "
                       "created_at, updated_at) VALUES ('d', 'D', 'us-gov-west-1', "
                       "0, 1, 1, 'lock', 1, 0, 'soft', '[\"upn\"]', 'client-auth', :t, :t)"),
                  {"t": now})
        c.execute(text("INSERT INTO users (directory_id, username, disabled, created_at) "
                       "VALUES ('d', 'alice', 0, :t)"), {"t": now})
    engine.dispose()
    migrate.upgrade(url)
    engine = create_broker_engine(url)
    with engine.connect() as c:
        assert c.execute(text("SELECT username FROM users")).scalars().all() == ["alice"]
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_upgrade_stops_on_a_stray_value_and_loses_nothing(tmp_path: Path) -> None:
    from broker.store import migrate
    from broker.store.db import create_broker_engine

    url = f"sqlite:///{tmp_path / 'stray.db'}"
    migrate.upgrade(url, "0006")
    engine = create_broker_engine(url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO admin_tokens (name, token_hash, scope, created_at) "
                       "VALUES ('x', :h, 'admin', :t)"),
                  {"h": "0" * 64, "t": datetime.now(UTC).isoformat()})
    engine.dispose()
    with pytest.raises(RuntimeError, match=r"admin_tokens\.scope: \['admin'\]"):
        migrate.upgrade(url)
    engine = create_broker_engine(url)
    assert migrate.current_revision(engine) == "0006"
    with engine.connect() as c:
        assert c.execute(text("SELECT scope FROM admin_tokens")).scalars().all() == ["admin"]
    engine.dispose()


def test_a_named_transaction_is_retried_after_a_transient_failure(database: Any) -> None:
    """A serialization failure / busy SQLite is retried (whole function again) and counted
    under the transaction's name; a bad statement is not retried."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from broker.metrics import TRANSACTION_RETRIES

    calls: list[int] = []

    def flaky_read(session: Any) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))
        return int(session.execute(text("SELECT 41 + 1")).scalar_one())

    before = TRANSACTION_RETRIES.labels("flaky_read")._value.get()
    assert database.transaction(flaky_read) == 42 and len(calls) == 2
    assert TRANSACTION_RETRIES.labels("flaky_read")._value.get() == before + 1

    def broken(session: Any) -> None:
        calls.append(1)
        session.execute(text("SELECT * FROM no_such_table"))

    calls.clear()
    with pytest.raises((OperationalError, ProgrammingError)):
        database.transaction(broken, name="broken")
    assert len(calls) == 1


def test_postgresql_reads_run_without_a_transaction_and_writes_at_read_committed(
        database: Any) -> None:
    """On PostgreSQL a read, or a write of one statement (``autocommit``), sends no
    BEGIN/COMMIT (one round trip per statement, not three), and a write runs at READ
    COMMITTED whatever the server's default, which the single-use UPDATEs and the reads
    without a transaction rely on. SQLite keeps its transactions."""
    from psycopg.pq import TransactionStatus
    from sqlalchemy import text

    if database.dialect != "postgresql":
        def in_transaction(conn: Any) -> bool:
            conn.execute(text("SELECT 1"))
            return bool(conn.connection.driver_connection.in_transaction)

        assert database.run(in_transaction, read_only=True)
        assert database.run(in_transaction)
        assert database.run(in_transaction, autocommit=True)  # BEGIN IMMEDIATE: the write lock
        return

    def status(conn: Any) -> tuple[Any, str]:
        level = conn.execute(text("SHOW transaction_isolation")).scalar_one()
        return conn.connection.driver_connection.info.transaction_status, level

    def orm_status(session: Any) -> Any:
        return status(session.connection())[0]

    for _ in range(2):  # a pooled connection goes from reads to writes and back
        assert database.run(status, read_only=True)[0] == TransactionStatus.IDLE
        assert database.read(orm_status) == TransactionStatus.IDLE
        assert database.run(status) == (TransactionStatus.INTRANS, "read committed")
        assert database.transaction(orm_status) == TransactionStatus.INTRANS
        # A one-statement write (the login's grant) sends no BEGIN/COMMIT either.
        assert database.run(status, autocommit=True)[0] == TransactionStatus.IDLE
    from sqlalchemy import event

    def serializable_by_default(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.autocommit = True  # as a server configured for SERIALIZABLE would be
        dbapi_conn.execute("SET default_transaction_isolation TO 'serializable'")
        dbapi_conn.autocommit = False

    event.listen(database.engine, "connect", serializable_by_default)
    database.engine.dispose()
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW default_transaction_isolation").scalar_one() \
            == "serializable"
    assert database.run(status) == (TransactionStatus.INTRANS, "read committed")


def test_a_unique_violation_is_known_by_its_code_not_its_message(database: Any) -> None:
    """SQLSTATE 23505 on PostgreSQL, SQLITE_CONSTRAINT_UNIQUE on SQLite; another integrity
    error (a CHECK) is not one."""
    from sqlalchemy.exc import IntegrityError

    from broker.store.db import is_unique_violation

    def add(name: str, scope: str, token_hash: str) -> None:
        database.transaction(lambda s: s.execute(
            text("INSERT INTO admin_tokens (name, token_hash, scope, created_at) "
                 "VALUES (:n, :h, :s, :t)"),
            {"n": name, "h": token_hash, "s": scope, "t": datetime.now(UTC)}))

    add("dup", "read", "a" * 64)
    with pytest.raises(IntegrityError) as twice:
        add("dup", "read", "b" * 64)
    assert is_unique_violation(twice.value)
    with pytest.raises(IntegrityError) as stray:
        add("other", "wirte", "c" * 64)
    assert not is_unique_violation(stray.value)
    assert not is_unique_violation(ValueError("UNIQUE constraint failed"))


def test_sqlite_writers_of_one_process_queue_instead_of_polling(tmp_path: Path) -> None:
    """Two threads writing at once: the second waits in the process's queue and begins the
    moment the first commits. SQLite's busy timeout is set to 0 here, so a writer that reached
    BEGIN IMMEDIATE while the other held the lock would fail and be retried (counted): the
    test fails without the queue."""
    import threading
    import time

    from sqlalchemy import event

    from broker.metrics import TRANSACTION_RETRIES

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    migrate.upgrade(url)
    db = Database(url)

    @event.listens_for(db.engine, "connect")
    def _no_busy_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    db.engine.dispose()  # connections made from now on carry the pragma
    marks: dict[str, float] = {}
    first_in = threading.Event()

    def slow(conn: Any) -> None:
        conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
        first_in.set()
        time.sleep(0.3)
        marks["first_done"] = time.monotonic()

    def quick(conn: Any) -> None:
        marks["second_began"] = time.monotonic()
        conn.execute(text("UPDATE alembic_version SET version_num = version_num"))

    before = TRANSACTION_RETRIES.labels("queued_second")._value.get()
    first = threading.Thread(target=lambda: db.run(slow, name="queued_first"))
    first.start()
    assert first_in.wait(5)
    db.run(quick, name="queued_second")
    first.join(5)
    assert TRANSACTION_RETRIES.labels("queued_second")._value.get() == before
    assert marks["second_began"] >= marks["first_done"]
    db.dispose()
