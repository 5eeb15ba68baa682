"""Watch sensors, one per source kind from one factory, and the import-failure sensor.

A watch sensor's tick first sets the ``watch_imports`` pool's limit to
``watch.max_concurrent_imports`` when they differ (the bound Dagster itself enforces), scans the
enabled sources of its kind that are due, then asks for one import run per new content (a
``media`` partition ``<slug of the file name>-<fingerprint>``, see ``pipeline/keys.py``), holding
back what exceeds that many in-flight runs (those go out on later ticks). One failing
source is recorded on its row and skipped; it never fails the tick or delays another kind's
sensor.
"""


import os
import time

import dagster as dg

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.settings import WatchSettings, get_setting
from watch_pipeline.defs.batch import batch_keys, batch_run_config, import_batch_job
from watch_pipeline.defs.jobs import IMPORT_TAGS, import_job, recompute_fingerprints_job
from watch_pipeline.defs.partitions import media
from watch_pipeline.defs.pools import IMPORT_POOL, sync_import_pool
from watch_pipeline.pipeline import claims, scan
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION
from watch_pipeline.sources.resource import SourcesResource

SOURCE_KINDS = ("local", "s3", "smb")
# Work per tick stays well under the daemon's 60 s sensor timeout.
TICK_BUDGET_SECONDS = 40.0
# While no import is in flight, a scan that found new content stops this much later (the next
# tick resumes it), so the first import run of a burst is requested within seconds even when the
# listing is long. With imports in flight the scan keeps its whole budget (throughput).
FIRST_IMPORT_SECONDS = 2.0
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _run_exists(instance: dg.DagsterInstance, run_key: str) -> bool:
    return bool(instance.get_run_records(dg.RunsFilter(tags={"dagster/run_key": run_key}),
                                         limit=1))


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
        # Two targets (single runs and batches): `target=` takes one, so `jobs=` it is.
        jobs=[import_job, import_batch_job],
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Scans the enabled {kind} watch sources that are due and requests one "
                    "import run per new media content.",
    )
    def _sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                sources: SourcesResource) -> dg.SensorResult | dg.SkipReason:
        cat = catalog.get()
        with cat.session() as session:
            settings = WatchSettings.load(session)
            enabled = queries.enabled_sources(session, kind)
        _sync_pool(context, settings.max_concurrent_imports)
        if not settings.enabled:
            return dg.SkipReason("watch.enabled is false: no source is scanned")
        if not enabled:
            return dg.SkipReason(f"no enabled {kind} watch source")
        idle = in_flight_imports(context.instance) == 0
        tick = scan.scan_due_sources(cat, enabled, settings=settings,
                                     client_for=sources.client_for,
                                     budget_seconds=TICK_BUDGET_SECONDS, log=context.log,
                                     first_import_seconds=FIRST_IMPORT_SECONDS if idle else None)
        slots = settings.max_concurrent_imports - in_flight_imports(context.instance)
        # Each run may carry a batch of partitions, so claim up to a full batch per free slot.
        requests = claims.claim_imports(
            cat, [e.id for e in enabled], slots=max(slots, 0) * claims.BATCH_MAX,
            run_exists=lambda key: _run_exists(context.instance, key))
        if not requests:
            held = " (import slots full)" if slots <= 0 else ""
            return dg.SkipReason(tick.describe(held))
        runs = claims.plan_runs(cat, requests, slots=slots, cpus=os.cpu_count() or 2)
        context.log.info(f"requesting {len(runs)} import run(s) for {len(requests)} "
                         f"partition(s); {slots} slot(s) were free")
        existing = set(context.instance.get_dynamic_partitions(media.name))
        new_keys = sorted({r.partition_key for r in requests} - existing)
        return dg.SensorResult(
            run_requests=[_run_request(run) for run in runs],
            dynamic_partitions_requests=[media.build_add_request(new_keys)] if new_keys else [],
        )

    return _sensor


def _run_request(run: claims.RunPlan) -> dg.RunRequest:
    if not run.is_batch:
        (r,) = run.requests
        return dg.RunRequest(
            run_key=r.run_key, partition_key=r.partition_key, job_name=import_job.name,
            tags={**IMPORT_TAGS, "watch_pipeline/source_id": str(r.source_id),
                  "watch_pipeline/source": r.source_name,
                  "watch_pipeline/path": r.remote_path[:200]})
    return dg.RunRequest(
        run_key=run.run_key, job_name=import_batch_job.name,
        run_config=batch_run_config(list(run.partitions)),
        tags={**IMPORT_TAGS, "watch_pipeline/batch_size": str(len(run.partitions)),
              "watch_pipeline/source": ",".join(
                  sorted({r.source_name for r in run.requests}))[:200]})


def build_watch_sensors(interval_seconds: int = 30,
                        local_interval_seconds: int | None = None) -> list[dg.SensorDefinition]:
    """One watch sensor per source kind, ticking every ``interval_seconds``.

    The local sensor ticks every ``local_interval_seconds`` when given: listing a local folder
    is cheap, and a source with fresh file-system events is scanned on the next tick.
    """
    return [build_watch_sensor(kind, interval_seconds=local_interval_seconds
                               if kind == "local" and local_interval_seconds else interval_seconds)
            for kind in SOURCE_KINDS]


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
                                      f"{message[:500]}", run_key=run.tags.get("dagster/run_key"),
                              run_id=run.run_id)
    if marked:
        context.log.info(f"marked {marked} file(s) of {len(keys)} partition(s) for retry")


@dg.sensor(
    name="recompute_fingerprints_sensor",
    target=recompute_fingerprints_job,
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
