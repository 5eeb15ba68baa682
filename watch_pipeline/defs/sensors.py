"""Watch sensors, one per source kind from one factory, and the import-failure sensor.

A watch sensor's tick first sets the ``watch_imports`` pool's limit to
``watch.max_concurrent_imports`` when they differ (the bound Dagster itself enforces), scans the
enabled sources of its kind that are due, then asks for one import run per new fingerprint,
holding back what exceeds that many in-flight runs (those go out on later ticks). One failing
source is recorded on its row and skipped; it never fails the tick or delays another kind's
sensor.
"""


import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from watch_pipeline.catalog.models import WatchSource, WatchSourceFile
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.secrets import SecretKeyError
from watch_pipeline.catalog.settings import WatchSettings, get_setting
from watch_pipeline.defs.batch import batch_keys, batch_run_config, import_batch_job
from watch_pipeline.defs.jobs import IMPORT_TAGS, import_job, recompute_fingerprints_job
from watch_pipeline.defs.partitions import media
from watch_pipeline.defs.pools import IMPORT_POOL, sync_import_pool
from watch_pipeline.pipeline import claims, plan
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION
from watch_pipeline.pipeline.scan import scan_source
from watch_pipeline.sources.base import SourceError
from watch_pipeline.sources.resource import SourcesResource

SOURCE_KINDS = ("local", "s3", "smb")
# Work per tick stays well under the daemon's 60 s sensor timeout.
TICK_BUDGET_SECONDS = 40.0
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _record_source_error(catalog, source_id: int, message: str) -> None:  # type: ignore[no-untyped-def]
    with catalog.session() as session:
        source = session.get(WatchSource, source_id)
        source.last_scan_status = "error"
        source.last_scan_message = message
        source.last_scan_at = datetime.now(UTC)
        source.consecutive_scan_failures = (source.consecutive_scan_failures or 0) + 1


def _sources_with_ripe_files(catalog, source_ids: list[int], now: datetime,  # type: ignore[no-untyped-def]
                             stability_seconds: int) -> set[int]:
    """Sources with files waiting for stability whose window has now passed."""
    cutoff = now - timedelta(seconds=stability_seconds)
    f = WatchSourceFile
    with catalog.session() as session:
        return set(session.scalars(
            sa.select(f.watch_source_id).distinct()
            .where(f.watch_source_id.in_(source_ids), f.status == "pending",
                   f.imohash.is_(None), f.stable_since <= cutoff)))


def in_flight_imports(instance: dg.DagsterInstance) -> int:
    """Import runs (single or batch) queued or running now, across every source kind."""
    return instance.get_runs_count(
        dg.RunsFilter(tags={"watch_pipeline/kind": "import"}, statuses=IN_FLIGHT))


def _sync_pool(context: dg.SensorEvaluationContext, limit: int) -> None:
    """Keep the import pool's limit equal to the setting; a failure never stops the scans."""
    try:
        sync = sync_import_pool(context.instance, limit)
    except Exception as exc:  # any storage trouble: the next tick tries again
        context.log.warning(f"could not set the {IMPORT_POOL} pool's limit to {limit}: {exc}")
        return
    if sync.changed:
        context.log.info(sync.describe())


def build_watch_sensor(kind: str, *, interval_seconds: int = 30) -> dg.SensorDefinition:
    """The watch sensor for sources of ``kind`` (``local``, ``s3`` or ``smb``)."""

    @dg.sensor(
        name=f"{kind}_watch_sensor",
        jobs=[import_job, import_batch_job],
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Scans the enabled {kind} watch sources that are due and requests one "
                    "import run per new media fingerprint.",
    )
    def _sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                sources: SourcesResource) -> dg.SensorResult | dg.SkipReason:
        started = time.monotonic()
        cat = catalog.get()
        now = datetime.now(UTC)
        with cat.session() as session:
            settings = WatchSettings.load(session)
            rows = session.scalars(
                sa.select(WatchSource).where(WatchSource.source_type == kind,
                                             WatchSource.is_enabled.is_(True))
                .order_by(WatchSource.last_scan_at.is_not(None), WatchSource.last_scan_at)
            ).all()
            enabled = [(r.id, r.name, r.last_scan_at, r.polling_interval_minutes) for r in rows]
        _sync_pool(context, settings.max_concurrent_imports)
        if not settings.enabled:
            return dg.SkipReason("watch.enabled is false: no source is scanned")
        if not enabled:
            return dg.SkipReason(f"no enabled {kind} watch source")

        ripe = _sources_with_ripe_files(cat, [e[0] for e in enabled], now,
                                        settings.file_stability_seconds)
        summaries: list[str] = []
        seen = new = 0
        for source_id, name, last_scan_at, interval in enabled:
            # Due by its polling interval, or holding files whose stability window has passed:
            # those are looked at again on the next tick rather than a whole interval later.
            if not (plan.is_due(last_scan_at, interval, now) or source_id in ripe):
                continue
            remaining = TICK_BUDGET_SECONDS - (time.monotonic() - started)
            if remaining <= 1:
                summaries.append(f"{name}: postponed to the next tick (time budget)")
                continue
            try:
                with cat.session() as session:
                    client = sources.client_for(session.get(WatchSource, source_id))
            except (SourceError, SecretKeyError) as exc:
                _record_source_error(cat, source_id, f"scan failed: {exc}")
                context.log.warning(f"source {name!r}: {exc}")
                summaries.append(f"{name}: error")
                continue
            with client:
                report = scan_source(cat, source_id, client, settings=settings,
                                     budget_seconds=remaining)
            seen += report.files_seen
            new += len(report.new_pending)
            log = context.log.warning if report.error else context.log.info
            log(f"source {name!r}: {report.summary}")
            summaries.append(f"{name}: {report.summary}")

        slots = settings.max_concurrent_imports - in_flight_imports(context.instance)
        # Each run may carry a batch of partitions, so claim up to a full batch per free slot.
        requests = claims.claim_imports(
            cat, [e[0] for e in enabled], slots=max(slots, 0) * claims.BATCH_MAX,
            run_exists=lambda key: bool(context.instance.get_run_records(
                dg.RunsFilter(tags={"dagster/run_key": key}), limit=1)))
        scanned = sum(1 for s in summaries if "postponed" not in s)
        if not requests:
            held = " (import slots full)" if slots <= 0 else ""
            return dg.SkipReason(
                f"{scanned} sources scanned, {seen} files seen, {new} new{held}"
                + (f"; {'; '.join(summaries)}" if summaries else ""))
        existing = set(context.instance.get_dynamic_partitions(media.name))
        new_keys = sorted({r.fingerprint for r in requests} - existing)
        runs = [_run_request(p) for p in claims.plan_runs(
            cat, requests, slots=slots, cpus=os.cpu_count() or 2)]
        context.log.info(f"requesting {len(runs)} import run(s) for {len(requests)} "
                         f"partition(s); {slots} slot(s) were free")
        return dg.SensorResult(
            run_requests=runs,
            dynamic_partitions_requests=[media.build_add_request(new_keys)] if new_keys else [],
        )

    return _sensor


def _run_request(run: claims.RunPlan) -> dg.RunRequest:
    if not run.is_batch:
        (r,) = run.requests
        return dg.RunRequest(
            run_key=r.run_key, partition_key=r.fingerprint, job_name=import_job.name,
            tags={**IMPORT_TAGS, "watch_pipeline/source_id": str(r.source_id),
                  "watch_pipeline/source": r.source_name,
                  "watch_pipeline/path": r.remote_path[:200]})
    return dg.RunRequest(
        run_key=run.run_key, job_name=import_batch_job.name,
        run_config=batch_run_config(list(run.partitions)),
        tags={**IMPORT_TAGS, "watch_pipeline/batch_size": str(len(run.partitions)),
              "watch_pipeline/source": ",".join(
                  sorted({r.source_name for r in run.requests}))[:200]})


def build_watch_sensors(interval_seconds: int = 30) -> list[dg.SensorDefinition]:
    """One watch sensor per source kind, ticking every ``interval_seconds``."""
    return [build_watch_sensor(kind, interval_seconds=interval_seconds) for kind in SOURCE_KINDS]


@dg.run_failure_sensor(
    name="import_failure_sensor",
    monitored_jobs=[import_job, import_batch_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records an import run that failed outside our own error handling (killed "
                "process, lost worker) on its catalog rows, so the file is retried.",
)
def import_failure_sensor(context: dg.RunFailureSensorContext,
                          catalog: CatalogResource) -> None:
    """Mark the run's partitions' rows ``error`` so the watch sensor retries them."""
    run = context.dagster_run
    keys = ([run.tags["dagster/partition"]] if run.tags.get("dagster/partition")
            else batch_keys(run.run_config or {}))
    message = context.failure_event.message or "run failed"
    marked = 0
    for key in keys:
        marked += claims.fail(catalog.get(), key, f"run {run.run_id} failed: "
                                      f"{message[:500]}", run_key=run.tags.get("dagster/run_key"))
    if marked:
        context.log.info(f"marked {marked} file(s) of {len(keys)} partition(s) for retry")


@dg.sensor(
    name="recompute_fingerprints_sensor",
    job=recompute_fingerprints_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches recompute_fingerprints_job once when the setting "
                "fingerprints.recompute_complete is false (after an algorithm change).",
)
def recompute_fingerprints_sensor(context: dg.SensorEvaluationContext,
                                  catalog: CatalogResource) -> dg.RunRequest | dg.SkipReason:
    """Gate the recompute job on the settings flag; never two at once."""
    with catalog.get().session() as session:
        if get_setting(session, "fingerprints.recompute_complete"):
            return dg.SkipReason("fingerprints are current (fingerprints.recompute_complete)")
    if context.instance.get_runs_count(dg.RunsFilter(
            job_name=recompute_fingerprints_job.name, statuses=IN_FLIGHT)):
        return dg.SkipReason("a recompute is already running")
    return dg.RunRequest(run_key=f"recompute-{ALGORITHM_VERSION}-{int(time.time() // 300)}")
