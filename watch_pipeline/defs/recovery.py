"""The stranded-run sensor: import runs a crash left behind are marked failed, so they retry.

The rules are in ``pipeline/recovery.py``; this module reads the facts from the Dagster instance
(run records, the run worker's "Started process for run (pid: N)" event, the launcher's health
check) and marks stranded runs failed with ``instance.report_run_failed``. That failure takes the
usual path: ``import_failure_sensor`` marks the run's files ``error``; on its next ticks this
sensor releases those rows for an immediate, uncounted retry (only after the failure path has
written them, so it cannot overwrite the retry), and the watch sensor requests them again with
new run keys. The media row of a partition is unique, so a retry never imports a file twice.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dagster as dg

from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.defs.background import background_sensor
from watch_pipeline.defs.jobs import IMPORT_TAGS
from watch_pipeline.pipeline import recovery

STRANDED_TAG = "watch_pipeline/stranded"
_KIND = "watch_pipeline/kind"
_UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]
# Engine events read per run to find its worker's pid (it is among the first few).
_ENGINE_EVENTS_READ = 50
# How long after being marked failed a stranded run's files are looked for, to be released.
_RELEASE_WINDOW_SECONDS = 3600


def worker_check(instance: dg.DagsterInstance) -> recovery.WorkerCheck:
    """How the instance's run launcher lets us see whether a run worker still runs."""
    launcher = instance.run_launcher
    if isinstance(launcher, dg.DefaultRunLauncher):
        return recovery.WorkerCheck.LOCAL_PROCESS
    if launcher.supports_check_run_worker_health:
        return recovery.WorkerCheck.HEALTH_CHECK
    return recovery.WorkerCheck.EVENTS_ONLY


def _worker_report(instance: dg.DagsterInstance, run_id: str) -> tuple[int | None, float | None]:
    """The pid and time of the run's latest "Started process for run" engine event."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=_ENGINE_EVENTS_READ).records
    pid = reported_at = None
    for record in records:
        found = recovery.worker_pid(record.event_log_entry.message)
        if found is not None:
            pid, reported_at = found, record.event_log_entry.timestamp
    return pid, reported_at


def _worker_failed(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool | None:
    try:
        status = instance.run_launcher.check_run_worker_health(run).status
    except Exception:  # the launcher's backend may be unreachable: decide nothing this tick
        return None
    return status.name in ("FAILED", "NOT_FOUND")


def in_flight_run(instance: dg.DagsterInstance, record: dg.RunRecord,
                  check: recovery.WorkerCheck) -> recovery.InFlightRun:
    """The facts the rules need about one unfinished run, read from the instance."""
    run = record.dagster_run
    pid, reported_at = _worker_report(instance, run.run_id)
    latest = instance.get_records_for_run(run.run_id, ascending=False, limit=1).records
    last_event_at = (latest[0].event_log_entry.timestamp if latest
                     else record.create_timestamp.timestamp())
    failed = (_worker_failed(instance, run)
              if check is recovery.WorkerCheck.HEALTH_CHECK
              and run.status == dg.DagsterRunStatus.STARTED else None)
    return recovery.InFlightRun(run_id=run.run_id, status=run.status.value, worker_pid=pid,
                                worker_reported_at=reported_at, last_event_at=last_event_at,
                                worker_failed=failed)


def fail_stranded_runs(instance: dg.DagsterInstance, log: dg.DagsterLogManager | None = None,
                       ) -> list[tuple[str, str]]:
    """Mark every stranded import run failed; returns ``(run_id, reason)`` for each."""
    check = worker_check(instance)
    failed: list[tuple[str, str]] = []
    records = instance.get_run_records(dg.RunsFilter(
        tags={_KIND: IMPORT_TAGS[_KIND]}, statuses=_UNFINISHED))
    for record in records:
        reason = recovery.stranded_reason(in_flight_run(instance, record, check), check,
                                          now=time.time())
        if reason is None:
            continue
        # The run may have finished while we looked: only an unchanged run is failed.
        current = instance.get_run_by_id(record.dagster_run.run_id)
        if current is None or current.status != record.dagster_run.status:
            continue
        instance.add_run_tags(current.run_id, {STRANDED_TAG: "true"})
        instance.report_run_failed(current, f"Stranded: {reason}. Its files are retried.")
        failed.append((current.run_id, reason))
        if log is not None:
            log.warning(f"run {current.run_id} marked failed: {reason}")
    return failed


def release_stranded_files(instance: dg.DagsterInstance, catalog: CatalogResource) -> int:
    """Release the files of recently stranded runs once the failure path has marked them."""
    released = 0
    for record in instance.get_run_records(dg.RunsFilter(
            tags={STRANDED_TAG: "true"}, statuses=[dg.DagsterRunStatus.FAILURE],
            updated_after=datetime.fromtimestamp(time.time() - _RELEASE_WINDOW_SECONDS, UTC))):
        run = record.dagster_run
        failed_at = datetime.fromtimestamp(record.end_time or record.update_timestamp.timestamp(),
                                           UTC)
        released += recovery.release_files(catalog.get(), run.run_id,
                                           run.tags.get("dagster/run_key"), failed_at)
    return released


def build_stranded_run_sensor(interval_seconds: int = 30) -> dg.SensorDefinition:
    """The stranded-run sensor, ticking every ``interval_seconds``."""

    @background_sensor(
        "stranded_run_sensor", interval_seconds=interval_seconds,
        description="Marks import runs whose worker died with a crash (power cut, OOM kill, "
                    "reboot) failed, and has their files retried at once; a run whose worker "
                    "is alive is never touched.",
    )
    def stranded_run_sensor(context: dg.SensorEvaluationContext,
                            catalog: CatalogResource) -> dg.SkipReason:
        released = release_stranded_files(context.instance, catalog)
        failed = fail_stranded_runs(context.instance, context.log)
        if released:
            context.log.info(f"released {released} file(s) of stranded runs for a retry now")
        if not failed:
            return dg.SkipReason("no stranded import run"
                                 + (f"; {released} file(s) released for retry" if released
                                    else ""))
        return dg.SkipReason(f"marked {len(failed)} stranded import run(s) failed: "
                             + "; ".join(f"{run_id}: {reason}" for run_id, reason in failed))

    return stranded_run_sensor
