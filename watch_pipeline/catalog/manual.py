"""Catalog side of files brought by hand: the manual-imports source and its rows.

Files brought by hand (``watch-pipeline media import``, ``manual_import_job``) are rows of one
hidden system source (``watch_source.is_manual``, type ``local``, never scanned). Each row is one
arrival, carrying its own owner, collections, tags, ``auto_transcribe``,
``delete_after_import`` and ``origin`` (``upload``/``url``), which the import uses instead of
the source's (:func:`watch_pipeline.catalog.queries.find_item`). The local watch sensor claims
them like any scanned file, so the import runs through the same partition and assets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import (
    FileStatus,
    MediaFile,
    SourceType,
    WatchSource,
    WatchSourceFile,
)

MANUAL_SOURCE_NAME = "manual imports (system)"
"""The name of the hidden source; ``source list --all`` shows it."""

WAITING = (FileStatus.PENDING, FileStatus.ERROR, FileStatus.IMPORTING, FileStatus.DOWNLOADING)


def manual_source_id(catalog: Catalog) -> int:
    """The id of the manual-imports source, created on first use.

    Two first uses at once both end with the one row (the name is unique).
    """
    with catalog.session() as session:
        found = session.scalar(sa.select(WatchSource.id).where(WatchSource.is_manual.is_(True))
                               .order_by(WatchSource.id).limit(1))
        if found is not None:
            return found
    try:
        with catalog.session() as session:
            source = WatchSource(
                name=MANUAL_SOURCE_NAME, source_type=SourceType.LOCAL, local_path="",
                is_manual=True, is_enabled=True, use_fs_events=False, recursive=False,
                polling_interval_minutes=1440, skip_files_older_than_days=None,
                delete_after_import=False, multipart_enabled=False,
                upload_stitched_to_source=False)
            session.add(source)
            session.flush()
            return source.id
    except sa.exc.IntegrityError:
        with catalog.session() as session:
            return session.scalars(sa.select(WatchSource.id)
                                   .where(WatchSource.is_manual.is_(True))).one()


def file_at(session: Session, source_id: int, remote_path: str) -> WatchSourceFile | None:
    """The manual-imports row of ``remote_path``, if that path was ever brought."""
    return session.scalar(sa.select(WatchSourceFile).where(
        WatchSourceFile.watch_source_id == source_id,
        WatchSourceFile.remote_path == remote_path))


def waiting_under(session: Session, source_id: int, prefix: str) -> WatchSourceFile | None:
    """A waiting row whose path lies in the folder ``prefix`` (a staged download in flight)."""
    folder = prefix.rstrip("/") + "/"
    return session.scalar(sa.select(WatchSourceFile).where(
        WatchSourceFile.watch_source_id == source_id,
        sa.func.substr(WatchSourceFile.remote_path, 1, len(folder)) == folder,
        WatchSourceFile.status.in_(WAITING)).limit(1))


@dataclass(frozen=True)
class ArrivalState:
    """Where one manual arrival stands now (what ``media import --wait`` polls).

    Attributes:
        status: The row's status (``pending`` … ``imported``, ``skipped_*``, ``error``).
        skip_reason: With a ``skipped_*`` status.
        message: The row's error or skip message.
        media_id: The media the row imported or duplicates.
        media_status: That media's status (``processing`` while it is transcribed).
        fingerprinted: False once the import found the file changed after it was registered.
        retry_count: Failed attempts so far.
    """

    status: str
    skip_reason: str | None
    message: str | None
    media_id: int | None
    media_status: str | None
    fingerprinted: bool
    retry_count: int


def arrival_state(catalog: Catalog, file_id: int) -> ArrivalState | None:
    """The state of the manual row ``file_id`` (``None`` when it was removed)."""
    with catalog.session() as session:
        row = session.get(WatchSourceFile, file_id)
        if row is None:
            return None
        media = session.get(MediaFile, row.media_file_id) if row.media_file_id else None
        return ArrivalState(row.status, row.skip_reason, row.error_message, row.media_file_id,
                            media.status if media else None, row.imohash is not None,
                            row.retry_count or 0)


def release_retry(session: Session, row: WatchSourceFile, now: datetime) -> None:
    """A failed arrival brought again: retry it on the next tick, its counters reset."""
    row.retry_count = 0
    row.next_retry_at = None
    row.last_seen_at = now
