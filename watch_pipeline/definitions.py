"""The code location's entry point: Dagster loads ``defs`` from here."""

from __future__ import annotations

import dagster as dg

from watch_pipeline.defs.resources import build_resources


@dg.definitions
def defs() -> dg.Definitions:
    """Assemble assets, sensors, jobs, schedules and resources from ``defs/``."""
    return dg.Definitions(resources=build_resources())
