"""Assertions the Whisper and Riva tests share."""

from __future__ import annotations

from watch_pipeline.transcribe.base import Transcript


def assert_made_by(transcript: Transcript, *, backend: str, model: str, language: str,
                   model_id: str) -> None:
    """``transcript`` of the speech sample (2-6 s) says which backend and model made it."""
    assert transcript.backend == backend
    assert transcript.model == model
    assert transcript.language == language
    assert 2.0 < transcript.audio_duration < 6.0
    assert transcript.processing_seconds > 0
    assert transcript.extra["model_id"] == model_id
