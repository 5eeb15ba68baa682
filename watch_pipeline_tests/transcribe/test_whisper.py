"""WhisperTranscriber: the bundled tiny.en model on real synthesised speech, offline."""

from __future__ import annotations

import tempfile
from pathlib import Path

import faster_whisper
import pytest

from watch_pipeline.transcribe import whisper
from watch_pipeline.transcribe.base import TranscriptionError
from watch_pipeline.transcribe.whisper import WhisperTranscriber
from watch_pipeline_tests.fixtures.speech import SPEECH_SENTENCE

pytestmark = pytest.mark.slow

SPOKEN_WORDS = {"quick", "brown", "fox"}


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    # Default options: shares the process-wide cached tiny.en with every other default instance.
    return WhisperTranscriber()


@pytest.fixture(scope="module")
def speech_mp4(tmp_path_factory, speech_factory) -> Path:
    return speech_factory(
        SPEECH_SENTENCE, tmp_path_factory.mktemp("speech") / "talk.mp4", fmt="mp4"
    )


@pytest.fixture
def private_tempdir(tmp_path, monkeypatch) -> Path:
    """Point tempfile at an empty directory, to see what a transcription leaves behind."""
    tempdir = tmp_path / "tmp"
    tempdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tempdir))
    return tempdir


def _words(text: str) -> set[str]:
    return {word.strip(".,!?").lower() for word in text.split()}


def test_wav_transcript_contains_the_spoken_words(transcriber, speech_wav, private_tempdir):
    transcript = transcriber.transcribe(speech_wav)

    assert SPOKEN_WORDS <= _words(transcript.text)
    assert transcript.backend == "whisper"
    assert transcript.model == "tiny.en"
    assert transcript.language == "en"
    assert 2.0 < transcript.audio_duration < 6.0
    assert transcript.processing_seconds > 0
    assert transcript.extra["model_id"] == "whisper:tiny.en:int8:beam1"
    assert list(private_tempdir.iterdir()) == []  # the temporary WAV is gone


def test_video_transcript_contains_the_spoken_words(transcriber, speech_mp4):
    transcript = transcriber.transcribe(speech_mp4)

    assert SPOKEN_WORDS <= _words(transcript.text)


def test_segments_and_words_are_in_time_order(transcriber, speech_wav):
    transcript = transcriber.transcribe(speech_wav)

    assert transcript.segments
    assert " ".join(s.text for s in transcript.segments) == transcript.text
    previous_end = 0.0
    for segment in transcript.segments:
        assert previous_end <= segment.start < segment.end <= transcript.audio_duration + 0.5
        assert segment.speaker is None
        assert segment.words
        for word in segment.words:
            assert segment.start - 0.01 <= word.start <= word.end <= segment.end + 0.01
            assert word.text == word.text.strip()
        starts = [word.start for word in segment.words]
        assert starts == sorted(starts)
        previous_end = segment.end
    spoken = {w.text.strip(".,").lower() for s in transcript.segments for w in s.words}
    assert SPOKEN_WORDS <= spoken


def test_non_media_file_raises_and_cleans_up(transcriber, tmp_path, private_tempdir):
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video at all\n" * 50)

    with pytest.raises(TranscriptionError, match=r"notes\.mp4: ffmpeg failed"):
        transcriber.transcribe(junk)
    assert list(private_tempdir.iterdir()) == []


def test_missing_model_directory_raises(tmp_path, speech_wav):
    broken = WhisperTranscriber(model=tmp_path / "no-such-model")

    assert broken.model_id == "whisper:no-such-model:int8:beam1"
    with pytest.raises(TranscriptionError, match="model directory not found"):
        broken.transcribe(speech_wav)


def test_model_loads_once_per_key_and_lazily(monkeypatch, speech_wav):
    loads: list[str] = []

    class CountingWhisperModel(faster_whisper.WhisperModel):
        def __init__(self, model_size_or_path, **kwargs):
            loads.append(model_size_or_path)
            super().__init__(model_size_or_path, **kwargs)

    monkeypatch.setattr(faster_whisper, "WhisperModel", CountingWhisperModel)
    # An empty cache for this test only; monkeypatch restores the shared one afterwards.
    monkeypatch.setattr(whisper, "_MODELS", {})
    first, second = WhisperTranscriber(), WhisperTranscriber()
    assert loads == []  # constructing loads nothing

    first.transcribe(speech_wav)
    second.transcribe(speech_wav)

    assert len(loads) == 1
    assert len(whisper._MODELS) == 1


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "whisper:tiny.en:int8:beam1"),
        ({"beam_size": 5, "compute_type": "float32"}, "whisper:tiny.en:float32:beam5"),
        ({"language": "en", "vad_filter": True}, "whisper:tiny.en:int8:beam1:lang=en:vad"),
        ({"device": "cuda", "cpu_threads": 4}, "whisper:tiny.en:int8:beam1"),
    ],
)
def test_model_id_names_what_changes_output(options, expected):
    assert WhisperTranscriber(**options).model_id == expected


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="beam_size"):
        WhisperTranscriber(beam_size=0)
    with pytest.raises(ValueError, match="device"):
        WhisperTranscriber(device="tpu")  # type: ignore[arg-type]
