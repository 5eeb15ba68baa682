"""Batch imports: several media partitions in one run, to spread a run's start-up cost.

A Dagster run costs a few seconds before its first step (a new process, the code location
imported, the speech model loaded). When many files arrive at once, the watch sensors hand the
new partitions to a few ``import_batch_job`` runs instead of one run each; every partition still
goes through the same steps as ``import_job`` and gets its own materialization of each
asset, so the UI shows each partition's history as if it had its own run. A partition that fails
is recorded like a failed ``import_job`` run (its file goes back for a retry in a run of its own)
and the others carry on; the batch run fails at the end when any partition did.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg

from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.defs.assets import (
    failing_clearly,
    picture_observation,
    source_access,
    step_context,
    step_metadata,
)
from watch_pipeline.defs.jobs import IMPORT_TAGS
from watch_pipeline.defs.pools import IMPORT_POOL
from watch_pipeline.pipeline import previews, steps
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.resource import ObjectStoreResource
from watch_pipeline.transcribe.resource import TranscriberResource

BATCH_OP = "import_batch"

BATCH_STEPS = (steps.RAW_FILE, steps.STITCHED_MEDIA, steps.MEDIA_OBJECT, *previews.PREVIEW_STEPS,
               steps.TRANSCRIPT)
"""The steps of each partition, in ``import_job``'s order (the previews never fail)."""


class ImportBatchConfig(dg.Config):
    """The partitions (media fingerprints) this batch imports, in order."""

    partition_keys: list[str]


@dg.op(name=BATCH_OP, description="Import several media partitions, one after the other.",
       pool=IMPORT_POOL)
def import_batch(context: dg.OpExecutionContext, config: ImportBatchConfig,
                 catalog: CatalogResource, sources: SourcesResource,
                 object_store: ObjectStoreResource, transcriber: TranscriberResource) -> None:
    """Run raw_file → stitched_media → media_object → waveform, thumbnail → transcript."""
    cat, access, store = catalog.get(), source_access(sources), object_store.get_store()
    run_step: dict[str, Callable[[steps.StepContext], Any]] = {
        steps.RAW_FILE: lambda ctx: steps.fetch_raw_file(ctx, cat, access),
        steps.STITCHED_MEDIA: lambda ctx: steps.stitch_media(ctx, cat, access),
        steps.MEDIA_OBJECT: lambda ctx: steps.store_media(ctx, cat, access, store),
        previews.WAVEFORM: lambda ctx: previews.make_waveform(ctx, cat, access, store),
        previews.THUMBNAIL: lambda ctx: previews.make_thumbnail(ctx, cat, access, store),
        steps.TRANSCRIPT: lambda ctx: steps.transcribe_media(
            ctx, cat, access, store, transcriber.get_transcriber()),
    }
    failed: list[str] = []
    total = len(config.partition_keys)
    for index, key in enumerate(config.partition_keys, 1):
        context.log.info(f"partition {index} of {total}: {key}")
        for step in BATCH_STEPS:
            ctx = step_context(context, step, key)
            try:
                result = failing_clearly(lambda ctx=ctx, step=step: run_step[step](ctx))
            except dg.Failure as exc:
                failed.append(f"{key} ({step}: {exc.description})")
                break
            context.log_event(dg.AssetMaterialization(
                asset_key=step, partition=key,
                metadata=step_metadata(step, result, cat, store, key)))
            observed = (picture_observation(result, key) if step == previews.THUMBNAIL
                        else None)
            if observed is not None:
                context.log_event(observed)
    if failed:
        raise dg.Failure(
            description=f"{len(failed)} of {total} partitions failed: " + "; ".join(failed),
            allow_retries=False)


@dg.job(
    name="import_batch_job",
    executor_def=dg.in_process_executor,
    tags={**IMPORT_TAGS, "watch_pipeline/batch": "true"},
    description="Import several new media partitions in one run (bursts of new files).",
)
def import_batch_job() -> None:
    """One op importing the configured partitions in order."""
    import_batch()


def batch_run_config(keys: list[str]) -> dict:
    """The run config of an ``import_batch_job`` run for ``keys``."""
    return {"ops": {BATCH_OP: {"config": {"partition_keys": list(keys)}}}}


def batch_keys(run_config: dict) -> list[str]:
    """The partition keys of a batch run, from its run config."""
    return list(run_config.get("ops", {}).get(BATCH_OP, {}).get("config", {})
                .get("partition_keys", []))
