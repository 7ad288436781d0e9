"""admin console sessions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 14:00:00

The admin console signs in with an admin token once and then holds a server-side session: the
cookie carries a random secret whose hash is stored here with the session's CSRF token and an
expiry, so signing out or revoking the admin token ends it everywhere.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("admin_token_id", sa.Integer(),
                  sa.ForeignKey("admin_tokens.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("flash", sa.Text(), nullable=True),
    )
    op.create_index("ix_console_sessions_admin_token_id", "console_sessions",
                    ["admin_token_id"])
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_expires_at", "console_sessions")
    op.drop_index("ix_console_sessions_admin_token_id", "console_sessions")
    op.drop_table("console_sessions")
