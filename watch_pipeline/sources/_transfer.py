"""Resumable downloads into ``<dest>.part``: the pieces the S3 and SMB sources share.

A download appends to ``<dest>.part`` beside the destination and renames it to ``dest`` once its
size is verified, so ``dest`` is either absent or complete. A failed attempt keeps the partial
file; the next attempt continues after its last byte. Each protocol proves in its own way that a
partial file belongs to the current version of the remote file (S3: an ETag written beside it;
SMB: the partial file's mtime) and fetches in its own way; everything else is here.

Parallel downloads (:func:`fetch_in_parts`) write parts out of order with ``os.pwrite`` into a
preallocated partial file, so its size no longer says how much of it is valid: the caller
records the contiguous prefix of completed parts (S3: in its ETag file) and, when an attempt
fails, cuts the partial file back to that prefix (:func:`truncate`). Afterwards the file size is
again the resume point, as after a sequential download.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from watch_pipeline.sources.base import SourceError, UnsafePathError

MIB = 1024 * 1024

PART_SUFFIX = ".part"
"""A download is written to ``<dest>.part`` and renamed to ``dest`` when complete."""
RETRY_BACKOFF_SECONDS = 0.5
"""First wait before a re-request; doubled each time, at most :data:`RETRY_BACKOFF_MAX_SECONDS`."""
RETRY_BACKOFF_MAX_SECONDS = 8.0
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
"""Changes at every boot (Linux): tells whether the page cache a partial file relied on survived."""


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


def boot_id() -> str:
    """This boot's id (``""`` where the system does not tell it)."""
    try:
        return BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def preallocate(fd: int, size: int, what: Path) -> None:
    """Make the file of ``fd`` ``size`` bytes long, reserving its blocks where the file system can.

    Reserved blocks keep a file written out of order from fragmenting, and a full disk fails
    here, before any byte is fetched. Where ``posix_fallocate`` is not supported the file is only
    extended (sparse).

    Raises:
        SourceError: The space cannot be reserved (disk full, permissions).
    """
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            os.ftruncate(fd, size)
    except OSError as exc:
        raise SourceError(f"cannot write {what}: {exc.strerror or exc}") from exc


def pwrite_all(fd: int, data: memoryview, offset: int, what: Path) -> None:
    """Write all of ``data`` at ``offset`` of the file of ``fd``.

    Raises:
        SourceError: The file cannot be written (disk full, permissions).
    """
    try:
        while data:
            n = os.pwrite(fd, data, offset)
            data, offset = data[n:], offset + n
    except OSError as exc:
        raise SourceError(f"cannot write {what}: {exc.strerror or exc}") from exc


def truncate(part: Path, size: int) -> None:
    """Cut ``part`` to its first ``size`` bytes (nothing happens to a shorter or missing file)."""
    if file_size(part) > size:
        os.truncate(part, size)


def fetch_in_parts(
    start: int,
    total: int,
    *,
    part_size: int,
    workers: int,
    fetch: Callable[[int, int, threading.Event, Callable[[int], None]], None],
    on_prefix: Callable[[int], None],
    lookahead: int | None = None,
    first_end: int | None = None,
) -> None:
    """Fetch ``[start, total)`` as parts of ``part_size`` bytes, ``workers`` at a time.

    Each worker thread takes the lowest part not yet taken and calls
    ``fetch(first, end, stop, progress)`` for the bytes ``[first, end)``; ``fetch`` writes them
    itself (``os.pwrite`` at their offsets), calls ``progress(offset)`` after each write to say
    that ``[first, offset)`` is written, and returns once all are, or early once ``stop`` is set.

    ``on_prefix(offset)`` is called whenever the bytes known written from ``start`` on without
    a gap (the completed parts, then what the first incomplete part has written) grow: in
    increasing order, never concurrently, so the caller can record how much of the file is
    whole.

    ``first_end`` ends the first part elsewhere (the parts after it are of ``part_size`` from
    there): a caller that has already fetched the start of ``[start, total)`` on a stream of its
    own keeps the later part boundaries where a download from an earlier start put them.

    A part is taken only while it lies within ``lookahead`` parts (default ``2 * workers``) of
    the first incomplete one, so one slow part cannot leave many completed parts beyond the
    prefix, which a crash would waste.

    The first exception of any ``fetch`` sets ``stop`` (the other workers finish their current
    write and return) and is raised once all workers have ended; a part that returns after
    ``stop`` was set counts as incomplete. An exception in the calling thread while it waits
    (a run being terminated) also stops the workers before it propagates.
    """
    head = [(start, first_end)] if first_end is not None and start < first_end < total else []
    rest = head[0][1] if head else start
    bounds = head + [(first, min(first + part_size, total))
                     for first in range(rest, total, part_size)]
    ahead = lookahead or 2 * workers
    changed = threading.Condition()
    stop = threading.Event()
    state = {"next": 0, "prefix": 0}  # the next part to take; the first incomplete part
    complete: set[int] = set()
    errors: list[BaseException] = []

    def take() -> int | None:
        with changed:
            while not stop.is_set() and state["next"] - state["prefix"] >= ahead:
                changed.wait()
            if stop.is_set() or state["next"] >= len(bounds):
                return None
            state["next"] += 1
            return state["next"] - 1

    def progress(index: int, offset: int) -> None:
        with changed:
            if index == state["prefix"] and not stop.is_set():
                on_prefix(offset)

    def completed(index: int) -> None:
        with changed:
            if stop.is_set():
                return
            complete.add(index)
            if index != state["prefix"]:
                return
            while state["prefix"] in complete:
                state["prefix"] += 1
            on_prefix(bounds[state["prefix"] - 1][1])
            changed.notify_all()

    def work() -> None:
        while (index := take()) is not None:
            try:
                fetch(*bounds[index], stop, lambda offset, i=index: progress(i, offset))
                completed(index)
            except BaseException as exc:
                with changed:
                    errors.append(exc)
                    stop.set()
                    changed.notify_all()
                return

    threads = [threading.Thread(target=work, name=f"download-part-{i}", daemon=True)
               for i in range(min(workers, len(bounds)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:
        with changed:
            stop.set()
            changed.notify_all()
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]
