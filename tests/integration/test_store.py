"""The store: migrations up and down on both databases, and models == migrations."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

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
        raise RuntimeError("boom")

    try:
        database.transaction(boom)
    except RuntimeError:
        pass
    assert database.transaction(lambda s: s.get(Directory, "d2")) is None
