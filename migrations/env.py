"""Alembic environment: runs migrations for the URL set by broker.store.migrate."""

from __future__ import annotations

import warnings

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.exc import SAWarning

from broker.store.db import create_broker_engine
from broker.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    """Run the migrations on ``connection``.

    On SQLite, batch operations that change constraints rebuild a table (copy, DROP, rename);
    with foreign keys enforced, DROP TABLE would fire ON DELETE CASCADE and empty the children
    (every user of a rebuilt directories table). So foreign keys are off while migrating (the
    PRAGMA only works outside a transaction), checked with foreign_key_check afterwards, and
    on again before the connection goes back to its pool.
    """
    sqlite = connection.dialect.name == "sqlite"
    raw = connection.connection.dbapi_connection if sqlite else None
    if raw is not None:
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True)
        with context.begin_transaction(), warnings.catch_warnings():
            # Batch operations reflect tables; SQLAlchemy cannot reflect the expression
            # indexes of 0003 (lower(upn) …) and says so, though batch mode only adds columns
            # or constraints to those tables and the indexes stay (tests/integration/
            # test_store.py checks them after every upgrade).
            warnings.filterwarnings("ignore", category=SAWarning,
                                    message="Skipped unsupported reflection of expression-based")
            context.run_migrations()
            if raw is not None:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left rows without their parent: {broken[:5]}")
    finally:
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=ON")


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = create_broker_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
