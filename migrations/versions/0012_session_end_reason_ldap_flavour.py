"""closed sets: session end reasons and LDAP flavours become CHECK-constrained enum columns

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 09:30:00

``sessions.end_reason`` (client, taken_over, disconnected, card_removed, heartbeat_timeout,
admin, protocol_changed) and ``directories.ldap_flavour`` (ad, generic) were free VARCHARs whose
values only the code knew; the models now declare them ``Enum(native_enum=False)`` of
broker.kinds (same VARCHAR, same stored strings) and this revision adds their CHECK constraints,
as 0007 did for the other closed sets. The values are written out here so this revision stays
what it was when later ones change the sets.

Before adding a constraint the upgrade looks for rows that would break it and stops with the
table, column and values when it finds any: nothing is rewritten behind the operator's back.
The downgrade drops the two constraints (the columns and their values are unchanged).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

SETS: dict[tuple[str, str], tuple[str, ...]] = {
    ('sessions', 'end_reason'): ('client', 'taken_over', 'disconnected', 'card_removed',
                                 'heartbeat_timeout', 'admin', 'protocol_changed'),
    ('directories', 'ldap_flavour'): ('ad', 'generic'),
}


def _condition(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _refuse_strays() -> None:
    bind = op.get_bind()
    strays = []
    for (table, column), values in SETS.items():
        t = sa.table(table, sa.column(column))
        found = bind.execute(sa.select(t.c[column]).distinct().where(
            t.c[column].is_not(None), t.c[column].not_in(values)).limit(5)).scalars().all()
        if found:
            strays.append(f"{table}.{column}: {sorted(found)} (allowed: {list(values)})")
    if strays:
        raise RuntimeError("migration 0012 stops: rows hold values outside their closed set; "
                           "fix them and run `broker migrate` again: " + "; ".join(strays))


def upgrade() -> None:
    _refuse_strays()
    for (table, column), values in SETS.items():
        with op.batch_alter_table(table) as batch:
            batch.create_check_constraint(op.f(f'ck_{table}_{column}'),
                                          sa.text(_condition(column, values)))


def downgrade() -> None:
    for table, column in SETS:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f'ck_{table}_{column}'), type_='check')
