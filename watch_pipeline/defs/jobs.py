"""Jobs: the import pipeline for one media partition."""

from __future__ import annotations

import dagster as dg

from watch_pipeline.defs.assets import media_object, raw_file, stitched_media, transcript

IMPORT_TAGS = {"watch_pipeline/kind": "import"}

# In-process: one file's four steps share a process and the loaded speech model; a run per file
# then costs about a second of orchestration instead of several (see bench/burst.py).
import_job = dg.define_asset_job(
    "import_job",
    selection=dg.AssetSelection.assets(raw_file, stitched_media, media_object, transcript),
    executor_def=dg.in_process_executor,
    tags=IMPORT_TAGS,
    description="Import one media partition: fetch, stitch, store, transcribe.",
)
