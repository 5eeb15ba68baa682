"""The exceptions of ffprobe's family, and the timeout every ffmpeg/ffprobe run shares.

They live apart from ``probe.py`` so that ``limits.py`` (numbers, the duration check) and
``process.py`` (the runner) can raise them without an import circle. ``probe.py`` re-exports
``ProbeError``; the other modules' errors (``AudioError``, ``StitchError``) stay with them, and
their timeouts subclass both their own error and :class:`ToolTimeout`.
"""

from __future__ import annotations


class ToolTimeout(Exception):
    """An ffmpeg or ffprobe run outlived its deadline and was killed with its children.

    Each module raises a subclass that is also its own error (``ProbeTimeout``, ``AudioTimeout``,
    ``StitchTimeout``), so callers catching ``ProbeError``/``AudioError``/``StitchError`` keep
    working, and ``except ToolTimeout`` catches every timeout.
    """


class ProbeError(Exception):
    """ffprobe could not read the file as audio or video (or could not run at all)."""


class ProbeTimeout(ProbeError, ToolTimeout):
    """ffprobe (or the bounded duration count) did not finish in time and was killed."""


class MediaTooLong(ProbeError):
    """The media lasts longer than ``watch.max_media_duration_hours`` allows (skip: too_long).

    Attributes:
        duration: The probed duration in seconds.
        max_hours: The limit it broke, in hours.
    """

    def __init__(self, message: str, *, duration: float, max_hours: float) -> None:
        super().__init__(message)
        self.duration = duration
        self.max_hours = max_hours
