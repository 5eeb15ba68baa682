"""Which planned files become import runs now: concurrency, backoff, run keys, batches.

A ``media`` partition key is opaque here (``<slug>-<fingerprint>``, or a bare fingerprint for
older media, see :mod:`.keys`); the content fingerprint is the identity. Every waiting row of one
content belongs to one partition, so a claim is per partition, never per row: a copy that a
concurrent scan of another source put under a key of its own joins the partition its content
already has (:func:`claim_imports`). A claim records its run key — the fingerprint, not the
partition key — on the rows (Dagster remembers a run key forever, so a retry needs a new one)
and when it was requested (a request the daemon never turned into a run is sent again).
Nothing here imports Dagster: the sensor turns :class:`RunPlan` objects into run requests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import FileStatus
from watch_pipeline.pipeline.keys import fingerprint_of

RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=1)
MAX_AUTOMATIC_RETRIES = 3
# A request older than this with no run behind it was lost with the daemon: send it again.
STALE_REQUEST_SECONDS = 60.0
# Most partitions in one batch run: a failure in a batch delays at most this many files.
BATCH_MAX = 25


def retry_delay(retry_count: int) -> timedelta:
    """Capped exponential backoff: 1, 2, 4 ... minutes, at most an hour."""
    return min(RETRY_BASE * (2 ** min(max(retry_count - 1, 0), 10)), RETRY_CAP)


def may_retry(retry_count: int, next_retry_at: datetime | None, now: datetime) -> bool:
    """An ``error`` row is retried automatically a few times, each after its backoff."""
    return retry_count <= MAX_AUTOMATIC_RETRIES and (next_retry_at is None or next_retry_at <= now)


def fail(catalog: Catalog, partition: str, reason: str, *, run_key: str | None = None,
         run_id: str | None = None, now: datetime | None = None) -> int:
    """Record a failed import of ``partition`` and schedule its retry with the backoff above.

    ``run_id`` is the failed run: rows another run holds are not its to fail.
    """
    return queries.fail_import(catalog, partition, reason, backoff=retry_delay, run_key=run_key,
                               run_id=run_id, now=now)


@dataclass(frozen=True)
class ImportRequest:
    """One partition the sensor should start an import run for."""

    partition_key: str
    run_key: str
    source_id: int
    source_name: str
    remote_path: str

    @property
    def fingerprint(self) -> str:
        """The content's identity (see :func:`content_of`)."""
        return content_of(self.partition_key)


def content_of(partition: str) -> str:
    """The fingerprint in a partition key; a key of another shape is its own identity."""
    try:
        return fingerprint_of(partition)
    except ValueError:
        return partition


def _is_stale(c: queries.ClaimCandidate, now: datetime,
              run_exists: Callable[[str], bool]) -> bool:
    return (c.status == FileStatus.PENDING and c.run_key is not None
            and c.run_requested_at is not None
            and (now - c.run_requested_at).total_seconds() > STALE_REQUEST_SECONDS
            and not run_exists(c.run_key))


def claim_imports(catalog: Catalog, source_ids: list[int], *, slots: int,
                  now: datetime | None = None,
                  run_exists: Callable[[str], bool] = lambda _key: False,
                  ) -> list[ImportRequest]:
    """Choose up to ``slots`` partitions to import and record their run keys.

    Candidates, oldest detection first: stable ``pending`` rows never requested, ``error`` rows
    whose backoff has passed (with a new run key), and requests that have not turned into a run
    a minute after the tick that made them — the daemon stopped before creating it — re-sent
    with the same key (``run_exists`` asks the Dagster instance; when a run exists, its own
    outcome decides what happens next).

    A row never requested whose content the catalog holds under another partition key (two
    sources scanned at once, each naming the content after its own file) moves to that key
    first, so one content is one partition and one media row whatever the scans' timing.
    """
    now = now or datetime.now(UTC)
    if not source_ids or slots <= 0:
        return []
    with catalog.session() as session:
        chosen: dict[str, ImportRequest] = {}
        row_ids: dict[str, list[int]] = {}
        joined: dict[str, str] = {}  # partition key -> the key its content already has
        for c in queries.claim_candidates(session, source_ids):
            fresh = c.status == FileStatus.PENDING and c.run_key is None
            retryable = c.status == FileStatus.ERROR and may_retry(c.retry_count,
                                                                   c.next_retry_at, now)
            partition = joined.get(c.partition, c.partition) if fresh else c.partition
            if partition not in chosen and len(chosen) >= slots:
                continue
            if fresh and c.partition not in joined:
                partition = joined[c.partition] = _partition_of_content(session, c.partition)
            if partition != c.partition:
                queries.move_to_partition(session, [c.id], partition)
            if partition in chosen:
                if fresh or retryable:
                    row_ids[partition].append(c.id)
                continue
            if len(chosen) >= slots:
                continue
            if fresh or retryable:
                run_key = _fresh_key(session, partition, now)
            elif _is_stale(c, now, run_exists):
                run_key = c.run_key or content_of(partition)
            else:
                continue
            chosen[partition] = ImportRequest(partition, run_key, c.source_id,
                                              c.source_name, c.remote_path)
            row_ids[partition] = [c.id]
        for request in chosen.values():
            queries.mark_claimed(session, row_ids[request.partition_key], request.run_key, now)
    return list(chosen.values())


def _partition_of_content(session, partition: str) -> str:  # type: ignore[no-untyped-def]
    """The key the catalog holds for the content of ``partition`` (itself when it is that)."""
    fingerprint = content_of(partition)
    recorded = (queries.recorded_partition_key(session, fingerprint)
                or queries.recorded_partition_key(session, fingerprint, group=True))
    return recorded or partition


def _fresh_key(session, partition: str, now: datetime) -> str:  # type: ignore[no-untyped-def]
    """The fingerprint, or a new retry key once the partition was ever requested."""
    fingerprint = content_of(partition)
    if not queries.partition_was_requested(session, partition):
        return fingerprint
    return f"{fingerprint}-retry-{now:%Y%m%dT%H%M%S%f}"


@dataclass(frozen=True)
class RunPlan:
    """One import run to request: a single partition, or a batch of them."""

    run_key: str
    partitions: tuple[str, ...]
    requests: tuple[ImportRequest, ...]

    @property
    def is_batch(self) -> bool:
        """True when the run imports several partitions one after the other."""
        return len(self.partitions) > 1


def plan_runs(catalog: Catalog, requests: list[ImportRequest], *, slots: int,
              cpus: int) -> list[RunPlan]:
    """One run per partition when few arrive; batches when many do.

    With more new partitions than runs may start (``slots``, at most one per CPU), they are
    dealt round-robin into that many batch runs, so a burst pays a run's start-up cost a few
    times instead of once per file. Each batch gets its own run key, recorded on its files (so a
    lost request is sent again, and a failed batch's files get fresh keys).
    """
    parallel = max(1, min(slots, cpus))
    if len(requests) <= parallel:
        return [RunPlan(r.run_key, (r.partition_key,), (r,)) for r in requests]
    batches: list[list[ImportRequest]] = [[] for _ in range(parallel)]
    for index, request in enumerate(requests):
        batches[index % parallel].append(request)
    runs = []
    for batch in batches:
        if len(batch) == 1:
            runs.append(RunPlan(batch[0].run_key, (batch[0].partition_key,), (batch[0],)))
            continue
        keys = [r.partition_key for r in batch]
        run_key = "batch-" + hashlib.sha1(",".join(
            r.run_key for r in batch).encode()).hexdigest()[:20]
        queries.assign_run_key(catalog, keys, run_key)
        runs.append(RunPlan(run_key, tuple(keys), tuple(batch)))
    return runs
