"""Checks every object store passes, whatever its backend (the local and S3 tests call them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from watch_pipeline.store.base import ObjectStore, ObjectStoreError

UNSAFE_KEYS = ["", "/etc/passwd", "/abs", "../x", "a/../../b", "a/../b", "a/..", "a\\b", "a\x00b",
               "a//b", "a/", "."]


def assert_key_refused(store: ObjectStore, key: str, src: Path) -> None:
    """Every operation of ``store`` refuses ``key`` (``src`` is a readable file to upload)."""
    operations = (
        lambda: store.put_file(key, src),
        lambda: store.put_bytes(key, b"x"),
        lambda: store.head(key),
        lambda: store.open(key),
        lambda: store.delete(key),
        lambda: store.stream_url(key),
    )
    for operation in operations:
        with pytest.raises(ObjectStoreError):
            operation()
