"""The scan plan: what one scan of one source decides for every listed file (SPEC §3-§5).

Pure: a listing, what the catalog remembers (read through :class:`CatalogView`), the source's
rules and the settings go in; a :class:`ScanPlan` comes out. Nothing here writes, opens a file
or imports Dagster. :mod:`.scan` feeds it a source's listing and the fingerprints it reads, then
applies the plan to the catalog; the watch sensor and ``watch-pipeline source scan --dry-run``
both go through it, so a dry run shows exactly what a real scan would do (multi-part groups
included).

A scan decides in three steps:

1. :func:`decide_listed` — change detection (dedup layer 1), age and stability: a file is
   recorded as waiting, skipped as too old, left alone, or needs a fingerprint;
2. :func:`decide_fingerprinted` — with the fingerprint read: invalid media, dedup layers 2 and 3
   (:mod:`.dedup`), a multi-part part that waits for its group, or new content;
3. :func:`decide_groups` — after a finished listing, the waiting parts of multi-part recordings:
   a group is released as one import, waits for missing parts, or a late part is refused.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from watch_pipeline.catalog.models import FileStatus, SkipReason, SourceType
from watch_pipeline.catalog.queries import SeenRow
from watch_pipeline.pipeline import dedup
from watch_pipeline.pipeline.keys import fingerprint_of, media_partition_key
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

# Statuses of a file some run is working on: a scan leaves these alone.
IN_FLIGHT = frozenset({FileStatus.DOWNLOADING, FileStatus.IMPORTING})


def is_due(last_scan_at: datetime | None, polling_interval_minutes: int, now: datetime) -> bool:
    """A source is due when it was never scanned or its polling interval has passed."""
    if last_scan_at is None:
        return True
    return now - last_scan_at >= timedelta(minutes=polling_interval_minutes)


def matches_extensions(filename: str, extensions: list[str] | tuple[str, ...]) -> bool:
    """True when ``extensions`` is empty or the file's lower-case suffix is in it."""
    if not extensions:
        return True
    dot = filename.rfind(".")
    return dot > 0 and filename[dot:].lower() in extensions


def is_too_old(mtime: datetime, skip_older_than_days: int | None, now: datetime) -> bool:
    """True when the file was last modified more than ``skip_older_than_days`` days ago."""
    return skip_older_than_days is not None and now - mtime > timedelta(
        days=skip_older_than_days)


Seen = SeenRow  # what the catalog remembers of one path


class Action(enum.StrEnum):
    """What a scan does with one listed file."""

    NOTHING = "nothing"          # known, unchanged, nothing to do
    RECORD_NEW = "record_new"    # first sighting: insert a pending row (waits for stability)
    CHANGED = "changed"          # size/mtime/ETag differ: reset the row, wait for stability
    FINGERPRINT = "fingerprint"  # stable and not yet fingerprinted: validate + imohash + dedup
    TOO_OLD = "too_old"          # first sighting of a file older than the age limit


def _same_version(seen: Seen, size: int, mtime: datetime, etag: str | None) -> bool:
    return (seen.file_size == size and seen.file_modified_at == mtime
            and (seen.etag or None) == (etag or None))


@dataclass(frozen=True)
class FileEvents:
    """What the file-system watcher saw of one path (a local source with events on)."""

    last_at: datetime  # the newest event on the path
    settled: bool      # that event was a close after writing or a move into place
    quiet_seconds: float = 1.0

    def settled_by(self, mtime: datetime, now: datetime) -> bool:
        """Closed or moved in, nothing since for ``quiet_seconds``, no write after it."""
        return (self.settled and mtime <= self.last_at
                and now - self.last_at >= timedelta(seconds=self.quiet_seconds))


def is_stable(*, stable_since: datetime | None, mtime: datetime, now: datetime,
              stability_seconds: int, trust_mtime: bool, events: FileEvents | None = None) -> bool:
    """Whether a file's current version may be imported.

    Remote sources need two listings at least ``stability_seconds`` apart that agree (the
    version first seen at ``stable_since`` is still there). A local file's own mtime is trusted
    too: untouched for ``stability_seconds`` means nobody is writing it. With file-system
    events, a file whose writer closed it (or that was moved in whole) is stable after a short
    quiet delay with no further event (``events``); without such an event the window applies.
    """
    window = timedelta(seconds=stability_seconds)
    if stability_seconds == 0:
        return True
    if events is not None and events.settled_by(mtime, now):
        return True
    if trust_mtime and now - mtime >= window:
        return True
    return stable_since is not None and now - stable_since >= window


def classify(seen: Seen | None, *, size: int, mtime: datetime, etag: str | None, now: datetime,
             skip_older_than_days: int | None, stability_seconds: int,
             trust_mtime: bool, events: FileEvents | None = None) -> Action:
    """Decide what a scan does with one listed file, given what the catalog remembers of it."""
    if seen is None:
        if is_too_old(mtime, skip_older_than_days, now):
            return Action.TOO_OLD
        if is_stable(stable_since=now, mtime=mtime, now=now, events=events,
                     stability_seconds=stability_seconds, trust_mtime=trust_mtime):
            return Action.FINGERPRINT
        return Action.RECORD_NEW
    if seen.status in IN_FLIGHT:
        return Action.NOTHING
    if not _same_version(seen, size, mtime, etag):
        # Replaced or still growing. A replaced file is new content: look at it again.
        if is_too_old(mtime, skip_older_than_days, now):
            return Action.TOO_OLD
        if trust_mtime and is_stable(stable_since=now, mtime=mtime, now=now, events=events,
                                     stability_seconds=stability_seconds, trust_mtime=True):
            return Action.FINGERPRINT
        return Action.CHANGED
    if seen.status == FileStatus.PENDING and seen.imohash is None:
        if is_stable(stable_since=seen.stable_since, mtime=mtime, now=now, events=events,
                     stability_seconds=stability_seconds, trust_mtime=trust_mtime):
            return Action.FINGERPRINT
    return Action.NOTHING


# -- the source's rules ----------------------------------------------------------------------

@dataclass(frozen=True)
class PartRules:
    """A source's multi-part settings."""

    regex: re.Pattern[str]
    time_window_hours: int
    wait_scans: int


@dataclass(frozen=True)
class SourceRules:
    """What a scan of one source needs to know about it."""

    source_id: int
    name: str
    recursive: bool
    extensions: tuple[str, ...]
    skip_older_than_days: int | None
    trust_mtime: bool  # a local file's own mtime tells whether someone still writes it
    parts: PartRules | None

    @classmethod
    def of(cls, source) -> SourceRules:  # type: ignore[no-untyped-def]
        """The rules of a ``watch_source`` row.

        Raises:
            MultipartRegexError: The stored multi-part regex is unusable.
        """
        parts = (PartRules(compile_part_regex(source.multipart_regex),
                           source.multipart_time_window_hours, source.multipart_wait_scans)
                 if source.multipart_enabled else None)
        return cls(source.id, source.name, bool(source.recursive),
                   tuple(source.file_extensions or ()), source.skip_files_older_than_days,
                   source.source_type == SourceType.LOCAL, parts)


# -- decisions ---------------------------------------------------------------------------------

class Change(enum.Enum):
    """How a decision treats the row's counters and detection time."""

    KEEP = "keep"            # an update of a row that keeps its history
    NEW_CONTENT = "new"      # new content at this path: counters reset, detected now
    FRESH_WAIT = "wait"      # (re)starts the stability window: everything reset


@dataclass(frozen=True)
class Outcome:
    """What a scan records for one file."""

    status: FileStatus
    skip_reason: SkipReason | None = None
    message: str | None = None
    imohash: str | None = None
    media_file_id: int | None = None
    partition_key: str | None = None
    fingerprinted: bool = False  # imohash (and its version) were read in this scan
    processed: bool = False      # a final decision: processed_at is set


@dataclass(frozen=True)
class FileDecision:
    """One listed file, what the scan decided and why (``note`` is what dry-run prints)."""

    remote_path: str
    filename: str
    row_id: int | None  # the existing catalog row, None for a first sighting
    size: int | None
    mtime: datetime | None
    etag: str | None
    outcome: Outcome
    change: Change
    note: str
    new_import: bool = False  # counts as new content queued for import
    quiet: bool = False       # unchanged state worth counting (waiting), not worth printing


@dataclass(frozen=True)
class NeedsFingerprint:
    """A stable file whose content must be read (validation + imohash) before deciding."""

    entry_path: str
    seen: Seen | None


@dataclass(frozen=True)
class Fingerprint:
    """What reading a file's windows gave: an imohash, or why there is none."""

    imohash: str | None = None
    invalid_reason: SkipReason | None = None  # not media (magic bytes, empty, ...)
    message: str | None = None                # why invalid, or the read error
    read_error: bool = False


class CatalogView(Protocol):
    """Read-only lookups a plan needs from the catalog (dedup layers 2 and 3)."""

    def imported_copy(self, fingerprint: str) -> dedup.ImportedCopy | None:
        """A row already imported with this imohash."""

    def existing_media(self, fingerprint: str) -> int | None:
        """A media row with this imohash that is not in error."""

    def imported_partition(self, fingerprint: str) -> dedup.ImportedCopy | None:
        """A row already imported in a partition of group fingerprint ``fingerprint``."""

    def partition_media(self, fingerprint: str) -> int | None:
        """A media row of a partition of group fingerprint ``fingerprint``, not in error."""

    def partition_key(self, fingerprint: str, *, group: bool) -> str | None:
        """The partition key the catalog already holds for this content, if any."""


def partition_key_for(view: CatalogView, fingerprint: str, name: str, *,
                      group: bool = False) -> str:
    """The ``media`` partition key of content ``fingerprint`` first seen as file ``name``.

    Content the catalog already knows keeps its key (a bare fingerprint for media imported
    before readable keys), so every copy joins one partition; new content gets
    ``<slug of name>-<fingerprint>`` (:mod:`.keys`), which the UI's partition filter finds by
    the file's name.
    """
    return (view.partition_key(fingerprint, group=group)
            or media_partition_key(name, fingerprint))


def _listed(entry, seen: Seen | None, outcome: Outcome, change: Change, note: str,  # type: ignore[no-untyped-def]
            **flags: bool) -> FileDecision:
    return FileDecision(entry.remote_path, entry.filename, seen.id if seen else None, entry.size,
                        entry.mtime, entry.etag, outcome, change, note, **flags)


def decide_rejected(entry, seen: Seen | None) -> FileDecision | None:  # type: ignore[no-untyped-def]
    """A listing entry the client refused (unsafe path, unreadable name, link out of the root).

    Returns ``None`` when the row already says so (nothing to write).
    """
    reason = SkipReason(getattr(entry, "skip_reason", None) or SkipReason.VALIDATION_FAILED)
    note = f"rejected ({reason}): {entry.reason}"
    if seen is not None and seen.status == FileStatus.SKIPPED_INVALID:
        return FileDecision(entry.remote_path, entry.remote_path.rsplit("/", 1)[-1], seen.id,
                            None, None, None, Outcome(FileStatus.SKIPPED_INVALID, reason),
                            Change.KEEP, note, quiet=True)
    return FileDecision(entry.remote_path, entry.remote_path.rsplit("/", 1)[-1],
                        seen.id if seen else None, None, None, None,
                        Outcome(FileStatus.SKIPPED_INVALID, reason, entry.reason, processed=True),
                        Change.KEEP, note)


def decide_listed(entry, seen: Seen | None, rules: SourceRules, *, stability_seconds: int,  # type: ignore[no-untyped-def]
                  now: datetime, events: FileEvents | None = None,
                  ) -> FileDecision | NeedsFingerprint | None:
    """Step 1: change detection, age and stability for one listed file.

    ``events``: what the file-system watcher saw of the path, when the source has events on.
    Returns ``None`` when nothing changed and nothing is due.
    """
    action = classify(seen, size=entry.size, mtime=entry.mtime, etag=entry.etag, now=now,
                      skip_older_than_days=rules.skip_older_than_days,
                      stability_seconds=stability_seconds, trust_mtime=rules.trust_mtime,
                      events=events)
    if action is Action.NOTHING and seen is not None and seen.status == FileStatus.ERROR \
            and seen.imohash is None:
        action = Action.FINGERPRINT  # a read error at scan time: look again
    if action is Action.NOTHING:
        if seen is not None and seen.status == FileStatus.PENDING and seen.imohash is None:
            return _listed(entry, seen, Outcome(FileStatus.PENDING), Change.KEEP,
                           "wait: not stable yet", quiet=True)
        return None
    if action is Action.TOO_OLD:
        return _listed(entry, seen, Outcome(
            FileStatus.SKIPPED_OLD, SkipReason.TOO_OLD,
            f"modified {entry.mtime:%Y-%m-%d}, older than {rules.skip_older_than_days} days",
            processed=True), Change.KEEP, "skip: too_old")
    if action in (Action.RECORD_NEW, Action.CHANGED):
        return _listed(entry, seen, Outcome(FileStatus.PENDING), Change.FRESH_WAIT,
                       "wait: not stable yet")
    return NeedsFingerprint(entry.remote_path, seen)


def decide_fingerprinted(entry, seen: Seen | None, rules: SourceRules, fp: Fingerprint,  # type: ignore[no-untyped-def]
                         view: CatalogView, *, first_path_of: dict[str, str]) -> FileDecision:
    """Step 2: invalid media, dedup layers 2 and 3, a part that waits, or new content.

    Args:
        entry: The listed file.
        seen: What the catalog remembers of its path.
        rules: The source's rules.
        fp: What reading the file gave.
        view: Catalog lookups for dedup.
        first_path_of: Fingerprints found earlier in this scan → their first path; updated.
            A later copy in the same scan gets the partition key of the first.
    """
    change = Change.NEW_CONTENT if seen is not None and seen.status != FileStatus.PENDING \
        else Change.KEEP
    if fp.read_error:
        return _listed(entry, seen, Outcome(FileStatus.ERROR, message=fp.message, processed=True),
                       change, f"error: {fp.message}")
    if fp.imohash is None:
        reason = fp.invalid_reason or SkipReason.VALIDATION_FAILED
        return _listed(entry, seen, Outcome(FileStatus.SKIPPED_INVALID, reason, fp.message,
                                            processed=True), change, f"skip: {reason}")
    key = fp.imohash
    duplicate = dedup.find_duplicate(content=key, source_id=rules.source_id,
                                     imported=view.imported_copy(key),
                                     existing_media_id=view.existing_media(key))
    if duplicate is not None:
        return _listed(entry, seen, Outcome(
            FileStatus.SKIPPED_DUPLICATE, duplicate.reason, duplicate.message, key,
            duplicate.media_file_id, fingerprinted=True, processed=True), change,
            f"skip: {duplicate.reason}")
    if rules.parts is not None and parse_part(rules.parts.regex, entry.filename) is not None:
        return _listed(entry, seen, Outcome(FileStatus.WAITING_FOR_PARTS, imohash=key,
                                            fingerprinted=True), change,
                       "part: waits for its group")
    first = first_path_of.setdefault(key, entry.remote_path)
    partition = partition_key_for(view, key, first.rsplit("/", 1)[-1])
    outcome = Outcome(FileStatus.PENDING, imohash=key, partition_key=partition,
                      fingerprinted=True)
    if first != entry.remote_path:
        return _listed(entry, seen, outcome, change,
                       f"import with {first} (same content, imported once)")
    return _listed(entry, seen, outcome, change, f"import: new content {partition}",
                   new_import=True)


# -- multi-part groups ------------------------------------------------------------------------

class PartRow(NamedTuple):
    """A part waiting for its group, as the catalog (or this scan's plan) holds it."""

    id: int | None
    remote_path: str
    filename: str
    file_size: int
    file_modified_at: datetime
    imohash: str | None
    wait_scans: int


class GroupAction(enum.Enum):
    """What happens to the parts of one group (or one lone part)."""

    WAIT = "wait"          # missing parts: wait another scan
    RELEASE = "release"    # import now as one partition
    LATE = "late"          # its group was already stitched: not imported on its own
    DUPLICATE = "duplicate"  # the same recording was already imported


@dataclass(frozen=True)
class PartAssignment:
    """One part's place in a group decision."""

    row: PartRow
    part_group: str | None
    part_number: int | None


@dataclass(frozen=True)
class GroupDecision:
    """What a scan decided for one multi-part group or lone part."""

    name: str
    action: GroupAction
    parts: tuple[PartAssignment, ...]
    wait_scans: int
    message: str | None
    partition_key: str | None = None
    duplicate: dedup.Duplicate | None = None

    @property
    def note(self) -> str:
        """What dry-run prints for the group."""
        if self.action is GroupAction.RELEASE:
            return "import" + (f" ({self.message})" if self.message else "")
        if self.action is GroupAction.DUPLICATE and self.duplicate is not None:
            return f"skip: already imported as media {self.duplicate.media_file_id}"
        return self.message or self.action.value


def _late(row: PartRow, gid: str, number: int, media_id: int | None) -> GroupDecision:
    return GroupDecision(row.remote_path, GroupAction.LATE, (PartAssignment(row, gid, number),),
                         row.wait_scans,
                         f"part {number} arrived after its group was stitched into media "
                         f"{media_id}; not imported on its own")


def _release(name: str, parts: tuple[PartAssignment, ...], key: str, wait: int,
             message: str | None, source_id: int, view: CatalogView) -> GroupDecision:
    """Release a group (or a lone part) in partition ``key``, unless its content is imported.

    Dedup asks by the content (``fingerprint_of(key)``), so the same recording under another
    name, in a partition with another slug, is still a duplicate.
    """
    fingerprint = fingerprint_of(key)
    copy = view.imported_partition(fingerprint)
    duplicate = dedup.find_duplicate(
        content=fingerprint, source_id=source_id, imported=copy,
        existing_media_id=None if copy else view.partition_media(fingerprint))
    if duplicate is not None:
        return GroupDecision(name, GroupAction.DUPLICATE, parts, wait,
                             f"the same recording was already imported as media "
                             f"{duplicate.media_file_id}", key, duplicate)
    return GroupDecision(name, GroupAction.RELEASE, parts, wait, message, key)


def decide_groups(waiting: Iterable[PartRow], rules: SourceRules, *,
                  stitched: dict[str, int | None], view: CatalogView,
                  now: datetime) -> list[GroupDecision]:
    """Step 3: group the source's waiting parts after a finished listing and decide each group.

    A complete group (parts 1..n) is released at once; an incomplete group, or a lone part,
    waits ``multipart_wait_scans`` scans (its own ``wait_scans`` counter, never the failure
    counter), then goes with what arrived. A part of a group that was already stitched
    (``stitched``: part group → media id) is refused, not imported on its own.
    """
    assert rules.parts is not None
    rows = list(waiting)
    if not rows:
        return []
    by_path = {r.remote_path: r for r in rows}
    grouping = group_parts(
        [PartFile(r.remote_path, r.file_size or 0, r.file_modified_at or now,
                  fingerprint=r.imohash) for r in rows],
        regex=rules.parts.regex, time_window_hours=rules.parts.time_window_hours)
    decisions: list[GroupDecision] = []
    for group in grouping.groups:
        gid = group.group_id
        members = [(p.number, by_path[p.file.remote_path]) for p in group.parts]
        if gid in stitched:
            decisions += [_late(row, gid, number, stitched[gid]) for number, row in members]
            continue
        wait = max(row.wait_scans or 0 for _, row in members) + (0 if group.complete else 1)
        parts = tuple(PartAssignment(row, gid, number) for number, row in members)
        name = f"{group.output_name} ({len(members)} parts)"
        if not group_ready(group.complete, wait, rules.parts.wait_scans):
            decisions.append(GroupDecision(
                name, GroupAction.WAIT, parts, wait,
                f"waiting for part(s) {', '.join(map(str, group.missing))} "
                f"(scan {wait} of {rules.parts.wait_scans})"))
            continue
        key = partition_key_for(view, group_fingerprint(
            [p.file.fingerprint or "" for p in group.parts]), group.output_name, group=True)
        message = None if group.complete else (
            f"stitched without missing part(s) {', '.join(map(str, group.missing))} "
            f"after {wait} scans")
        decisions.append(_release(name, parts, key, wait, message, rules.source_id, view))
    for alone in grouping.standalone:
        row = by_path[alone.file.remote_path]
        wait = row.wait_scans or 0
        if alone.reason is StandaloneReason.LONE_PART and alone.part is not None:
            gid = group_key(alone.file.folder, alone.part.base, alone.part.extension)
            number = alone.part.part_number
            if gid in stitched:
                decisions.append(_late(row, gid, number, stitched[gid]))
                continue
            wait += 1
            if wait < rules.parts.wait_scans:
                decisions.append(GroupDecision(
                    row.remote_path, GroupAction.WAIT, (PartAssignment(row, gid, number),), wait,
                    f"lone part: waiting for the rest of its group "
                    f"(scan {wait} of {rules.parts.wait_scans})"))
                continue
        key = partition_key_for(view, row.imohash or "", row.filename)
        decisions.append(_release(row.remote_path, (PartAssignment(row, None, None),), key, wait,
                                  f"imported on its own: {alone.message}", rules.source_id, view))
    return decisions


# -- the plan ----------------------------------------------------------------------------------

@dataclass
class ScanPlan:
    """Everything one scan decided, in listing order, and what it saw."""

    source_id: int
    source_name: str
    files_seen: int = 0
    files: list[FileDecision] = field(default_factory=list)
    groups: list[GroupDecision] = field(default_factory=list)
    finished: bool = True
    error: str | None = None

    @property
    def new_pending(self) -> list[str]:
        """Files and groups queued for import as new content."""
        return ([d.remote_path for d in self.files if d.new_import]
                + [g.name for g in self.groups if g.action is GroupAction.RELEASE])

    @property
    def waiting(self) -> int:
        """Files waiting to be stable, or parts waiting for their group."""
        waiting_files = sum(1 for d in self.files if d.outcome.status == FileStatus.PENDING
                            and d.outcome.imohash is None)
        return waiting_files + sum(len(g.parts) for g in self.groups
                                   if g.action is GroupAction.WAIT)

    @property
    def skipped(self) -> Counter[str]:
        """Skip reasons and their counts."""
        counts: Counter[str] = Counter(
            str(d.outcome.skip_reason) for d in self.files
            if d.outcome.skip_reason is not None and d.outcome.status != FileStatus.PENDING)
        for g in self.groups:
            if g.action is GroupAction.LATE:
                counts["late_part"] += len(g.parts)
            elif g.action is GroupAction.DUPLICATE and g.duplicate is not None:
                counts[str(g.duplicate.reason)] += len(g.parts)
        return counts

    @property
    def errors(self) -> list[str]:
        """Files that could not be read."""
        return [d.outcome.message or "" for d in self.files
                if d.outcome.status == FileStatus.ERROR]

    @property
    def decisions(self) -> list[tuple[str, str]]:
        """``(path or group, decision)`` for every file or group that needs one."""
        return ([(d.remote_path, d.note) for d in self.files if not d.quiet]
                + [(g.name, g.note) for g in self.groups])
