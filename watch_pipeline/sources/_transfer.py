"""Resumable downloads into ``<dest>.part``: the pieces the S3 and SMB sources share.

A download appends to ``<dest>.part`` beside the destination and renames it to ``dest`` once its
size is verified, so ``dest`` is either absent or complete. A failed attempt keeps the partial
file; the next attempt continues after its last byte. Each protocol proves in its own way that a
partial file belongs to the current version of the remote file (S3: an ETag written beside it;
SMB: the partial file's mtime) and fetches in its own way; everything else is here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from watch_pipeline.sources.base import SourceError, UnsafePathError

MIB = 1024 * 1024

PART_SUFFIX = ".part"
"""A download is written to ``<dest>.part`` and renamed to ``dest`` when complete."""
RETRY_BACKOFF_SECONDS = 0.5
"""First wait before a re-request; doubled each time, at most :data:`RETRY_BACKOFF_MAX_SECONDS`."""
RETRY_BACKOFF_MAX_SECONDS = 8.0


def destination(dest: Path) -> Path:
    """Return ``dest`` as a :class:`Path` with its folder created.

    Raises:
        UnsafePathError: ``dest`` names a folder (an existing one, or a name such as ``.`` that
            would make the download replace the folder it was meant to land in).
    """
    dest = Path(dest)
    if dest.name in ("", ".", "..") or dest.is_dir():
        raise UnsafePathError(f"download destination {dest} is a folder, not a file name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


def partial_file(dest: Path) -> Path:
    """Return the partial download of ``dest`` (``<dest>.part``)."""
    dest = Path(dest)
    return dest.with_name(dest.name + PART_SUFFIX)


def file_size(path: Path) -> int:
    """The size of ``path``; 0 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def remove(*paths: Path) -> None:
    """Delete ``paths``; those already gone are fine."""
    for path in paths:
        path.unlink(missing_ok=True)


def check_free_space(folder: Path, need: int) -> None:
    """Raise :class:`SourceError` unless ``folder``'s file system has ``need`` bytes free."""
    have = shutil.disk_usage(folder).free
    if need > have:
        raise SourceError(f"not enough free space in {folder}: need {need}, have {have} bytes")


def failures_in_a_row(part: Path, size_before: int, failures: int) -> int:
    """The failure count after one more failed attempt: it restarts at 1 after progress."""
    return 1 if file_size(part) > size_before else failures + 1


def backoff(failures: int, first: float | None = None) -> float:
    """Seconds to wait after ``failures`` failures in a row (exponential, capped)."""
    start = RETRY_BACKOFF_SECONDS if first is None else first
    return max(0.0, min(start * 2 ** (failures - 1), RETRY_BACKOFF_MAX_SECONDS))


def append_stream(readinto: Callable[[memoryview], int], part: Path, chunk_size: int) -> None:
    """Append what ``readinto`` delivers to ``part``, ``chunk_size`` bytes of memory at a time.

    Errors of ``readinto`` propagate unchanged (the caller decides what is worth a retry).

    Raises:
        SourceError: ``part`` cannot be written (disk full, permissions).
    """
    view = memoryview(bytearray(chunk_size))
    with open(part, "ab") as out:
        while n := readinto(view):
            try:
                out.write(view[:n])
            except OSError as exc:
                raise SourceError(f"cannot write {part}: {exc.strerror or exc}") from exc


def finish(part: Path, dest: Path, total: int, what: str, *, sidecars: tuple[Path, ...] = ()
           ) -> Path:
    """Rename ``part`` to ``dest`` if it holds exactly ``total`` bytes, else discard it.

    ``sidecars`` (files describing ``part``) are removed either way.

    Raises:
        SourceError: ``part`` is shorter ("truncated download") or longer than ``total``.
    """
    got = file_size(part)
    if got != total:
        remove(part, *sidecars)
        if got < total:
            raise SourceError(f"truncated download of {what}: got {got} of {total} bytes")
        raise SourceError(f"download of {what} has {got} bytes, expected {total}")
    os.replace(part, dest)
    remove(*sidecars)
    return dest
