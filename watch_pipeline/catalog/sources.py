"""Creating, changing and reading watch sources, with every rule enforced here.

The CLI (and any future API) calls these functions; they validate the whole resulting row, keep
``source_type`` immutable, and encrypt the source's secret bound to its row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from watch_pipeline.catalog import crud
from watch_pipeline.catalog import validation as v
from watch_pipeline.catalog.models import (
    DEFAULT_MULTIPART_REGEX,
    SourceType,
    WatchSource,
    WatchSourceFile,
)
from watch_pipeline.catalog.secrets import SecretBox

# Fields that belong to one source type only; the rest apply to every type.
TYPE_FIELDS: dict[str, frozenset[str]] = {
    SourceType.LOCAL: frozenset({"local_path"}),
    SourceType.S3: frozenset({
        "s3_endpoint_url", "s3_bucket_name", "s3_prefix", "s3_region", "s3_access_key_id",
        "s3_use_ssl",
    }),
    SourceType.SMB: frozenset({
        "smb_server", "smb_share", "smb_path", "smb_username", "smb_domain", "smb_port",
    }),
}
SECRET_COLUMN: dict[str, str] = {
    SourceType.S3: "encrypted_s3_secret_key",
    SourceType.SMB: "encrypted_smb_password",
}
COMMON_FIELDS = frozenset({
    "name", "is_enabled", "owner_id", "polling_interval_minutes", "use_fs_events",
    "file_extensions", "skip_files_older_than_days", "recursive", "auto_transcribe",
    "min_speakers", "max_speakers", "collections", "tags", "multipart_enabled", "multipart_regex",
    "multipart_time_window_hours", "multipart_wait_scans", "upload_stitched_to_source",
    # Every type: the import deletes the file (S3 object, SMB file) once its media is stored,
    # and only the version it scanned (pipeline.steps checks the ETag or size and mtime).
    "delete_after_import",
})
_DEFAULTS: dict[str, Any] = {
    "is_enabled": True, "owner_id": 1, "delete_after_import": False, "s3_use_ssl": True,
    "smb_path": "/", "smb_port": 445, "polling_interval_minutes": 15, "use_fs_events": True,
    "file_extensions": [], "skip_files_older_than_days": 30, "recursive": True,
    "auto_transcribe": True, "min_speakers": 1, "max_speakers": 20, "collections": [],
    "tags": [], "multipart_enabled": False, "multipart_regex": DEFAULT_MULTIPART_REGEX,
    "multipart_time_window_hours": 24, "multipart_wait_scans": 3,
    "upload_stitched_to_source": False, "total_files_imported": 0,
}
KIND = crud.RowKind(
    model=WatchSource, noun="watch source", kind_column="source_type",
    common_fields=COMMON_FIELDS, kind_fields=TYPE_FIELDS,
    secret_column=SECRET_COLUMN, defaults=_DEFAULTS, owner_word="sources",
    children=WatchSourceFile.watch_source_id)
STATUS_FIELDS = (
    "last_scan_at", "last_scan_status", "last_scan_message", "last_scan_files_found",
    "last_scan_files_imported", "last_scan_files_skipped", "last_scan_duration_seconds",
    "total_files_imported",
)


def find_source(session: Session, ref: str | int) -> WatchSource:
    """Find a source by exact name, else by id (digits).

    Raises:
        NotFoundError: Nothing matches.
    """
    return crud.find(session, KIND, ref)


def list_sources(session: Session, *, source_type: str | None = None,
                 enabled_only: bool = False) -> list[WatchSource]:
    """Every source, ordered by id, optionally of one type or enabled only."""
    return crud.list_rows(session, KIND, of_kind=source_type, enabled_only=enabled_only)


def _normalise_fields(source: WatchSource) -> None:
    """The source's own rules (the name and the column limits are :mod:`crud`'s)."""
    source.polling_interval_minutes = v.int_range(
        "polling_interval_minutes", source.polling_interval_minutes, 1, 1440)
    v.int_range("min_speakers", source.min_speakers, 1, 20)
    v.int_range("max_speakers", source.max_speakers, 1, 20)
    if source.min_speakers > source.max_speakers:
        raise v.ValidationError("min_speakers", "must not exceed max_speakers")
    if source.skip_files_older_than_days is not None:
        v.int_range("skip_files_older_than_days", source.skip_files_older_than_days, 1, 36_500)
    v.int_range("owner_id", source.owner_id, 1, 2**31 - 1)
    source.file_extensions = v.extensions(source.file_extensions)
    source.collections = v.labels("collections", source.collections)
    source.tags = v.labels("tags", source.tags)
    source.multipart_regex = v.multipart_regex(source.multipart_regex)
    v.int_range("multipart_time_window_hours", source.multipart_time_window_hours, 1, 8760)
    v.int_range("multipart_wait_scans", source.multipart_wait_scans, 1, 1000)

    if source.source_type == SourceType.LOCAL:
        source.local_path = v.relative_path("local_path", source.local_path)
    elif source.source_type == SourceType.S3:
        source.s3_bucket_name = v.bucket(source.s3_bucket_name)
        source.s3_endpoint_url = v.endpoint_url(source.s3_endpoint_url)
        source.s3_prefix = v.s3_prefix(source.s3_prefix)
        source.s3_region = v.optional_text("s3_region", source.s3_region)
        source.s3_access_key_id = v.optional_text("s3_access_key_id", source.s3_access_key_id)
    elif source.source_type == SourceType.SMB:
        source.smb_server = v.hostname("smb_server", source.smb_server)
        source.smb_share = v.share_name(source.smb_share)
        source.smb_path = v.share_path("smb_path", source.smb_path)
        source.smb_port = v.int_range("smb_port", source.smb_port, 1, 65_535)
        source.smb_username = v.optional_text("smb_username", source.smb_username)
        source.smb_domain = v.optional_text("smb_domain", source.smb_domain)


def create_source(session: Session, box: SecretBox | None, *, fields: dict[str, Any],
                  secret: str | None = None) -> WatchSource:
    """Validate and insert a source; ``secret`` is the S3 secret key or the SMB password.

    Raises:
        ValidationError: A field breaks a rule.
    """
    source = crud.new_row(KIND, fields)
    crud.normalise(session, KIND, source, _normalise_fields)
    session.add(source)
    session.flush()  # the row id is part of the secret's associated data
    # The ORM fires a column's default for a None on INSERT; an explicit None (e.g. "never skip
    # old files") must be written as NULL afterwards.
    explicit_nulls = [k for k, val in fields.items() if val is None]
    for key in explicit_nulls:
        setattr(source, key, None)
    if explicit_nulls:
        session.flush()
    if secret is not None:
        crud.set_secret(KIND, box, source, secret)
        session.flush()
    return source


def update_source(session: Session, box: SecretBox | None, source: WatchSource, *,
                  fields: dict[str, Any], secret: str | None = None) -> WatchSource:
    """Validate and apply changed fields to ``source`` (``source_type`` is immutable)."""
    crud.apply_fields(KIND, source, fields)
    crud.normalise(session, KIND, source, _normalise_fields)
    crud.set_secret(KIND, box, source, secret)
    session.flush()
    return source


delete_source = KIND.delete
"""Delete a source and its file history (imported media stay); returns the files removed."""
source_secret = KIND.read_secret
"""Decrypt the source's secret (S3 secret key or SMB password), ``None`` when unset."""
source_to_dict = KIND.to_dict
"""The source as JSON-ready data: catalog column names, secrets as ``has_secret``."""
