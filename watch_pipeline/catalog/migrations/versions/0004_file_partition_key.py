"""file partition key

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('watch_source_file', schema=None) as batch_op:
        batch_op.add_column(sa.Column('partition_key', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_watch_source_file_partition_key'), ['partition_key'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('watch_source_file', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_watch_source_file_partition_key'))
        batch_op.drop_column('partition_key')

