"""ffprobe wrapper: container and stream facts for a local media file.

``probe`` runs ``ffprobe -v error -print_format json -show_format -show_streams`` in a subprocess
with a timeout and turns its JSON into a frozen ``MediaInfo``. Anything ffprobe cannot read as
audio or video raises ``ProbeError`` carrying the tail of ffprobe's stderr.
"""

from __future__ import annotations

import json
import mimetypes
import os
import subprocess
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 60.0
_STDERR_TAIL_CHARS = 500
# Containers whose name alone fixes the MIME type.
_SINGLE_FORMATS: dict[str, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "aac": "audio/aac",
    "amr": "audio/amr",
    "aiff": "audio/aiff",
    "avi": "video/x-msvideo",
    "flv": "video/x-flv",
    "mpegts": "video/mp2t",
    "mpeg": "video/mpeg",
}


class ProbeError(Exception):
    """ffprobe could not read the file as audio or video (or could not run at all)."""


@dataclass(frozen=True)
class StreamInfo:
    """The first audio or video stream of a file.

    Attributes:
        codec: ffprobe's ``codec_name``, e.g. ``"h264"``, ``"aac"``, ``"pcm_s16le"``.
        width: Frame width in pixels (video only).
        height: Frame height in pixels (video only).
        sample_rate: Samples per second (audio only).
        channels: Channel count (audio only).

    """

    codec: str
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe reports about a media file.

    Attributes:
        duration: Length in seconds, or None when neither the container nor a stream states it.
        format_name: ffprobe's ``format_name``, e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"`` or ``"wav"``.
        size: File size in bytes as ffprobe saw it, or None.
        video: The first real video stream (cover art excluded), or None.
        audio: The first audio stream, or None.
        bit_rate: Overall bit rate in bits per second, or None.

    """

    duration: float | None
    format_name: str
    size: int | None
    video: StreamInfo | None
    audio: StreamInfo | None
    bit_rate: int | None


def probe(
    path: str | os.PathLike[str],
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ffprobe: str = "ffprobe",
) -> MediaInfo:
    """Read container and stream facts from a local file with ffprobe.

    Args:
        path: The file to probe.
        timeout: Seconds to wait for ffprobe before giving up.
        ffprobe: The ffprobe executable, looked up on PATH unless a path is given.

    Returns:
        The parsed ``MediaInfo``.

    Raises:
        ProbeError: If ffprobe is missing, times out, fails, or finds no audio or video stream.

    """
    cmd = [
        ffprobe,
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        os.fspath(path),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ProbeError(f"ffprobe executable not found: {ffprobe!r}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"ffprobe timed out after {timeout:g}s on {os.fspath(path)!r}") from exc
    stderr = _tail(proc.stderr)
    if proc.returncode != 0:
        raise ProbeError(
            f"ffprobe failed on {os.fspath(path)!r} (exit {proc.returncode}): {stderr or '-'}"
        )
    try:
        report = json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise ProbeError(f"ffprobe printed invalid JSON for {os.fspath(path)!r}") from exc
    info = _media_info(report)
    if info.video is None and info.audio is None:
        detail = f": {stderr}" if stderr else ""
        raise ProbeError(f"no audio or video stream in {os.fspath(path)!r}{detail}")
    return info


def content_type_for(info: MediaInfo, filename: str) -> str:
    """Choose a MIME type from ffprobe's container name, the streams found and the file name.

    The container decides the family; the extension and whether a video stream exists pick the
    member (``.mov`` → QuickTime, an MP4 without video → ``audio/mp4``).

    Args:
        info: The result of ``probe``.
        filename: The file's name; only its extension is used.

    Returns:
        A MIME type; ``"application/octet-stream"`` when nothing is known.

    """
    formats = set(info.format_name.split(","))
    ext = PurePath(filename).suffix.lower()
    has_video = info.video is not None
    if "mp4" in formats or "mov" in formats:
        if ext == ".mov":
            return "video/quicktime"
        if ext in (".3gp", ".3gpp"):
            return "video/3gpp"
        if ext == ".3g2":
            return "video/3gpp2"
        return "video/mp4" if has_video else "audio/mp4"
    if "matroska" in formats or "webm" in formats:
        if ext == ".webm":
            return "video/webm" if has_video else "audio/webm"
        return "video/x-matroska" if has_video else "audio/x-matroska"
    if "ogg" in formats:
        return "video/ogg" if has_video else "audio/ogg"
    if "asf" in formats:
        return "video/x-ms-wmv" if has_video else "audio/x-ms-wma"
    for name, content_type in _SINGLE_FORMATS.items():
        if name in formats:
            return content_type
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"


def _media_info(report: dict[str, Any]) -> MediaInfo:
    fmt = report.get("format") or {}
    streams = report.get("streams") or []
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video"
            and not (s.get("disposition") or {}).get("attached_pic")
        ),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = _float(fmt.get("duration"))
    if duration is None:
        stream_durations = [d for s in streams if (d := _float(s.get("duration"))) is not None]
        duration = max(stream_durations, default=None)
    return MediaInfo(
        duration=duration,
        format_name=str(fmt.get("format_name") or ""),
        size=_int(fmt.get("size")),
        video=None
        if video is None
        else StreamInfo(
            codec=str(video.get("codec_name") or "unknown"),
            width=_int(video.get("width")),
            height=_int(video.get("height")),
        ),
        audio=None
        if audio is None
        else StreamInfo(
            codec=str(audio.get("codec_name") or "unknown"),
            sample_rate=_int(audio.get("sample_rate")),
            channels=_int(audio.get("channels")),
        ),
        bit_rate=_int(fmt.get("bit_rate")),
    )


def _float(value: Any) -> float | None:
    # ffprobe prints numbers as strings and "N/A" when unknown.
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _tail(stderr: bytes | None) -> str:
    text = (stderr or b"").decode("utf-8", "replace").strip()
    if len(text) > _STDERR_TAIL_CHARS:
        text = "…" + text[-_STDERR_TAIL_CHARS:]
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())
