"""Housekeeping: temp files left behind by interrupted imports."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TEMP_MAX_AGE_SECONDS = 2 * 3600


@dataclass(frozen=True)
class CleanupReport:
    """What a temp-dir cleanup removed and kept."""

    removed: tuple[str, ...]
    kept_in_use: tuple[str, ...]
    bytes_freed: int


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for child in path.rglob("*"):
            try:
                newest = max(newest, child.lstat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for child in path.rglob("*"):
        try:
            if child.is_file() and not child.is_symlink():
                total += child.stat().st_size
        except FileNotFoundError:
            continue
    return total


def cleanup_temp(scratch: Path, *, in_use: Iterable[str],
                 max_age_seconds: float = TEMP_MAX_AGE_SECONDS,
                 now: float | None = None) -> CleanupReport:
    """Remove stale import temp dirs and transcription copies.

    An item is stale when its newest file is older than ``max_age_seconds``. The temp dir of a
    partition in ``in_use`` (a queued or running import) is never removed, however old.
    """
    now = time.time() if now is None else now
    busy = set(in_use)
    removed: list[str] = []
    kept: list[str] = []
    freed = 0
    candidates = []
    imports_dir = scratch / "imports"
    if imports_dir.is_dir():
        candidates += [(p, p.name) for p in imports_dir.iterdir()]
    if scratch.is_dir():
        candidates += [(p, None) for p in scratch.glob("transcribe-*")]
    for path, partition in candidates:
        try:
            age = now - _newest_mtime(path)
        except FileNotFoundError:
            continue
        if age < max_age_seconds:
            continue
        if partition is not None and partition in busy:
            kept.append(str(path))
            continue
        size = _size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(str(path))
        freed += size
    return CleanupReport(tuple(removed), tuple(kept), freed)
