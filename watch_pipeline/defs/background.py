"""The one decoration of the sensors that look after the instance rather than watch sources."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg


def background_sensor(
    name: str, *, interval_seconds: int, description: str
) -> Callable[[Callable[..., dg.SkipReason]], dg.SensorDefinition]:
    """``@dg.sensor`` for a sensor that launches no run and is on from the start.

    Args:
        name: The sensor's name in the UI.
        interval_seconds: The least time between two ticks.
        description: What the sensor does, as the UI shows it.
    """
    return dg.sensor(name=name, minimum_interval_seconds=interval_seconds,
                     default_status=dg.DefaultSensorStatus.RUNNING, description=description)
