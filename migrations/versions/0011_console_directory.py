"""console sessions remember the selected directory

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 07:40:00

The console's header selects one directory that every list, filter and create/issue form uses;
it is kept with the console session (not a cookie of its own), so it survives page changes and
form posts. No foreign key: a deleted directory simply falls back to the first one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("console_sessions") as batch:
        batch.add_column(sa.Column("directory_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("console_sessions") as batch:
        batch.drop_column("directory_id")
