"""Fixtures the Whisper and Riva tests share: media the transcribers must refuse or time out on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from watch_pipeline.media import limits


@pytest.fixture
def instant_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Derived ffmpeg deadlines of a few microseconds: every real decode outlives them."""
    monkeypatch.setattr(limits, "FFMPEG_TIMEOUT_BASE_SECONDS", 0.0)
    monkeypatch.setattr(limits, "FFMPEG_SECONDS_PER_MEDIA_SECOND", 1e-6)


@pytest.fixture
def two_minutes_of_silence(tmp_path: Path) -> Path:
    """``silence.flac``: two minutes of mono silence at 16 kHz, over a one-minute cap."""
    silence = tmp_path / "silence.flac"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi",
         "-i", "anullsrc=r=16000:cl=mono", "-t", "120", str(silence)],
        check=True,
    )  # fmt: skip
    return silence
