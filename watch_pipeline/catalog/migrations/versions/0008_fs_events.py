"""file-system events: the watcher's event table and each source's event mode

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

* ``watch_event``: what the ``watch-pipeline events`` watcher saw below a local source's root
  (path, kind, time); the scan reads it to treat a closed or moved-in file as stable sooner.
* ``watch_source.fs_events_mode`` (``events``/``polling``), ``fs_events_reason`` and
  ``fs_events_changed_at``: which mode the watcher put the source in, and why.
* ``use_fs_events`` becomes true on local sources: nothing read it before (it held its old
  default everywhere), and events are now on by default where they work.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'watch_event',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('watch_source_id', sa.Integer(), nullable=False),
        sa.Column('remote_path', sa.String(length=2048), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['watch_source_id'], ['watch_source.id'],
                                name=op.f('fk_watch_event_watch_source_id_watch_source'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_watch_event')),
    )
    with op.batch_alter_table('watch_event', schema=None) as batch_op:
        batch_op.create_index('ix_watch_event_source_at', ['watch_source_id', 'at'],
                              unique=False)

    with op.batch_alter_table('watch_source', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fs_events_mode', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('fs_events_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('fs_events_changed_at', sa.DateTime(timezone=True),
                                      nullable=True))
    op.execute(sa.text("UPDATE watch_source SET use_fs_events = true "
                       "WHERE source_type = 'local'"))


def downgrade() -> None:
    with op.batch_alter_table('watch_source', schema=None) as batch_op:
        batch_op.drop_column('fs_events_changed_at')
        batch_op.drop_column('fs_events_reason')
        batch_op.drop_column('fs_events_mode')
    with op.batch_alter_table('watch_event', schema=None) as batch_op:
        batch_op.drop_index('ix_watch_event_source_at')
    op.drop_table('watch_event')
