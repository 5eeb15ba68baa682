"""Global tuning knobs stored in the ``settings`` table, with coded defaults.

A change applies on the next sensor tick: readers call these getters each time they need a value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from watch_pipeline.catalog.models import Setting
from watch_pipeline.catalog.validation import ValidationError


@dataclass(frozen=True)
class SettingSpec:
    """One known setting: its type, default, allowed range and meaning."""

    key: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive lower bound (a float that must be "> 0")


SETTINGS: dict[str, SettingSpec] = {
    s.key: s
    for s in (
        SettingSpec("watch.enabled", bool, True,
                    "Master switch: when false no source is scanned."),
        SettingSpec("watch.file_stability_seconds", int, 30,
                    "A file must keep its size and mtime/ETag this long before import.",
                    minimum=0, maximum=86_400),
        SettingSpec("watch.max_concurrent_imports", int, 5,
                    "Most import runs in flight at once (also the limit of the Dagster "
                    "concurrency pool watch_imports); more wait.",
                    minimum=1, maximum=1_000),
        SettingSpec("watch.fs_events_enabled", bool, True,
                    "Allow local sources with use_fs_events to react to file-system events "
                    "(the watch-pipeline events service records them).",
                    minimum=None, maximum=None),
        SettingSpec("watch.fs_events_quiet_seconds", float, 1.0,
                    "With events on, a file closed after writing or moved into place is stable "
                    "once this long passed with no further event on it.",
                    minimum=0, maximum=3_600),
        # At most 36 h: a normalised 16 kHz mono WAV of it stays under RIFF's 4 GiB; the
        # default equals media.limits.DEFAULT_MAX_DURATION_HOURS (a test keeps them equal).
        SettingSpec("watch.max_media_duration_hours", float, 12.0,
                    "Media lasting longer (hours, after probing; parts summed) is skipped with "
                    "reason too_long, and transcription normalises no more than this.",
                    above=0, maximum=36),
        SettingSpec("import.url_max_bytes", int, 20 * 1024**3,
                    "Largest download `media import --url` (and manual_import_job) accepts, in "
                    "bytes; a larger body is refused before or while it arrives.",
                    minimum=1, maximum=1024**4),
        SettingSpec("import.url_timeout_seconds", float, 60.0,
                    "A URL download gives up on a server that does not connect or send more "
                    "bytes for this long (a dropped connection is resumed).",
                    above=0, maximum=3_600),
        SettingSpec("import.url_max_redirects", int, 5,
                    "Redirects a URL download follows before giving up.",
                    minimum=0, maximum=20),
        SettingSpec("previews.enabled", bool, True,
                    "Import runs make a thumbnail and a waveform of each media; false skips "
                    "them (materializing the thumbnail or waveform asset still makes them)."),
        SettingSpec("fingerprints.recompute_complete", bool, False,
                    "Set by recompute_fingerprints_job; false makes the sensor launch it once."),
    )
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _spec(key: str) -> SettingSpec:
    try:
        return SETTINGS[key]
    except KeyError:
        known = ", ".join(sorted(SETTINGS))
        raise ValidationError("key", f"unknown setting {key!r}; known settings: {known}") from None


def coerce(key: str, value: Any) -> Any:
    """Convert ``value`` (a JSON value or CLI text) to the setting's type and check its range.

    Raises:
        ValidationError: Naming the setting and the rule broken.
    """
    spec = _spec(key)
    if spec.type is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValidationError(key, "must be true or false")
    if spec.type is int:
        if isinstance(value, bool):
            raise ValidationError(key, "must be an integer")
        try:
            number = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ValidationError(key, "must be an integer") from None
        if spec.minimum is not None and number < spec.minimum:
            raise ValidationError(key, f"must be at least {spec.minimum}")
        if spec.maximum is not None and number > spec.maximum:
            raise ValidationError(key, f"must be at most {spec.maximum}")
        return number
    if spec.type is float:
        return _coerce_float(spec, value)
    raise AssertionError(f"unsupported setting type {spec.type}")  # pragma: no cover


def _coerce_float(spec: SettingSpec, value: Any) -> float:
    key = spec.key
    if isinstance(value, bool):
        raise ValidationError(key, "must be a number")
    try:
        number = float(str(value).strip()) if not isinstance(value, int | float) else float(value)
    except ValueError:
        raise ValidationError(key, "must be a number") from None
    if not math.isfinite(number):
        raise ValidationError(key, "must be a finite number")
    if spec.above is not None and number <= spec.above:
        raise ValidationError(key, f"must be greater than {spec.above:g}")
    if spec.minimum is not None and number < spec.minimum:
        raise ValidationError(key, f"must be at least {spec.minimum:g}")
    if spec.maximum is not None and number > spec.maximum:
        raise ValidationError(key, f"must be at most {spec.maximum:g}")
    return number


def get_setting(session: Session, key: str) -> Any:
    """The stored value of ``key``, or its coded default."""
    spec = _spec(key)
    row = session.get(Setting, key)
    if row is None:
        return spec.default
    try:
        return coerce(key, row.value)
    except ValidationError:
        # A value written by hand into the table that no longer fits: the default is safer.
        return spec.default


def set_setting(session: Session, key: str, value: Any) -> Any:
    """Validate and store ``value`` for ``key``; returns the stored (typed) value."""
    typed = coerce(key, value)
    row = session.get(Setting, key)
    if row is None:
        session.add(Setting(key=key, value=typed))
    else:
        row.value = typed
    session.flush()
    return typed


def all_settings(session: Session) -> dict[str, Any]:
    """Every known setting with its effective value."""
    stored = {r.key: r.value for r in session.scalars(sa.select(Setting))}
    result = {}
    for key, spec in SETTINGS.items():
        result[key] = coerce(key, stored[key]) if key in stored else spec.default
    return result


@dataclass(frozen=True)
class WatchSettings:
    """A snapshot of the ``watch.*`` settings, read once per tick."""

    enabled: bool
    file_stability_seconds: int
    max_concurrent_imports: int
    fs_events_enabled: bool
    max_media_duration_hours: float = 12.0
    fs_events_quiet_seconds: float = 1.0

    @classmethod
    def load(cls, session: Session) -> WatchSettings:
        """Read every ``watch.*`` setting from ``session``."""
        values = all_settings(session)
        return cls(
            enabled=values["watch.enabled"],
            file_stability_seconds=values["watch.file_stability_seconds"],
            max_concurrent_imports=values["watch.max_concurrent_imports"],
            fs_events_enabled=values["watch.fs_events_enabled"],
            max_media_duration_hours=values["watch.max_media_duration_hours"],
            fs_events_quiet_seconds=values["watch.fs_events_quiet_seconds"],
        )

