"""closed sets as CHECK-constrained enum columns

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 17:00:00

Every column that holds one of a closed set of values (protocol, states, purposes, scopes,
outcomes, settings with choices) becomes ``sqlalchemy.Enum(native_enum=False)`` in the models:
the same VARCHAR, now with a CHECK constraint, so a typo in any writer is refused by the
database instead of stored. The values are written out here (not imported from broker.kinds) so
this revision stays what it was when later ones change the sets.

Before adding a constraint the upgrade looks for rows that would break it and stops with the
table, column and values when it finds any: nothing is rewritten or lost behind the operator's
back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

SETS: dict[tuple[str, str], tuple[str, ...]] = {
    ('admin_tokens', 'scope'): ('read', 'write'),
    ('audit_events', 'outcome'): ('success', 'refused', 'error', 'change'),
    ('directories', 'removal_action'): ('none', 'lock', 'disconnect'),
    ('directories', 'revocation_fail_mode'): ('soft', 'hard'),
    ('directories', 'required_eku'): ('client-auth', 'any'),
    ('registration_codes', 'state'): ('active', 'rotated', 'revoked'),
    ('trust_certificates', 'kind'): ('anchor', 'intermediate'),
    ('auth_tokens', 'method'): ('smart_card', 'password'),
    ('workspaces', 'protocol'): ('WSP', 'PCoIP'),
    ('workspaces', 'running_mode'): ('ALWAYS_ON', 'AUTO_STOP'),
    ('workspaces', 'state'): ('PENDING', 'AVAILABLE', 'STARTING', 'STOPPING', 'STOPPED',
                              'ERROR', 'UNHEALTHY'),
    ('challenges', 'purpose'): ('pre_session', 'logon', 'in_session'),
    ('sessions', 'auth_method'): ('smart_card', 'password'),
    ('sessions', 'protocol'): ('WSP', 'PCoIP'),
    ('sessions', 'state'): ('active', 'locked', 'ended'),
    ('sessions', 'pending_action'): ('disconnect',),
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
        raise RuntimeError("migration 0007 stops: rows hold values outside their closed set; "
                           "fix them and run `broker migrate` again: " + "; ".join(strays))


def upgrade() -> None:
    _refuse_strays()
    tables: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for (table, column), values in SETS.items():
        tables.setdefault(table, []).append((column, values))
    for table, columns in tables.items():
        with op.batch_alter_table(table) as batch:
            for column, values in columns:
                batch.create_check_constraint(op.f(f'ck_{table}_{column}'),
                                              sa.text(_condition(column, values)))


def downgrade() -> None:
    tables: dict[str, list[str]] = {}
    for table, column in SETS:
        tables.setdefault(table, []).append(column)
    for table, columns in tables.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_constraint(op.f(f'ck_{table}_{column}'), type_='check')
