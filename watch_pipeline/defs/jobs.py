"""Jobs: the import pipeline, re-transcription, and fingerprint recomputation."""

import dagster as dg

from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.settings import set_setting
from watch_pipeline.ops.recompute import recompute
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.resource import ObjectStoreResource

# A run whose worker vanished without a trace is failed by run monitoring after this long, so
# the import failure sensor can hand its file back for a retry.
IMPORT_TAGS = {"watch_pipeline/kind": "import", "dagster/max_runtime": str(4 * 3600)}
IMPORT_ASSETS = ("raw_file", "stitched_media", "media_object", "waveform", "thumbnail",
                 "transcript")

# In-process: one file's four steps share a process and the loaded speech model; a run per file
# then costs about a second of orchestration instead of several (see bench/burst.py).
import_job = dg.define_asset_job(
    "import_job",
    selection=dg.AssetSelection.assets(*IMPORT_ASSETS),
    executor_def=dg.in_process_executor,
    tags=IMPORT_TAGS,
    description="Import one media partition: fetch, stitch, store, preview, transcribe.",
)

# Re-transcription (after a model change): backfill this job over the media partitions.
transcribe_job = dg.define_asset_job(
    "transcribe_job",
    selection=dg.AssetSelection.assets("transcript"),
    executor_def=dg.in_process_executor,
    tags={"watch_pipeline/kind": "transcribe"},
    description="Transcribe stored media again with the configured model.",
)


@dg.op(name="recompute_fingerprints",
       description="Re-fingerprint catalog rows and stored media of an older algorithm version.")
def recompute_fingerprints_op(context: dg.OpExecutionContext, catalog: CatalogResource,
                              sources: SourcesResource,
                              object_store: ObjectStoreResource) -> None:
    """Recompute stale fingerprints, then mark the recompute complete in the settings."""
    cat = catalog.get()
    report = recompute(cat, client_for=sources.client_for, store=object_store.get_store())
    for problem in report.problems[:50]:
        context.log.warning(problem)
    context.log.info(
        f"files: {report.files_updated} updated, {report.files_unchanged} unchanged; media: "
        f"{report.media_updated} updated, {report.media_unchanged} unchanged; "
        f"{len(report.problems)} problem(s)")
    with cat.session() as session:
        set_setting(session, "fingerprints.recompute_complete", True)


@dg.job(name="recompute_fingerprints_job", tags={"watch_pipeline/kind": "maintenance"},
        description="Recompute fingerprints stored by an older algorithm (re-runnable).")
def recompute_fingerprints_job() -> None:
    """One op recomputing stale fingerprints."""
    recompute_fingerprints_op()
