"""The ``transcriber`` Dagster resource: a thin, typed factory over the transcription backends."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from watch_pipeline.transcribe.base import Transcriber
from watch_pipeline.transcribe.whisper import WhisperTranscriber


class TranscriberResource(dg.ConfigurableResource):
    """Chooses and configures the transcription backend.

    Each backend has its own ``<backend>_*`` fields; only the selected backend's fields are used.
    A new backend (Riva) is one more ``backend`` literal, its fields and one branch in
    :meth:`get_transcriber`.
    """

    backend: Literal["whisper"] = Field(
        default="whisper", description="Transcription backend: 'whisper' (embedded faster-whisper)."
    )
    whisper_model: str | None = Field(
        default=None,
        description="Path of a CTranslate2 Whisper model directory; unset = bundled tiny.en.",
    )
    whisper_device: Literal["auto", "cpu", "cuda"] = Field(
        default="cpu",
        description="Device for faster-whisper: cpu, cuda, or auto (CUDA if present).",
    )
    whisper_compute_type: str = Field(
        default="int8", description="CTranslate2 compute type, e.g. int8, int8_float16, float16."
    )
    whisper_beam_size: int = Field(
        default=1, ge=1, description="Beam width; 1 (greedy) is the fastest on CPU."
    )
    whisper_language: str | None = Field(
        default=None,
        description="Language code to force; unset = detect ('.en' models always use 'en').",
    )
    whisper_vad_filter: bool = Field(
        default=False, description="Skip non-speech with the bundled Silero VAD."
    )
    whisper_cpu_threads: int = Field(
        default=0, ge=0, description="CPU threads for the model; 0 lets CTranslate2 choose."
    )

    def get_transcriber(self) -> Transcriber:
        """Build the configured backend's transcriber (cheap: models load on first use).

        Returns:
            A :class:`~watch_pipeline.transcribe.base.Transcriber`.
        """
        if self.backend == "whisper":
            return WhisperTranscriber(
                model=self.whisper_model,
                device=self.whisper_device,
                compute_type=self.whisper_compute_type,
                beam_size=self.whisper_beam_size,
                language=self.whisper_language,
                vad_filter=self.whisper_vad_filter,
                cpu_threads=self.whisper_cpu_threads,
            )
        raise ValueError(f"unknown transcription backend {self.backend!r}")

    @property
    def model_id(self) -> str:
        """The configured transcriber's model id, e.g. ``whisper:tiny.en:int8:beam1``."""
        return self.get_transcriber().model_id
