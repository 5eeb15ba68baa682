"""TranscriberResource: typed config → the backend's transcriber, usable from Dagster."""

from __future__ import annotations

import dagster as dg
import pytest

from watch_pipeline.transcribe.resource import TranscriberResource
from watch_pipeline.transcribe.whisper import WhisperTranscriber


def test_defaults_build_the_bundled_whisper():
    resource = TranscriberResource()

    transcriber = resource.get_transcriber()

    assert isinstance(transcriber, WhisperTranscriber)
    assert transcriber.model_id == resource.model_id == "whisper:tiny.en:int8:beam1"


def test_whisper_fields_reach_the_transcriber(tmp_path):
    model_dir = tmp_path / "distil-small.en"
    resource = TranscriberResource(
        whisper_model=str(model_dir),
        whisper_compute_type="float32",
        whisper_beam_size=5,
        whisper_language="en",
        whisper_vad_filter=True,
    )
    assert resource.model_id == "whisper:distil-small.en:float32:beam5:lang=en:vad"


def test_invalid_config_is_refused():
    with pytest.raises(Exception, match="backend"):
        TranscriberResource(backend="nemo")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="whisper_beam_size"):
        TranscriberResource(whisper_beam_size=0)


def test_resource_is_injected_into_an_asset():
    @dg.asset
    def model_used(transcriber: TranscriberResource) -> str:
        return transcriber.model_id

    result = dg.materialize(
        [model_used],
        resources={"transcriber": TranscriberResource(whisper_beam_size=5)},
    )
    assert result.success
    assert result.output_for_node("model_used") == "whisper:tiny.en:int8:beam5"
