"""ffprobe wrapper: container and stream facts for a local media file.

``probe`` runs ``ffprobe -v error -print_format json -show_format -show_streams`` (deadline
``limits.PROBE_TIMEOUT_SECONDS``, output and stderr capped, see ``process.py``) and turns its JSON
into a frozen ``MediaInfo``. Anything ffprobe cannot read as audio or video raises ``ProbeError``
carrying the tail of ffprobe's stderr.

The duration is the container's, else the longest stream's. When neither states one, or the one
stated is implausible for the file's size (fewer than ``MIN_PLAUSIBLE_BIT_RATE`` or more than
``MAX_PLAUSIBLE_BIT_RATE`` bits per second), it is counted instead: ffmpeg decodes the first audio
stream (or copies the first video stream) to nowhere, stopping at ``count_limit`` seconds of media
and at ``limits.COUNT_TIMEOUT_SECONDS``, and its last ``-progress`` time is the duration. A silence
bomb therefore reports its real length, and ``limits.check_duration`` can refuse it.

``save_probes`` and ``load_probes`` keep results in a small JSON file, so a later step (the
stitch after ``raw_file``) can reuse them instead of running ffprobe again.
"""

from __future__ import annotations

import json
import math
import mimetypes
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePath
from typing import Any

from watch_pipeline.media import limits
from watch_pipeline.media.errors import MediaTooLong, ProbeError, ProbeTimeout, ToolTimeout
from watch_pipeline.media.process import one_line, run_tool

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "MediaInfo",
    "MediaTooLong",
    "ProbeError",
    "ProbeTimeout",
    "StreamInfo",
    "content_type_for",
    "load_probes",
    "probe",
    "save_probes",
]

DEFAULT_TIMEOUT_SECONDS = limits.PROBE_TIMEOUT_SECONDS
_STDERR_TAIL_CHARS = 500
_PROGRESS_LIMIT_BYTES = 64 * 1024
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
        duration: Length in seconds: stated by the container or a stream, or counted (see the
            module docstring); None when it could not be established.
        format_name: ffprobe's ``format_name``, e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"`` or ``"wav"``.
        size: File size in bytes as ffprobe saw it, or None.
        video: The first real video stream (cover art excluded), or None.
        audio: The first audio stream, or None.
        bit_rate: Overall bit rate in bits per second, or None.
        duration_counted: True when ``duration`` was counted by decoding rather than stated; a
            count that reached its limit reports the limit (the media lasts at least that).

    """

    duration: float | None
    format_name: str
    size: int | None
    video: StreamInfo | None
    audio: StreamInfo | None
    bit_rate: int | None
    duration_counted: bool = False


def probe(
    path: str | os.PathLike[str],
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ffprobe: str = "ffprobe",
    count_limit: float = limits.COUNT_LIMIT_SECONDS,
) -> MediaInfo:
    """Read container and stream facts from a local file with ffprobe.

    Args:
        path: The file to probe.
        timeout: Seconds to wait for ffprobe before killing it.
        ffprobe: The ffprobe executable, looked up on PATH unless a path is given.
        count_limit: Seconds of media the duration count decodes at most, when the stated
            duration is missing or implausible (see the module docstring).

    Returns:
        The parsed ``MediaInfo``.

    Raises:
        ProbeTimeout: ffprobe, or the duration count, outlived its deadline (a ``ProbeError``).
        ProbeError: If ffprobe is missing, fails, or finds no audio or video stream.

    """
    name = os.fspath(path)
    cmd = [ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", name]
    try:
        proc = run_tool(cmd, timeout=timeout, capture_stdout=True)
    except FileNotFoundError as exc:
        raise ProbeError(f"ffprobe executable not found: {ffprobe!r}") from exc
    except ToolTimeout as exc:
        raise ProbeTimeout(f"ffprobe timed out after {timeout:g} s on {name!r}") from exc
    stderr = one_line(proc.stderr, _STDERR_TAIL_CHARS)
    if proc.returncode != 0:
        raise ProbeError(f"ffprobe failed on {name!r} (exit {proc.returncode}): {stderr or '-'}")
    if proc.stdout_truncated:
        raise ProbeError(f"ffprobe printed more than {len(proc.stdout)} bytes for {name!r}")
    try:
        report = json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise ProbeError(f"ffprobe printed invalid JSON for {name!r}") from exc
    info = _media_info(report)
    if info.video is None and info.audio is None:
        detail = f": {stderr}" if stderr else ""
        raise ProbeError(f"no audio or video stream in {name!r}{detail}")
    if not _plausible(info.duration, info.size):
        info = replace(info, duration=_count_duration(name, info, count_limit),
                       duration_counted=True)  # fmt: skip
    return info


def save_probes(dest: Path, probes: Mapping[Path, MediaInfo]) -> None:
    """Write probe results to ``dest`` as JSON, for :func:`load_probes` in a later step.

    The file appears whole or not at all (written beside ``dest``, then renamed).

    Args:
        dest: The JSON file; its directory must exist. An existing file is replaced.
        probes: Results of :func:`probe`, by the path probed.
    """
    record = {os.fspath(path): asdict(info) for path, info in probes.items()}
    tmp = dest.with_name(f".{dest.name}.writing")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, dest)


def load_probes(src: Path) -> dict[Path, MediaInfo]:
    """The probe results :func:`save_probes` wrote to ``src``, by the path probed.

    A missing, damaged or older-format file reads as no results: the files are then probed
    again, which costs time but never correctness.
    """
    try:
        record = json.loads(src.read_text(encoding="utf-8"))
        return {Path(path): _info_from_dict(fields) for path, fields in record.items()}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}


def _info_from_dict(fields: dict[str, Any]) -> MediaInfo:
    video, audio = fields["video"], fields["audio"]
    return MediaInfo(**{**fields,
                        "video": None if video is None else StreamInfo(**video),
                        "audio": None if audio is None else StreamInfo(**audio)})  # fmt: skip


def _plausible(duration: float | None, size: int | None) -> bool:
    """Whether a stated duration can be believed for a file of ``size`` bytes."""
    if duration is None or not math.isfinite(duration) or duration <= 0:
        return False
    if not size:
        return True
    bit_rate = size * 8 / duration
    return limits.MIN_PLAUSIBLE_BIT_RATE <= bit_rate <= limits.MAX_PLAUSIBLE_BIT_RATE


def _count_duration(name: str, info: MediaInfo, limit: float) -> float | None:
    """Decode the first audio stream (or copy the first video stream) to nowhere; its length.

    Stops at ``limit`` seconds of media (``-t``) and at ``limits.COUNT_TIMEOUT_SECONDS``.
    """
    streams = (["-map", "0:a:0", "-vn", "-sn", "-dn"] if info.audio is not None
               else ["-map", "0:V:0", "-c", "copy", "-an", "-sn", "-dn"])  # fmt: skip
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
        "-progress", "pipe:1", "-i", name, *streams, "-t", f"{limit:.3f}", "-f", "null", "-",
    ]  # fmt: skip
    timeout = limits.COUNT_TIMEOUT_SECONDS
    try:
        proc = run_tool(cmd, timeout=timeout, capture_stdout=True,
                        stdout_limit=_PROGRESS_LIMIT_BYTES)  # fmt: skip
    except FileNotFoundError as exc:
        raise ProbeError("ffmpeg is not installed (not found on PATH)") from exc
    except ToolTimeout as exc:
        raise ProbeTimeout(
            f"counting the duration of {name!r} took longer than {timeout:g} s"
        ) from exc
    if proc.returncode != 0:
        raise ProbeError(
            f"ffmpeg could not decode {name!r} to count its duration (exit {proc.returncode}): "
            f"{one_line(proc.stderr, _STDERR_TAIL_CHARS) or '-'}"
        )
    times = [
        _float(line.partition("=")[2])
        for line in proc.stdout.decode("ascii", "replace").splitlines()
        if line.startswith("out_time_us=")
    ]
    counted = next((t for t in reversed(times) if t is not None), None)
    return None if counted is None or counted <= 0 else counted / 1_000_000


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
        video=_stream_info(video, "width", "height"),
        audio=_stream_info(audio, "sample_rate", "channels"),
        bit_rate=_int(fmt.get("bit_rate")),
    )


def _stream_info(stream: dict[str, Any] | None, *fields: str) -> StreamInfo | None:
    """The stream's codec and the named whole-number fields (ffprobe's names are ours)."""
    if stream is None:
        return None
    return StreamInfo(codec=str(stream.get("codec_name") or "unknown"),
                      **{name: _int(stream.get(name)) for name in fields})


def _float(value: Any) -> float | None:
    # ffprobe prints numbers as strings and "N/A" when unknown.
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)
