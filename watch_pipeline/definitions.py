"""The code location's entry point: Dagster loads ``defs`` from here."""

from __future__ import annotations

import dagster as dg

from watch_pipeline.defs.alerts import notification_sensor, source_health_sensor
from watch_pipeline.defs.assets import (
    build_transcript_asset,
    media_object,
    raw_file,
    stitched_media,
)
from watch_pipeline.defs.batch import import_batch_job
from watch_pipeline.defs.jobs import import_job, recompute_fingerprints_job, transcribe_job
from watch_pipeline.defs.resources import build_resources, sensor_interval_seconds
from watch_pipeline.defs.schedules import cleanup_temp_job, cleanup_temp_schedule
from watch_pipeline.defs.sensors import (
    build_watch_sensors,
    import_failure_sensor,
    recompute_fingerprints_sensor,
)


@dg.definitions
def defs() -> dg.Definitions:
    """Assemble assets, sensors, jobs, schedules and resources from ``defs/``."""
    resources = build_resources()
    transcript = build_transcript_asset(resources["transcriber"].model_id)
    return dg.Definitions(
        assets=[raw_file, stitched_media, media_object, transcript],
        jobs=[import_job, import_batch_job, transcribe_job, cleanup_temp_job,
              recompute_fingerprints_job],
        schedules=[cleanup_temp_schedule],
        sensors=[*build_watch_sensors(sensor_interval_seconds()), import_failure_sensor,
                 notification_sensor,
                 source_health_sensor, recompute_fingerprints_sensor],
        resources=resources,
    )
