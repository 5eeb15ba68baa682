"""scan failure streak

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('watch_source', schema=None) as batch_op:
        batch_op.add_column(sa.Column('consecutive_scan_failures', sa.Integer(), server_default='0', nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('watch_source', schema=None) as batch_op:
        batch_op.drop_column('consecutive_scan_failures')

