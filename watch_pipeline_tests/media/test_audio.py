"""normalize_audio: real ffmpeg on synthesised speech, silent video and junk files."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import pytest

from watch_pipeline.media.audio import SAMPLE_RATE, AudioError, normalize_audio
from watch_pipeline_tests.fixtures.speech import SPEECH_SENTENCE


def _wav_params(path: Path) -> tuple[int, int, int, float]:
    with wave.open(str(path), "rb") as wav:
        return (
            wav.getnchannels(),
            wav.getsampwidth(),
            wav.getframerate(),
            wav.getnframes() / wav.getframerate(),
        )


@pytest.mark.parametrize("fmt", ["wav", "mp3", "mp4"])
def test_any_container_becomes_16k_mono_pcm(tmp_path, speech_factory, fmt):
    src = speech_factory(SPEECH_SENTENCE, tmp_path / f"speech.{fmt}", fmt=fmt)
    dest = tmp_path / "out.wav"

    duration = normalize_audio(src, dest)

    channels, width, rate, wav_seconds = _wav_params(dest)
    assert (channels, width, rate) == (1, 2, SAMPLE_RATE)
    assert duration == pytest.approx(wav_seconds)
    assert 2.0 < duration < 6.0  # espeak-ng says the sentence in about 3.5 s


def test_duration_matches_source(tmp_path, speech_wav):
    _, _, _, source_seconds = _wav_params(speech_wav)
    assert normalize_audio(speech_wav, tmp_path / "out.wav") == pytest.approx(
        source_seconds, abs=0.01
    )


def test_video_without_audio_is_refused(tmp_path):
    silent = tmp_path / "silent.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc=size=64x64:rate=5:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
         str(silent)],
        check=True,
    )  # fmt: skip
    dest = tmp_path / "out.wav"

    with pytest.raises(AudioError, match="no audio stream"):
        normalize_audio(silent, dest)
    assert not dest.exists()


def test_corrupt_file_error_carries_ffmpeg_reason(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a media file\n" * 40)
    dest = tmp_path / "out.wav"

    with pytest.raises(AudioError) as raised:
        normalize_audio(junk, dest)
    message = str(raised.value)
    assert message.startswith("junk.mp4: ffmpeg failed")
    assert "Invalid data" in message  # the stderr tail says why
    assert len(message) < 600
    assert not dest.exists()


def test_truncated_file_is_refused(tmp_path, speech_factory):
    whole = speech_factory(SPEECH_SENTENCE, tmp_path / "whole.mp4", fmt="mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole.read_bytes()[:2000])  # moov atom sits at the end: unreadable

    with pytest.raises(AudioError):
        normalize_audio(truncated, tmp_path / "out.wav")


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        normalize_audio(tmp_path / "absent.wav", tmp_path / "out.wav")


def test_timeout_is_reported(tmp_path, speech_wav):
    dest = tmp_path / "out.wav"
    with pytest.raises(AudioError, match="timed out"):
        normalize_audio(speech_wav, dest, timeout=1e-6)
    assert not dest.exists()
