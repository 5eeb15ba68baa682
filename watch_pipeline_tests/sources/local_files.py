"""Helpers for the local source tests: write a file, split a listing."""

from __future__ import annotations

from pathlib import Path

from watch_pipeline.sources.base import RejectedEntry, SourceEntry
from watch_pipeline.sources.local import LocalSourceClient


def write(path: Path, data: bytes = b"x") -> Path:
    """Create ``path`` (and its folders) holding ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def listing(client: LocalSourceClient, **kwargs) -> tuple[set[str], list[RejectedEntry]]:
    """The listed files' paths, and the rejected entries in listing order."""
    entries = list(client.list_files(**kwargs))
    files = {e.remote_path for e in entries if isinstance(e, SourceEntry)}
    return files, [e for e in entries if isinstance(e, RejectedEntry)]
