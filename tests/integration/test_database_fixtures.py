"""The migrated databases the fixtures hand out (a copied SQLite template, a PostgreSQL schema
replayed from a dump of a migrated one) are the schema the migrations make, at head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from broker.store import migrate
from broker.store.db import Database
from tests.support.databases import database_url


def schema_of(url: str) -> dict[str, Any]:
    """Tables with their columns, keys, indexes and constraints, and the alembic revision."""
    db = Database(url)
    try:
        insp = inspect(db.engine)
        tables = {}
        for t in insp.get_table_names():
            tables[t] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                            for c in insp.get_columns(t)],
                "pk": insp.get_pk_constraint(t)["constrained_columns"],
                "fks": sorted((f["name"] or "", tuple(f["constrained_columns"]),
                               f["referred_table"], tuple(f["referred_columns"]))
                              for f in insp.get_foreign_keys(t)),
                "indexes": sorted((i["name"] or "", tuple(str(c) for c in i["column_names"]),
                                   bool(i["unique"])) for i in insp.get_indexes(t)),
                "unique": sorted((u["name"] or "", tuple(u["column_names"]))
                                 for u in insp.get_unique_constraints(t)),
                "checks": sorted(c["name"] or "" for c in insp.get_check_constraints(t)),
            }
        with db.engine.connect() as conn:
            if db.dialect == "sqlite":  # expression indexes, which reflection skips
                indexes = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'index' "
                                            "AND sql IS NOT NULL")).scalars().all()
            else:
                schema = conn.execute(text("SELECT current_schema()")).scalar_one()
                indexes = [d.replace(schema, "S") for d in conn.execute(text(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"))
                    .scalars().all()]
        return {"revision": migrate.current_revision(db.engine), "tables": tables,
                "index_sql": sorted(indexes)}
    finally:
        db.dispose()


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection")
def test_the_fixtures_migrated_database_is_the_migrations_schema(
        migrated_url: str, tmp_path: Path) -> None:
    kind = "sqlite" if migrated_url.startswith("sqlite") else "postgresql"
    with database_url(kind, tmp_path / "fresh") as fresh:
        (tmp_path / "fresh").mkdir()
        migrate.upgrade(fresh)
        expected = schema_of(fresh)
    got = schema_of(migrated_url)
    assert expected["revision"] == migrate.head_revision()
    assert len(expected["tables"]) > 5
    assert got == expected
