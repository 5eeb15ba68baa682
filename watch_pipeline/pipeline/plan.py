"""Pure scan logic: due-ness, filters, stability, dedup and retry decisions (SPEC §3-§5).

Nothing here touches a database, a file or Dagster. The scan runner (:mod:`watch_pipeline.scan`)
feeds it what a listing and the catalog say and writes back what it decides; the sensor and
``watch-pipeline source scan --dry-run`` share it, so both always agree.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

# Statuses of a file some run is working on: a scan leaves these alone.
IN_FLIGHT = frozenset({"downloading", "importing"})



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


class Seen(NamedTuple):
    """What the catalog remembers of one path (a subset of ``watch_source_file``).

    A named tuple, not a dataclass: a steady-state scan builds one per known file (100 000 in a
    large source), and tuples are several times cheaper to make.
    """

    id: int
    file_size: int | None
    file_modified_at: datetime | None
    etag: str | None
    status: str
    imohash: str | None
    stable_since: datetime | None


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


def is_stable(*, stable_since: datetime | None, mtime: datetime, now: datetime,
              stability_seconds: int, trust_mtime: bool) -> bool:
    """Whether a file's current version may be imported.

    Remote sources need two listings at least ``stability_seconds`` apart that agree (the
    version first seen at ``stable_since`` is still there). A local file's own mtime is trusted
    too: untouched for ``stability_seconds`` means nobody is writing it.
    """
    window = timedelta(seconds=stability_seconds)
    if stability_seconds == 0:
        return True
    if trust_mtime and now - mtime >= window:
        return True
    return stable_since is not None and now - stable_since >= window


def classify(seen: Seen | None, *, size: int, mtime: datetime, etag: str | None, now: datetime,
             skip_older_than_days: int | None, stability_seconds: int,
             trust_mtime: bool) -> Action:
    """Decide what a scan does with one listed file, given what the catalog remembers of it."""
    if seen is None:
        if is_too_old(mtime, skip_older_than_days, now):
            return Action.TOO_OLD
        if is_stable(stable_since=now, mtime=mtime, now=now,
                     stability_seconds=stability_seconds, trust_mtime=trust_mtime):
            return Action.FINGERPRINT
        return Action.RECORD_NEW
    if seen.status in IN_FLIGHT:
        return Action.NOTHING
    if not _same_version(seen, size, mtime, etag):
        # Replaced or still growing. A replaced file is new content: look at it again.
        if is_too_old(mtime, skip_older_than_days, now):
            return Action.TOO_OLD
        if trust_mtime and is_stable(stable_since=now, mtime=mtime, now=now,
                                     stability_seconds=stability_seconds, trust_mtime=True):
            return Action.FINGERPRINT
        return Action.CHANGED
    if seen.status == "pending" and seen.imohash is None:
        if is_stable(stable_since=seen.stable_since, mtime=mtime, now=now,
                     stability_seconds=stability_seconds, trust_mtime=trust_mtime):
            return Action.FINGERPRINT
    return Action.NOTHING


@dataclass(frozen=True)
class Verdict:
    """The outcome for a fingerprinted file."""

    status: str
    skip_reason: str | None = None
    media_file_id: int | None = None
    message: str | None = None


def dedup(*, fingerprint: str, source_id: int, imported_elsewhere: tuple[int, int | None] | None,
          existing_media_id: int | None) -> Verdict:
    """Apply dedup layers 2 and 3 of SPEC §5 to a freshly fingerprinted file.

    Args:
        fingerprint: The file's imohash.
        source_id: The scanned source.
        imported_elsewhere: ``(watch_source_id, media_file_id)`` of a row already ``imported``
            with this fingerprint, if any (the same source included).
        existing_media_id: A ``media_file`` with this fingerprint that is not in ``error``.
    """
    if imported_elsewhere is not None:
        other_source, media_id = imported_elsewhere
        reason = ("duplicate_same_source" if other_source == source_id
                  else "duplicate_other_source")
        where = "this source" if other_source == source_id else f"source {other_source}"
        return Verdict("skipped_duplicate", reason, media_id,
                       f"same content ({fingerprint}) already imported from {where}"
                       + (f" as media {media_id}" if media_id else ""))
    if existing_media_id is not None:
        return Verdict("skipped_duplicate", "duplicate_existing", existing_media_id,
                       f"same content ({fingerprint}) already exists as media {existing_media_id}")
    return Verdict("pending")
