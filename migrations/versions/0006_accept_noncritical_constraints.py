"""per-directory profile relaxation: accept non-critical CA constraints

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 16:45:00

Some PKIs (NIST PKITS among them, and older agency CAs) issue CA certificates whose
basicConstraints or policyConstraints is not marked critical, which RFC 5280 forbids. Existing
directories keep the strict profile (false).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('directories') as batch:
        batch.add_column(sa.Column('accept_noncritical_constraints', sa.Boolean(),
                                   nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('directories') as batch:
        batch.drop_column('accept_noncritical_constraints')
