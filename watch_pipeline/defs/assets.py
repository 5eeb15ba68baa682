"""The media assets: raw_file → stitched_media → media_object → transcript.

There is one partition per content fingerprint. Each asset resolves its resources, calls its
step in :mod:`watch_pipeline.pipeline.steps` (where the import itself lives, without Dagster)
and turns the step's result into a ``MaterializeResult``; a failed step, already recorded in the
catalog, becomes a ``dg.Failure``. Media bytes never pass through an IO manager. Each step is
idempotent: a re-run finds the catalog row, the stored object or the transcript already there
and says so. All four are in the ``watch_imports`` concurrency pool (``defs/pools.py``), which
bounds the import runs in progress.
"""

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import dagster as dg

from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.defs.partitions import media
from watch_pipeline.defs.pools import IMPORT_POOL
from watch_pipeline.pipeline import previews, steps
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.base import ObjectStore
from watch_pipeline.store.resource import ObjectStoreResource
from watch_pipeline.transcribe.resource import TranscriberResource

GROUP = "media"

T = TypeVar("T")


def run_is_live(instance: dg.DagsterInstance) -> Callable[[str], bool]:
    """Whether a run id names a run of ``instance`` that has not finished (a deleted run has)."""

    def is_live(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and not run.is_finished

    return is_live


def step_context(context: dg.AssetExecutionContext | dg.OpExecutionContext, step: str,
                 partition_key: str) -> steps.StepContext:
    """What a step needs of the Dagster context: keys, the run, its log, run liveness."""
    return steps.StepContext(partition_key=partition_key, step=step, log=context.log,
                             run_key=context.run.tags.get("dagster/run_key"),
                             run_id=context.run.run_id, is_live=run_is_live(context.instance))


def source_access(sources: SourcesResource) -> steps.SourceAccess:
    """The steps' view of the sources resource."""
    return steps.SourceAccess(client_for=sources.client_for, scratch=sources.scratch())


def to_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """A step's plain metadata for Dagster: an HTTP ``url`` is a link, ``picture`` Markdown."""
    return {key: dg.MetadataValue.url(value)
            if key == "url" and isinstance(value, str) and value.startswith("http")
            else dg.MetadataValue.md(value) if key == "picture" and isinstance(value, str)
            else value
            for key, value in values.items()}


GLANCE_STEPS = {steps.MEDIA_OBJECT: False, steps.TRANSCRIPT: True}
"""The steps whose pages show the import at a glance, and whether with transcript lines."""


def step_metadata(step: str, result: steps.Result, catalog: Catalog, store: ObjectStore,
                  partition_key: str) -> dict[str, Any]:
    """A step's metadata for Dagster; ``media_object`` and ``transcript`` add the glance.

    The glance (``previews.glance``) is the small thumbnail or waveform picture, the duration,
    the source and path, and for ``transcript`` the first lines of the text. The previews are
    made after ``media_object``, so its first materialization has no picture yet: the
    ``thumbnail`` step then records the picture on ``media_object`` as an observation (see
    :func:`picture_observation`); the transcript's materialization has it, and so has every
    later one of either.
    """
    values = dict(result.metadata())
    if step in GLANCE_STEPS and not getattr(result, "skipped", None):
        extra = previews.glance(catalog, store, partition_key, transcript=GLANCE_STEPS[step])
        values.update({key: value for key, value in extra.items() if key not in values})
    return to_metadata(values)


def picture_observation(result: Any, partition_key: str) -> dg.AssetObservation | None:
    """The thumbnail's picture as an observation of ``media_object`` (whose page shows it).

    ``media_object`` is materialized before the previews exist; the observation puts the
    picture on its page without a second materialization. ``None`` when there is no picture.
    """
    picture = getattr(result, "picture", "")
    if not picture:
        return None
    return dg.AssetObservation(asset_key=steps.MEDIA_OBJECT, partition=partition_key,
                               metadata={"picture": dg.MetadataValue.md(picture)})


def transcript_requested(context: dg.AssetExecutionContext) -> bool:
    """Whether the run asked for transcripts rather than importing media.

    That is ``transcribe_job`` (and its backfills), or a UI materialization or asset backfill of
    ``transcript`` alone. Such a run transcribes media whose source has ``auto_transcribe`` off.
    """
    if context.job_name == "transcribe_job":
        return True
    selection = context.run.asset_selection
    return bool(selection) and dg.AssetKey(steps.MEDIA_OBJECT) not in selection


def failing_clearly(call: Callable[[], T]) -> T:
    """Run a step; its recorded failure becomes a ``dg.Failure`` (no Dagster retry)."""
    try:
        return call()
    except steps.StepFailed as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


@dg.asset(partitions_def=media, group_name=GROUP, kinds={"python", "ffmpeg"}, pool=IMPORT_POOL)
def raw_file(context: dg.AssetExecutionContext, catalog: CatalogResource,
             sources: SourcesResource) -> dg.MaterializeResult:
    """The recording as found in its watch source, checked and probed.

    Local files are read in place. The bytes are checked again against the fingerprint the
    scan recorded, so a file replaced since the scan is never imported under the old identity.
    Re-running is harmless: an imported partition reports itself as such, and a partition
    another run is importing right now is refused, not imported twice.
    """
    ctx = step_context(context, steps.RAW_FILE, context.partition_key)
    result = failing_clearly(lambda: steps.fetch_raw_file(ctx, catalog.get(),
                                                          source_access(sources)))
    return dg.MaterializeResult(metadata=to_metadata(result.metadata()))


@dg.asset(partitions_def=media, group_name=GROUP, kinds={"python", "ffmpeg"}, deps=[raw_file],
          pool=IMPORT_POOL)
def stitched_media(context: dg.AssetExecutionContext, catalog: CatalogResource,
                   sources: SourcesResource) -> dg.MaterializeResult:
    """The media item ready to store: the raw file, or a multi-part recording joined into one.

    A single file passes through unchanged.
    """
    ctx = step_context(context, steps.STITCHED_MEDIA, context.partition_key)
    result = failing_clearly(lambda: steps.stitch_media(ctx, catalog.get(),
                                                        source_access(sources)))
    return dg.MaterializeResult(metadata=to_metadata(result.metadata()))


@dg.asset(partitions_def=media, group_name=GROUP, kinds={"python", "s3"},
          deps=[stitched_media], pool=IMPORT_POOL)
def media_object(context: dg.AssetExecutionContext, catalog: CatalogResource,
                 sources: SourcesResource,
                 object_store: ObjectStoreResource) -> dg.MaterializeResult:
    """The media item in the object store, with its catalog ``media_file`` row.

    The object lives at ``user_{owner}/file_{id}/{filename}``.
    The object key is deterministic, so a re-run finds the object already there (same size and
    checksum) and reports it as cached instead of uploading again.
    """
    ctx = step_context(context, steps.MEDIA_OBJECT, context.partition_key)
    cat, store = catalog.get(), object_store.get_store()
    result = failing_clearly(lambda: steps.store_media(ctx, cat, source_access(sources), store))
    return dg.MaterializeResult(metadata=step_metadata(
        steps.MEDIA_OBJECT, result, cat, store, context.partition_key))


def build_transcript_asset(model_id: str | None = None) -> dg.AssetsDefinition:
    """The ``transcript`` asset, versioned by the transcription model in use.

    The model id (backend, model, options that change output) is the asset's code version: after
    a model change the UI shows every transcript as outdated, and a backfill of ``transcript``
    over the ``media`` partitions re-transcribes them. Transcripts of earlier models are kept.
    """

    @dg.asset(name="transcript", partitions_def=media, group_name=GROUP,
              kinds={"python", "whisper"}, deps=["media_object"], code_version=model_id,
              pool=IMPORT_POOL)
    def _transcript(context: dg.AssetExecutionContext, catalog: CatalogResource,
                    sources: SourcesResource, object_store: ObjectStoreResource,
                    transcriber: TranscriberResource) -> dg.MaterializeResult:
        """The transcript of the media item, keyed by the model that made it.

        JSON, SRT, VTT and plain text are stored beside the media object under
        ``transcripts/<model>``. An import skips it when the source has ``auto_transcribe`` off;
        ``transcribe_job`` and a materialization of ``transcript`` alone transcribe. Earlier
        transcripts are kept: other models' under their own keys, and one of the same model
        that came out different under ``transcripts/<model>.<hash>``. A failure marks the
        media ``error`` with the reason; the import itself stays.
        """
        ctx = step_context(context, steps.TRANSCRIPT, context.partition_key)
        cat, store = catalog.get(), object_store.get_store()
        result = failing_clearly(lambda: steps.transcribe_media(
            ctx, cat, source_access(sources), store, transcriber.get_transcriber(),
            requested=transcript_requested(context)))
        return dg.MaterializeResult(metadata=step_metadata(
            steps.TRANSCRIPT, result, cat, store, context.partition_key))

    return _transcript
