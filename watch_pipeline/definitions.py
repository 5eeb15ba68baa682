"""The code location's entry point: Dagster loads ``defs`` from here."""

from __future__ import annotations

import dagster as dg

from watch_pipeline.defs.assets import media_object, raw_file, stitched_media, transcript
from watch_pipeline.defs.jobs import import_job
from watch_pipeline.defs.resources import build_resources
from watch_pipeline.defs.sensors import import_failure_sensor, watch_sensors


@dg.definitions
def defs() -> dg.Definitions:
    """Assemble assets, sensors, jobs and resources from ``defs/``."""
    return dg.Definitions(
        assets=[raw_file, stitched_media, media_object, transcript],
        jobs=[import_job],
        sensors=[*watch_sensors, import_failure_sensor],
        resources=build_resources(),
    )
