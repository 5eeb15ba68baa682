"""The catalog's tables as SQLAlchemy 2 typed models (SPEC §3).

Column names are the words the CLI's ``--json`` output and the code use. Validation of operator
input lives in :mod:`watch_pipeline.catalog.validation`; the database enforces what it can
(uniqueness, not-null, check constraints) as a second line.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

DEFAULT_MULTIPART_REGEX = r"^(.+?)_P(\d{3})(\.[^.]+)$"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only clock the catalog uses)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware.

    SQLite keeps no zone; PostgreSQL's ``timestamptz`` does. Both read back as aware UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        """Store as UTC (naive on SQLite, which keeps no zone)."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        """Return aware UTC whatever the backend gave."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonList = sa.JSON().with_variant(JSONB(), "postgresql")


class SourceType(enum.StrEnum):
    """Kinds of watch source."""

    LOCAL = "local"
    S3 = "s3"
    SMB = "smb"


class FileStatus(enum.StrEnum):
    """Lifecycle of one file a scan has seen."""

    PENDING = "pending"
    DOWNLOADING = "downloading"
    IMPORTING = "importing"
    IMPORTED = "imported"
    SKIPPED_DUPLICATE = "skipped_duplicate"
    SKIPPED_OLD = "skipped_old"
    SKIPPED_INVALID = "skipped_invalid"
    ERROR = "error"
    STITCHED_PART = "stitched_part"
    WAITING_FOR_PARTS = "waiting_for_parts"


class SkipReason(enum.StrEnum):
    """Why a file was skipped (stored with a ``skipped_*`` status)."""

    DUPLICATE_SAME_SOURCE = "duplicate_same_source"
    DUPLICATE_OTHER_SOURCE = "duplicate_other_source"
    DUPLICATE_EXISTING = "duplicate_existing"
    TOO_OLD = "too_old"
    INVALID_TYPE = "invalid_type"
    VALIDATION_FAILED = "validation_failed"
    UNREADABLE_NAME = "unreadable_name"  # a name that is not valid in the file system's encoding
    SYMLINK_LOOP = "symlink_loop"
    PATH_TOO_LONG = "path_too_long"
    OUTSIDE_ROOT = "outside_root"  # a link (or key) that leads out of the source's root
    TOO_LONG = "too_long"  # media longer than watch.max_media_duration_hours


class MediaStatus(enum.StrEnum):
    """Lifecycle of an imported media item."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    ERROR = "error"


class MediaOrigin(enum.StrEnum):
    """How a media item entered the system."""

    WATCH = "watch"
    UPLOAD = "upload"
    URL = "url"


class EmailProvider(enum.StrEnum):
    """Email delivery providers."""

    SMTP = "smtp"
    EXCHANGE = "exchange"
    M365 = "m365"


class ScanStatus(enum.StrEnum):
    """Outcome of a source's last scan."""

    SUCCESS = "success"
    ERROR = "error"
    RUNNING = "running"


def _values(enum_cls: type[enum.StrEnum]) -> str:
    return ", ".join(f"'{m.value}'" for m in enum_cls)


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so Alembic names constraints stably."""

    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class WatchSource(Base):
    """One configured place to watch: a local folder, an S3 bucket or an SMB share."""

    __tablename__ = "watch_source"
    __table_args__ = (
        sa.CheckConstraint(f"source_type IN ({_values(SourceType)})", name="source_type"),
        sa.CheckConstraint(
            "polling_interval_minutes BETWEEN 1 AND 1440", name="polling_interval_minutes"
        ),
        sa.CheckConstraint(
            "min_speakers BETWEEN 1 AND 20 AND max_speakers BETWEEN 1 AND 20 "
            "AND min_speakers <= max_speakers",
            name="speakers",
        ),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 200", name="name_length"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    source_type: Mapped[str] = mapped_column(sa.String(16))
    is_enabled: Mapped[bool] = mapped_column(default=True)
    owner_id: Mapped[int] = mapped_column(default=1)

    # local
    local_path: Mapped[str | None] = mapped_column(sa.String(1024))
    delete_after_import: Mapped[bool] = mapped_column(default=False)
    # s3
    s3_endpoint_url: Mapped[str | None] = mapped_column(sa.String(1024))
    s3_bucket_name: Mapped[str | None] = mapped_column(sa.String(255))
    s3_prefix: Mapped[str | None] = mapped_column(sa.String(1024))
    s3_region: Mapped[str | None] = mapped_column(sa.String(64))
    s3_access_key_id: Mapped[str | None] = mapped_column(sa.String(255))
    encrypted_s3_secret_key: Mapped[str | None] = mapped_column(sa.Text)
    s3_use_ssl: Mapped[bool] = mapped_column(default=True)
    # smb
    smb_server: Mapped[str | None] = mapped_column(sa.String(255))
    smb_share: Mapped[str | None] = mapped_column(sa.String(255))
    smb_path: Mapped[str | None] = mapped_column(sa.String(1024), default="/")
    smb_username: Mapped[str | None] = mapped_column(sa.String(255))
    encrypted_smb_password: Mapped[str | None] = mapped_column(sa.Text)
    smb_domain: Mapped[str | None] = mapped_column(sa.String(255))
    smb_port: Mapped[int] = mapped_column(default=445)

    # processing
    polling_interval_minutes: Mapped[int] = mapped_column(default=15)
    use_fs_events: Mapped[bool] = mapped_column(default=True)  # local: watch-pipeline events
    file_extensions: Mapped[list[str]] = mapped_column(JsonList, default=list)
    skip_files_older_than_days: Mapped[int | None] = mapped_column(default=30)
    recursive: Mapped[bool] = mapped_column(default=True)
    auto_transcribe: Mapped[bool] = mapped_column(default=True)
    min_speakers: Mapped[int] = mapped_column(default=1)
    max_speakers: Mapped[int] = mapped_column(default=20)
    collections: Mapped[list[str]] = mapped_column(JsonList, default=list)
    tags: Mapped[list[str]] = mapped_column(JsonList, default=list)

    # multi-part
    multipart_enabled: Mapped[bool] = mapped_column(default=False)
    multipart_regex: Mapped[str] = mapped_column(sa.String(500), default=DEFAULT_MULTIPART_REGEX)
    multipart_time_window_hours: Mapped[int] = mapped_column(default=24)
    multipart_wait_scans: Mapped[int] = mapped_column(default=3)
    upload_stitched_to_source: Mapped[bool] = mapped_column(default=False)

    # last scan
    last_scan_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_scan_status: Mapped[str | None] = mapped_column(sa.String(16))
    last_scan_message: Mapped[str | None] = mapped_column(sa.Text)
    last_scan_files_found: Mapped[int | None] = mapped_column()
    last_scan_files_imported: Mapped[int | None] = mapped_column()
    last_scan_files_skipped: Mapped[int | None] = mapped_column()
    last_scan_duration_seconds: Mapped[float | None] = mapped_column()
    total_files_imported: Mapped[int] = mapped_column(default=0)
    # Scans that failed in a row (reset by a successful scan): the health sensor's signal.
    consecutive_scan_failures: Mapped[int] = mapped_column(default=0, server_default="0")
    # Set by the ``watch-pipeline events`` watcher (migration 0008): ``events`` while inotify
    # watches the root, ``polling`` with the reason when it cannot (NULL: never watched).
    fs_events_mode: Mapped[str | None] = mapped_column(sa.String(16))
    fs_events_reason: Mapped[str | None] = mapped_column(sa.Text)
    fs_events_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The one system source holding files brought by hand (migration 0010): never scanned, not
    # listed by ``source list`` unless asked; its rows carry per-file overrides (see below).
    is_manual: Mapped[bool] = mapped_column(default=False, server_default=sa.false())

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    files: Mapped[list[WatchSourceFile]] = relationship(
        back_populates="source", cascade="all, delete-orphan", passive_deletes=True
    )
    email_links: Mapped[list[WatchSourceEmail]] = relationship(
        back_populates="source", cascade="all, delete-orphan", passive_deletes=True
    )


class MediaFile(Base):
    """An imported media item (from a watch source, an upload or a URL)."""

    __tablename__ = "media_file"
    __table_args__ = (
        sa.CheckConstraint(f"status IN ({_values(MediaStatus)})", name="status"),
        sa.CheckConstraint(f"origin IN ({_values(MediaOrigin)})", name="origin"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(default=1)
    title: Mapped[str] = mapped_column(sa.String(500))
    filename: Mapped[str] = mapped_column(sa.String(500))
    imohash: Mapped[str | None] = mapped_column(sa.String(32), index=True)
    imohash_version: Mapped[str | None] = mapped_column(sa.String(64))
    # One media row per ``media`` partition (migration 0007): two runs of a partition share it.
    partition_key: Mapped[str | None] = mapped_column(sa.String(64), index=True, unique=True)
    object_key: Mapped[str | None] = mapped_column(sa.String(1024))
    # The stored bytes' checksum and how it was computed ('crc32c'; 'sha256' for rows stored
    # before migration 0009, which copied ``checksum_sha256`` here). ``checksum_sha256`` is
    # kept as it was for those rows; new rows leave it empty.
    checksum: Mapped[str | None] = mapped_column(sa.String(128))
    checksum_algorithm: Mapped[str | None] = mapped_column(sa.String(16))
    checksum_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    file_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    content_type: Mapped[str | None] = mapped_column(sa.String(100))
    duration: Mapped[float | None] = mapped_column()
    status: Mapped[str] = mapped_column(sa.String(16), default=MediaStatus.PENDING.value)
    origin: Mapped[str] = mapped_column(sa.String(16), default=MediaOrigin.WATCH.value)
    watch_source_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("watch_source.id", ondelete="SET NULL")
    )
    collections: Mapped[list[str]] = mapped_column(JsonList, default=list)
    tags: Mapped[list[str]] = mapped_column(JsonList, default=list)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    transcript_key: Mapped[str | None] = mapped_column(sa.String(1024))
    transcript_model: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WatchSourceFile(Base):
    """Every file a scan has seen in a source, with its fingerprint and import status."""

    __tablename__ = "watch_source_file"
    __table_args__ = (
        sa.UniqueConstraint("watch_source_id", "remote_path"),
        sa.Index("ix_watch_source_file_source_imohash", "watch_source_id", "imohash"),
        sa.Index("ix_watch_source_file_part_group_source", "part_group", "watch_source_id"),
        sa.CheckConstraint(f"status IN ({_values(FileStatus)})", name="status"),
        sa.CheckConstraint(
            f"skip_reason IS NULL OR skip_reason IN ({_values(SkipReason)})", name="skip_reason"
        ),
        sa.CheckConstraint(f"origin IS NULL OR origin IN ({_values(MediaOrigin)})",
                           name="origin"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    watch_source_id: Mapped[int] = mapped_column(
        sa.ForeignKey("watch_source.id", ondelete="CASCADE")
    )
    remote_path: Mapped[str] = mapped_column(sa.String(2048))
    filename: Mapped[str] = mapped_column(sa.String(500))
    file_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    file_modified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    etag: Mapped[str | None] = mapped_column(sa.String(255))
    imohash: Mapped[str | None] = mapped_column(sa.String(32), index=True)
    media_file_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("media_file.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(sa.String(32), default=FileStatus.PENDING.value, index=True)
    skip_reason: Mapped[str | None] = mapped_column(sa.String(32))
    part_group: Mapped[str | None] = mapped_column(sa.String(64))
    part_number: Mapped[int | None] = mapped_column()
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    retry_count: Mapped[int] = mapped_column(default=0)
    wait_scans: Mapped[int] = mapped_column(default=0)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Scan bookkeeping: when the current size/mtime/ETag were first seen (stability rule), the
    # fingerprint algorithm used, the run key last requested, and when an error may be retried.
    stable_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    imohash_version: Mapped[str | None] = mapped_column(sa.String(64))
    run_key: Mapped[str | None] = mapped_column(sa.String(100))
    run_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The ``media`` partition this file is imported in: its own fingerprint, or the group
    # fingerprint of a multi-part recording (NULL until decided).
    partition_key: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    # The Dagster run that took this row for import (migration 0007): another run of the same
    # partition refuses to import while that run is still running.
    import_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    # Per-file overrides of the source's settings, set on files brought by hand (migration
    # 0010); NULL takes the source's value (``origin``: ``watch``).
    owner_id: Mapped[int | None] = mapped_column()
    collections: Mapped[list[str] | None] = mapped_column(JsonList)
    tags: Mapped[list[str] | None] = mapped_column(JsonList)
    auto_transcribe: Mapped[bool | None] = mapped_column()
    delete_after_import: Mapped[bool | None] = mapped_column()
    origin: Mapped[str | None] = mapped_column(sa.String(16))

    source: Mapped[WatchSource] = relationship(back_populates="files")
    media_file: Mapped[MediaFile | None] = relationship()


class WatchEvent(Base):
    """A file-system event the watcher saw below a local source's root (migration 0008).

    ``kind`` is ``closed`` (closed after writing), ``moved`` (moved or renamed into place),
    ``modified``, ``created``, ``deleted``, or ``rescan`` (events may have been lost, e.g. the
    watcher (re)started or the kernel's queue overflowed; ``remote_path`` is empty). Rows are
    hints that make a scan come sooner; the scan's own listing stays the truth.
    """

    __tablename__ = "watch_event"
    __table_args__ = (sa.Index("ix_watch_event_source_at", "watch_source_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    watch_source_id: Mapped[int] = mapped_column(
        sa.ForeignKey("watch_source.id", ondelete="CASCADE")
    )
    remote_path: Mapped[str] = mapped_column(sa.String(2048))
    kind: Mapped[str] = mapped_column(sa.String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class EmailNotificationConfig(Base):
    """A reusable email delivery configuration (SMTP, Exchange or Microsoft 365)."""

    __tablename__ = "email_notification_config"
    __table_args__ = (
        sa.CheckConstraint(f"provider IN ({_values(EmailProvider)})", name="provider"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    provider: Mapped[str] = mapped_column(sa.String(16))
    is_enabled: Mapped[bool] = mapped_column(default=True)
    from_address: Mapped[str] = mapped_column(sa.String(320))
    default_recipients: Mapped[list[str]] = mapped_column(JsonList, default=list)
    # smtp
    smtp_host: Mapped[str | None] = mapped_column(sa.String(255))
    smtp_port: Mapped[int | None] = mapped_column()
    smtp_use_tls: Mapped[bool] = mapped_column(default=True)
    # Credentials over a connection without TLS only when the operator says so (migration 0007).
    smtp_allow_insecure_auth: Mapped[bool] = mapped_column(default=False,
                                                           server_default=sa.false())
    smtp_username: Mapped[str | None] = mapped_column(sa.String(255))
    encrypted_smtp_password: Mapped[str | None] = mapped_column(sa.Text)
    # exchange
    exchange_server: Mapped[str | None] = mapped_column(sa.String(255))
    exchange_domain: Mapped[str | None] = mapped_column(sa.String(255))
    exchange_username: Mapped[str | None] = mapped_column(sa.String(255))
    encrypted_exchange_password: Mapped[str | None] = mapped_column(sa.Text)
    # m365
    m365_tenant_id: Mapped[str | None] = mapped_column(sa.String(255))
    m365_client_id: Mapped[str | None] = mapped_column(sa.String(255))
    encrypted_m365_client_secret: Mapped[str | None] = mapped_column(sa.Text)
    # last test
    last_tested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    test_status: Mapped[str | None] = mapped_column(sa.String(16))
    test_message: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # delivery after scans: failed sends in total and the latest reason; and smtp's opt-out of
    # certificate verification (off unless an operator explicitly sets it)
    send_failures: Mapped[int] = mapped_column(default=0, server_default="0")
    last_send_error: Mapped[str | None] = mapped_column(sa.Text)
    smtp_insecure_skip_verify: Mapped[bool] = mapped_column(default=False,
                                                            server_default=sa.false())

    source_links: Mapped[list[WatchSourceEmail]] = relationship(
        back_populates="email_config", cascade="all, delete-orphan", passive_deletes=True
    )


class WatchSourceEmail(Base):
    """Links a source to an email configuration, with per-link recipients and toggles."""

    __tablename__ = "watch_source_email"
    __table_args__ = (sa.UniqueConstraint("watch_source_id", "email_config_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    watch_source_id: Mapped[int] = mapped_column(
        sa.ForeignKey("watch_source.id", ondelete="CASCADE")
    )
    email_config_id: Mapped[int] = mapped_column(
        sa.ForeignKey("email_notification_config.id", ondelete="CASCADE")
    )
    additional_recipients: Mapped[list[str]] = mapped_column(JsonList, default=list)
    notify_on_success: Mapped[bool] = mapped_column(default=True)
    notify_on_error: Mapped[bool] = mapped_column(default=True)

    source: Mapped[WatchSource] = relationship(back_populates="email_links")
    email_config: Mapped[EmailNotificationConfig] = relationship(back_populates="source_links")


class Setting(Base):
    """One global tuning knob; absent keys take their coded default."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(sa.JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# Every column holding ciphertext, per table: the secrets module binds each value to
# (table, row id, column) and `secrets rotate` walks exactly this map.
ENCRYPTED_COLUMNS: dict[type[Base], tuple[str, ...]] = {
    WatchSource: ("encrypted_s3_secret_key", "encrypted_smb_password"),
    EmailNotificationConfig: (
        "encrypted_smtp_password",
        "encrypted_exchange_password",
        "encrypted_m365_client_secret",
    ),
}
