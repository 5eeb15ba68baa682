"""Creating, changing and reading watch sources, with every rule enforced here.

The CLI (and any future API) calls these functions; they validate the whole resulting row, keep
``source_type`` immutable, and encrypt the source's secret bound to its row.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

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
    SourceType.LOCAL: frozenset({"local_path", "delete_after_import"}),
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
})
STATUS_FIELDS = (
    "last_scan_at", "last_scan_status", "last_scan_message", "last_scan_files_found",
    "last_scan_files_imported", "last_scan_files_skipped", "last_scan_duration_seconds",
    "total_files_imported",
)


class NotFoundError(LookupError):
    """No row matches the given name or id."""


def find_source(session: Session, ref: str | int) -> WatchSource:
    """Find a source by id (digits) or exact name.

    Raises:
        NotFoundError: Nothing matches.
    """
    text = str(ref).strip()
    source = session.scalar(sa.select(WatchSource).where(WatchSource.name == text))
    if source is None and text.isdigit():
        source = session.get(WatchSource, int(text))
    if source is None:
        raise NotFoundError(f"no watch source named or numbered {text!r}")
    return source


def list_sources(session: Session, *, source_type: str | None = None,
                 enabled_only: bool = False) -> list[WatchSource]:
    """Every source, ordered by id, optionally of one type or enabled only."""
    query = sa.select(WatchSource).order_by(WatchSource.id)
    if source_type:
        query = query.where(WatchSource.source_type == source_type)
    if enabled_only:
        query = query.where(WatchSource.is_enabled.is_(True))
    return list(session.scalars(query))


def _check_fields(source_type: str, fields: dict[str, Any]) -> None:
    allowed = COMMON_FIELDS | TYPE_FIELDS[source_type]
    for key in fields:
        if key == "source_type":
            continue
        if key not in allowed:
            owner = next((t for t, names in TYPE_FIELDS.items() if key in names), None)
            rule = (f"only applies to {owner} sources, not {source_type}" if owner
                    else "is not a watch source field")
            raise v.ValidationError(key, rule)


def _normalise(session: Session, source: WatchSource) -> None:
    """Validate the whole row and normalise its values in place."""
    with session.no_autoflush:
        _normalise_fields(session, source)


def _normalise_fields(session: Session, source: WatchSource) -> None:
    source.name = v.name(source.name)
    clash = session.scalar(
        sa.select(WatchSource.id).where(WatchSource.name == source.name,
                                        WatchSource.id != (source.id or -1))
    )
    if clash is not None:
        raise v.ValidationError("name", f"must be unique; source {clash} already has it")
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
        source.s3_region = (source.s3_region or "").strip() or None
        source.s3_access_key_id = (source.s3_access_key_id or "").strip() or None
    elif source.source_type == SourceType.SMB:
        source.smb_server = v.hostname("smb_server", source.smb_server)
        source.smb_share = v.share_name(source.smb_share)
        source.smb_path = v.share_path("smb_path", source.smb_path)
        source.smb_port = v.int_range("smb_port", source.smb_port, 1, 65_535)
        source.smb_username = (source.smb_username or "").strip() or None
        source.smb_domain = (source.smb_domain or "").strip() or None


def _set_secret(box: SecretBox, source: WatchSource, secret: str | None) -> None:
    if secret is None:
        return
    column = SECRET_COLUMN.get(source.source_type)
    if column is None:
        raise v.ValidationError("secret", f"{source.source_type} sources take no secret")
    value = box.encrypt(secret, table=WatchSource.__tablename__, row_id=source.id,
                        column=column) if secret else None
    setattr(source, column, value)


_DEFAULTS: dict[str, Any] = {
    "is_enabled": True, "owner_id": 1, "delete_after_import": False, "s3_use_ssl": True,
    "smb_path": "/", "smb_port": 445, "polling_interval_minutes": 15, "use_fs_events": False,
    "file_extensions": [], "skip_files_older_than_days": 30, "recursive": True,
    "auto_transcribe": True, "min_speakers": 1, "max_speakers": 20, "collections": [],
    "tags": [], "multipart_enabled": False, "multipart_regex": DEFAULT_MULTIPART_REGEX,
    "multipart_time_window_hours": 24, "multipart_wait_scans": 3,
    "upload_stitched_to_source": False, "total_files_imported": 0,
}


def create_source(session: Session, box: SecretBox | None, *, fields: dict[str, Any],
                  secret: str | None = None) -> WatchSource:
    """Validate and insert a source; ``secret`` is the S3 secret key or the SMB password.

    Raises:
        ValidationError: A field breaks a rule.
    """
    source_type = fields.get("source_type")
    if source_type not in TYPE_FIELDS:
        raise v.ValidationError("source_type", "must be one of local, s3, smb")
    _check_fields(source_type, fields)
    values = {**_DEFAULTS, **fields}
    values = {k: val for k, val in values.items()
              if k in COMMON_FIELDS | TYPE_FIELDS[source_type] | {"source_type", "owner_id",
                                                                   "total_files_imported"}}
    source = WatchSource(**values)
    _normalise(session, source)
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
        if box is None:
            raise v.ValidationError("secret", "no encryption key available")
        _set_secret(box, source, secret)
        session.flush()
    return source


def update_source(session: Session, box: SecretBox | None, source: WatchSource, *,
                  fields: dict[str, Any], secret: str | None = None) -> WatchSource:
    """Validate and apply changed fields to ``source`` (``source_type`` is immutable)."""
    if "source_type" in fields and fields["source_type"] != source.source_type:
        raise v.ValidationError("source_type", "cannot be changed after creation")
    _check_fields(source.source_type, fields)
    for key, value in fields.items():
        setattr(source, key, value)
    _normalise(session, source)
    if secret is not None:
        if box is None:
            raise v.ValidationError("secret", "no encryption key available")
        _set_secret(box, source, secret)
    session.flush()
    return source


def delete_source(session: Session, source: WatchSource) -> int:
    """Delete a source and its file history (imported media stay); returns the files removed."""
    count = session.scalar(
        sa.select(sa.func.count()).select_from(WatchSourceFile)
        .where(WatchSourceFile.watch_source_id == source.id)
    ) or 0
    session.delete(source)
    session.flush()
    return count


def source_secret(box: SecretBox, source: WatchSource) -> str | None:
    """Decrypt the source's secret (S3 secret key or SMB password), ``None`` when unset."""
    column = SECRET_COLUMN.get(source.source_type)
    stored = getattr(source, column) if column else None
    if not stored:
        return None
    return box.decrypt(stored, table=WatchSource.__tablename__, row_id=source.id, column=column)


def source_to_dict(source: WatchSource) -> dict[str, Any]:
    """The source as JSON-ready data: catalog column names, secrets as ``has_secret``."""
    data: dict[str, Any] = {}
    for column in WatchSource.__table__.columns:
        if column.name.startswith("encrypted_"):
            continue
        value = getattr(source, column.name)
        data[column.name] = value.isoformat() if hasattr(value, "isoformat") else value
    secret_column = SECRET_COLUMN.get(source.source_type)
    data["has_secret"] = bool(secret_column and getattr(source, secret_column))
    return data
