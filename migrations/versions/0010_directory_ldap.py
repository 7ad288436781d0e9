"""directories backed by LDAP / Active Directory

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 06:30:00

A directory's ``ldap`` setting (shared/DESIGN.md §11): where its users live when not in the
broker's own table. Existing directories keep their own users (no url). The bind password is
never stored: only the path of the file it is read from.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('directories') as batch:
        batch.add_column(sa.Column('ldap_url', sa.String(500), nullable=True))
        batch.add_column(sa.Column('ldap_start_tls', sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column('ldap_ca_file', sa.String(1000), nullable=True))
        batch.add_column(sa.Column('ldap_flavour', sa.String(16), nullable=False,
                                   server_default='ad'))
        batch.add_column(sa.Column('ldap_base_dn', sa.String(1000), nullable=True))
        batch.add_column(sa.Column('ldap_bind_dn', sa.String(1000), nullable=True))
        batch.add_column(sa.Column('ldap_bind_password_file', sa.String(1000), nullable=True))
        batch.add_column(sa.Column('ldap_user_name_attribute', sa.String(100), nullable=True))
        batch.add_column(sa.Column('ldap_user_filter', sa.Text(), nullable=True))
        batch.add_column(sa.Column('ldap_attributes', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('ldap_required_groups', sa.JSON(), nullable=False,
                                   server_default='[]'))
        batch.add_column(sa.Column('ldap_cache_ttl_s', sa.Integer(), nullable=False,
                                   server_default='300'))
        batch.add_column(sa.Column('ldap_timeout_s', sa.Integer(), nullable=False,
                                   server_default='3'))


def downgrade() -> None:
    with op.batch_alter_table('directories') as batch:
        for name in ('ldap_timeout_s', 'ldap_cache_ttl_s', 'ldap_required_groups',
                     'ldap_attributes', 'ldap_user_filter', 'ldap_user_name_attribute',
                     'ldap_bind_password_file', 'ldap_bind_dn', 'ldap_base_dn',
                     'ldap_flavour', 'ldap_ca_file', 'ldap_start_tls', 'ldap_url'):
            batch.drop_column(name)
