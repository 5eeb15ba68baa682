"""initial catalog

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('email_notification_config',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('is_enabled', sa.Boolean(), nullable=False),
    sa.Column('from_address', sa.String(length=320), nullable=False),
    sa.Column('default_recipients', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('smtp_host', sa.String(length=255), nullable=True),
    sa.Column('smtp_port', sa.Integer(), nullable=True),
    sa.Column('smtp_use_tls', sa.Boolean(), nullable=False),
    sa.Column('smtp_username', sa.String(length=255), nullable=True),
    sa.Column('encrypted_smtp_password', sa.Text(), nullable=True),
    sa.Column('exchange_server', sa.String(length=255), nullable=True),
    sa.Column('exchange_domain', sa.String(length=255), nullable=True),
    sa.Column('exchange_username', sa.String(length=255), nullable=True),
    sa.Column('encrypted_exchange_password', sa.Text(), nullable=True),
    sa.Column('m365_tenant_id', sa.String(length=255), nullable=True),
    sa.Column('m365_client_id', sa.String(length=255), nullable=True),
    sa.Column('encrypted_m365_client_secret', sa.Text(), nullable=True),
    sa.Column('last_tested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('test_status', sa.String(length=16), nullable=True),
    sa.Column('test_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("provider IN ('smtp', 'exchange', 'm365')", name=op.f('ck_email_notification_config_provider')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_email_notification_config')),
    sa.UniqueConstraint('name', name=op.f('uq_email_notification_config_name'))
    )
    op.create_table('settings',
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_settings'))
    )
    op.create_table('watch_source',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('source_type', sa.String(length=16), nullable=False),
    sa.Column('is_enabled', sa.Boolean(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('local_path', sa.String(length=1024), nullable=True),
    sa.Column('delete_after_import', sa.Boolean(), nullable=False),
    sa.Column('s3_endpoint_url', sa.String(length=1024), nullable=True),
    sa.Column('s3_bucket_name', sa.String(length=255), nullable=True),
    sa.Column('s3_prefix', sa.String(length=1024), nullable=True),
    sa.Column('s3_region', sa.String(length=64), nullable=True),
    sa.Column('s3_access_key_id', sa.String(length=255), nullable=True),
    sa.Column('encrypted_s3_secret_key', sa.Text(), nullable=True),
    sa.Column('s3_use_ssl', sa.Boolean(), nullable=False),
    sa.Column('smb_server', sa.String(length=255), nullable=True),
    sa.Column('smb_share', sa.String(length=255), nullable=True),
    sa.Column('smb_path', sa.String(length=1024), nullable=True),
    sa.Column('smb_username', sa.String(length=255), nullable=True),
    sa.Column('encrypted_smb_password', sa.Text(), nullable=True),
    sa.Column('smb_domain', sa.String(length=255), nullable=True),
    sa.Column('smb_port', sa.Integer(), nullable=False),
    sa.Column('polling_interval_minutes', sa.Integer(), nullable=False),
    sa.Column('use_fs_events', sa.Boolean(), nullable=False),
    sa.Column('file_extensions', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('skip_files_older_than_days', sa.Integer(), nullable=True),
    sa.Column('recursive', sa.Boolean(), nullable=False),
    sa.Column('auto_transcribe', sa.Boolean(), nullable=False),
    sa.Column('min_speakers', sa.Integer(), nullable=False),
    sa.Column('max_speakers', sa.Integer(), nullable=False),
    sa.Column('collections', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('tags', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('multipart_enabled', sa.Boolean(), nullable=False),
    sa.Column('multipart_regex', sa.String(length=500), nullable=False),
    sa.Column('multipart_time_window_hours', sa.Integer(), nullable=False),
    sa.Column('multipart_wait_scans', sa.Integer(), nullable=False),
    sa.Column('upload_stitched_to_source', sa.Boolean(), nullable=False),
    sa.Column('last_scan_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_scan_status', sa.String(length=16), nullable=True),
    sa.Column('last_scan_message', sa.Text(), nullable=True),
    sa.Column('last_scan_files_found', sa.Integer(), nullable=True),
    sa.Column('last_scan_files_imported', sa.Integer(), nullable=True),
    sa.Column('last_scan_files_skipped', sa.Integer(), nullable=True),
    sa.Column('last_scan_duration_seconds', sa.Float(), nullable=True),
    sa.Column('total_files_imported', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("source_type IN ('local', 's3', 'smb')", name=op.f('ck_watch_source_source_type')),
    sa.CheckConstraint('length(name) BETWEEN 1 AND 200', name=op.f('ck_watch_source_name_length')),
    sa.CheckConstraint('min_speakers BETWEEN 1 AND 20 AND max_speakers BETWEEN 1 AND 20 AND min_speakers <= max_speakers', name=op.f('ck_watch_source_speakers')),
    sa.CheckConstraint('polling_interval_minutes BETWEEN 1 AND 1440', name=op.f('ck_watch_source_polling_interval_minutes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_watch_source')),
    sa.UniqueConstraint('name', name=op.f('uq_watch_source_name'))
    )
    op.create_table('media_file',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=500), nullable=False),
    sa.Column('filename', sa.String(length=500), nullable=False),
    sa.Column('imohash', sa.String(length=32), nullable=True),
    sa.Column('partition_key', sa.String(length=64), nullable=True),
    sa.Column('object_key', sa.String(length=1024), nullable=True),
    sa.Column('checksum_sha256', sa.String(length=64), nullable=True),
    sa.Column('file_size', sa.BigInteger(), nullable=True),
    sa.Column('content_type', sa.String(length=100), nullable=True),
    sa.Column('duration', sa.Float(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('watch_source_id', sa.Integer(), nullable=True),
    sa.Column('collections', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('tags', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('transcript_key', sa.String(length=1024), nullable=True),
    sa.Column('transcript_model', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("origin IN ('watch', 'upload', 'url')", name=op.f('ck_media_file_origin')),
    sa.CheckConstraint("status IN ('pending', 'processing', 'completed', 'error')", name=op.f('ck_media_file_status')),
    sa.ForeignKeyConstraint(['watch_source_id'], ['watch_source.id'], name=op.f('fk_media_file_watch_source_id_watch_source'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_media_file'))
    )
    with op.batch_alter_table('media_file', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_media_file_imohash'), ['imohash'], unique=False)
        batch_op.create_index(batch_op.f('ix_media_file_partition_key'), ['partition_key'], unique=False)

    op.create_table('watch_source_email',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('watch_source_id', sa.Integer(), nullable=False),
    sa.Column('email_config_id', sa.Integer(), nullable=False),
    sa.Column('additional_recipients', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('notify_on_success', sa.Boolean(), nullable=False),
    sa.Column('notify_on_error', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['email_config_id'], ['email_notification_config.id'], name=op.f('fk_watch_source_email_email_config_id_email_notification_config'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['watch_source_id'], ['watch_source.id'], name=op.f('fk_watch_source_email_watch_source_id_watch_source'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_watch_source_email')),
    sa.UniqueConstraint('watch_source_id', 'email_config_id', name=op.f('uq_watch_source_email_watch_source_id_email_config_id'))
    )
    op.create_table('watch_source_file',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('watch_source_id', sa.Integer(), nullable=False),
    sa.Column('remote_path', sa.String(length=2048), nullable=False),
    sa.Column('filename', sa.String(length=500), nullable=False),
    sa.Column('file_size', sa.BigInteger(), nullable=True),
    sa.Column('file_modified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('etag', sa.String(length=255), nullable=True),
    sa.Column('imohash', sa.String(length=32), nullable=True),
    sa.Column('media_file_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('skip_reason', sa.String(length=32), nullable=True),
    sa.Column('part_group', sa.String(length=64), nullable=True),
    sa.Column('part_number', sa.Integer(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('wait_scans', sa.Integer(), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("skip_reason IS NULL OR skip_reason IN ('duplicate_same_source', 'duplicate_other_source', 'duplicate_existing', 'too_old', 'invalid_type', 'validation_failed')", name=op.f('ck_watch_source_file_skip_reason')),
    sa.CheckConstraint("status IN ('pending', 'downloading', 'importing', 'imported', 'skipped_duplicate', 'skipped_old', 'skipped_invalid', 'error', 'stitched_part', 'waiting_for_parts')", name=op.f('ck_watch_source_file_status')),
    sa.ForeignKeyConstraint(['media_file_id'], ['media_file.id'], name=op.f('fk_watch_source_file_media_file_id_media_file'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['watch_source_id'], ['watch_source.id'], name=op.f('fk_watch_source_file_watch_source_id_watch_source'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_watch_source_file')),
    sa.UniqueConstraint('watch_source_id', 'remote_path', name=op.f('uq_watch_source_file_watch_source_id_remote_path'))
    )
    with op.batch_alter_table('watch_source_file', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_watch_source_file_imohash'), ['imohash'], unique=False)
        batch_op.create_index('ix_watch_source_file_part_group_source', ['part_group', 'watch_source_id'], unique=False)
        batch_op.create_index('ix_watch_source_file_source_imohash', ['watch_source_id', 'imohash'], unique=False)
        batch_op.create_index(batch_op.f('ix_watch_source_file_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('watch_source_file', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_watch_source_file_status'))
        batch_op.drop_index('ix_watch_source_file_source_imohash')
        batch_op.drop_index('ix_watch_source_file_part_group_source')
        batch_op.drop_index(batch_op.f('ix_watch_source_file_imohash'))

    op.drop_table('watch_source_file')
    op.drop_table('watch_source_email')
    with op.batch_alter_table('media_file', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_media_file_partition_key'))
        batch_op.drop_index(batch_op.f('ix_media_file_imohash'))

    op.drop_table('media_file')
    op.drop_table('watch_source')
    op.drop_table('settings')
    op.drop_table('email_notification_config')
