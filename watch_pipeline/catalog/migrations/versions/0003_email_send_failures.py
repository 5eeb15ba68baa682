"""email send failures

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('email_notification_config', schema=None) as batch_op:
        batch_op.add_column(sa.Column('send_failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('last_send_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('smtp_insecure_skip_verify', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('email_notification_config', schema=None) as batch_op:
        batch_op.drop_column('smtp_insecure_skip_verify')
        batch_op.drop_column('last_send_error')
        batch_op.drop_column('send_failures')
