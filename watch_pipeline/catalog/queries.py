"""Catalog side of an import: which fingerprints to request, and each step's bookkeeping.

The partition key of the ``media`` assets is the content fingerprint. Every ``watch_source_file``
row carrying that fingerprint and waiting (``pending``/``error``) belongs to the same partition;
the import picks one row as the origin and, once the media exists, marks the others as
duplicates of it. So two names for one recording, or the same recording in two sources, always
import once, even when they were found in the same tick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import FileStatus, MediaFile, WatchSource, WatchSourceFile
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION

WAITING = ("pending", "error", "importing", "downloading")


def of_partition(key: str) -> sa.ColumnElement[bool]:
    """Rows imported in partition ``key``: their partition key, or their own fingerprint."""
    f = WatchSourceFile
    return sa.or_(f.partition_key == key, sa.and_(f.partition_key.is_(None), f.imohash == key))


def partition_of(row_partition_key: str | None, row_imohash: str | None) -> str | None:
    """The partition a row belongs to (see :func:`of_partition`)."""
    return row_partition_key or row_imohash


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ClaimCandidate:
    """A waiting file row that an import run may be requested for."""

    id: int
    partition: str
    status: str
    run_key: str | None
    run_requested_at: datetime | None
    retry_count: int
    next_retry_at: datetime | None
    source_id: int
    source_name: str
    remote_path: str


def claim_candidates(session: Session, source_ids: list[int]) -> list[ClaimCandidate]:
    """Fingerprinted ``pending``/``error`` rows of ``source_ids``, oldest detection first."""
    f = WatchSourceFile
    rows = session.execute(
        sa.select(f.id, f.imohash, f.partition_key, f.status, f.run_key, f.run_requested_at,
                  f.retry_count, f.next_retry_at, f.watch_source_id, f.remote_path,
                  WatchSource.name)
        .join(WatchSource, WatchSource.id == f.watch_source_id)
        .where(f.watch_source_id.in_(source_ids),
               sa.or_(f.partition_key.is_not(None), f.imohash.is_not(None)),
               f.status.in_((FileStatus.PENDING, FileStatus.ERROR)))
        .order_by(f.created_at, f.id)
    ).all()
    return [ClaimCandidate(r.id, partition_of(r.partition_key, r.imohash) or "", r.status,
                           r.run_key, r.run_requested_at, r.retry_count or 0, r.next_retry_at,
                           r.watch_source_id, r.name, r.remote_path) for r in rows]


def partition_was_requested(session: Session, key: str) -> bool:
    """Whether any row of partition ``key`` ever carried a run key (a retry needs a new one)."""
    return bool(session.scalar(
        sa.select(sa.func.count()).select_from(WatchSourceFile)
        .where(of_partition(key), WatchSourceFile.run_key.is_not(None))))


def mark_claimed(session: Session, row_ids: list[int], run_key: str, now: datetime) -> None:
    """Record that rows ``row_ids`` were requested as run ``run_key`` at ``now``."""
    session.execute(
        sa.update(WatchSourceFile).where(WatchSourceFile.id.in_(row_ids))
        .values(status=FileStatus.PENDING, run_key=run_key, run_requested_at=now))


@dataclass(frozen=True)
class PartRef:
    """One part of a multi-part recording being imported."""

    file_id: int
    number: int
    remote_path: str
    filename: str
    file_size: int
    imohash: str


@dataclass(frozen=True)
class ImportItem:
    """Everything an import run needs, rebuilt from the partition key and the catalog.

    For a multi-part recording ``parts`` lists the parts in order (the origin row is part 1's
    ``file_id``), ``filename`` is the stitched name and ``missing`` the part numbers that never
    arrived; a single file has no parts.
    """

    fingerprint: str
    file_id: int
    source_id: int
    source_name: str
    source_type: str
    remote_path: str
    filename: str
    file_size: int
    owner_id: int
    collections: tuple[str, ...]
    tags: tuple[str, ...]
    auto_transcribe: bool
    delete_after_import: bool
    upload_stitched_to_source: bool
    min_speakers: int
    max_speakers: int
    detected_at: datetime
    parts: tuple[PartRef, ...] = ()
    missing: tuple[int, ...] = ()

    @property
    def is_group(self) -> bool:
        """True for a multi-part recording."""
        return bool(self.parts)


class NothingToImport(LookupError):
    """No waiting catalog row carries this fingerprint."""


_ORIGIN_ORDER = (WatchSourceFile.watch_source_id, WatchSourceFile.part_number,
                 WatchSourceFile.created_at, WatchSourceFile.id)


def _item(session: Session, key: str, rows: list[WatchSourceFile]) -> ImportItem:
    """Build the item from the origin rows (one row, or the parts of one source's group)."""
    first = rows[0]
    source = first.source
    parts: tuple[PartRef, ...] = ()
    missing: tuple[int, ...] = ()
    filename = first.filename
    if first.part_group is not None and first.partition_key and first.partition_key != \
            first.imohash:
        parts = tuple(PartRef(r.id, r.part_number or 0, r.remote_path, r.filename,
                              r.file_size or 0, r.imohash or "") for r in rows)
        numbers = {p.number for p in parts}
        missing = tuple(n for n in range(1, max(numbers) + 1) if n not in numbers)
        filename = _stitched_name(source.multipart_regex, first.filename)
    return ImportItem(
        fingerprint=key, file_id=first.id, source_id=source.id, source_name=source.name,
        source_type=source.source_type, remote_path=first.remote_path, filename=filename,
        file_size=sum(p.file_size for p in parts) if parts else (first.file_size or 0),
        owner_id=source.owner_id, collections=tuple(source.collections or ()),
        tags=tuple(source.tags or ()), auto_transcribe=source.auto_transcribe,
        delete_after_import=source.delete_after_import,
        upload_stitched_to_source=source.upload_stitched_to_source,
        min_speakers=source.min_speakers, max_speakers=source.max_speakers,
        detected_at=min(r.created_at for r in rows), parts=parts, missing=missing)


def _stitched_name(regex: str, part_filename: str) -> str:
    from watch_pipeline.pipeline.multipart import compile_part_regex, output_name, parse_part

    parsed = parse_part(compile_part_regex(regex), part_filename)
    return output_name(parsed.base, parsed.extension) if parsed else part_filename


def _origin_rows(session: Session, key: str, statuses: tuple[str, ...] | None
                 ) -> list[WatchSourceFile]:
    f = WatchSourceFile
    query = sa.select(f).where(of_partition(key))
    if statuses is not None:
        query = query.where(f.status.in_(statuses))
    rows = list(session.scalars(query.order_by(
        sa.case((f.status == "importing", 0), (f.status == "imported", 0),
                (f.status == "stitched_part", 0), (f.status == "pending", 1),
                (f.status == "downloading", 2), else_=3), *_ORIGIN_ORDER)))
    if not rows:
        return []
    first = rows[0]
    if first.part_group is None:
        return [first]
    # a group: the parts of the origin's source, one row per part number
    chosen: dict[int, WatchSourceFile] = {}
    for r in rows:
        if r.watch_source_id == first.watch_source_id and r.part_group == first.part_group:
            chosen.setdefault(r.part_number or 0, r)
    return [chosen[n] for n in sorted(chosen)]


def begin_import(catalog: Catalog, fingerprint: str) -> ImportItem:
    """Pick the origin row(s) for partition ``fingerprint`` and mark them ``importing``.

    Raises:
        NothingToImport: No row waits for this partition (e.g. already imported).
    """
    with catalog.session() as session:
        rows = _origin_rows(session, fingerprint, WAITING)
        if not rows:
            raise NothingToImport(f"no catalog file waits for partition {fingerprint}")
        for row in rows:
            row.status = "importing"
            row.error_message = None
        return _item(session, fingerprint, rows)


def find_item(catalog: Catalog, fingerprint: str) -> ImportItem:
    """The origin of an import in progress or done (for the later assets of a run)."""
    with catalog.session() as session:
        rows = _origin_rows(session, fingerprint, None)
        if not rows:
            raise NothingToImport(f"no catalog file belongs to partition {fingerprint}")
        return _item(session, fingerprint, rows)


def media_for(catalog: Catalog, fingerprint: str) -> MediaFile | None:
    """The media item created for partition ``fingerprint``, if any."""
    with catalog.session() as session:
        return session.scalar(
            sa.select(MediaFile).where(MediaFile.partition_key == fingerprint)
            .order_by(MediaFile.id.desc()).limit(1))


def ensure_media(catalog: Catalog, item: ImportItem, *, content_type: str | None,
                 duration: float | None, file_size: int,
                 imohash: str | None = None) -> MediaFile:
    """Create (or reuse after a failed attempt) the ``media_file`` row of this partition.

    ``imohash`` is the stored file's own fingerprint when it differs from the partition key (a
    stitched recording), so the stitched file found again later is a duplicate.
    """
    with catalog.session() as session:
        media = session.scalar(
            sa.select(MediaFile).where(MediaFile.partition_key == item.fingerprint)
            .order_by(MediaFile.id.desc()).limit(1))
        if media is None:
            stem = item.filename.rsplit(".", 1)[0] if "." in item.filename else item.filename
            media = MediaFile(
                owner_id=item.owner_id, title=stem[:500], filename=item.filename,
                imohash=imohash or item.fingerprint, imohash_version=ALGORITHM_VERSION,
                partition_key=item.fingerprint, origin="watch",
                watch_source_id=item.source_id, collections=list(item.collections),
                tags=list(item.tags))
            session.add(media)
        media.status = "processing"
        media.error_message = None
        if imohash:
            media.imohash = imohash
        media.content_type = content_type
        media.duration = duration
        media.file_size = file_size
        session.flush()
        session.expunge(media)
        return media


def object_key(owner_id: int, media_id: int, filename: str) -> str:
    """Where a media item lives in the object store: ``user_{owner}/file_{id}/{filename}``."""
    safe = filename.replace("/", "_").replace("\\", "_") or "media"
    return f"user_{owner_id}/file_{media_id}/{safe}"


def complete_upload(catalog: Catalog, item: ImportItem, media_id: int, *, key: str,
                    sha256: str | None, auto_transcribe: bool) -> int:
    """Record the stored object, mark the origin ``imported`` and its twins as duplicates.

    Returns how many other rows were marked ``skipped_duplicate``.
    """
    now = _now()
    f = WatchSourceFile
    with catalog.session() as session:
        media = session.get(MediaFile, media_id)
        media.object_key = key
        media.checksum_sha256 = sha256
        media.status = "processing" if auto_transcribe else "completed"
        origin_ids = [p.file_id for p in item.parts] or [item.file_id]
        origins = [session.get(f, i) for i in origin_ids]
        first_time = any(o.status not in ("imported", "stitched_part") for o in origins)
        for origin in origins:
            origin.status = "stitched_part" if item.is_group else "imported"
            origin.media_file_id = media_id
            origin.processed_at = now
            origin.error_message = None
        if first_time:
            source = session.get(WatchSource, item.source_id)
            source.total_files_imported = (source.total_files_imported or 0) + 1
        twins = session.scalars(
            sa.select(f).where(of_partition(item.fingerprint), f.id.not_in(origin_ids),
                               f.status.in_((*WAITING, "waiting_for_parts")))).all()
        where = f"{item.source_name}:{item.remote_path}"
        for twin in twins:
            twin.status = "skipped_duplicate"
            twin.skip_reason = ("duplicate_same_source" if twin.watch_source_id == item.source_id
                                else "duplicate_other_source")
            twin.media_file_id = media_id
            twin.processed_at = now
            twin.error_message = (f"same content as {where}, imported once as media {media_id}")
        return len(twins)


def complete_transcript(catalog: Catalog, media_id: int, *, key: str, model: str) -> None:
    """Mark the media ``completed`` with its transcript location and model."""
    with catalog.session() as session:
        media = session.get(MediaFile, media_id)
        media.transcript_key = key
        media.transcript_model = model
        media.status = "completed"
        media.error_message = None


def fail_transcript(catalog: Catalog, media_id: int, reason: str) -> None:
    """Record a failed transcription on the media; the import (object, rows) stays as it is."""
    with catalog.session() as session:
        media = session.get(MediaFile, media_id)
        media.status = "error"
        media.error_message = reason[:4000]


def fail_import(catalog: Catalog, fingerprint: str, reason: str, *,
                backoff: Callable[[int], timedelta], run_key: str | None = None,
                now: datetime | None = None) -> int:
    """Record a failed import on the rows it concerned and on the media, scheduling a retry.

    The rows are those a run was working on (``importing``/``downloading``) and, when
    ``run_key`` is given, the ``pending`` rows that run was requested for (a run that died
    before its first step). Returns how many rows were marked ``error``.
    """
    now = now or _now()
    f = WatchSourceFile
    concerned = f.status.in_(("importing", "downloading"))
    if run_key is not None:
        concerned = sa.or_(concerned, sa.and_(f.status == "pending", f.run_key == run_key))
    with catalog.session() as session:
        rows = session.scalars(sa.select(f).where(of_partition(fingerprint), concerned)).all()
        for row in rows:
            row.status = "error"
            row.processed_at = now
            row.error_message = reason[:4000]
            row.retry_count = (row.retry_count or 0) + 1
            row.next_retry_at = now + backoff(row.retry_count)
        media = session.scalar(
            sa.select(MediaFile).where(MediaFile.partition_key == fingerprint)
            .order_by(MediaFile.id.desc()).limit(1))
        if media is not None and media.status != "completed":
            media.status = "error"
            media.error_message = reason[:4000]
        return len(rows)


def assign_run_key(catalog: Catalog, keys: list[str], run_key: str) -> None:
    """Record that partitions ``keys`` are imported by the run ``run_key`` (a batch)."""
    f = WatchSourceFile
    with catalog.session() as session:
        for key in keys:
            session.execute(sa.update(f).where(of_partition(key), f.status == "pending",
                                               f.run_key.is_not(None))
                            .values(run_key=run_key))


def set_status(catalog: Catalog, file_id: int, status: str) -> None:
    """Move one file row to ``status`` (``downloading`` while a remote copy is fetched)."""
    with catalog.session() as session:
        session.get(WatchSourceFile, file_id).status = status


def reset_for_rescan(catalog: Catalog, file_id: int, reason: str) -> None:
    """The file changed after it was fingerprinted: forget the fingerprint so a scan looks again."""
    with catalog.session() as session:
        row = session.get(WatchSourceFile, file_id)
        row.status = "pending"
        row.imohash = None
        row.run_key = None
        row.stable_since = _now()
        row.error_message = reason


def retry_files(catalog: Catalog, source_id: int, remote_path: str | None = None) -> int:
    """Release ``error`` rows held after their automatic retries (``source files retry``)."""
    f = WatchSourceFile
    with catalog.session() as session:
        query = sa.update(f).where(f.watch_source_id == source_id, f.status == "error")
        if remote_path is not None:
            query = query.where(f.remote_path == remote_path)
        result = session.execute(query.values(retry_count=0, next_retry_at=None))
        return result.rowcount or 0
