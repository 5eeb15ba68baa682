"""Audio normalisation with ffmpeg: any media file → 16 kHz mono 16-bit PCM WAV.

Every transcription backend takes the same input, so the conversion lives here once. ffmpeg reads
the source and writes the WAV itself (streamed, file to file); Python never holds the samples.

Limits (``limits.py``): the source is probed first; media longer than ``max_seconds`` is refused
before anything is written, and ffmpeg's output stops ``CAP_MARGIN_SECONDS`` past the cap
(``-t``), so a file whose header understates its length (a "silence bomb") is refused too, having
written at most the cap's worth of WAV (about 115 MB an hour). ffmpeg's deadline is
``limits.ffmpeg_timeout`` of the probed duration (of the cap when unknown); only the end of its
stderr is kept.
"""

from __future__ import annotations

import contextlib
import wave
from pathlib import Path

from watch_pipeline.media import limits
from watch_pipeline.media.errors import ProbeError, ToolTimeout
from watch_pipeline.media.probe import probe
from watch_pipeline.media.process import one_line, run_tool

SAMPLE_RATE = 16_000
"""Samples per second of the normalised WAV (what Whisper and Riva expect)."""

DEFAULT_MAX_SECONDS = limits.hours_to_seconds(limits.DEFAULT_MAX_DURATION_HOURS)
"""The longest audio normalised unless a caller says otherwise (12 h)."""

_STDERR_TAIL_CHARS = 400


class AudioError(Exception):
    """ffmpeg could not produce audio from a file (no audio stream, corrupt, missing, timeout)."""


class AudioTimeout(AudioError, ToolTimeout):
    """ffmpeg outlived its deadline and was killed; the partial WAV was removed."""


class AudioTooLong(AudioError):
    """The audio lasts longer than the cap; nothing past the cap was written, and it was removed."""


def normalize_audio(
    src: Path,
    dest: Path,
    *,
    timeout: float | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> float:
    """Convert the first audio stream of ``src`` to a 16 kHz mono 16-bit PCM WAV at ``dest``.

    Runs ``ffmpeg -i src -map 0:a:0 -ac 1 -ar 16000 -c:a pcm_s16le -t <cap> -f wav dest``;
    video, subtitle and data streams are dropped. ``dest`` is overwritten; on failure it is
    removed.

    Args:
        src: Any audio or video file ffmpeg can read.
        dest: Where to write the WAV; its directory must exist.
        timeout: Seconds after which ffmpeg is killed; ``None`` derives it from the duration
            (``limits.ffmpeg_timeout``).
        max_seconds: The longest audio accepted; ffmpeg stops writing just past it.

    Returns:
        Duration of the written audio in seconds.

    Raises:
        AudioTooLong: The audio lasts longer than ``max_seconds`` (by its probe or its decode).
        AudioTimeout: ffmpeg outlived its deadline.
        AudioError: ``src`` is missing, has no audio stream or cannot be decoded, or ffmpeg is
            not installed. The message names the file and ends with the tail of ffmpeg's stderr.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise AudioError(f"{src.name}: no such file")
    cap = f"{limits.describe_seconds(max_seconds)} limit"
    duration, counted = _probed_duration(src, max_seconds)
    if duration is not None and duration > max_seconds:
        if counted:
            raise AudioTooLong(f"{src.name}: decodes to more than the {cap}")
        raise AudioTooLong(f"{src.name}: lasts {limits.describe_seconds(duration)}, over the {cap}")
    if timeout is None:
        timeout = limits.ffmpeg_timeout(max_seconds if duration is None else duration)
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-i", str(src),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le",
        "-t", f"{max_seconds + limits.CAP_MARGIN_SECONDS:.3f}", "-f", "wav",
        str(dest),
    ]  # fmt: skip
    try:
        result = run_tool(command, timeout=timeout)
    except FileNotFoundError as exc:
        raise AudioError("ffmpeg is not installed (not found on PATH)") from exc
    except ToolTimeout as exc:
        _remove(dest)
        raise AudioTimeout(f"{src.name}: ffmpeg timed out after {timeout:g} s") from exc

    stderr = result.stderr.strip()
    if result.returncode != 0:
        _remove(dest)
        if "matches no streams" in stderr:
            raise AudioError(f"{src.name}: no audio stream")
        raise AudioError(f"{src.name}: ffmpeg failed (exit {result.returncode}): {_tail(stderr)}")

    try:
        with wave.open(str(dest), "rb") as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        _remove(dest)
        raise AudioError(f"{src.name}: ffmpeg wrote no readable WAV: {exc}") from exc
    if frames == 0:
        _remove(dest)
        raise AudioError(f"{src.name}: no audio samples decoded: {_tail(stderr) or 'empty stream'}")
    if frames / rate > max_seconds:
        _remove(dest)
        stated = "" if duration is None or counted else f" (its header says {duration:.1f} s)"
        raise AudioTooLong(f"{src.name}: decodes to more than the {cap}{stated}")
    return frames / rate


def _probed_duration(src: Path, max_seconds: float) -> tuple[float | None, bool]:
    """The probed duration and whether it was counted; None when ffprobe cannot tell.

    An unreadable file is left to ffmpeg, whose stderr then says why it cannot be decoded.
    """
    try:
        info = probe(src, count_limit=max_seconds + limits.CAP_MARGIN_SECONDS)
    except ProbeError:
        return None, False
    return info.duration, info.duration_counted


def _tail(stderr: str) -> str:
    """The last characters of ffmpeg's stderr on one line, enough to say why it failed."""
    return one_line(stderr, _STDERR_TAIL_CHARS)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
