"""The code location of the pool test (test_pools.py) for a real dagster-daemon.

It holds the real import assets and ``import_job``, a transcriber that takes a known time, and one
sensor that asks for every waiting import at once: it claims like a watch sensor but never holds a
request back and never batches. Only the Dagster instance (its run queue and the
``watch_imports`` pool) then decides how many imports run together.
"""

import time
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from watch_pipeline.catalog.models import WatchSource
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.defs.assets import (
    build_transcript_asset,
    media_object,
    raw_file,
    stitched_media,
)
from watch_pipeline.defs.jobs import IMPORT_TAGS, import_job
from watch_pipeline.defs.partitions import media
from watch_pipeline.defs.previews import thumbnail, waveform
from watch_pipeline.defs.resources import build_resources
from watch_pipeline.pipeline import claims
from watch_pipeline.transcribe.base import Segment, Transcriber, Transcript
from watch_pipeline.transcribe.resource import TranscriberResource

# The longest step by far, as a real transcription is; short enough for a quick test.
TRANSCRIBE_SECONDS = 2.0


class SlowTranscriber(Transcriber):
    """A transcriber that takes ``seconds`` and hears the file's name."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @property
    def model_id(self) -> str:
        return "fake:slow"

    def transcribe(self, media_path: Path, *, min_speakers: int = 1,
                   max_speakers: int = 20) -> Transcript:
        time.sleep(self.seconds)
        text = media_path.stem.replace("_", " ")
        return Transcript(segments=(Segment(0.0, 1.0, text),), text=text, language="en",
                          model="slow", backend="fake", audio_duration=1.0,
                          processing_seconds=self.seconds)


class SlowTranscriberResource(TranscriberResource):
    """The ``transcriber`` resource with :class:`SlowTranscriber` as its backend."""

    seconds: float = TRANSCRIBE_SECONDS

    def get_transcriber(self) -> Transcriber:
        return SlowTranscriber(self.seconds)


@dg.sensor(name="burst_sensor", target=import_job, minimum_interval_seconds=1,
           default_status=dg.DefaultSensorStatus.RUNNING)
def burst_sensor(context: dg.SensorEvaluationContext,
                 catalog: CatalogResource) -> dg.SensorResult | dg.SkipReason:
    """One ``import_job`` run per waiting fingerprint, all in one tick."""
    cat = catalog.get()
    with cat.session() as session:
        source_ids = list(session.scalars(sa.select(WatchSource.id)))
    requests = claims.claim_imports(
        cat, source_ids, slots=100,
        run_exists=lambda key: bool(context.instance.get_run_records(
            dg.RunsFilter(tags={"dagster/run_key": key}), limit=1)))
    if not requests:
        return dg.SkipReason("no import waits")
    keys = sorted({r.partition_key for r in requests})
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=r.run_key, partition_key=r.partition_key,
                                    tags=IMPORT_TAGS) for r in requests],
        dynamic_partitions_requests=[media.build_add_request(keys)])


defs = dg.Definitions(
    assets=[raw_file, stitched_media, media_object, waveform, thumbnail,
            build_transcript_asset("fake:slow")],
    jobs=[import_job],
    sensors=[burst_sensor],
    resources={**build_resources(), "transcriber": SlowTranscriberResource()},
)
