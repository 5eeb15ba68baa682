"""Process helpers shared by the benchmarks that start Dagster (burst.py, race.py)."""

from __future__ import annotations

import os
from pathlib import Path


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, or ``""`` when it does not exist."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def leftover_pids(home: Path) -> list[int]:
    """Processes still running with this benchmark's ``DAGSTER_HOME`` (all of them ours)."""
    needle = f"DAGSTER_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
