"""The code location of the crash test: the real definitions with a transcriber that takes time.

Everything (assets, jobs, the watch, import-failure and stranded-run sensors) is the code
location ``watch_pipeline.definitions`` builds; only the ``transcriber`` resource is the pool
test's :class:`SlowTranscriberResource`, so import runs stay in flight long enough to be killed.
"""

import dagster as dg

from watch_pipeline import definitions
from watch_pipeline_tests.defs.pool_location import SlowTranscriberResource

TRANSCRIBE_SECONDS = 6.0


@dg.definitions
def defs() -> dg.Definitions:
    """The real definitions, the transcriber swapped for a slow fake."""
    real = definitions.defs()
    return dg.Definitions(
        assets=real.assets, jobs=real.jobs, schedules=real.schedules, sensors=real.sensors,
        resources={**(real.resources or {}),
                   "transcriber": SlowTranscriberResource(seconds=TRANSCRIBE_SECONDS)})
