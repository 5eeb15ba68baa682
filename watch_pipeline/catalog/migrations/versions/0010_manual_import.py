"""manual import: the hidden manual-imports source and per-file overrides

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

* ``watch_source.is_manual`` (not null, default false): the one system source whose file rows
  are the files brought by hand (``watch-pipeline media import``, ``manual_import_job``); it is
  never scanned and ``source list`` hides it unless asked.
* ``watch_source_file`` gains nullable per-file overrides of the source's settings, set on files
  brought by hand: ``owner_id``, ``collections``, ``tags``, ``auto_transcribe``,
  ``delete_after_import`` (a staged URL download is removed once imported) and ``origin``
  (``upload`` or ``url``; NULL is ``watch``). Existing rows keep NULL: they take their source's
  values, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    # Plain ADD COLUMN, no batch: SQLite's batch mode would copy and drop ``watch_source``, and
    # the drop cascades to every ``watch_source_file`` row.
    op.add_column('watch_source', sa.Column('is_manual', sa.Boolean(), nullable=False,
                                            server_default=sa.false()))
    for column in (sa.Column('owner_id', sa.Integer(), nullable=True),
                   sa.Column('collections', _JSON, nullable=True),
                   sa.Column('tags', _JSON, nullable=True),
                   sa.Column('auto_transcribe', sa.Boolean(), nullable=True),
                   sa.Column('delete_after_import', sa.Boolean(), nullable=True),
                   sa.Column('origin', sa.String(length=16), nullable=True)):
        op.add_column('watch_source_file', column)
    with op.batch_alter_table('watch_source_file', schema=None) as batch_op:
        batch_op.create_check_constraint(
            batch_op.f('ck_watch_source_file_origin'),
            "origin IS NULL OR origin IN ('watch', 'upload', 'url')")


def downgrade() -> None:
    with op.batch_alter_table('watch_source_file', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_watch_source_file_origin'), type_='check')
        batch_op.drop_column('origin')
        batch_op.drop_column('delete_after_import')
        batch_op.drop_column('auto_transcribe')
        batch_op.drop_column('tags')
        batch_op.drop_column('collections')
        batch_op.drop_column('owner_id')
    op.drop_column('watch_source', 'is_manual')
