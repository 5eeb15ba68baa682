"""Audio normalisation with ffmpeg: any media file → 16 kHz mono 16-bit PCM WAV.

Every transcription backend takes the same input, so the conversion lives here once. ffmpeg reads
the source and writes the WAV itself (streamed, file to file); Python never holds the samples.
"""

from __future__ import annotations

import contextlib
import subprocess
import wave
from pathlib import Path

SAMPLE_RATE = 16_000
"""Samples per second of the normalised WAV (what Whisper and Riva expect)."""

_STDERR_TAIL_CHARS = 400


class AudioError(Exception):
    """ffmpeg could not produce audio from a file (no audio stream, corrupt, missing, timeout)."""


def normalize_audio(src: Path, dest: Path, *, timeout: float | None = None) -> float:
    """Convert the first audio stream of ``src`` to a 16 kHz mono 16-bit PCM WAV at ``dest``.

    Runs ``ffmpeg -i src -map 0:a:0 -ac 1 -ar 16000 -c:a pcm_s16le -f wav dest``; video, subtitle
    and data streams are dropped. ``dest`` is overwritten; on failure it is removed.

    Args:
        src: Any audio or video file ffmpeg can read.
        dest: Where to write the WAV; its directory must exist.
        timeout: Seconds after which ffmpeg is killed; ``None`` waits indefinitely.

    Returns:
        Duration of the written audio in seconds.

    Raises:
        AudioError: ``src`` is missing, has no audio stream or cannot be decoded, ffmpeg is not
            installed, or it timed out. The message names the file and ends with the tail of
            ffmpeg's stderr.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise AudioError(f"{src.name}: no such file")
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-i", str(src),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", "-f", "wav",
        str(dest),
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise AudioError("ffmpeg is not installed (not found on PATH)") from exc
    except subprocess.TimeoutExpired as exc:
        _remove(dest)
        raise AudioError(f"{src.name}: ffmpeg timed out after {timeout:g} s") from exc

    stderr = result.stderr.decode("utf-8", errors="replace").strip()
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
    return frames / rate


def _tail(stderr: str) -> str:
    """The last characters of ffmpeg's stderr on one line, enough to say why it failed."""
    text = " | ".join(line.strip() for line in stderr.splitlines() if line.strip())
    return text if len(text) <= _STDERR_TAIL_CHARS else "…" + text[-_STDERR_TAIL_CHARS:]


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
