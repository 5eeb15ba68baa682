"""Jobs: the import pipeline for one media partition, and re-transcription."""

from __future__ import annotations

import dagster as dg

# A run whose worker vanished without a trace is failed by run monitoring after this long, so
# the import failure sensor can hand its file back for a retry.
IMPORT_TAGS = {"watch_pipeline/kind": "import", "dagster/max_runtime": str(4 * 3600)}
IMPORT_ASSETS = ("raw_file", "stitched_media", "media_object", "transcript")

# In-process: one file's four steps share a process and the loaded speech model; a run per file
# then costs about a second of orchestration instead of several (see bench/burst.py).
import_job = dg.define_asset_job(
    "import_job",
    selection=dg.AssetSelection.assets(*IMPORT_ASSETS),
    executor_def=dg.in_process_executor,
    tags=IMPORT_TAGS,
    description="Import one media partition: fetch, stitch, store, transcribe.",
)

# Re-transcription (after a model change): backfill this job over the media partitions.
transcribe_job = dg.define_asset_job(
    "transcribe_job",
    selection=dg.AssetSelection.assets("transcript"),
    executor_def=dg.in_process_executor,
    tags={"watch_pipeline/kind": "transcribe"},
    description="Transcribe stored media again with the configured model.",
)
