"""stored media checksums name their algorithm: CRC32C for new rows, SHA-256 kept for old ones

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

* ``media_file.checksum`` and ``media_file.checksum_algorithm``: the stores now verify stored
  bytes with CRC32C (checked by S3 itself, hardware-fast locally) instead of computing a
  SHA-256, and a row says which algorithm its value is.
* Rows stored before keep ``checksum_sha256`` and get it copied into ``checksum`` with the
  algorithm ``sha256``, so every row reads the same way.

Downgrade drops the two columns: CRC32C values are lost (the old code had no place for them);
SHA-256 values are still in ``checksum_sha256``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('media_file', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checksum', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('checksum_algorithm', sa.String(length=16), nullable=True))
    op.execute(sa.text("UPDATE media_file SET checksum = checksum_sha256, "
                       "checksum_algorithm = 'sha256' WHERE checksum_sha256 IS NOT NULL"))


def downgrade() -> None:
    with op.batch_alter_table('media_file', schema=None) as batch_op:
        batch_op.drop_column('checksum_algorithm')
        batch_op.drop_column('checksum')
