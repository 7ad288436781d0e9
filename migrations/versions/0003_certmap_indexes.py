"""certificate-to-user mapping by index; directory versions for per-process caches

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-25 13:30:00

One index per certmap rule (UPN, e-mail, subject, fingerprint), case-insensitive where the rule
is, so a login looks its user up instead of loading the directory's users. A version number
per directory, bumped with every change to it or its trust material, invalidates the caches of
every broker process.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0001'
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_users_certmap_upn", "lower(upn)"),
    ("ix_users_certmap_email", "lower(email)"),
    ("ix_users_certmap_subject", "subject"),
    ("ix_users_certmap_fingerprint", "lower(cert_fingerprint)"),
)


def upgrade() -> None:
    with op.batch_alter_table("directories") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
    for name, expression in INDEXES:
        op.create_index(name, "users", [sa.text("directory_id"), sa.text(expression)])


def downgrade() -> None:
    for name, _ in INDEXES:
        op.drop_index(name, table_name="users")
    with op.batch_alter_table("directories") as batch:
        batch.drop_column("version")
