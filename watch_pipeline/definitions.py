"""The code location's entry point: Dagster loads ``defs`` from here."""

from __future__ import annotations

import dagster as dg

from watch_pipeline.defs.alerts import build_alert_sensors
from watch_pipeline.defs.assets import (
    build_transcript_asset,
    media_object,
    raw_file,
    stitched_media,
)
from watch_pipeline.defs.batch import import_batch_job
from watch_pipeline.defs.jobs import import_job, recompute_fingerprints_job, transcribe_job
from watch_pipeline.defs.manual import manual_import_job
from watch_pipeline.defs.previews import thumbnail, waveform
from watch_pipeline.defs.recovery import build_stranded_run_sensor
from watch_pipeline.defs.resources import launch
from watch_pipeline.defs.schedules import cleanup_temp_job, cleanup_temp_schedule
from watch_pipeline.defs.sensors import (
    build_watch_sensors,
    import_failure_sensor,
    recompute_fingerprints_sensor,
)


@dg.definitions
def defs() -> dg.Definitions:
    """Assemble assets, sensors, jobs, schedules and resources from ``defs/``.

    The environment is read here, once, when the code location loads (``defs/resources.py``).
    """
    config = launch()
    transcript = build_transcript_asset(config.transcriber.model_id)
    return dg.Definitions(
        assets=[raw_file, stitched_media, media_object, waveform, thumbnail, transcript],
        jobs=[import_job, import_batch_job, transcribe_job, cleanup_temp_job,
              recompute_fingerprints_job, manual_import_job],
        schedules=[cleanup_temp_schedule],
        sensors=[*build_watch_sensors(config.sensor_interval_seconds,
                                      config.local_sensor_interval_seconds),
                 *build_alert_sensors(interval_seconds=config.notify_interval_seconds,
                                      dagster_url=config.dagster_url),
                 import_failure_sensor, recompute_fingerprints_sensor,
                 build_stranded_run_sensor(config.sensor_interval_seconds)],
        resources=config.resources(),
    )
