"""Applies the plan (:mod:`watch_pipeline.pipeline.plan`) of one source scan to the catalog.

A scan lists the source through its client, decides per file with the pure planner, validates
and fingerprints the files that became stable, and records every decision in
``watch_source_file``. The unique ``(watch_source_id, remote_path)`` key makes it idempotent: a
second scan, or two racing scans, never create a second row. Work is bounded by a time budget;
an unfinished scan leaves ``last_scan_at`` alone, so the source is due again and the next scan
resumes where the catalog says.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import MediaFile, WatchSource, WatchSourceFile
from watch_pipeline.catalog.settings import WatchSettings
from watch_pipeline.media.validate import validate_media
from watch_pipeline.pipeline import plan
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION, imohash_fileobj
from watch_pipeline.pipeline.multipart import (
    PartFile,
    StandaloneReason,
    compile_part_regex,
    group_fingerprint,
    group_key,
    group_parts,
    group_ready,
    parse_part,
)
from watch_pipeline.sources.base import RejectedEntry, SourceClient, SourceEntry, SourceError

log = logging.getLogger(__name__)
F = WatchSourceFile.__table__.c

_BATCH = 500


@dataclass
class ScanReport:
    """What one scan of one source found and did."""

    source_id: int
    source_name: str
    files_seen: int = 0
    new_pending: list[str] = field(default_factory=list)
    waiting: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    finished: bool = True
    error: str | None = None
    duration_seconds: float = 0.0
    decisions: list[tuple[str, str]] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line for logs, the source row and sensor skip reasons."""
        if self.error:
            return f"scan failed: {self.error}"
        parts = [f"{self.files_seen} files seen", f"{len(self.new_pending)} new"]
        if self.waiting:
            parts.append(f"{self.waiting} waiting to be stable")
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{n} {r}" for r, n in
                                                sorted(self.skipped.items())))
        if self.errors:
            parts.append(f"{len(self.errors)} errors")
        if not self.finished:
            parts.append("unfinished (time budget), resumes next tick")
        return ", ".join(parts)


@dataclass(frozen=True)
class _NewRow:
    """A file row to insert; a flush inserts all of them in one statement."""

    values: dict


# Every column a scan may set on a new row, so one executemany covers rows of any kind.
_INSERT_COLUMNS = (
    "watch_source_id", "remote_path", "filename", "file_size", "file_modified_at", "etag",
    "imohash", "imohash_version", "media_file_id", "status", "skip_reason", "part_group",
    "part_number", "error_message", "retry_count", "wait_scans", "processed_at", "created_at",
    "stable_since", "last_seen_at", "run_key", "next_retry_at", "partition_key",
)
_INSERT_DEFAULTS = {"retry_count": 0, "wait_scans": 0}


def _insert_many(session: Session, rows: list[dict]) -> None:
    """Insert file rows, skipping paths a racing scan inserted first (one statement)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    table = WatchSourceFile.__table__
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


def _load_seen(session: Session, source_id: int) -> dict[str, plan.Seen]:
    rows = session.execute(
        sa.select(F.remote_path, F.id, F.file_size, F.file_modified_at, F.etag, F.status,
                  F.imohash, F.stable_since).where(F.watch_source_id == source_id)
    ).tuples()
    make = plan.Seen._make
    return {row[0]: make(row[1:]) for row in rows}


def _imported_elsewhere(session: Session, fingerprint: str) -> tuple[int, int | None] | None:
    row = session.execute(
        sa.select(F.watch_source_id, F.media_file_id)
        .where(F.imohash == fingerprint, F.status.in_(("imported", "stitched_part"))).limit(1)
    ).first()
    return (row.watch_source_id, row.media_file_id) if row else None


def _existing_media(session: Session, fingerprint: str) -> int | None:
    return session.scalar(
        sa.select(MediaFile.id).where(MediaFile.imohash == fingerprint,
                                      MediaFile.status != "error").limit(1)
    )


@dataclass(frozen=True)
class _Fingerprinted:
    verdict: plan.Verdict
    imohash: str | None


def _fingerprint(client: SourceClient, entry: SourceEntry) -> _Fingerprinted:
    """Validate the magic bytes and compute the imohash from three small windows."""
    with client.open(entry.remote_path) as fh:
        check = validate_media(fh, entry.size)
        if not check.ok:
            return _Fingerprinted(
                plan.Verdict("skipped_invalid", check.skip_reason, None, check.message), None)
        fh.seek(0)
        return _Fingerprinted(plan.Verdict("pending"), imohash_fileobj(fh))


def scan_source(catalog: Catalog, source_id: int, client: SourceClient, *,
                settings: WatchSettings, budget_seconds: float = 40.0, dry_run: bool = False,
                now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> ScanReport:
    """Scan one source once and record what it found (nothing is written when ``dry_run``).

    Never raises for a source problem: an unreachable root, a refused login or a permission
    error is recorded on the source row and returned in ``report.error``.
    """
    started = time.monotonic()
    deadline = started + budget_seconds
    scan_time = now()
    with catalog.session() as session:
        source = session.get(WatchSource, source_id)
        if source is None:
            raise LookupError(f"watch source {source_id} does not exist")
        report = ScanReport(source_id=source.id, source_name=source.name)
        recursive, extensions = source.recursive, tuple(source.file_extensions or ())
        max_age = source.skip_files_older_than_days
        trust_mtime = source.source_type == "local"
        parts = (_PartRules(compile_part_regex(source.multipart_regex),
                            source.multipart_time_window_hours, source.multipart_wait_scans)
                 if source.multipart_enabled else None)
        if not dry_run:
            source.last_scan_status = "running"
        seen = _load_seen(session, source.id)

    fingerprints_this_scan: dict[str, str] = {}
    pending_writes: list[Callable[[Session], None] | _NewRow] = []

    def flush() -> None:
        if dry_run or not pending_writes:
            pending_writes.clear()
            return
        with catalog.session() as s:
            _insert_many(s, [w.values for w in pending_writes if isinstance(w, _NewRow)])
            for write in pending_writes:
                if not isinstance(write, _NewRow):
                    write(s)
        pending_writes.clear()

    try:
        listing: Iterable[SourceEntry | RejectedEntry] = client.list_files(
            recursive=recursive, extensions=extensions)
        for entry in listing:
            if time.monotonic() > deadline:
                report.finished = False
                break
            report.files_seen += 1
            current = now()
            if isinstance(entry, RejectedEntry):
                _record_rejected(entry, seen.get(entry.remote_path), source_id, current,
                                 pending_writes, report)
            else:
                _scan_entry(entry, seen.get(entry.remote_path), source_id, current, settings,
                            client, max_age, trust_mtime, fingerprints_this_scan,
                            pending_writes, report, catalog, parts)
            if len(pending_writes) >= _BATCH:
                flush()
        flush()
    except SourceError as exc:
        flush()
        report.error = str(exc)
    if parts is not None and report.finished and not report.error and not dry_run:
        _multipart_pass(catalog, source_id, parts, now(), report)
    report.duration_seconds = time.monotonic() - started

    if not dry_run:
        with catalog.session() as session:
            source = session.get(WatchSource, source_id)
            if report.error:
                source.last_scan_status = "error"
                source.last_scan_message = report.summary
                source.last_scan_at = scan_time
                source.consecutive_scan_failures = (source.consecutive_scan_failures or 0) + 1
            elif report.finished:
                source.consecutive_scan_failures = 0
                source.last_scan_status = "success"
                source.last_scan_message = report.summary
                source.last_scan_at = scan_time
                source.last_scan_files_found = report.files_seen
                source.last_scan_files_imported = len(report.new_pending)
                source.last_scan_files_skipped = sum(report.skipped.values())
                source.last_scan_duration_seconds = round(report.duration_seconds, 3)
            else:
                source.last_scan_message = report.summary
    log.info("scan of source %r: %s", report.source_name, report.summary)
    return report


def _record_rejected(entry: RejectedEntry, seen: plan.Seen | None, source_id: int,
                     current: datetime, writes: list, report: ScanReport) -> None:
    report.skipped["validation_failed"] += 1
    report.decisions.append((entry.remote_path, f"rejected: {entry.reason}"))
    if seen is not None and seen.status == "skipped_invalid":
        return
    values = dict(status="skipped_invalid", skip_reason="validation_failed",
                  error_message=entry.reason, processed_at=current, last_seen_at=current)
    if seen is None:
        writes.append(_NewRow(dict(
            watch_source_id=source_id, remote_path=entry.remote_path,
            filename=entry.remote_path.rsplit("/", 1)[-1], created_at=current, retry_count=0,
            wait_scans=0, **values)))
    else:
        writes.append(lambda s: s.execute(
            sa.update(WatchSourceFile).where(WatchSourceFile.id == seen.id).values(**values)))


def _scan_entry(entry: SourceEntry, seen: plan.Seen | None, source_id: int,
                current: datetime, settings: WatchSettings, client: SourceClient,
                max_age: int | None, trust_mtime: bool, fingerprints: dict[str, str],
                writes: list, report: ScanReport, catalog: Catalog,
                parts: _PartRules | None) -> None:
    action = plan.classify(
        seen, size=entry.size, mtime=entry.mtime, etag=entry.etag, now=current,
        skip_older_than_days=max_age, stability_seconds=settings.file_stability_seconds,
        trust_mtime=trust_mtime)
    if action is plan.Action.NOTHING and seen is not None and seen.status == "error" \
            and seen.imohash is None:
        action = plan.Action.FINGERPRINT  # a read error at scan time: look again
    if action is plan.Action.NOTHING:
        if seen is not None and seen.status == "pending" and seen.imohash is None:
            report.waiting += 1
        return

    base = dict(file_size=entry.size, file_modified_at=entry.mtime, etag=entry.etag,
                last_seen_at=current)
    if action is plan.Action.TOO_OLD:
        values = dict(base, status="skipped_old", skip_reason="too_old", imohash=None,
                      media_file_id=None, processed_at=current,
                      error_message=f"modified {entry.mtime:%Y-%m-%d}, older than {max_age} days")
        report.skipped["too_old"] += 1
        report.decisions.append((entry.remote_path, "skip: too_old"))
    elif action in (plan.Action.RECORD_NEW, plan.Action.CHANGED):
        values = dict(base, status="pending", skip_reason=None, imohash=None, media_file_id=None,
                      stable_since=current, error_message=None, retry_count=0, run_key=None,
                      next_retry_at=None, partition_key=None, part_group=None,
                      part_number=None, wait_scans=0)
        report.waiting += 1
        report.decisions.append((entry.remote_path, "wait: not stable yet"))
    else:  # FINGERPRINT
        values = _fingerprint_values(entry, source_id, client, current, fingerprints, report,
                                     catalog, parts)
        values.update(base)
        if seen is None or seen.stable_since is None:
            values.setdefault("stable_since", current)

    if seen is None:
        row = dict(watch_source_id=source_id, remote_path=entry.remote_path,
                   filename=entry.filename, created_at=current, retry_count=0, wait_scans=0)
        row.update(values)
        writes.append(_NewRow(row))
    else:
        if action is plan.Action.CHANGED or (action is plan.Action.FINGERPRINT
                                                 and seen.status != "pending"):
            values.setdefault("retry_count", 0)
            values.setdefault("run_key", None)
            values.setdefault("created_at", current)  # detection time of the new content
        writes.append(lambda s: s.execute(
            sa.update(WatchSourceFile).where(WatchSourceFile.id == seen.id).values(**values)))


def _fingerprint_values(entry: SourceEntry, source_id: int, client: SourceClient,
                        current: datetime, fingerprints: dict[str, str], report: ScanReport,
                        catalog: Catalog, parts: _PartRules | None = None) -> dict:
    try:
        result = _fingerprint(client, entry)
    except (OSError, SourceError, EOFError) as exc:
        message = f"cannot read {entry.remote_path}: {exc}"
        report.errors.append(message)
        report.decisions.append((entry.remote_path, f"error: {message}"))
        return dict(status="error", error_message=message, imohash=None, processed_at=current)
    verdict = result.verdict
    if verdict.status == "skipped_invalid":
        report.skipped[verdict.skip_reason or "invalid"] += 1
        report.decisions.append((entry.remote_path, f"skip: {verdict.skip_reason}"))
        return dict(status="skipped_invalid", skip_reason=verdict.skip_reason, imohash=None,
                    error_message=verdict.message, processed_at=current)
    fingerprint = result.imohash
    assert fingerprint is not None
    with catalog.session() as s:
        verdict = plan.dedup(
            fingerprint=fingerprint, source_id=source_id,
            imported_elsewhere=_imported_elsewhere(s, fingerprint),
            existing_media_id=_existing_media(s, fingerprint))
    values = dict(imohash=fingerprint, imohash_version=ALGORITHM_VERSION, status=verdict.status,
                  skip_reason=verdict.skip_reason, media_file_id=verdict.media_file_id,
                  error_message=verdict.message, partition_key=None, part_group=None,
                  part_number=None, wait_scans=0)
    if verdict.status == "pending" and parts is not None and parse_part(
            parts.regex, entry.filename) is not None:
        # A part of a multi-part recording: the group decides after the listing.
        values.update(status="waiting_for_parts")
        report.decisions.append((entry.remote_path, "part: waits for its group"))
        return values
    if verdict.status == "pending":
        values["partition_key"] = fingerprint
    if verdict.status == "skipped_duplicate":
        values["processed_at"] = current
        report.skipped[verdict.skip_reason or "duplicate"] += 1
        report.decisions.append((entry.remote_path, f"skip: {verdict.skip_reason}"))
    else:
        if fingerprint in fingerprints:
            report.decisions.append(
                (entry.remote_path,
                 f"import with {fingerprints[fingerprint]} (same content, imported once)"))
        else:
            fingerprints[fingerprint] = entry.remote_path
            report.new_pending.append(entry.remote_path)
            report.decisions.append((entry.remote_path, f"import: new content {fingerprint}"))
    return values


@dataclass(frozen=True)
class _PartRules:
    regex: re.Pattern[str]
    time_window_hours: int
    wait_scans: int


def _multipart_pass(catalog: Catalog, source_id: int, rules: _PartRules, current: datetime,
                    report: ScanReport) -> None:
    """Group the source's waiting parts after a finished listing and decide each group.

    A complete group (parts 1..n) is released at once; an incomplete group, or a lone part,
    waits ``multipart_wait_scans`` scans (its own ``wait_scans`` counter, never the failure
    counter), then goes with what arrived. A part of a group that was already stitched is
    recorded with that reason and not imported on its own.
    """
    f = WatchSourceFile
    with catalog.session() as session:
        rows = session.scalars(sa.select(f).where(
            f.watch_source_id == source_id, f.status == "waiting_for_parts")).all()
        if not rows:
            return
        stitched = dict(session.execute(
            sa.select(f.part_group, f.media_file_id).where(
                f.watch_source_id == source_id, f.status == "stitched_part",
                f.part_group.is_not(None))).all())
        by_path = {r.remote_path: r for r in rows}
        grouping = group_parts(
            [PartFile(r.remote_path, r.filename, r.file_size or 0, r.file_modified_at or current,
                      r.imohash) for r in rows],
            regex=rules.regex, time_window_hours=rules.time_window_hours)

        def late(row: WatchSourceFile, gid: str, number: int) -> None:
            row.status, row.skip_reason = "skipped_invalid", "validation_failed"
            row.part_group, row.part_number, row.processed_at = gid, number, current
            row.error_message = (f"part {number} arrived after its group was stitched into "
                                 f"media {stitched[gid]}; not imported on its own")
            report.skipped["late_part"] += 1

        for group in grouping.groups:
            gid = group.group_id
            members = [(p.number, by_path[p.file.remote_path]) for p in group.parts]
            if gid in stitched:
                for number, row in members:
                    late(row, gid, number)
                continue
            wait = max(row.wait_scans or 0 for _, row in members)
            if not group.complete:
                wait += 1
            for number, row in members:
                row.part_group, row.part_number, row.wait_scans = gid, number, wait
            name = f"{group.output_name} ({len(members)} parts)"
            if not group_ready(group.complete, wait, rules.wait_scans):
                note = (f"waiting for part(s) {', '.join(map(str, group.missing))} "
                        f"(scan {wait} of {rules.wait_scans})")
                for _, row in members:
                    row.error_message = note
                report.waiting += len(members)
                report.decisions.append((name, note))
                continue
            key = group_fingerprint([p.file.fingerprint or "" for p in group.parts])
            message = None if group.complete else (
                f"stitched without missing part(s) {', '.join(map(str, group.missing))} "
                f"after {wait} scans")
            _release(session, [row for _, row in members], key, source_id, current, report,
                     name, message)
        for alone in grouping.standalone:
            row = by_path[alone.file.remote_path]
            if alone.reason is StandaloneReason.LONE_PART and alone.part is not None:
                gid = group_key(alone.file.folder, alone.part.base, alone.part.extension)
                if gid in stitched:
                    late(row, gid, alone.part.part_number)
                    continue
                row.wait_scans = (row.wait_scans or 0) + 1
                row.part_group, row.part_number = gid, alone.part.part_number
                if row.wait_scans < rules.wait_scans:
                    row.error_message = (f"lone part: waiting for the rest of its group "
                                         f"(scan {row.wait_scans} of {rules.wait_scans})")
                    report.waiting += 1
                    continue
            row.part_group = row.part_number = None
            _release(session, [row], row.imohash or "", source_id, current, report,
                     row.remote_path, f"imported on its own: {alone.message}")


def _release(session: Session, rows: list[WatchSourceFile], key: str, source_id: int,
             current: datetime, report: ScanReport, name: str, message: str | None) -> None:
    """Make ``rows`` one import in partition ``key``, unless that content is already in."""
    existing = session.execute(
        sa.select(F.watch_source_id, F.media_file_id).where(
            F.partition_key == key, F.status.in_(("imported", "stitched_part"))).limit(1)).first()
    media_id = existing.media_file_id if existing else session.scalar(
        sa.select(MediaFile.id).where(MediaFile.partition_key == key,
                                      MediaFile.status != "error").limit(1))
    for row in rows:
        row.partition_key = key
        if media_id is not None:
            row.status = "skipped_duplicate"
            row.skip_reason = ("duplicate_existing" if existing is None else
                               "duplicate_same_source" if existing.watch_source_id == source_id
                               else "duplicate_other_source")
            row.media_file_id, row.processed_at = media_id, current
            row.error_message = f"the same recording was already imported as media {media_id}"
        else:
            row.status, row.error_message = "pending", message
    if media_id is not None:
        report.skipped[rows[0].skip_reason or "duplicate"] += len(rows)
        report.decisions.append((name, f"skip: already imported as media {media_id}"))
    else:
        report.new_pending.append(name)
        report.decisions.append((name, "import" + (f" ({message})" if message else "")))
