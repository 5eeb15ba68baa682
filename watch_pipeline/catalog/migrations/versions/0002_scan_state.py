"""scan state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('watch_source_file', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stable_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('imohash_version', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('run_key', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('run_requested_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('next_retry_at', sa.DateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('watch_source_file', schema=None) as batch_op:
        batch_op.drop_column('next_retry_at')
        batch_op.drop_column('run_requested_at')
        batch_op.drop_column('run_key')
        batch_op.drop_column('imohash_version')
        batch_op.drop_column('last_seen_at')
        batch_op.drop_column('stable_since')

