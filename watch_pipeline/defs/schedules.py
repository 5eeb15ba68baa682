"""Schedules: hourly housekeeping."""

import dagster as dg

from watch_pipeline.defs.batch import batch_keys
from watch_pipeline.defs.sensors import IN_FLIGHT
from watch_pipeline.ops.maintenance import cleanup_temp
from watch_pipeline.sources.resource import SourcesResource


@dg.op(description="Remove import temp files older than 2 h that no running run uses.")
def cleanup_temp_files(context: dg.OpExecutionContext, sources: SourcesResource) -> None:
    """Delete stale downloads and stitched files; keep those of queued or running imports."""
    in_use: set[str] = set()
    records = context.instance.get_run_records(
        dg.RunsFilter(tags={"watch_pipeline/kind": "import"}, statuses=IN_FLIGHT))
    for record in records:
        run = record.dagster_run
        if run.tags.get("dagster/partition"):
            in_use.add(run.tags["dagster/partition"])
        in_use.update(batch_keys(run.run_config or {}))
    report = cleanup_temp(sources.scratch(), in_use=in_use)
    context.log.info(f"removed {len(report.removed)} stale temp item(s), "
                     f"{report.bytes_freed / 1e6:.1f} MB freed; kept "
                     f"{len(report.kept_in_use)} in use")


@dg.job(name="cleanup_temp_job", description="Housekeeping of WATCH_TEMP_DIR.")
def cleanup_temp_job() -> None:
    """Remove stale import temp files."""
    cleanup_temp_files()


cleanup_temp_schedule = dg.ScheduleDefinition(
    name="cleanup_temp", target=cleanup_temp_job, cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: remove import temp files older than 2 hours, never one in use.")
