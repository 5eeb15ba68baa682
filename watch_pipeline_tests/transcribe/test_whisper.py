"""WhisperTranscriber: the bundled tiny.en model on real synthesised speech, offline."""

from __future__ import annotations

import inspect
import re
import subprocess
import tempfile
import wave
from pathlib import Path

import faster_whisper
import numpy as np
import pytest

from watch_pipeline.transcribe import whisper
from watch_pipeline.transcribe.base import TranscriptionError
from watch_pipeline.transcribe.formats import to_srt, to_vtt
from watch_pipeline.transcribe.resource import TranscriberResource
from watch_pipeline.transcribe.whisper import WhisperTranscriber
from watch_pipeline_tests.fixtures.speech import SPEECH_SENTENCE
from watch_pipeline_tests.transcribe.checks import assert_made_by

pytestmark = pytest.mark.slow

SPOKEN_WORDS = {"quick", "brown", "fox"}
_LIBRARY_TRANSCRIBE = inspect.signature(faster_whisper.WhisperModel.transcribe)


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
    assert_made_by(transcript, backend="whisper", model="tiny.en", language="en",
                   model_id="whisper:tiny.en:int8:beam5")
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

    assert broken.model_id == "whisper:no-such-model:int8:beam5"
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
        ({}, "whisper:tiny.en:int8:beam5"),
        ({"preset": "accurate"}, "whisper:tiny.en:int8:beam5"),
        ({"preset": "fast"}, "whisper:tiny.en:int8:beam1"),
        ({"preset": "fast", "beam_size": 3}, "whisper:tiny.en:int8:beam3"),
        ({"beam_size": 2, "compute_type": "float32"}, "whisper:tiny.en:float32:beam2"),
        ({"language": "en", "vad_filter": True}, "whisper:tiny.en:int8:beam5:lang=en:vad"),
        ({"device": "cuda", "cpu_threads": 4}, "whisper:tiny.en:int8:beam5"),
    ],
)
def test_model_id_names_what_changes_output(options, expected):
    assert WhisperTranscriber(**options).model_id == expected


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="beam_size"):
        WhisperTranscriber(beam_size=0)
    with pytest.raises(ValueError, match="device"):
        WhisperTranscriber(device="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="preset"):
        WhisperTranscriber(preset="greedy")  # type: ignore[arg-type]


# -- decoding presets --------------------------------------------------------------------------


@pytest.fixture
def decode_calls(monkeypatch) -> list[dict[str, object]]:
    """The keyword arguments of every real ``WhisperModel.transcribe`` call, in order."""
    calls: list[dict[str, object]] = []
    real_transcribe = faster_whisper.WhisperModel.transcribe

    def recording_transcribe(self, audio, **kwargs):
        calls.append(kwargs)
        return real_transcribe(self, audio, **kwargs)

    monkeypatch.setattr(faster_whisper.WhisperModel, "transcribe", recording_transcribe)
    return calls


def _library_defaults(names) -> dict[str, object]:
    """faster-whisper's own ``transcribe()`` defaults for ``names``, read from the installed one."""
    return {name: _LIBRARY_TRANSCRIBE.parameters[name].default for name in names}


def test_default_decoding_is_faster_whispers_own(speech_wav, decode_calls):
    transcript = WhisperTranscriber().transcribe(speech_wav)

    assert {"fox", "brown"} <= _words(transcript.text)
    (passed,) = decode_calls
    decoding = {name: value for name, value in passed.items()
                if name not in ("language", "vad_filter", "word_timestamps")}
    assert decoding["beam_size"] == 5
    assert decoding == _library_defaults(decoding)
    assert transcript.extra["model_id"] == "whisper:tiny.en:int8:beam5"


def test_fast_preset_decodes_greedily(speech_wav, decode_calls):
    transcript = TranscriberResource(whisper_preset="fast").get_transcriber().transcribe(speech_wav)

    (passed,) = decode_calls
    assert passed["beam_size"] == 1
    # only the beam differs from the library's defaults
    others = {name: value for name, value in passed.items()
              if name not in ("beam_size", "language", "vad_filter", "word_timestamps")}
    assert others == _library_defaults(others)
    assert transcript.extra["model_id"] == "whisper:tiny.en:int8:beam1"
    assert transcript.text  # still a transcript


def test_srt_and_vtt_parse_back(transcriber, speech_wav):
    transcript = transcriber.transcribe(speech_wav)

    srt_cues = _parse_subtitles(to_srt(transcript), srt=True)
    vtt_cues = _parse_subtitles(to_vtt(transcript), srt=False)

    spoken = [s for s in transcript.segments if s.text.strip()]
    assert len(srt_cues) == len(vtt_cues) == len(spoken) >= 1
    for (start, end, text), segment in zip(srt_cues, spoken, strict=True):
        assert start == pytest.approx(segment.start, abs=0.001)
        assert end == pytest.approx(segment.end, abs=0.001)
        assert text == segment.text
    assert [cue[:2] for cue in vtt_cues] == [cue[:2] for cue in srt_cues]
    assert SPOKEN_WORDS <= _words(" ".join(text for _, _, text in srt_cues))


def test_long_audio_is_decoded_window_by_window(tmp_path, speech_wav, monkeypatch):
    # sentence, 30 s of silence, sentence: with 30 s windows the cut falls in the silence.
    long_wav = tmp_path / "long.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-i", str(speech_wav), "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono:d=30",
         "-i", str(speech_wav),
         "-filter_complex", "[0:a]aresample=16000[a];[2:a]aresample=16000[c];"
         "[a][1:a][c]concat=n=3:v=0:a=1", "-ac", "1", str(long_wav)],
        check=True,
    )  # fmt: skip
    windows: list[tuple[float, int]] = []
    real_windows = whisper._windows

    def recording_windows(path, seconds):
        for offset, samples in real_windows(path, seconds):
            windows.append((offset, len(samples)))
            yield offset, samples

    monkeypatch.setattr(whisper, "_windows", recording_windows)

    transcript = WhisperTranscriber(window_seconds=30).transcribe(long_wav)

    assert len(windows) == 2
    assert 25.0 <= windows[1][0] <= 30.0  # the cut is in the silence
    assert windows[1][0] == pytest.approx(windows[0][1] / 16_000)
    foxes = [w for s in transcript.segments for w in s.words if w.text.strip(".,").lower() == "fox"]
    assert len(foxes) == 2
    assert foxes[0].start < 5.0
    assert 30.0 < foxes[1].start < transcript.audio_duration  # offset by the first window
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts)


def test_windows_cover_the_file_and_cut_at_silence(tmp_path):
    rng = np.random.default_rng(0)
    rate = 16_000
    noise = (rng.standard_normal(rate * 100) * 3000).astype(np.int16)
    noise[rate * 57 : rate * 57 + rate // 2] = 0  # half a second of silence at 57 s
    path = tmp_path / "noise.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(noise.tobytes())

    windows = list(whisper._windows(path, 60))

    assert windows[0][0] == 0.0
    assert 57.0 <= windows[1][0] <= 57.5
    assert all(len(samples) <= 60 * rate for _, samples in windows)
    joined = np.concatenate([samples for _, samples in windows])
    assert np.array_equal(joined, noise.astype(np.float32) / 32768.0)
    assert all(samples.dtype == np.float32 for _, samples in windows)


def test_window_seconds_is_validated():
    with pytest.raises(ValueError, match="window_seconds"):
        WhisperTranscriber(window_seconds=5)


_CUE_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d)[,.](\d{3})"


def _parse_subtitles(document: str, *, srt: bool) -> list[tuple[float, float, str]]:
    """Re-read SRT or WebVTT: numbered/headed cues, valid times, non-decreasing starts."""
    blocks = [block for block in document.strip().split("\n\n") if block]
    if not srt:
        assert blocks.pop(0) == "WEBVTT"
    cues = []
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        if srt:
            assert lines.pop(0) == str(number)
        mark = "," if srt else r"\."
        pattern = rf"{_CUE_TIME} --> {_CUE_TIME}".replace("[,.]", mark)
        match = re.fullmatch(pattern, lines[0])
        assert match, f"bad cue timing {lines[0]!r}"
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in match.groups())
        start = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        assert start <= end
        cues.append((start, end, "\n".join(lines[1:])))
    starts = [start for start, _, _ in cues]
    assert starts == sorted(starts)
    return cues


# -- media limits --------------------------------------------------------------------------------


def test_normalisation_for_whisper_has_a_deadline(speech_wav, private_tempdir, instant_deadlines):
    with pytest.raises(TranscriptionError, match=r"\.wav: ffmpeg timed out after"):
        WhisperTranscriber().transcribe(speech_wav)
    assert list(private_tempdir.iterdir()) == []


def test_audio_longer_than_the_cap_is_refused(two_minutes_of_silence, private_tempdir):
    silence = two_minutes_of_silence
    resource = TranscriberResource(max_audio_hours=12)

    with pytest.raises(TranscriptionError, match=r"silence\.flac: lasts 2\.0 min, over the 60"):
        resource.get_transcriber(max_audio_hours=1 / 60).transcribe(silence)
    assert list(private_tempdir.iterdir()) == []


# -- a WAV that is already 16 kHz mono 16-bit is read in place -------------------------------------


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)  # fmt: skip


@pytest.fixture
def speech_16k(tmp_path, speech_wav) -> Path:
    path = tmp_path / "speech16k.wav"
    _ffmpeg("-i", str(speech_wav), "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(path))
    return path


@pytest.fixture
def normalisations(monkeypatch) -> list[Path]:
    """The files handed to ffmpeg normalisation by the transcriber."""
    calls: list[Path] = []
    real_normalize = whisper.normalize_audio

    def recording_normalize(src, dest, **kwargs):
        calls.append(Path(src))
        return real_normalize(src, dest, **kwargs)

    monkeypatch.setattr(whisper, "normalize_audio", recording_normalize)
    return calls


def test_a_16k_mono_wav_is_transcribed_without_ffmpeg(
    transcriber, speech_16k, tmp_path, normalisations, private_tempdir
):
    in_place = transcriber.transcribe(speech_16k)
    assert normalisations == []
    # the same samples through ffmpeg (lossless FLAC) give the same transcript
    flac = tmp_path / "speech16k.flac"
    _ffmpeg("-i", str(speech_16k), str(flac))
    via_ffmpeg = transcriber.transcribe(flac)

    assert normalisations == [flac]
    assert {"fox", "brown"} <= _words(in_place.text)
    assert in_place.segments == via_ffmpeg.segments
    assert in_place.audio_duration == pytest.approx(via_ffmpeg.audio_duration, abs=0.01)
    assert list(private_tempdir.iterdir()) == []
    assert speech_16k.exists()  # the input is read, never moved or removed


def test_a_16k_wav_longer_than_the_cap_is_refused_unread(tmp_path, normalisations):
    silence = tmp_path / "silence.wav"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "120", "-c:a", "pcm_s16le",
            str(silence))

    with pytest.raises(TranscriptionError, match=r"silence\.wav: lasts 2\.0 min, over the 60\.0 s"):
        WhisperTranscriber(max_audio_hours=1 / 60).transcribe(silence)
    assert normalisations == []


def test_other_wavs_go_through_ffmpeg(tmp_path, speech_wav, speech_16k):
    stereo = tmp_path / "stereo.wav"
    _ffmpeg("-i", str(speech_16k), "-ac", "2", str(stereo))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(speech_16k.read_bytes()[: speech_16k.stat().st_size // 2])
    text = tmp_path / "notes.wav"
    text.write_text("RIFF but not really\n")

    assert whisper._normalised_wav_frames(speech_16k) > 16_000
    for path in (speech_wav, stereo, truncated, text):  # 22 kHz, 2 channels, short, not a WAV
        assert whisper._normalised_wav_frames(path) is None
