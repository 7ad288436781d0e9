"""per-directory path validation settings: policy inputs, depth, AIA fetching

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# Existing directories keep today's behaviour: any policy, no flags, depth 6, no AIA.
_COLUMNS = [
    sa.Column('required_policies', sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
    sa.Column('explicit_policy', sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column('policy_mapping_inhibit', sa.Boolean(), nullable=False,
              server_default=sa.false()),
    sa.Column('any_policy_inhibit', sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column('max_chain_depth', sa.Integer(), nullable=False, server_default=sa.text('6')),
    sa.Column('aia_fetch', sa.Boolean(), nullable=False, server_default=sa.false()),
]


def upgrade() -> None:
    with op.batch_alter_table('directories') as batch:
        for column in _COLUMNS:
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table('directories') as batch:
        for column in reversed(_COLUMNS):
            batch.drop_column(column.name)
