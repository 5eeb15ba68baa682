"""The transcription contract shared by every backend (faster-whisper, NVIDIA Riva)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Word:
    """One recognised word with its times in seconds."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Segment:
    """A stretch of speech with its times in seconds and, when known, its speaker."""

    start: float
    end: float
    text: str
    speaker: str | None = None
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    """A backend's result for one recording.

    Attributes:
        segments: Speech segments in time order.
        text: The full text (segments joined by spaces).
        language: Language code the backend used or detected.
        model: Model name (e.g. ``tiny.en``) or path.
        backend: ``whisper`` or ``riva``.
        audio_duration: Seconds of audio transcribed.
        processing_seconds: Wall time spent by the backend.
    """

    segments: tuple[Segment, ...]
    text: str
    language: str
    model: str
    backend: str
    audio_duration: float
    processing_seconds: float
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_segments(cls, segments: tuple[Segment, ...], **fields: Any) -> Transcript:
        """A transcript whose ``text`` is the segments' texts joined by spaces.

        Args:
            segments: Speech segments in time order.
            **fields: Every other field of :class:`Transcript`.
        """
        return cls(segments=segments, text=" ".join(s.text for s in segments if s.text), **fields)

    @property
    def word_count(self) -> int:
        """Number of whitespace-separated words in ``text``."""
        return len(self.text.split())

    @property
    def real_time_factor(self) -> float:
        """Processing seconds per second of audio (lower is faster)."""
        return self.processing_seconds / self.audio_duration if self.audio_duration else 0.0


class TranscriptionError(Exception):
    """The backend could not transcribe the audio; the message is catalog-safe."""


class Transcriber(abc.ABC):
    """Turns an audio or video file into a :class:`Transcript`.

    A transcriber may load a model lazily on first use and keep it for the life of the process.
    """

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """A stable id of backend + model + options that change output (used as code version).

        Built by :meth:`join_model_id`.
        """

    @abc.abstractmethod
    def transcribe(self, media_path: Path, *, min_speakers: int = 1,
                   max_speakers: int = 20) -> Transcript:
        """Transcribe ``media_path``; raise :class:`TranscriptionError` on failure.

        Args:
            media_path: Any audio or video file ffmpeg can read.
            min_speakers: The fewest speakers to label (a backend may ignore it).
            max_speakers: The most speakers to label (a backend may ignore it).
        """

    @staticmethod
    def join_model_id(*parts: str) -> str:
        """A :attr:`model_id`: the non-empty ``parts`` joined by ``:``."""
        return ":".join(part for part in parts if part)
