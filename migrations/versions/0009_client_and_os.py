"""the client of each login and session; a WorkSpace's stated operating system

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 06:10:00

The client rule (Windows client 3.1.1+ on 64-bit Windows) now holds in-session too: a session
records the client of the login that opened it (``client``, JSON {platform, arch, version};
NULL = the login did not say: no in-session use). The pre-session challenge keeps the client it
was issued to, the auth token the client of its login. Existing rows stay NULL (unknown).

``workspaces.os`` (windows | linux, NULL = not stated: today's behaviour) lets the broker refuse
``sudo`` for a Windows WorkSpace.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

#: The closed sets this revision constrains (written out, as in 0007).
SETS = {('workspaces', 'os'): ('windows', 'linux')}


def upgrade() -> None:
    for table in ('challenges', 'auth_tokens', 'sessions'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('client', sa.JSON(), nullable=True))
    with op.batch_alter_table('workspaces') as batch:
        batch.add_column(sa.Column('os', sa.String(length=16), nullable=True))
        batch.create_check_constraint(op.f('ck_workspaces_os'),
                                      sa.text("os IN ('windows', 'linux')"))


def downgrade() -> None:
    with op.batch_alter_table('workspaces') as batch:
        batch.drop_constraint(op.f('ck_workspaces_os'), type_='check')
        batch.drop_column('os')
    for table in ('challenges', 'auth_tokens', 'sessions'):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('client')
