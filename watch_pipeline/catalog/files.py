"""Durable writes on the local disk, shared by the key files and the local object store."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable.

    Best effort: skipped where a directory cannot be opened or fsynced (e.g. Windows).
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
