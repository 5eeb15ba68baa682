"""Catalog side of an import: which fingerprints to request, and each step's bookkeeping.

A ``media`` partition key is ``<slug>-<fingerprint>`` (a bare fingerprint for older media, see
``pipeline/keys.py``); here it is an opaque key, and the fingerprint is the content's identity.
Every ``watch_source_file`` row of that partition waiting (``pending``/``error``) is one import;
the import picks one row as the origin and, once the media exists, marks the others as
duplicates of it. So two names for one recording, or the same recording in two sources, always
import once, even when they were found in the same tick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import (
    FileStatus,
    MediaFile,
    MediaOrigin,
    MediaStatus,
    ScanStatus,
    SkipReason,
    SourceType,
    WatchEvent,
    WatchSource,
    WatchSourceFile,
)

WAITING = (FileStatus.PENDING, FileStatus.ERROR, FileStatus.IMPORTING, FileStatus.DOWNLOADING)
# A run holds a partition's rows while they are in one of these states (``error``: its failure
# may have been recorded by another run while it still works, see :func:`begin_import`).
HELD = (FileStatus.IMPORTING, FileStatus.DOWNLOADING, FileStatus.ERROR)
DONE = (FileStatus.IMPORTED, FileStatus.STITCHED_PART)


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
               # a source whose last scan failed (server down, login refused) waits: its files
               # would only burn their retries
               sa.or_(WatchSource.last_scan_status.is_(None),
                      WatchSource.last_scan_status != ScanStatus.ERROR,
                      WatchSource.is_manual.is_(True)),  # never scanned: nothing failed
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


def _of_content_key(column: sa.ColumnElement[str | None], fingerprint: str
                    ) -> sa.ColumnElement[bool]:
    """A partition key made from ``fingerprint``: bare, or ``<slug>-<fingerprint>``.

    The SQL side of ``pipeline.keys.fingerprint_of``: a readable key ends with its fingerprint.
    """
    return sa.or_(column == fingerprint, column.endswith("-" + fingerprint))


def recorded_partition_key(session: Session, fingerprint: str, *, group: bool = False
                           ) -> str | None:
    """The partition key the catalog already holds for content ``fingerprint``, if any.

    A content keeps the key it was first given, so every copy of it joins one partition and the
    media row (unique per key) is shared. Rows of a claimed or imported partition come first,
    then the oldest. ``group``: ``fingerprint`` is a multi-part group's (its rows carry their
    parts' imohashes, so only the key identifies them); otherwise the rows' own imohash is used.
    """
    f = WatchSourceFile
    claimed = sa.or_(f.run_key.is_not(None), f.status.in_(DONE))
    which = (sa.and_(f.part_group.is_not(None), _of_content_key(f.partition_key, fingerprint))
             if group else sa.and_(f.imohash == fingerprint, sa.or_(
                 f.partition_key.is_(None), _of_content_key(f.partition_key, fingerprint))))
    key = session.scalar(
        sa.select(sa.func.coalesce(f.partition_key, f.imohash))
        .where(which, f.status.in_((*WAITING, *DONE)))
        .order_by(sa.case((claimed, 0), else_=1), f.id).limit(1))
    if key is not None:
        return key
    media = (_of_content_key(MediaFile.partition_key, fingerprint) if group else sa.and_(
        MediaFile.imohash == fingerprint, _of_content_key(MediaFile.partition_key, fingerprint)))
    return session.scalar(sa.select(MediaFile.partition_key).where(media)
                          .order_by(MediaFile.id).limit(1))


def move_to_partition(session: Session, row_ids: list[int], key: str) -> None:
    """Put rows ``row_ids`` in partition ``key`` (a copy joining the partition of its content)."""
    session.execute(sa.update(WatchSourceFile).where(WatchSourceFile.id.in_(row_ids))
                    .values(partition_key=key))


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
    ``file_id``), ``missing`` the part numbers that never arrived, and ``multipart_regex`` the
    source's part pattern; ``filename`` is then part 1's name until the caller names the
    stitched recording (``pipeline.steps`` does, with ``pipeline.multipart``; the catalog does
    not parse names). A single file has no parts.

    Owner, collections, tags, ``auto_transcribe`` and ``delete_after_import`` are the origin
    row's own values where it has them (a file brought by hand), else its source's; ``origin``
    is how the media entered: ``watch``, ``upload`` (a path brought by hand) or ``url``.
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
    multipart_regex: str | None = None
    origin: str = MediaOrigin.WATCH.value

    @property
    def is_group(self) -> bool:
        """True for a multi-part recording."""
        return bool(self.parts)


class NothingToImport(LookupError):
    """No waiting catalog row carries this fingerprint."""


_ORIGIN_ORDER = (WatchSourceFile.watch_source_id, WatchSourceFile.part_number,
                 WatchSourceFile.created_at, WatchSourceFile.id)


_V = TypeVar("_V")


def _own(value: _V | None, default: _V) -> _V:
    """A file row's override, else the source's value."""
    return default if value is None else value


def _item(session: Session, key: str, rows: list[WatchSourceFile]) -> ImportItem:
    """Build the item from the origin rows (one row, or the parts of one source's group)."""
    first = rows[0]
    source = first.source
    parts: tuple[PartRef, ...] = ()
    missing: tuple[int, ...] = ()
    if first.part_group is not None and first.partition_key and first.partition_key != \
            first.imohash:
        parts = tuple(PartRef(r.id, r.part_number or 0, r.remote_path, r.filename,
                              r.file_size or 0, r.imohash or "") for r in rows)
        numbers = {p.number for p in parts}
        missing = tuple(n for n in range(1, max(numbers) + 1) if n not in numbers)
    return ImportItem(
        fingerprint=key, file_id=first.id, source_id=source.id, source_name=source.name,
        source_type=source.source_type, remote_path=first.remote_path, filename=first.filename,
        file_size=sum(p.file_size for p in parts) if parts else (first.file_size or 0),
        owner_id=_own(first.owner_id, source.owner_id),
        collections=tuple(_own(first.collections, source.collections) or ()),
        tags=tuple(_own(first.tags, source.tags) or ()),
        auto_transcribe=_own(first.auto_transcribe, source.auto_transcribe),
        delete_after_import=_own(first.delete_after_import, source.delete_after_import),
        upload_stitched_to_source=source.upload_stitched_to_source,
        min_speakers=source.min_speakers, max_speakers=source.max_speakers,
        detected_at=min(r.created_at for r in rows), parts=parts, missing=missing,
        multipart_regex=source.multipart_regex if parts else None,
        origin=first.origin or MediaOrigin.WATCH.value)


def _origin_rows(session: Session, key: str, statuses: tuple[str, ...] | None
                 ) -> list[WatchSourceFile]:
    f = WatchSourceFile
    query = sa.select(f).where(of_partition(key))
    if statuses is not None:
        query = query.where(f.status.in_(statuses))
    rows = list(session.scalars(query.order_by(
        sa.case((f.status == FileStatus.IMPORTING, 0), (f.status == FileStatus.IMPORTED, 0),
                (f.status == FileStatus.STITCHED_PART, 0), (f.status == FileStatus.PENDING, 1),
                (f.status == FileStatus.DOWNLOADING, 2), else_=3), *_ORIGIN_ORDER)))
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


class PartitionBusy(RuntimeError):
    """Another run, still running, holds the rows of this partition."""


def _lock_partition(session: Session, key: str) -> None:
    """Serialise the takers of partition ``key`` until the session's transaction ends.

    SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock before the first read (other
    writers wait up to the connection's ``busy_timeout``), so nothing can change between the
    read and the write. PostgreSQL: the partition's file rows ``SELECT … FOR UPDATE``. Must be
    the session's first statement.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(sa.text("BEGIN IMMEDIATE"))
    else:
        session.execute(sa.select(WatchSourceFile.id).where(of_partition(key))
                        .order_by(WatchSourceFile.id).with_for_update())


def begin_import(catalog: Catalog, fingerprint: str, *, holder: str | None = None,
                 is_live: Callable[[str], bool] = lambda _holder: True) -> ImportItem:
    """Pick the origin row(s) for partition ``fingerprint`` and mark them ``importing``.

    Atomic on SQLite and PostgreSQL: the partition is locked from the read to the write
    (:func:`_lock_partition`), so two runs starting at once take turns. The rows taken record
    ``holder`` (the run id) in ``import_run_id``. When a *different* holder still holds rows of
    the partition (``importing``/``downloading``/``error``) and ``is_live`` says that run still
    runs, the partition is refused: this run imports nothing and changes no row, and the holder
    finishes the import. A holder that no longer runs (failed, crashed, deleted) is taken over,
    as are rows held anonymously (``holder=None``, callers outside Dagster).

    Raises:
        NothingToImport: No row waits for this partition (e.g. already imported).
        PartitionBusy: A live run holds the partition.
    """
    f = WatchSourceFile
    with catalog.session() as session:
        _lock_partition(session, fingerprint)
        held_by = sa.select(f.import_run_id).distinct().where(
            of_partition(fingerprint), f.import_run_id.is_not(None), f.status.in_(HELD))
        if holder is not None:
            held_by = held_by.where(f.import_run_id != holder)
        for other in session.scalars(held_by):
            if is_live(other):
                raise PartitionBusy(
                    f"partition {fingerprint} is being imported by run {other}, which is "
                    "still running; this run imports nothing and leaves the import to it")
        rows = _origin_rows(session, fingerprint, WAITING)
        if not rows:
            raise NothingToImport(f"no catalog file waits for partition {fingerprint}")
        for row in rows:
            row.status = FileStatus.IMPORTING
            row.error_message = None
            row.import_run_id = holder
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


def _insert_ignoring_conflicts(session: Session, table: sa.Table,
                               index_elements: list[str]) -> sa.Insert:
    """``INSERT … ON CONFLICT (index_elements) DO NOTHING`` in the session's dialect."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    raise NotImplementedError(f"catalog on {dialect} is not supported")  # pragma: no cover


def ensure_media(catalog: Catalog, item: ImportItem, *, content_type: str | None,
                 duration: float | None, file_size: int, imohash_version: str,
                 imohash: str | None = None) -> MediaFile:
    """Create (or reuse after a failed attempt) the ``media_file`` row of this partition.

    ``media_file.partition_key`` is unique: the row is taken with ``INSERT … ON CONFLICT DO
    NOTHING`` and then read ``FOR UPDATE`` (PostgreSQL; on SQLite the insert holds the write
    lock), so runs racing on one partition share one row. ``imohash`` is the stored file's own
    fingerprint when it differs from the partition key (a stitched recording), so the stitched
    file found again later is a duplicate; ``imohash_version`` names the algorithm that made it.
    The row records how the media entered (``item.origin``); media brought by hand belong to no
    watch source.
    """
    stem = item.filename.rsplit(".", 1)[0] if "." in item.filename else item.filename
    with catalog.session() as session:
        session.execute(_insert_ignoring_conflicts(
            session, MediaFile.__table__, ["partition_key"]).values(
                owner_id=item.owner_id, title=stem[:500], filename=item.filename,
                imohash=imohash or item.fingerprint, imohash_version=imohash_version,
                partition_key=item.fingerprint, origin=item.origin,
                status=MediaStatus.PROCESSING,
                watch_source_id=item.source_id if item.origin == MediaOrigin.WATCH else None,
                collections=list(item.collections), tags=list(item.tags)))
        media = session.scalars(
            sa.select(MediaFile).where(MediaFile.partition_key == item.fingerprint)
            .with_for_update()).one()
        media.status = MediaStatus.PROCESSING
        media.error_message = None
        if imohash:
            media.imohash = imohash
        media.content_type = content_type
        media.duration = duration
        media.file_size = file_size
        session.flush()
        session.expunge(media)
        return media


# Longest object name segment, in UTF-8 bytes: file systems allow 255 per name, and a store may
# add a temporary suffix while it writes.
_MAX_KEY_NAME_BYTES = 180


def object_key(owner_id: int, media_id: int, filename: str) -> str:
    """Where a media item lives in the object store: ``user_{owner}/file_{id}/{filename}``.

    The name is made safe for every store: separators and control characters become ``_``,
    and a long name is shortened (its extension kept) so the key fits a file system's limit.
    """
    safe = "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in filename)
    safe = safe.strip() or "media"
    if len(safe.encode("utf-8", "surrogateescape")) > _MAX_KEY_NAME_BYTES:
        stem, dot, ext = safe.rpartition(".")
        ext = (dot + ext) if dot and len(ext) <= 10 else ""
        stem = stem if ext else safe
        budget = _MAX_KEY_NAME_BYTES - len(ext.encode("utf-8", "surrogateescape"))
        stem = stem.encode("utf-8", "surrogateescape")[:budget].decode("utf-8", "ignore")
        safe = stem + ext
    return f"user_{owner_id}/file_{media_id}/{safe}"


def complete_upload(catalog: Catalog, item: ImportItem, media_id: int, *, key: str,
                    checksum: str | None, checksum_algorithm: str | None,
                    auto_transcribe: bool) -> int:
    """Record the stored object, mark the origin ``imported`` and its twins as duplicates.

    ``checksum`` is the store's checksum of the object, recorded with its algorithm
    (``crc32c``; ``sha256`` for an object an earlier version stored).

    Returns how many other rows were marked ``skipped_duplicate``.
    """
    now = _now()
    f = WatchSourceFile
    with catalog.session() as session:
        media = session.get(MediaFile, media_id)
        media.object_key = key
        media.checksum = checksum
        media.checksum_algorithm = checksum_algorithm if checksum else None
        media.status = MediaStatus.PROCESSING if auto_transcribe else MediaStatus.COMPLETED
        origin_ids = [p.file_id for p in item.parts] or [item.file_id]
        origins = [session.get(f, i) for i in origin_ids]
        first_time = any(o.status not in DONE for o in origins)
        for origin in origins:
            origin.status = FileStatus.STITCHED_PART if item.is_group else FileStatus.IMPORTED
            origin.media_file_id = media_id
            origin.processed_at = now
            origin.error_message = None
        if first_time:
            source = session.get(WatchSource, item.source_id)
            source.total_files_imported = (source.total_files_imported or 0) + 1
        twins = session.scalars(
            sa.select(f).where(of_partition(item.fingerprint), f.id.not_in(origin_ids),
                               f.status.in_((*WAITING, FileStatus.WAITING_FOR_PARTS)))).all()
        where = f"{item.source_name}:{item.remote_path}"
        for twin in twins:
            twin.status = FileStatus.SKIPPED_DUPLICATE
            twin.skip_reason = (SkipReason.DUPLICATE_SAME_SOURCE
                                if twin.watch_source_id == item.source_id
                                else SkipReason.DUPLICATE_OTHER_SOURCE)
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
        media.status = MediaStatus.COMPLETED
        media.error_message = None


def fail_transcript(catalog: Catalog, media_id: int, reason: str) -> None:
    """Record a failed transcription on the media; the import (object, rows) stays as it is."""
    with catalog.session() as session:
        media = session.get(MediaFile, media_id)
        media.status = MediaStatus.ERROR
        media.error_message = reason[:4000]


def fail_import(catalog: Catalog, fingerprint: str, reason: str, *,
                backoff: Callable[[int], timedelta], run_key: str | None = None,
                run_id: str | None = None, now: datetime | None = None) -> int:
    """Record a failed import on the rows it concerned and on the media, scheduling a retry.

    The rows are those a run was working on (``importing``/``downloading``) and, when
    ``run_key`` is given, the ``pending`` rows that run was requested for (a run that died
    before its first step). With ``run_id`` (the failed run), rows another run holds
    (``import_run_id``) are left alone, and so is the media then: a run refused because another
    one was importing the partition must not fail that one's work. Returns how many rows were
    marked ``error``.
    """
    now = now or _now()
    f = WatchSourceFile
    working = f.status.in_((FileStatus.IMPORTING, FileStatus.DOWNLOADING))
    held_elsewhere = (sa.and_(working, f.import_run_id.is_not(None), f.import_run_id != run_id)
                      if run_id is not None else sa.false())
    concerned = sa.and_(working, sa.not_(held_elsewhere))
    if run_key is not None:
        concerned = sa.or_(concerned, sa.and_(f.status == FileStatus.PENDING,
                                              f.run_key == run_key))
    with catalog.session() as session:
        # The media belongs to the run holding the partition's rows, whatever their state.
        other_holder = run_id is not None and bool(session.scalar(
            sa.select(sa.func.count()).select_from(f)
            .where(of_partition(fingerprint), f.import_run_id.is_not(None),
                   f.import_run_id != run_id)))
        rows = session.scalars(sa.select(f).where(of_partition(fingerprint), concerned)).all()
        for row in rows:
            row.status = FileStatus.ERROR
            row.processed_at = now
            row.error_message = reason[:4000]
            row.retry_count = (row.retry_count or 0) + 1
            row.next_retry_at = now + backoff(row.retry_count)
        media = session.scalar(
            sa.select(MediaFile).where(MediaFile.partition_key == fingerprint)
            .order_by(MediaFile.id.desc()).limit(1))
        if media is not None and media.status != MediaStatus.COMPLETED and not other_holder:
            media.status = MediaStatus.ERROR
            media.error_message = reason[:4000]
        return len(rows)


def release_stranded(catalog: Catalog, run_id: str, run_key: str | None, failed_at: datetime,
                     now: datetime | None = None) -> int:
    """Make the files of a run a crash stranded retryable now, without counting the failure.

    A crash is not the file's fault: the rows the failure path marked ``error`` for run
    ``run_id`` (held by it, or requested under ``run_key``) at or after ``failed_at`` get their
    retry count back and no backoff. Rows already released are left alone, so a second call
    changes nothing. Returns how many rows were released.
    """
    now = now or _now()
    f = WatchSourceFile
    of_run = f.import_run_id == run_id
    if run_key is not None:
        of_run = sa.or_(of_run, f.run_key == run_key)
    with catalog.session() as session:
        rows = session.scalars(sa.select(f).where(
            of_run, f.status == FileStatus.ERROR, f.processed_at >= failed_at,
            f.next_retry_at > now)).all()
        for row in rows:
            row.retry_count = max((row.retry_count or 0) - 1, 0)
            row.next_retry_at = now
        return len(rows)


def assign_run_key(catalog: Catalog, keys: list[str], run_key: str) -> None:
    """Record that partitions ``keys`` are imported by the run ``run_key`` (a batch)."""
    f = WatchSourceFile
    with catalog.session() as session:
        for key in keys:
            session.execute(sa.update(f).where(of_partition(key), f.status == FileStatus.PENDING,
                                               f.run_key.is_not(None))
                            .values(run_key=run_key))


def set_status(catalog: Catalog, file_id: int, status: FileStatus) -> None:
    """Move one file row to ``status`` (``downloading`` while a remote copy is fetched)."""
    with catalog.session() as session:
        session.get(WatchSourceFile, file_id).status = status


def file_status(catalog: Catalog, file_id: int) -> str | None:
    """The status of file row ``file_id`` (``None`` when the row is gone)."""
    with catalog.session() as session:
        return session.scalar(sa.select(WatchSourceFile.status)
                              .where(WatchSourceFile.id == file_id))


def reset_for_rescan(catalog: Catalog, file_id: int, reason: str) -> None:
    """The file changed after it was fingerprinted: forget the fingerprint so a scan looks again."""
    with catalog.session() as session:
        row = session.get(WatchSourceFile, file_id)
        row.status = FileStatus.PENDING
        row.imohash = None
        row.run_key = None
        row.import_run_id = None
        row.stable_since = _now()
        row.error_message = reason


def skip_partition(catalog: Catalog, fingerprint: str, reason: SkipReason,
                   message: str) -> int:
    """Refuse partition ``fingerprint`` for good: its waiting rows become ``skipped_invalid``.

    For a file the import found unacceptable whatever the retry (e.g. ``too_long``); the rows
    say why and are never claimed again. Returns how many rows were marked.
    """
    f = WatchSourceFile
    with catalog.session() as session:
        rows = session.scalars(sa.select(f).where(of_partition(fingerprint),
                                                  f.status.in_(WAITING))).all()
        for row in rows:
            row.status = FileStatus.SKIPPED_INVALID
            row.skip_reason = reason
            row.error_message = message[:4000]
            row.processed_at = _now()
            row.next_retry_at = None
        return len(rows)


def retry_files(catalog: Catalog, source_id: int, remote_path: str | None = None) -> int:
    """Release ``error`` rows held after their automatic retries (``source files retry``)."""
    f = WatchSourceFile
    with catalog.session() as session:
        query = sa.update(f).where(f.watch_source_id == source_id, f.status == FileStatus.ERROR)
        if remote_path is not None:
            query = query.where(f.remote_path == remote_path)
        result = session.execute(query.values(retry_count=0, next_retry_at=None))
        return result.rowcount or 0


# -- scans ---------------------------------------------------------------------------------------
# What a scan (watch_pipeline.pipeline.scan) reads and writes.

_F = WatchSourceFile.__table__.c

# Every column a scan may set on a new row, so one executemany covers rows of any kind.
_INSERT_COLUMNS = (
    "watch_source_id", "remote_path", "filename", "file_size", "file_modified_at", "etag",
    "imohash", "imohash_version", "media_file_id", "status", "skip_reason", "part_group",
    "part_number", "error_message", "retry_count", "wait_scans", "processed_at", "created_at",
    "stable_since", "last_seen_at", "run_key", "next_retry_at", "partition_key",
)
_INSERT_DEFAULTS = {"retry_count": 0, "wait_scans": 0}


class SeenRow(NamedTuple):
    """What the catalog remembers of one path (a tuple: a large source has 100 000 of them)."""

    id: int
    file_size: int | None
    file_modified_at: datetime | None
    etag: str | None
    status: str
    imohash: str | None
    stable_since: datetime | None


class WaitingPart(NamedTuple):
    """A ``waiting_for_parts`` row of a source."""

    id: int
    remote_path: str
    filename: str
    file_size: int
    file_modified_at: datetime | None
    imohash: str | None
    wait_scans: int


def get_source(session: Session, source_id: int) -> WatchSource:
    """The source row ``source_id``.

    Raises:
        LookupError: No such source.
    """
    source = session.get(WatchSource, source_id)
    if source is None:
        raise LookupError(f"watch source {source_id} does not exist")
    return source


def mark_scan_running(session: Session, source_id: int) -> None:
    """Record that a scan of the source started."""
    session.get(WatchSource, source_id).last_scan_status = ScanStatus.RUNNING


def record_scan_result(session: Session, source_id: int, *, at: datetime, error: str | None,
                       finished: bool, summary: str, files_found: int, files_imported: int,
                       files_skipped: int, duration_seconds: float) -> None:
    """Record a scan's outcome on the source row.

    A failed scan counts in the failure streak; an unfinished one (time budget) keeps
    ``last_scan_at`` so the source stays due and the next tick resumes it; it is never left
    ``running``.
    """
    source = session.get(WatchSource, source_id)
    source.last_scan_message = summary[:4000]
    if error:
        source.last_scan_status = ScanStatus.ERROR
        source.last_scan_at = at
        source.consecutive_scan_failures = (source.consecutive_scan_failures or 0) + 1
    elif finished:
        if source.consecutive_scan_failures:
            _release_after_outage(session, source_id)
        source.consecutive_scan_failures = 0
        source.last_scan_status = ScanStatus.SUCCESS
        source.last_scan_at = at
        source.last_scan_files_found = files_found
        source.last_scan_files_imported = files_imported
        source.last_scan_files_skipped = files_skipped
        source.last_scan_duration_seconds = duration_seconds
    elif source.last_scan_status == ScanStatus.RUNNING:
        source.last_scan_status = ScanStatus.SUCCESS if source.last_scan_at else None


def _release_after_outage(session: Session, source_id: int) -> None:
    """The source works again after failed scans: its failed files get their retries back.

    Their failures were most likely the outage's (an unreachable server counts against each
    file in flight), so a file held after its automatic retries would otherwise stay ``error``
    until an operator released it.
    """
    session.execute(sa.update(WatchSourceFile).where(
        WatchSourceFile.watch_source_id == source_id,
        WatchSourceFile.status == FileStatus.ERROR).values(retry_count=0, next_retry_at=None))


def record_source_error(session: Session, source_id: int, message: str, *, at: datetime) -> None:
    """A source that could not even be scanned (no client, no key): counts as a failed scan."""
    source = session.get(WatchSource, source_id)
    source.last_scan_status = ScanStatus.ERROR
    source.last_scan_message = message[:4000]
    source.last_scan_at = at
    source.consecutive_scan_failures = (source.consecutive_scan_failures or 0) + 1


def recover_interrupted_scans(session: Session, source_ids: list[int]) -> list[str]:
    """Sources left ``running`` by a scan whose process ended: mark them failed, return names."""
    rows = session.scalars(sa.select(WatchSource).where(
        WatchSource.id.in_(source_ids), WatchSource.last_scan_status == ScanStatus.RUNNING)).all()
    for source in rows:
        source.last_scan_status = ScanStatus.ERROR
        source.last_scan_message = "the previous scan was interrupted before it finished"
        source.consecutive_scan_failures = (source.consecutive_scan_failures or 0) + 1
    return [s.name for s in rows]


def load_seen(session: Session, source_id: int) -> dict[str, SeenRow]:
    """Every path of the source the catalog knows, with what a scan compares."""
    rows = session.execute(
        sa.select(_F.remote_path, _F.id, _F.file_size, _F.file_modified_at, _F.etag, _F.status,
                  _F.imohash, _F.stable_since).where(_F.watch_source_id == source_id)
    ).tuples()
    make = SeenRow._make
    return {row[0]: make(row[1:]) for row in rows}


class ImportedCopy(NamedTuple):
    """A file row that already brought some content in (dedup layer 2).

    ``by_hand``: the row is a file brought by hand (``media import``), not a watched one.
    """

    source_id: int
    media_file_id: int | None
    by_hand: bool = False


def _copy(row: sa.Row | None) -> ImportedCopy | None:
    if row is None:
        return None
    return ImportedCopy(row.watch_source_id, row.media_file_id,
                        row.origin not in (None, MediaOrigin.WATCH))


def imported_copy(session: Session, fingerprint: str) -> ImportedCopy | None:
    """``(source id, media id, by hand)`` of a row already imported with this imohash."""
    return _copy(session.execute(
        sa.select(_F.watch_source_id, _F.media_file_id, _F.origin)
        .where(_F.imohash == fingerprint,
               _F.status.in_((FileStatus.IMPORTED, FileStatus.STITCHED_PART))).limit(1)
    ).first())


def imported_in_partition(session: Session, fingerprint: str) -> ImportedCopy | None:
    """``(source id, media id, by hand)`` of a row imported in a partition of ``fingerprint``."""
    return _copy(session.execute(
        sa.select(_F.watch_source_id, _F.media_file_id, _F.origin).where(
            _of_content_key(_F.partition_key, fingerprint),
            _F.status.in_((FileStatus.IMPORTED, FileStatus.STITCHED_PART))).limit(1)).first())


def existing_media(session: Session, fingerprint: str) -> int | None:
    """A media row with this imohash that is not in ``error``."""
    return session.scalar(
        sa.select(MediaFile.id).where(MediaFile.imohash == fingerprint,
                                      MediaFile.status != MediaStatus.ERROR).limit(1))


def partition_media(session: Session, fingerprint: str) -> int | None:
    """A media row of a partition of ``fingerprint`` that is not in ``error``."""
    return session.scalar(
        sa.select(MediaFile.id).where(_of_content_key(MediaFile.partition_key, fingerprint),
                                      MediaFile.status != MediaStatus.ERROR).limit(1))


def waiting_parts(session: Session, source_id: int) -> list[WaitingPart]:
    """The source's parts waiting for their multi-part group."""
    rows = session.execute(
        sa.select(_F.id, _F.remote_path, _F.filename, _F.file_size, _F.file_modified_at,
                  _F.imohash, _F.wait_scans)
        .where(_F.watch_source_id == source_id, _F.status == FileStatus.WAITING_FOR_PARTS)
    ).all()
    return [WaitingPart(r.id, r.remote_path, r.filename, r.file_size or 0, r.file_modified_at,
                        r.imohash, r.wait_scans or 0) for r in rows]


def stitched_groups(session: Session, source_id: int) -> dict[str, int | None]:
    """Part group → media id, for the source's groups already stitched."""
    return dict(session.execute(
        sa.select(_F.part_group, _F.media_file_id).where(
            _F.watch_source_id == source_id, _F.status == FileStatus.STITCHED_PART,
            _F.part_group.is_not(None))).tuples().all())


def insert_file_rows(session: Session, rows: list[dict]) -> None:
    """Insert file rows, skipping paths a racing scan inserted first (one statement)."""
    if not rows:
        return
    table = WatchSourceFile.__table__
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing(
            index_elements=["watch_source_id", "remote_path"])
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(
            index_elements=["watch_source_id", "remote_path"])
    else:  # pragma: no cover - other databases are not supported targets
        stmt = sa.insert(table)
    session.execute(stmt, [{c: r.get(c, _INSERT_DEFAULTS.get(c)) for c in _INSERT_COLUMNS}
                           for r in rows])


def update_file_row(session: Session, row_id: int, values: dict) -> None:
    """Set ``values`` on the file row ``row_id``."""
    session.execute(sa.update(WatchSourceFile).where(WatchSourceFile.id == row_id)
                    .values(**values))


def update_file_by_path(session: Session, source_id: int, remote_path: str,
                        values: dict) -> None:
    """Set ``values`` on the source's row for ``remote_path``."""
    session.execute(sa.update(WatchSourceFile).where(
        WatchSourceFile.watch_source_id == source_id,
        WatchSourceFile.remote_path == remote_path).values(**values))


@dataclass(frozen=True)
class EnabledSource:
    """An enabled source of one kind, with what decides whether it is due."""

    id: int
    name: str
    last_scan_at: datetime | None
    polling_interval_minutes: int
    events_on: bool = False  # use_fs_events and the watcher holds it in ``events`` mode
    manual: bool = False  # the manual-imports source: its files are claimed, never scanned


def enabled_sources(session: Session, kind: str) -> list[EnabledSource]:
    """The enabled sources of ``kind``, the longest unscanned first."""
    rows = session.scalars(
        sa.select(WatchSource).where(WatchSource.source_type == kind,
                                     WatchSource.is_enabled.is_(True))
        .order_by(WatchSource.last_scan_at.is_not(None), WatchSource.last_scan_at)).all()
    return [EnabledSource(r.id, r.name, r.last_scan_at, r.polling_interval_minutes,
                          bool(r.use_fs_events) and r.fs_events_mode == EVENTS_MODE,
                          bool(r.is_manual))
            for r in rows]


def sources_with_ripe_files(session: Session, source_ids: list[int],
                            cutoff: datetime) -> set[int]:
    """Sources holding files that wait for stability and were first seen before ``cutoff``."""
    return set(session.scalars(
        sa.select(_F.watch_source_id).distinct()
        .where(_F.watch_source_id.in_(source_ids), _F.status == FileStatus.PENDING,
               _F.imohash.is_(None), _F.stable_since <= cutoff)))


# -- file-system events (the ``watch-pipeline events`` watcher; migration 0008) -----------------

EVENTS_MODE, POLLING_MODE = "events", "polling"
# Event kinds after which a file's content is complete (closed after writing, moved in whole).
SETTLED_KINDS = ("closed", "moved")
RESCAN = "rescan"  # events may have been lost: scan the source whatever its interval


@dataclass(frozen=True)
class EventSource:
    """A local source as the watcher sees it."""

    id: int
    name: str
    local_path: str
    recursive: bool
    wanted: bool  # enabled, use_fs_events, and watch.fs_events_enabled
    fs_events_mode: str | None
    fs_events_reason: str | None


def event_sources(session: Session, *, setting_on: bool) -> list[EventSource]:
    """Every local source, and whether the watcher should watch it."""
    rows = session.scalars(sa.select(WatchSource).where(WatchSource.source_type == SourceType.LOCAL)
                           .order_by(WatchSource.id)).all()
    return [EventSource(r.id, r.name, r.local_path or "", bool(r.recursive),
                        setting_on and bool(r.is_enabled) and bool(r.use_fs_events),
                        r.fs_events_mode, r.fs_events_reason) for r in rows]


def set_fs_events_mode(session: Session, source_id: int, mode: str, reason: str | None,
                       at: datetime) -> bool:
    """Record the source's event mode and why; returns whether anything changed."""
    source = session.get(WatchSource, source_id)
    if source is None or (source.fs_events_mode, source.fs_events_reason) == (mode, reason):
        return False
    source.fs_events_mode, source.fs_events_reason = mode, reason
    source.fs_events_changed_at = at
    return True


def record_events(session: Session, rows: list[dict]) -> None:
    """Insert watcher events: dicts of ``watch_source_id``, ``remote_path``, ``kind``, ``at``."""
    if rows:
        session.execute(sa.insert(WatchEvent), rows)


def prune_events(session: Session, before: datetime) -> int:
    """Forget events older than ``before`` (a scan has long since seen their files)."""
    return session.execute(sa.delete(WatchEvent).where(WatchEvent.at < before)).rowcount or 0


def latest_events(session: Session, source_ids: list[int]) -> dict[int, datetime]:
    """The time of each source's newest event (sources without one are left out)."""
    if not source_ids:
        return {}
    rows = session.execute(sa.select(WatchEvent.watch_source_id, sa.func.max(WatchEvent.at))
                           .where(WatchEvent.watch_source_id.in_(source_ids))
                           .group_by(WatchEvent.watch_source_id)).tuples()
    return {sid: _aware(at) for sid, at in rows if at is not None}


def path_events(session: Session, source_id: int,
                since: datetime) -> dict[str, tuple[str, datetime]]:
    """Per path, the kind and time of its newest event since ``since``."""
    rows = session.execute(
        sa.select(WatchEvent.remote_path, WatchEvent.kind, WatchEvent.at)
        .where(WatchEvent.watch_source_id == source_id, WatchEvent.at >= since,
               WatchEvent.kind != RESCAN)
        .order_by(WatchEvent.at, WatchEvent.id)).tuples()
    return {path: (kind, _aware(at)) for path, kind, at in rows}


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def landed_at(catalog: Catalog, file_ids: list[int]) -> datetime | None:
    """When the files ``file_ids`` landed: the newest of their mtimes and settle events.

    A file moved into place keeps its old mtime; the watcher's ``moved`` (or ``closed``) event
    for its path then tells when it really arrived. ``None`` when neither is known.
    """
    with catalog.session() as session:
        rows = session.execute(
            sa.select(_F.watch_source_id, _F.remote_path, _F.file_modified_at)
            .where(_F.id.in_(file_ids))).all()
        times = [_aware(r.file_modified_at) for r in rows if r.file_modified_at]
        for r in rows:
            event = session.scalar(
                sa.select(sa.func.max(WatchEvent.at)).where(
                    WatchEvent.watch_source_id == r.watch_source_id,
                    WatchEvent.remote_path == r.remote_path,
                    WatchEvent.kind.in_(SETTLED_KINDS)))
            if event is not None:
                times.append(_aware(event))
    return max(times, default=None)


def landed_to_transcript_seconds(session: Session) -> tuple[int, list[float]]:
    """Seconds from landing to transcript of every transcribed media, and how many have none.

    Landing is as in :func:`landed_at`: the newest mtime or watcher settle event (``moved``,
    ``closed``) of the media's origin rows (a multi-part recording's newest part); the
    transcript's time is the completed row's ``updated_at``, written when the transcript was
    stored. Media with neither are counted as unknown. A source clock ahead of ours counts as
    0 s, as in the ``transcript`` asset.
    """
    f, e = WatchSourceFile, WatchEvent
    origin = sa.and_(f.media_file_id == MediaFile.id,
                     f.status.in_((FileStatus.IMPORTED, FileStatus.STITCHED_PART)))
    settled = sa.and_(e.watch_source_id == f.watch_source_id, e.remote_path == f.remote_path,
                      e.kind.in_(SETTLED_KINDS))
    rows = session.execute(
        sa.select(MediaFile.id, MediaFile.updated_at, sa.func.max(f.file_modified_at),
                  sa.func.max(e.at))
        .outerjoin(f, origin).outerjoin(e, settled)
        .where(MediaFile.status == MediaStatus.COMPLETED, MediaFile.transcript_key.is_not(None))
        .group_by(MediaFile.id, MediaFile.updated_at)).all()
    lags = []
    for _, done, mtime, event in rows:
        landed = max((_aware(t) for t in (mtime, event) if t is not None), default=None)
        if landed is not None:
            lags.append(max(0.0, (_aware(done) - landed).total_seconds()))
    return len(rows) - len(lags), lags
