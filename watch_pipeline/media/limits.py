"""Every limit on media and on the ffmpeg/ffprobe runs over it, in one place.

Time:

* ffprobe gets a fixed :data:`PROBE_TIMEOUT_SECONDS` (it reads headers, not the media).
* ffmpeg gets :func:`ffmpeg_timeout` of the media's duration: 60 s of start-up plus twice the
  duration, i.e. it must work at half real time or faster (stream copy and audio decoding run
  hundreds of times faster; a ``veryfast`` H.264 re-encode of meeting video several times).
* The duration count (``probe`` decoding the audio when the container states no plausible
  duration) gets :data:`COUNT_TIMEOUT_SECONDS` and stops at :data:`COUNT_LIMIT_SECONDS` of media.

A run past its deadline is killed with its children and raises a ``ToolTimeout`` subclass
(``process.py``). Of each run's stderr only the last :data:`STDERR_TAIL_BYTES` are kept, read as
they come.

Length: media longer than ``watch.max_media_duration_hours`` (default
:data:`DEFAULT_MAX_DURATION_HOURS`) is refused after probing by :func:`check_duration`, and
audio normalisation stops writing :data:`CAP_MARGIN_SECONDS` past its cap (ffmpeg's ``-t``),
so a file whose header lies about its length (a "silence bomb") can never fill the disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from watch_pipeline.media.errors import MediaTooLong, ProbeError


class Measured(Protocol):
    """What :func:`check_duration` reads of a probe result (``probe.MediaInfo`` fits)."""

    duration: float | None
    duration_counted: bool

PROBE_TIMEOUT_SECONDS = 60.0
"""Deadline of one ffprobe run."""

FFMPEG_TIMEOUT_BASE_SECONDS = 60.0
"""Start-up allowance of every ffmpeg run (see :func:`ffmpeg_timeout`)."""

FFMPEG_SECONDS_PER_MEDIA_SECOND = 2.0
"""Wall-clock seconds ffmpeg may spend per second of media (see :func:`ffmpeg_timeout`)."""

DEFAULT_MAX_DURATION_HOURS = 12.0
"""Default of the ``watch.max_media_duration_hours`` setting."""

COUNT_LIMIT_SECONDS = 2 * DEFAULT_MAX_DURATION_HOURS * 3600
"""How much media the duration count decodes at most; a longer file is reported this long."""

COUNT_TIMEOUT_SECONDS = 600.0
"""Deadline of the duration count (audio decodes at 500x real time and faster here)."""

MIN_PLAUSIBLE_BIT_RATE = 256
"""Bits per second below which a stated duration is not believed (silence in FLAC or Opus
costs 1.5 kbit/s); the duration is then counted."""

MAX_PLAUSIBLE_BIT_RATE = 1_000_000_000
"""Bits per second above which a stated duration is not believed (1 Gbit/s, beyond ProRes 4K)."""

CAP_MARGIN_SECONDS = 1.0
"""How far past its cap normalisation may write, so that media exactly at the cap still passes."""

STDERR_TAIL_BYTES = 64 * 1024
"""The most of a run's stderr kept in memory (its end: where ffmpeg says why it stopped)."""


def ffmpeg_timeout(duration_seconds: float | None) -> float:
    """The deadline of an ffmpeg run over ``duration_seconds`` of media: 60 s + 2 x duration.

    Args:
        duration_seconds: The media's (or the parts' summed) duration; ``None`` or a value
            that is not a finite positive number counts as 0.

    Returns:
        Seconds the run may take before it is killed.
    """
    duration = duration_seconds or 0.0
    if not math.isfinite(duration) or duration < 0:
        duration = 0.0
    return FFMPEG_TIMEOUT_BASE_SECONDS + FFMPEG_SECONDS_PER_MEDIA_SECOND * duration


def hours_to_seconds(hours: float) -> float:
    """``hours`` in seconds (the settings speak hours, ffmpeg seconds)."""
    return hours * 3600.0


def check_duration(info: Measured | Sequence[Measured], max_hours: float) -> float:
    """Refuse media longer than ``max_hours``; for several parts, their summed duration.

    Call it after :func:`~watch_pipeline.media.probe.probe`, with the value of the setting
    ``watch.max_media_duration_hours``.

    Args:
        info: One probe result, or the probe results of a multi-part recording's parts.
        max_hours: The longest media accepted, in hours.

    Returns:
        The (summed) duration in seconds.

    Raises:
        MediaTooLong: The duration exceeds ``max_hours`` (skip reason ``too_long``).
        ProbeError: A duration is unknown even after counting (the media is unreadable).
    """
    infos = [info] if not isinstance(info, Sequence) else list(info)
    if any(item.duration is None for item in infos):
        raise ProbeError("the media's duration cannot be established")
    total = sum(item.duration or 0.0 for item in infos)
    if total > hours_to_seconds(max_hours):
        counted = any(item.duration_counted for item in infos)
        raise MediaTooLong(
            f"media lasts {describe_seconds(total)}{' or more' if counted else ''}, longer than "
            f"the {max_hours:g} h limit (watch.max_media_duration_hours)",
            duration=total,
            max_hours=max_hours,
        )
    return total


def describe_seconds(seconds: float) -> str:
    """``seconds`` for a person: ``42.0 s``, ``31.0 min`` or ``12.50 h``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
