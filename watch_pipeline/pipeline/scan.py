"""Scanning one source: list it, plan with :mod:`.plan`, read fingerprints, apply the plan.

A scan lists the source through its client, decides per file with the pure planner, reads the
content of the files that became stable (magic bytes + imohash, three small windows), and records
every decision in ``watch_source_file``. The unique ``(watch_source_id, remote_path)`` key makes it
idempotent: a second scan, or two racing scans, never create a second row. Work is bounded by a
time budget; an unfinished scan leaves ``last_scan_at`` alone, so the source is due again and
the next scan resumes where the catalog says.

Isolation: one file's problem (unreadable, not media, a read error) is recorded on that file's
row and the scan goes on; the source's problem (unreachable, refused, or any unexpected error
while listing) is recorded on the source row, never raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import FileStatus
from watch_pipeline.catalog.settings import WatchSettings
from watch_pipeline.media.validate import validate_media
from watch_pipeline.pipeline import dedup
from watch_pipeline.pipeline import plan as planner
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION, imohash_fileobj
from watch_pipeline.pipeline.multipart import MultipartRegexError
from watch_pipeline.sources.base import RejectedEntry, SourceClient, SourceEntry, SourceError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

# Decisions written per transaction: a crash loses at most this many, and the next scan redoes them.
_BATCH = 500
# Watcher events older than this are not read: by then the stability window decides anyway.
_EVENT_HORIZON = timedelta(hours=1)


@dataclass
class ScanReport:
    """What one scan of one source found and did (the plan, and how long it took)."""

    plan: planner.ScanPlan
    duration_seconds: float = 0.0

    source_id = property(lambda self: self.plan.source_id)
    source_name = property(lambda self: self.plan.source_name)
    files_seen = property(lambda self: self.plan.files_seen)
    new_pending = property(lambda self: self.plan.new_pending)
    waiting = property(lambda self: self.plan.waiting)
    skipped = property(lambda self: self.plan.skipped)
    errors = property(lambda self: self.plan.errors)
    finished = property(lambda self: self.plan.finished)
    error = property(lambda self: self.plan.error)
    decisions = property(lambda self: self.plan.decisions)

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


def read_fingerprint(client: SourceClient, entry: SourceEntry) -> planner.Fingerprint:
    """Validate the magic bytes and compute the imohash from three small windows.

    Never raises for the file's own problem: a read error is returned as such, so it lands on
    the file's row and the scan goes on.
    """
    try:
        with client.open(entry.remote_path) as fh:
            check = validate_media(fh, entry.size)
            if not check.ok:
                return planner.Fingerprint(invalid_reason=check.skip_reason,
                                           message=check.message)
            fh.seek(0)
            return planner.Fingerprint(imohash=imohash_fileobj(fh))
    except (OSError, SourceError, EOFError, ValueError) as exc:
        return planner.Fingerprint(read_error=True,
                                   message=f"cannot read {entry.remote_path}: {exc}")


def scan_source(catalog: Catalog, source_id: int, client: SourceClient, *,
                settings: WatchSettings, budget_seconds: float = 40.0, dry_run: bool = False,
                now: Callable[[], datetime] = lambda: datetime.now(UTC),
                first_import_seconds: float | None = None) -> ScanReport:
    """Scan one source once and record what it found (nothing is written when ``dry_run``).

    Never raises for a source problem: an unreachable root, a refused login, a permission
    error or an unexpected failure of the listing is recorded on the source row and returned in
    ``report.error``.

    With ``first_import_seconds``, the scan stops that long after it found its first new
    content (unfinished: the next tick resumes), so the first import starts without waiting
    for a long listing to end. A local source with file-system events on (the setting
    ``watch.fs_events_enabled``, its ``use_fs_events``, and the watcher holding it in ``events``
    mode) passes the watcher's events to the planner: a closed or moved-in file is stable
    sooner.
    """
    started = time.monotonic()
    scan_time = now()
    with catalog.session() as session:
        source = queries.get_source(session, source_id)
        scan_plan = planner.ScanPlan(source.id, source.name)
        try:
            rules: planner.SourceRules | None = planner.SourceRules.of(source)
        except MultipartRegexError as exc:
            rules, scan_plan.error = None, f"the multi-part regex is unusable: {exc}"
        if not dry_run:
            queries.mark_scan_running(session, source_id)
        seen = queries.load_seen(session, source_id)
        events = (queries.path_events(session, source_id, scan_time - _EVENT_HORIZON)
                  if settings.fs_events_enabled and source.use_fs_events
                  and source.fs_events_mode == queries.EVENTS_MODE else {})
    writer = _Writer(catalog, source_id, dry_run)
    if rules is not None:
        try:
            _plan_listing(client, rules, seen, scan_plan, writer, settings,
                          deadline=started + budget_seconds, now=now, events=events,
                          first_import_seconds=first_import_seconds)
        except SourceError as exc:
            scan_plan.error = str(exc)
        except Exception as exc:  # anything else the listing throws is this source's problem
            log.exception("scan of source %r failed unexpectedly", scan_plan.source_name)
            scan_plan.error = f"unexpected {type(exc).__name__}: {exc}"[:1000]
        writer.flush()
        if rules.parts is not None and scan_plan.finished and not scan_plan.error:
            scan_plan.groups = _plan_groups(catalog, rules, scan_plan, now())
            writer.write_groups(scan_plan.groups, now())
    report = ScanReport(scan_plan, time.monotonic() - started)
    if not dry_run:
        with catalog.session() as session:
            queries.record_scan_result(
                session, source_id, at=scan_time, error=report.error, finished=report.finished,
                summary=report.summary, files_found=report.files_seen,
                files_imported=len(report.new_pending),
                files_skipped=sum(report.skipped.values()),
                duration_seconds=round(report.duration_seconds, 3))
    log.info("scan of source %r: %s", report.source_name, report.summary)
    return report


def _plan_listing(client: SourceClient, rules: planner.SourceRules,
                  seen: dict[str, planner.Seen], scan_plan: planner.ScanPlan, writer: _Writer,
                  settings: WatchSettings, *, deadline: float,
                  now: Callable[[], datetime], events: dict[str, tuple[str, datetime]],
                  first_import_seconds: float | None) -> None:
    """Steps 1 and 2 of the plan for every listed entry, written in batches as they come."""
    view = _CatalogView(writer.catalog)
    first_path_of: dict[str, str] = {}
    for entry in client.list_files(recursive=rules.recursive, extensions=rules.extensions):
        if time.monotonic() > deadline:
            scan_plan.finished = False
            return
        scan_plan.files_seen += 1
        known = seen.get(entry.remote_path)
        if isinstance(entry, RejectedEntry):
            decision = planner.decide_rejected(entry, known)
        else:
            seen_event = events.get(entry.remote_path)
            decision = planner.decide_listed(
                entry, known, rules, stability_seconds=settings.file_stability_seconds,
                now=now(), events=None if seen_event is None else planner.FileEvents(
                    seen_event[1], seen_event[0] in queries.SETTLED_KINDS,
                    settings.fs_events_quiet_seconds))
            if isinstance(decision, planner.NeedsFingerprint):
                decision = planner.decide_fingerprinted(
                    entry, known, rules, read_fingerprint(client, entry), view,
                    first_path_of=first_path_of)
        if decision is not None:
            scan_plan.files.append(decision)
            writer.add(decision, known, now())
            if first_import_seconds is not None and decision.new_import:
                deadline = min(deadline, time.monotonic() + first_import_seconds)


def _plan_groups(catalog: Catalog, rules: planner.SourceRules, scan_plan: planner.ScanPlan,
                 current: datetime) -> list[planner.GroupDecision]:
    """Step 3: the waiting parts as the catalog holds them, with this scan's decisions on top."""
    with catalog.session() as session:
        waiting = {r.remote_path: r for r in queries.waiting_parts(session, rules.source_id)}
        stitched = queries.stitched_groups(session, rules.source_id)
    for d in scan_plan.files:  # what a dry run did not write (a real scan wrote it already)
        if d.quiet:
            continue
        if d.outcome.status == FileStatus.WAITING_FOR_PARTS:
            old = waiting.get(d.remote_path)
            waiting[d.remote_path] = planner.PartRow(
                old.id if old else d.row_id, d.remote_path, d.filename, d.size or 0,
                d.mtime or current, d.outcome.imohash, 0)
        else:
            waiting.pop(d.remote_path, None)
    return planner.decide_groups(waiting.values(), rules, stitched=stitched,
                                 view=_CatalogView(catalog), now=current)


_T = TypeVar("_T")


class _CatalogView:
    """:class:`planner.CatalogView` over the catalog, one short read per lookup."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def _read(self, query: Callable[[Session, str], _T], key: str) -> _T:
        with self.catalog.session() as s:
            return query(s, key)

    def imported_copy(self, fingerprint: str) -> dedup.ImportedCopy | None:
        return self._read(queries.imported_copy, fingerprint)

    def existing_media(self, fingerprint: str) -> int | None:
        return self._read(queries.existing_media, fingerprint)

    def imported_partition(self, fingerprint: str) -> dedup.ImportedCopy | None:
        return self._read(queries.imported_in_partition, fingerprint)

    def partition_media(self, fingerprint: str) -> int | None:
        return self._read(queries.partition_media, fingerprint)

    def partition_key(self, fingerprint: str, *, group: bool) -> str | None:
        with self.catalog.session() as s:
            return queries.recorded_partition_key(s, fingerprint, group=group)


class _Writer:
    """Applies file decisions to the catalog in batches (a dry run writes nothing)."""

    def __init__(self, catalog: Catalog, source_id: int, dry_run: bool) -> None:
        self.catalog, self.source_id, self.dry_run = catalog, source_id, dry_run
        self.new_rows: list[dict] = []
        self.updates: list[tuple[int, dict]] = []

    def add(self, d: planner.FileDecision, seen: planner.Seen | None, current: datetime) -> None:
        if d.quiet or self.dry_run:
            return
        columns = _columns(d, seen, current)
        if d.row_id is None:
            self.new_rows.append(dict(
                columns, watch_source_id=self.source_id, remote_path=d.remote_path,
                filename=d.filename[:1000], created_at=current))
        else:
            self.updates.append((d.row_id, columns))
        if len(self.new_rows) + len(self.updates) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if not (self.new_rows or self.updates):
            return
        with self.catalog.session() as s:
            queries.insert_file_rows(s, self.new_rows)
            for row_id, columns in self.updates:
                queries.update_file_row(s, row_id, columns)
        self.new_rows, self.updates = [], []

    def write_groups(self, groups: list[planner.GroupDecision], current: datetime) -> None:
        if self.dry_run or not groups:
            return
        with self.catalog.session() as s:
            for g in groups:
                for part in g.parts:
                    queries.update_file_by_path(s, self.source_id, part.row.remote_path,
                                                _group_columns(g, part, current))


def _columns(d: planner.FileDecision, seen: planner.Seen | None, current: datetime) -> dict:
    """The catalog columns a file decision sets."""
    o = d.outcome
    values: dict = dict(status=o.status, skip_reason=o.skip_reason, error_message=o.message,
                        imohash=o.imohash, media_file_id=o.media_file_id, last_seen_at=current)
    if d.size is not None:
        values.update(file_size=d.size, file_modified_at=d.mtime, etag=d.etag)
    if o.processed:
        values["processed_at"] = current
    if o.fingerprinted:
        values.update(imohash_version=ALGORITHM_VERSION, partition_key=o.partition_key,
                      part_group=None, part_number=None, wait_scans=0)
        if seen is None or seen.stable_since is None:
            values["stable_since"] = current
    if d.change is planner.Change.FRESH_WAIT:
        values.update(stable_since=current, retry_count=0, run_key=None, next_retry_at=None,
                      partition_key=None, part_group=None, part_number=None, wait_scans=0)
    if d.change is not planner.Change.KEEP and seen is not None:
        values.update(retry_count=0, run_key=None, created_at=current)  # new content detected
    return values


def _group_columns(g: planner.GroupDecision, part: planner.PartAssignment,
                   current: datetime) -> dict:
    """The catalog columns a group decision sets on one of its parts."""
    values: dict = dict(part_group=part.part_group, part_number=part.part_number,
                        wait_scans=g.wait_scans, error_message=g.message)
    if g.action is planner.GroupAction.LATE:
        values.update(status=FileStatus.SKIPPED_INVALID,
                      skip_reason=planner.SkipReason.VALIDATION_FAILED, processed_at=current)
    elif g.action is planner.GroupAction.DUPLICATE and g.duplicate is not None:
        values.update(status=FileStatus.SKIPPED_DUPLICATE, skip_reason=g.duplicate.reason,
                      media_file_id=g.duplicate.media_file_id, processed_at=current,
                      partition_key=g.partition_key)
    elif g.action is planner.GroupAction.RELEASE:
        values.update(status=FileStatus.PENDING, partition_key=g.partition_key)
    return values


@dataclass
class TickReport:
    """What one watch-sensor tick did across the due sources of one kind."""

    scanned: int = 0
    files_seen: int = 0
    new: int = 0
    lines: list[str] = field(default_factory=list)

    def describe(self, note: str = "") -> str:
        """One line for the sensor's skip reason (``note`` follows the count of new files)."""
        return (f"{self.scanned} sources scanned, {self.files_seen} files seen, {self.new} new"
                + note + (f"; {'; '.join(self.lines)}" if self.lines else ""))


def scan_due_sources(catalog: Catalog, sources: list[queries.EnabledSource], *,
                     settings: WatchSettings, client_for: Callable[[object], SourceClient],
                     budget_seconds: float, log: logging.Logger | logging.LoggerAdapter,
                     now: datetime | None = None,
                     first_import_seconds: float | None = None) -> TickReport:
    """Scan the sources that are due, within the tick's time budget; never raises.

    A source is due by its polling interval, or when it holds files whose stability window
    has passed (those are looked at again on the next tick rather than a whole interval
    later), or, with file-system events on, when the watcher recorded an event since its last
    scan (or within the quiet delay before it, so a file that settled just after a scan is seen
    on the next tick). Any failure of one source — no client, a refused key, an unexpected
    exception — is recorded on that source and the tick goes on to the next.
    ``first_import_seconds`` caps each scan once it found new content (see
    :func:`scan_source`).
    """
    started = time.monotonic()
    now = now or datetime.now(UTC)
    tick = TickReport()
    ids = [s.id for s in sources]
    with catalog.session() as session:
        for name in queries.recover_interrupted_scans(session, ids):
            log.warning(f"source {name!r}: its previous scan was interrupted; scanning again")
        ripe = queries.sources_with_ripe_files(
            session, ids, now - timedelta(seconds=settings.file_stability_seconds))
        latest = queries.latest_events(
            session, [s.id for s in sources if s.events_on]) if settings.fs_events_enabled else {}
    # The quiet delay and a second of slack: an event that settled after a scan began.
    lookback = timedelta(seconds=settings.fs_events_quiet_seconds + 1)
    for source in sources:
        eventful = source.id in latest and (
            source.last_scan_at is None or latest[source.id] > source.last_scan_at - lookback)
        if source.manual or not (planner.is_due(source.last_scan_at,
                                                source.polling_interval_minutes, now)
                                 or source.id in ripe or eventful):
            continue
        remaining = budget_seconds - (time.monotonic() - started)
        if remaining <= 1:
            tick.lines.append(f"{source.name}: postponed to the next tick (time budget)")
            continue
        tick.scanned += 1
        report = _scan_one(catalog, source, settings=settings, client_for=client_for,
                           budget_seconds=remaining, log=log,
                           first_import_seconds=first_import_seconds)
        if report is None:
            tick.lines.append(f"{source.name}: error")
            continue
        tick.files_seen += report.files_seen
        tick.new += len(report.new_pending)
        (log.warning if report.error else log.info)(f"source {source.name!r}: {report.summary}")
        tick.lines.append(f"{source.name}: {report.summary}")
    return tick


def _scan_one(catalog: Catalog, source: queries.EnabledSource, *, settings: WatchSettings,
              client_for: Callable[[object], SourceClient], budget_seconds: float,
              log: logging.Logger | logging.LoggerAdapter,
              first_import_seconds: float | None = None) -> ScanReport | None:
    """One source's scan, its every failure recorded on the source row."""
    try:
        with catalog.session() as session:
            client = client_for(queries.get_source(session, source.id))
        with client:
            return scan_source(catalog, source.id, client, settings=settings,
                               budget_seconds=budget_seconds,
                               first_import_seconds=first_import_seconds)
    except Exception as exc:  # one source's trouble never stops the tick
        message = str(exc) if isinstance(exc, SourceError) else \
            f"unexpected {type(exc).__name__}: {exc}"
        with catalog.session() as session:
            queries.record_source_error(session, source.id, f"scan failed: {message}"[:1000],
                                        at=datetime.now(UTC))
        log.warning(f"source {source.name!r}: {message}")
        return None
