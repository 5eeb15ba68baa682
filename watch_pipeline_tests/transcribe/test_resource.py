"""TranscriberResource: typed config → the backend's transcriber, usable from Dagster."""

from __future__ import annotations

import dagster as dg
import pytest

from watch_pipeline.defs.resources import build_transcriber
from watch_pipeline.transcribe.resource import TranscriberResource
from watch_pipeline.transcribe.whisper import PRESETS, WhisperTranscriber


def test_defaults_build_the_bundled_whisper():
    resource = TranscriberResource()

    transcriber = resource.get_transcriber()

    assert isinstance(transcriber, WhisperTranscriber)
    assert transcriber.model_id == resource.model_id == "whisper:tiny.en:int8:beam5"
    assert transcriber.decode_options == PRESETS["accurate"]


def test_fast_preset_is_one_setting_away():
    resource = TranscriberResource(whisper_preset="fast")

    assert resource.model_id == "whisper:tiny.en:int8:beam1"
    assert resource.get_transcriber().decode_options.beam_size == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "whisper:tiny.en:int8:beam5"), ("accurate", "whisper:tiny.en:int8:beam5"),
     ("fast", "whisper:tiny.en:int8:beam1"), ("FAST", "whisper:tiny.en:int8:beam1")],
)
def test_the_preset_comes_from_the_environment(value, expected):
    environ = {} if value is None else {"WATCH_WHISPER_PRESET": value}

    assert build_transcriber(environ).model_id == expected


def test_an_unknown_preset_in_the_environment_is_refused():
    with pytest.raises(ValueError, match="WATCH_WHISPER_PRESET='greedy'"):
        build_transcriber({"WATCH_WHISPER_PRESET": "greedy"})


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
    with pytest.raises(Exception, match="whisper_preset"):
        TranscriberResource(whisper_preset="greedy")  # type: ignore[arg-type]


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
