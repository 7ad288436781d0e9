"""Alembic driven from code: the migrations ship with the package (see broker.shipped).

There is no alembic.ini: the configuration is built here so `broker migrate` works with the
database URL from the broker's own settings.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from broker.shipped import migrations_dir


def alembic_config(url: str, sealing_key: bytes | None = None) -> Config:
    cfg = Config()
    if sealing_key is not None:  # revision 0008 seals the signing keys with it
        cfg.attributes["sealing_key"] = sealing_key
    cfg.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation: a literal % in a URL (escaped password) must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head", sealing_key: bytes | None = None) -> None:
    command.upgrade(alembic_config(url, sealing_key), revision)


def downgrade(url: str, revision: str = "base", sealing_key: bytes | None = None) -> None:
    command.downgrade(alembic_config(url, sealing_key), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def revision_at(url: str) -> str | None:
    """The schema revision of the database at ``url`` (None: no schema yet)."""
    from broker.store.db import create_broker_engine

    engine = create_broker_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()
