"""The preview assets: ``waveform`` and ``thumbnail``, downstream of ``media_object``.

Each calls its step in :mod:`watch_pipeline.pipeline.previews` and turns the result into a
``MaterializeResult``. Neither ever fails a run: a preview that cannot be made materializes with
``status: failed`` and the reason, so the import (and the transcript beside it) stays a success
and the file is not retried; re-materializing the asset (a backfill over the ``media``
partitions) tries again. A re-run is harmless: stored previews are reported as cached.

In an import run they run after ``media_object`` and before ``transcript`` (op priority), so the
transcript's page can show the picture, and ``waveform`` before ``thumbnail``, whose audio-only
answer is the waveform's PNG.
"""

import dagster as dg

from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.defs.assets import (
    GROUP,
    media_object,
    picture_observation,
    source_access,
    step_context,
    to_metadata,
)
from watch_pipeline.defs.partitions import media
from watch_pipeline.defs.pools import IMPORT_POOL
from watch_pipeline.pipeline import previews
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.resource import ObjectStoreResource


def preview_requested(context: dg.AssetExecutionContext) -> bool:
    """Whether the run asked for previews rather than importing media.

    That is a backfill or a UI materialization without ``media_object``; such a run makes
    previews even with ``previews.enabled`` off.
    """
    selection = context.run.asset_selection
    return bool(selection) and dg.AssetKey("media_object") not in selection


PRIORITY_TAG = "dagster/priority"
"""Higher runs first among the steps ready at once (the transcript has the default, 0)."""


@dg.asset(partitions_def=media, group_name=GROUP, kinds={"ffmpeg", "json"}, deps=[media_object],
          pool=IMPORT_POOL, op_tags={PRIORITY_TAG: "2"})
def waveform(context: dg.AssetExecutionContext, sources: SourcesResource,
             object_store: ObjectStoreResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """The media's audio peaks (BBC audiowaveform JSON v2) and a PNG picture of them.

    Stored as ``waveform.json`` and ``waveform.png`` beside the media object: 256 samples per
    pixel at 16 kHz, 8 bits, one channel, as peaks.js reads it. Cached when already stored; a
    failure (no audio stream) is recorded here and never fails the import.
    """
    ctx = step_context(context, previews.WAVEFORM, context.partition_key)
    result = previews.make_waveform(ctx, catalog.get(), source_access(sources),
                                    object_store.get_store(),
                                    requested=preview_requested(context))
    return dg.MaterializeResult(metadata=to_metadata(result.metadata()))


@dg.asset(partitions_def=media, group_name=GROUP, kinds={"ffmpeg", "webp"}, deps=[media_object],
          pool=IMPORT_POOL, op_tags={PRIORITY_TAG: "1"})
def thumbnail(context: dg.AssetExecutionContext, sources: SourcesResource,
              object_store: ObjectStoreResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """A still of the video that is not black: 640 px and 160 px wide WebP.

    Stored as ``thumbnail.webp`` and ``thumbnail_small.webp`` beside the media object. For
    audio-only media the waveform's PNG is the thumbnail (status ``audio only``). Cached when
    already stored; a failure is recorded here and never fails the import.
    """
    ctx = step_context(context, previews.THUMBNAIL, context.partition_key)
    result = previews.make_thumbnail(ctx, catalog.get(), source_access(sources),
                                     object_store.get_store(),
                                     requested=preview_requested(context))
    observed = picture_observation(result, context.partition_key)
    if observed is not None:
        context.log_event(observed)
    return dg.MaterializeResult(metadata=to_metadata(result.metadata()))
