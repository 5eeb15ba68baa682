"""hardening: one media row per partition, new skip reasons, insecure SMTP auth opt-in

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

* ``media_file.partition_key`` becomes unique, so two runs of one partition can never create
  two media rows (the import takes the row with ``INSERT … ON CONFLICT DO NOTHING``).
  Existing duplicates: per partition key the row to keep is the newest one that is not in
  ``error`` and has a stored object (else the newest not in ``error``, else the newest); the
  others keep their rows, objects and the file rows pointing at them, and only lose their
  ``partition_key`` (set to NULL), so nothing stored is orphaned and the import finds the kept
  row.
* ``watch_source_file.import_run_id``: the run holding a row while it imports (a second run of
  the partition refuses while that run is live).
* ``watch_source_file.skip_reason`` admits ``unreadable_name``, ``symlink_loop``,
  ``path_too_long``, ``outside_root`` and ``too_long``.
* ``email_notification_config.smtp_allow_insecure_auth`` (not null, default false).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_OLD_REASONS = ('duplicate_same_source', 'duplicate_other_source', 'duplicate_existing',
                'too_old', 'invalid_type', 'validation_failed')
_NEW_REASONS = ('unreadable_name', 'symlink_loop', 'path_too_long', 'outside_root', 'too_long')


def _reason_check(reasons: tuple[str, ...]) -> str:
    return 'skip_reason IS NULL OR skip_reason IN ({})'.format(
        ', '.join(f"'{r}'" for r in reasons))


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE media_file SET partition_key = NULL "
        "WHERE partition_key IS NOT NULL AND id <> ("
        " SELECT keep.id FROM media_file AS keep"
        " WHERE keep.partition_key = media_file.partition_key"
        " ORDER BY CASE WHEN keep.status = 'error' THEN 1 ELSE 0 END,"
        " CASE WHEN keep.object_key IS NULL THEN 1 ELSE 0 END, keep.id DESC LIMIT 1)"))
    with op.batch_alter_table('media_file', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_media_file_partition_key'))
        batch_op.create_index(batch_op.f('ix_media_file_partition_key'), ['partition_key'],
                              unique=True)

    with op.batch_alter_table('watch_source_file', schema=None) as batch_op:
        batch_op.add_column(sa.Column('import_run_id', sa.String(length=64), nullable=True))
        batch_op.drop_constraint(batch_op.f('ck_watch_source_file_skip_reason'), type_='check')
        batch_op.create_check_constraint(
            batch_op.f('ck_watch_source_file_skip_reason'),
            _reason_check(_OLD_REASONS + _NEW_REASONS))

    with op.batch_alter_table('email_notification_config', schema=None) as batch_op:
        batch_op.add_column(sa.Column('smtp_allow_insecure_auth', sa.Boolean(),
                                      server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('email_notification_config', schema=None) as batch_op:
        batch_op.drop_column('smtp_allow_insecure_auth')

    # Reasons the old constraint does not know fall back to the generic one.
    op.execute(sa.text(
        "UPDATE watch_source_file SET skip_reason = 'validation_failed' WHERE skip_reason IN "
        "({})".format(', '.join(f"'{r}'" for r in _NEW_REASONS))))
    with op.batch_alter_table('watch_source_file', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_watch_source_file_skip_reason'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_watch_source_file_skip_reason'),
                                         _reason_check(_OLD_REASONS))
        batch_op.drop_column('import_run_id')

    with op.batch_alter_table('media_file', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_media_file_partition_key'))
        batch_op.create_index(batch_op.f('ix_media_file_partition_key'), ['partition_key'],
                              unique=False)
