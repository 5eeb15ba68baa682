"""Stitch the parts of a multi-part recording into one file with ffmpeg.

The parts' probes (:func:`watch_pipeline.media.probe.probe`) decide how. When every part agrees on
the first video stream's (codec, width, height) and the first audio stream's (codec, sample rate,
channels), the parts are joined by ffmpeg's concat demuxer with stream copy — no re-encoding, as
fast as the disk. Otherwise they are re-encoded through the concat filter: video parts are scaled
and padded to the first part's size, audio resampled to the first audio part's rate and channel
layout, and a part without audio contributes silence of its length. Codecs follow the output's
extension (``_MUXERS``, ``_AUDIO_ENCODERS``; video is H.264, or VP9 in ``.webm``).

Each part is probed once. Probes the caller already has (``raw_file`` probed every part) are
passed as ``probes`` and used as they are, unless the file's size has changed since; the others
are probed concurrently (a few ffprobes at a time: start-up, not reading, is their cost). While
parts are still being probed the stream copy already runs (it needs none of their results), and is
killed if a part turns out to be unreadable or unlike part 1; with every probe given, the right
command is started at once. ffmpeg reads and writes the files itself; Python never holds media in
memory.

One ffmpeg run both writes the output and measures it: ``-progress`` reports the end time of the
last packet written, which is the output's duration in any container that keeps timestamps (MP4,
Matroska, MPEG-TS, Ogg, …) and after any re-encode. A stream copy into a container without
timestamps (WAV, AIFF, MP3, FLAC, ADTS) lays the packets end to end whatever their timestamps
said, so there the output is measured as written: PCM by its size and byte rate, anything else
by ffprobe. The output is written to a hidden temporary file beside ``dest`` and renamed into
place only after that duration has been checked against the sum of the parts; every temporary
file is removed whatever happens.

Limits (``limits.py``): unless a ``timeout`` is given, each ffprobe has ``PROBE_TIMEOUT_SECONDS``
and ffmpeg ``ffmpeg_timeout`` of the parts' summed duration, counted from its start; a re-encode
stops (``-t``) just past the longest output the duration check would accept. ffmpeg runs through
``process.ToolProcess``: killed with its children on timeout, only its stderr's end kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watch_pipeline.media import limits
from watch_pipeline.media.errors import ToolTimeout
from watch_pipeline.media.probe import DEFAULT_TIMEOUT_SECONDS, MediaInfo, ProbeError, probe
from watch_pipeline.media.process import ToolProcess, ToolResult, one_line

_STDERR_TAIL_CHARS = 500
_PROBE_WORKERS = 4
_PROGRESS_TAIL_BYTES = 4096  # several of ffmpeg's -progress blocks (~250 bytes each)
# -progress prints key=value blocks to stdout, the last one at the end ("progress=end");
# -nostats keeps the human-readable copy of the same figures out of stderr's tail.
_FFMPEG = ("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
           "-progress", "pipe:1", "-y")  # fmt: skip

# Output extension → ffmpeg muxer. Anything else is written as Matroska, which holds any codec.
_MUXERS: dict[str, str] = {
    ".mp4": "mp4", ".m4v": "mp4", ".m4a": "ipod", ".mov": "mov", ".3gp": "3gp",
    ".mkv": "matroska", ".mka": "matroska", ".webm": "webm",
    ".wav": "wav", ".mp3": "mp3", ".ogg": "ogg", ".oga": "ogg", ".opus": "ogg",
    ".flac": "flac", ".aac": "adts", ".aif": "aiff", ".aiff": "aiff", ".avi": "avi",
    ".ts": "mpegts", ".mts": "mpegts", ".m2ts": "mpegts", ".flv": "flv",
    ".asf": "asf", ".wma": "asf", ".wmv": "asf",
}  # fmt: skip
# Output extension → audio encoder when re-encoding; anything else gets AAC.
_AUDIO_ENCODERS: dict[str, str] = {
    ".wav": "pcm_s16le", ".aif": "pcm_s16be", ".aiff": "pcm_s16be", ".mp3": "libmp3lame",
    ".flac": "flac",
    ".ogg": "libopus", ".oga": "libopus", ".opus": "libopus", ".webm": "libopus",
}  # fmt: skip
# Muxers that store no timestamps: a stream copy into them is measured as written.
_UNTIMED_MUXERS = frozenset({"wav", "aiff", "mp3", "flac", "adts"})
_PCM_BITS = re.compile(r"pcm_[suf](\d+)(?:le|be)?")
_PCM_BYTE_CODECS = frozenset({"pcm_alaw", "pcm_mulaw"})
_OPUS_RATES = (48_000, 24_000, 16_000, 12_000, 8_000)
_LAYOUTS = {1: "mono", 2: "stereo"}


class StitchError(Exception):
    """The parts could not be stitched; the message names the part or check that failed."""


class StitchTimeout(StitchError, ToolTimeout):
    """ffmpeg outlived its deadline and was killed; ``dest`` was left untouched."""


@dataclass(frozen=True)
class StitchResult:
    """What :func:`stitch` wrote.

    Attributes:
        mode: ``"copy"`` (concat demuxer, stream copy) or ``"reencode"`` (concat filter).
        duration: The output's duration in seconds, as measured by the one ffmpeg run (or, for
            a copy into a container without timestamps, as written; see the module docstring).
        parts_duration: The sum of the parts' durations in seconds.
        size: The output's size in bytes.
        reencode_reason: Why the parts could not be stream-copied (``None`` in copy mode).

    """

    mode: Literal["copy", "reencode"]
    duration: float
    parts_duration: float
    size: int
    reencode_reason: str | None = None


def stitch(
    parts: Sequence[Path],
    dest: Path,
    *,
    timeout: float | None = None,
    tolerance_per_part: float = 1.0,
    probes: Mapping[Path, MediaInfo] | None = None,
) -> StitchResult:
    """Concatenate ``parts`` in order into ``dest``.

    Args:
        parts: Local media files in play order (part 1 first).
        dest: The output file; its extension picks the container (and the codecs when
            re-encoding). Its directory must exist; an existing file is replaced.
        timeout: Seconds allowed to each ffprobe and ffmpeg run; ``None`` gives ffprobe
            ``limits.PROBE_TIMEOUT_SECONDS`` and ffmpeg ``limits.ffmpeg_timeout`` of the parts'
            summed duration.
        tolerance_per_part: Allowed difference, in seconds per part, between the output's
            duration and the sum of the parts' durations.
        probes: ``probe()`` results the caller already has, keyed by the paths as given in
            ``parts``. Such a part is not probed again, unless the file's size is no longer
            the probe's or the probe has no duration; the other parts are probed.

    Returns:
        The mode used, durations and the output's size.

    Raises:
        StitchTimeout: ffmpeg outlived its deadline (a ``StitchError``).
        StitchError: If there are no parts, a part is missing or unreadable (the message names it
            and carries ffprobe's or ffmpeg's stderr tail), a video group has a part without
            video, ffmpeg fails, or the output's duration is off by more than
            ``tolerance_per_part`` times the number of parts. ``dest`` is then left untouched.

    """
    parts, dest = _check_inputs(parts, dest)
    probe_timeout = DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout
    allowed = tolerance_per_part * len(parts)
    tmp_out = dest.with_name(f".{dest.stem}.stitching-{secrets.token_hex(4)}{dest.suffix}")
    try:
        infos, mismatch, ffmpeg = _concatenate(parts, _given(parts, probes), tmp_out,
                                               probe_timeout, timeout, allowed)  # fmt: skip
        parts_duration = sum(info.duration or 0.0 for info in infos)
        written = _written_duration(tmp_out, dest, infos[0], ffmpeg,
                                    copied=mismatch is None, timeout=probe_timeout)  # fmt: skip
        duration = _checked_duration(written, dest, len(parts), parts_duration, allowed)
        size = tmp_out.stat().st_size
        os.replace(tmp_out, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_out.unlink()
    return StitchResult(
        mode="copy" if mismatch is None else "reencode",
        duration=duration,
        parts_duration=parts_duration,
        size=size,
        reencode_reason=mismatch,
    )


def _check_inputs(parts: Sequence[Path], dest: Path) -> tuple[list[Path], Path]:
    """The parts and ``dest`` as paths; every part must exist."""
    paths = [Path(p) for p in parts]
    if not paths:
        raise StitchError("nothing to stitch: no parts given")
    for i, path in enumerate(paths):
        if not path.is_file():
            raise StitchError(f"{_label(i, len(paths), path)}: no such file")
    return paths, Path(dest)


def _given(parts: list[Path], probes: Mapping[Path, MediaInfo] | None) -> list[MediaInfo | None]:
    """The caller's probe of each part; ``None`` where there is none or it cannot be used."""
    given: list[MediaInfo | None] = []
    for path in parts:
        info = None if probes is None else probes.get(path)
        # A part fetched again or replaced since it was probed may not be what the probe saw.
        if info is not None and (
            info.duration is None or (info.size is not None and info.size != path.stat().st_size)
        ):
            info = None
        given.append(info)
    return given


def _concatenate(
    parts: list[Path],
    given: list[MediaInfo | None],
    out: Path,
    probe_timeout: float,
    timeout: float | None,
    allowed: float,
) -> tuple[list[MediaInfo], str | None, ToolResult]:
    """Write ``out`` by stream copy, or by re-encoding when the parts differ; wait for ffmpeg.

    Returns:
        The parts' probe results, why they were re-encoded (``None`` for a stream copy) and
        what the ffmpeg run that wrote ``out`` left behind (its ``-progress`` report).
    """
    with tempfile.TemporaryDirectory(prefix="stitch_") as tmp, contextlib.ExitStack() as running:
        started = time.monotonic()
        copy = _copy_command(parts, Path(tmp), out)
        refused = _copy_refused(out)
        ffmpeg = None
        if None in given and refused is None:
            # Stream copy is the usual case and costs no CPU: start it at once, while the parts
            # are probed (ffprobe's start-up alone is a sizeable share of a copy's time), and
            # stop it if a part proves unreadable or unlike part 1 and must be re-encoded.
            # Leaving the block kills whatever still runs.
            ffmpeg = running.enter_context(_start_ffmpeg(copy))
        infos = _probe_parts(parts, given, probe_timeout)
        parts_duration = sum(info.duration or 0.0 for info in infos)
        mismatch = refused or _mismatch(parts, infos)
        if ffmpeg is None or mismatch is not None:
            if ffmpeg is not None:
                ffmpeg.kill()
            started = time.monotonic()
            command = (
                copy
                if mismatch is None
                else _reencode_command(parts, infos, out, parts_duration + allowed)
            )
            ffmpeg = running.enter_context(_start_ffmpeg(command))
        deadline = limits.ffmpeg_timeout(parts_duration) if timeout is None else timeout
        result = _wait_ffmpeg(ffmpeg, parts, deadline, started)
    return infos, mismatch, result


def _written_duration(
    out: Path, dest: Path, first: MediaInfo, ffmpeg: ToolResult, *, copied: bool, timeout: float
) -> float | None:
    """The output's duration: ffmpeg's own figure, or the file as written (module docstring)."""
    if not copied or _MUXERS.get(dest.suffix.lower(), "matroska") not in _UNTIMED_MUXERS:
        return _progress_seconds(ffmpeg.stdout)
    byte_rate = _pcm_byte_rate(first)
    if byte_rate is not None:
        # The header's hundred-odd bytes are a few milliseconds at any PCM byte rate.
        return out.stat().st_size / byte_rate
    try:
        return probe(out, timeout=timeout).duration
    except ProbeError as exc:
        raise StitchError(f"ffmpeg wrote an unreadable {dest.name}: {exc}") from exc


def _progress_seconds(stdout: bytes) -> float | None:
    """The last ``out_time_us`` of ffmpeg's ``-progress`` report in seconds, if it has one."""
    seconds = None
    for line in stdout.decode("ascii", "replace").splitlines():
        key, _, value = line.partition("=")
        if key == "out_time_us":
            try:
                seconds = int(value) / 1_000_000  # "N/A" before any packet was written
            except ValueError:
                seconds = None
    return seconds if seconds is not None and seconds >= 0 else None


def _pcm_byte_rate(info: MediaInfo) -> int | None:
    """Bytes per second of the first audio stream when it is plain PCM, else ``None``."""
    audio = info.audio
    if audio is None or not audio.sample_rate or not audio.channels:
        return None
    if audio.codec in _PCM_BYTE_CODECS:
        bits = 8
    elif match := _PCM_BITS.fullmatch(audio.codec):
        bits = int(match.group(1))
    else:
        return None
    return audio.sample_rate * audio.channels * bits // 8


def _checked_duration(
    duration: float | None, dest: Path, count: int, parts_duration: float, allowed: float
) -> float:
    """The output's duration, which must be the parts' sum give or take ``allowed`` seconds."""
    if duration is None or abs(duration - parts_duration) > allowed:
        got = "unknown" if duration is None else f"{duration:.3f} s"
        raise StitchError(
            f"stitched {dest.name} lasts {got} but its {count} parts sum to "
            f"{parts_duration:.3f} s (allowed difference {allowed:g} s)"
        )
    return duration


def _label(index: int, count: int, path: Path) -> str:
    return f"part {index + 1} of {count} ({path.name})"


def _probe_parts(
    parts: list[Path], given: list[MediaInfo | None], timeout: float
) -> list[MediaInfo]:
    """Every part's probe: the given ones, and the others probed concurrently."""
    count = len(parts)
    missing = [i for i, info in enumerate(given) if info is None]
    probed: dict[int, MediaInfo] = {}
    if missing:
        # ffprobe's start-up dominates on small and large files alike. map() yields in order,
        # so the first unreadable part in play order is the one reported.
        with ThreadPoolExecutor(max_workers=min(len(missing), _PROBE_WORKERS)) as pool:
            results = pool.map(lambda i: _probe_part(i, count, parts[i], timeout), missing)
            probed = dict(zip(missing, results, strict=True))
    return [info if info is not None else probed[i] for i, info in enumerate(given)]


def _probe_part(index: int, count: int, path: Path, timeout: float) -> MediaInfo:
    label = _label(index, count, path)
    try:
        info = probe(path, timeout=timeout)
    except ProbeError as exc:
        raise StitchError(f"{label} is unreadable: {exc}") from exc
    if info.duration is None:
        raise StitchError(f"{label}: ffprobe reports no duration")
    return info


def _signature(info: MediaInfo) -> tuple[tuple[object, ...] | None, tuple[object, ...] | None]:
    video, audio = info.video, info.audio
    return (
        None if video is None else (video.codec, video.width, video.height),
        None if audio is None else (audio.codec, audio.sample_rate, audio.channels),
    )


def _describe(info: MediaInfo) -> str:
    bits = []
    if info.video:
        bits.append(f"video {info.video.codec} {info.video.width}x{info.video.height}")
    if info.audio:
        bits.append(
            f"audio {info.audio.codec} {info.audio.sample_rate} Hz {info.audio.channels} ch"
        )
    return ", ".join(bits)


def _copy_refused(out: Path) -> str | None:
    """Why a stream copy into ``out``'s format would be wrong whatever the parts, else ``None``.

    FLAC: a stream copy keeps part 1's STREAMINFO (its sample count), so players and ffprobe see
    only part 1's length; re-encoding FLAC is lossless and writes the right header.
    """
    if _MUXERS.get(out.suffix.lower()) == "flac":
        return "a FLAC stream copy keeps part 1's length in its header (re-encoded, lossless)"
    return None


def _mismatch(parts: list[Path], infos: list[MediaInfo]) -> str | None:
    """``None`` when every part has the first part's streams, else what differs (re-encode)."""
    first = _signature(infos[0])
    for i, info in enumerate(infos[1:], start=1):
        if _signature(info) != first:
            return (
                f"{_label(i, len(parts), parts[i])} has {_describe(info)}; "
                f"part 1 has {_describe(infos[0])}"
            )
    return None


def _concat_line(path: Path) -> str:
    # The concat demuxer reads 'quoted' strings in which a quote is written '\'' (close, escaped
    # quote, reopen); nothing else needs escaping. A line break cannot be expressed at all.
    text = os.fspath(path.resolve())
    if "\n" in text or "\r" in text:
        raise StitchError(f"{path.name!r}: a line break in a path cannot be stitched")
    return "file '" + text.replace("'", "'\\''") + "'\n"


def _muxer(dest: Path) -> list[str]:
    muxer = _MUXERS.get(dest.suffix.lower(), "matroska")
    # A WAV over 4 GiB needs an RF64 header; smaller ones keep the plain RIFF header.
    return ["-f", muxer, *(["-rf64", "auto"] if muxer == "wav" else [])]


def _copy_command(parts: list[Path], workdir: Path, out: Path) -> list[str]:
    listing = workdir / "parts.txt"
    listing.write_text("".join(_concat_line(p) for p in parts), encoding="utf-8")
    # The first video stream (capital V: not cover art, as in probe) and the first audio stream,
    # each if present ("?"), so the command needs no probe and can start before the probes end.
    return [*_FFMPEG, "-f", "concat", "-safe", "0", "-i", str(listing),
            "-map", "0:V:0?", "-map", "0:a:0?", "-c", "copy", *_muxer(out), str(out)]  # fmt: skip


def _reencode_command(
    parts: list[Path], infos: list[MediaInfo], out: Path, max_seconds: float
) -> list[str]:
    count = len(parts)
    has_video = any(info.video is not None for info in infos)
    has_audio = any(info.audio is not None for info in infos)
    if has_video:
        lacking = [
            _label(i, count, p)
            for i, (p, info) in enumerate(zip(parts, infos, strict=True))
            if info.video is None
        ]
        if lacking:
            raise StitchError(
                f"cannot stitch audio-only parts into a video: {', '.join(lacking)} "
                "has no video stream"
            )
    suffix = out.suffix.lower()
    video_codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
    audio_codec = _AUDIO_ENCODERS.get(suffix, "aac")

    filters: list[str] = []
    segments: list[str] = []
    # Video takes the first part's size (even: yuv420p needs it); audio takes the first audio
    # part's rate (one Opus accepts) and channel count.
    first_video = next((info.video for info in infos if info.video is not None), None)
    width = _even((first_video and first_video.width) or 2)
    height = _even((first_video and first_video.height) or 2)
    first_audio = next((info.audio for info in infos if info.audio is not None), None)
    rate = (first_audio and first_audio.sample_rate) or 48_000
    if audio_codec == "libopus" and rate not in _OPUS_RATES:
        rate = 48_000
    channels = (first_audio and first_audio.channels) or 2
    layout = _LAYOUTS.get(channels, f"{channels}c")
    for i, info in enumerate(infos):
        if has_video:
            filters.append(
                f"[{i}:V:0]scale={width}:{height}:force_original_aspect_ratio=decrease,"
                f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p[v{i}]"
            )
            segments.append(f"[v{i}]")
        if has_audio:
            if info.audio is not None:
                filters.append(
                    f"[{i}:a:0]aresample={rate},"
                    f"aformat=sample_rates={rate}:channel_layouts={layout}[a{i}]"
                )
            else:
                # A part without sound still lasts its length: fill it with silence.
                filters.append(
                    f"anullsrc=r={rate}:cl={layout},atrim=duration={info.duration:.6f}[a{i}]"
                )
            segments.append(f"[a{i}]")
    filters.append(
        f"{''.join(segments)}concat=n={count}:v={int(has_video)}:a={int(has_audio)}"
        + ("[v]" if has_video else "")
        + ("[a]" if has_audio else "")
    )

    command = [*_FFMPEG]
    for path in parts:
        command += ["-i", str(path)]
    command += ["-filter_complex", ";".join(filters)]
    if has_video:
        command += ["-map", "[v]", "-c:v", video_codec, "-fps_mode", "vfr"]
        command += (
            ["-preset", "veryfast"]
            if video_codec == "libx264"
            else ["-deadline", "realtime", "-cpu-used", "8"]
        )
    if has_audio:
        command += ["-map", "[a]", "-c:a", audio_codec]
    # Past this the duration check fails anyway: a part that decodes longer than it says (a
    # silence bomb) cannot make an uncompressed output fill the disk.
    command += ["-t", f"{max_seconds + limits.CAP_MARGIN_SECONDS:.3f}"]
    return [*command, *_muxer(out), str(out)]


def _even(n: int) -> int:
    return n + n % 2


def _start_ffmpeg(command: list[str]) -> ToolProcess:
    # Threads drain stderr and the -progress report on stdout, keeping the end of each: ffmpeg
    # can never block on a full pipe while we probe.
    try:
        return ToolProcess(command, capture_stdout=True, stdout_limit=_PROGRESS_TAIL_BYTES)
    except FileNotFoundError as exc:
        raise StitchError("ffmpeg is not installed (not found on PATH)") from exc


def _wait_ffmpeg(
    ffmpeg: ToolProcess, parts: list[Path], timeout: float, started: float
) -> ToolResult:
    try:
        result = ffmpeg.wait(max(timeout - (time.monotonic() - started), 0))
    except ToolTimeout as exc:
        raise StitchTimeout(f"ffmpeg timed out after {timeout:g} s") from exc
    if result.returncode != 0:
        blamed = [
            _label(i, len(parts), p)
            for i, p in enumerate(parts)
            if str(p) in result.stderr or str(p.resolve()) in result.stderr
        ]
        where = f" on {', '.join(blamed)}" if blamed else ""
        raise StitchError(
            f"ffmpeg failed{where} (exit {result.returncode}): "
            f"{one_line(result.stderr, _STDERR_TAIL_CHARS)}"
        )
    return result
