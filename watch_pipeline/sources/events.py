"""File-system events for local sources: the ``watch-pipeline events`` watcher.

Polling stays the source of truth; events only make things sooner. The watcher keeps one
inotify watch (through ``watchdog``) on the root of every enabled local source with
``use_fs_events`` while the setting ``watch.fs_events_enabled`` is on, and records what it sees
in the catalog's ``watch_event`` table. The watch sensor then scans a source with fresh events at
once, and the planner treats a file whose writer closed it (``IN_CLOSE_WRITE``) or that was moved
in whole (``IN_MOVED_TO``) as stable after a short quiet delay
(:class:`~watch_pipeline.pipeline.plan.FileEvents`); without such an event the stability window
applies as before.

Each source's mode is on its row (``fs_events_mode``, ``fs_events_reason``):

* ``events`` — watched; the reason notes events lost earlier, if any;
* ``polling`` with the reason — the setting or ``use_fs_events`` is off, the root is on a network
  file system (NFS, CIFS/SMB, FUSE, ...: events do not report changes made by other machines),
  the inotify watch limit was hit (``ENOSPC``, or more folders than ``max_watches``), the root is
  missing, or the watcher stopped.

Lost events never lose files: when a watch starts (the watcher started or restarted, a source
was switched on) and when the kernel's event queue overflowed, the watcher records a ``rescan``
event, so the next sensor tick scans the source in full. The source list is re-read every
``refresh_seconds``, so configuration changes apply without a restart. Events are buffered in
memory and written every ``flush_seconds``, one row per path and kind per write.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.inotify_c import Inotify, InotifyConstants

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.settings import get_setting
from watch_pipeline.sources.base import SourceError
from watch_pipeline.sources.local import resolve_root

log = logging.getLogger(__name__)

# File-system types whose changes made elsewhere never reach this kernel's inotify.
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs",
    "lustre", "gpfs", "davfs", "virtiofs", "fuse", "fuseblk"})
# Events are kept this long; a scan has long since looked at their files.
EVENT_RETENTION = timedelta(hours=2)


def is_network_fs(fs_type: str) -> bool:
    """Whether a mount of ``fs_type`` is a network or FUSE file system (``fuse.sshfs`` too)."""
    return fs_type in NETWORK_FS_TYPES or fs_type.startswith("fuse.")


def mount_fs_type(path: Path, mountinfo: str | None = None) -> str:
    """The file-system type of the mount holding ``path``, from ``/proc/self/mountinfo``.

    Args:
        path: A resolved path.
        mountinfo: The table's text; ``None`` reads this process's.

    Returns:
        The type (``ext4``, ``nfs4``, ``fuse.sshfs``, ...), or ``""`` when it cannot be told.
    """
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return ""
    target, best, fs_type = str(path), -1, ""
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 5:
            continue
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > best:
            after = fields[fields.index("-") + 1:]
            best, fs_type = len(point), after[0] if after else ""
    return fs_type


def _unescape(text: str) -> str:
    r"""Mount points escape space, tab, newline and backslash as ``\ooo``."""
    for code in ("040", "011", "012", "134"):
        text = text.replace("\\" + code, chr(int(code, 8)))
    return text


# -- the one watchdog quirk: IN_Q_OVERFLOW is dropped silently ---------------------------------

_overflows = 0


def _install_overflow_counter() -> None:
    """Count the kernel's queue overflows, which watchdog 6 skips without a word."""
    original = Inotify._parse_event_buffer
    if getattr(original, "counts_overflows", False):
        return

    def parse(event_buffer: bytes) -> Iterator[tuple[int, int, int, bytes]]:
        global _overflows
        for wd, mask, cookie, name in original(event_buffer):
            if wd == -1 and mask & InotifyConstants.IN_Q_OVERFLOW:
                _overflows += 1
            yield wd, mask, cookie, name

    parse.counts_overflows = True  # type: ignore[attr-defined]
    Inotify._parse_event_buffer = staticmethod(parse)  # type: ignore[method-assign,assignment]


# -- the watcher -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Seen:
    source_id: int
    remote_path: str
    kind: str
    at: datetime


class _Handler(FileSystemEventHandler):
    """Turns watchdog's events below one root into catalog event rows."""

    def __init__(self, source_id: int, root: Path, sink: queue.SimpleQueue[_Seen]) -> None:
        self.source_id, self.root, self.sink = source_id, str(root), sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        now = datetime.now(UTC)
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            self._put(event.src_path, "deleted", now)
            self._put(event.dest_path, "moved", now)
        elif isinstance(event, FileClosedEvent):
            self._put(event.src_path, "closed", now)
        elif isinstance(event, FileCreatedEvent):
            # Synthetic: a file inside a folder that was moved in whole.
            self._put(event.src_path, "moved" if event.is_synthetic else "created", now)
        elif isinstance(event, FileModifiedEvent):
            self._put(event.src_path, "modified", now)
        elif isinstance(event, FileDeletedEvent):
            self._put(event.src_path, "deleted", now)
        # Opened / closed without writing: readers (our own scans included) change nothing.

    def _put(self, path: bytes | str, kind: str, at: datetime) -> None:
        path = os.fsdecode(path)
        if not path:
            return
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        if rel.startswith("../") or any(part.startswith(".") for part in rel.split("/")):
            return  # hidden and temporary names: the listing skips them too
        self.sink.put(_Seen(self.source_id, rel, kind, at))


@dataclass
class _Watch:
    key: tuple[str, bool]  # (local_path, recursive) the watch was made for
    watch: object          # watchdog's ObservedWatch


class EventWatcher:
    """Keeps inotify watches on the roots of local sources and records their events.

    Args:
        catalog: The catalog (sources are read from it, events and modes written to it).
        watch_folder: ``WATCH_FOLDER_PATH``; local sources live below it.
        fs_type: The file-system type of the mount holding a path (:func:`mount_fs_type`).
        max_watches: At most this many folders are watched per source (``None``: as many as
            the kernel allows); a source with more falls back to polling.
        refresh_seconds: How often the source list is read again.
        retry_seconds: How long a source that could not be watched stays polled before the
            next attempt.
    """

    def __init__(self, catalog: Catalog, watch_folder: Path, *,
                 fs_type: Callable[[Path], str] = mount_fs_type, max_watches: int | None = None,
                 refresh_seconds: float = 5.0, retry_seconds: float = 60.0) -> None:
        self.catalog, self.watch_folder = catalog, Path(watch_folder)
        self.fs_type, self.max_watches = fs_type, max_watches
        self.refresh_seconds, self.retry_seconds = refresh_seconds, retry_seconds
        self._sink: queue.SimpleQueue[_Seen] = queue.SimpleQueue()
        self._watches: dict[int, _Watch] = {}
        self._failed: dict[int, tuple[tuple[str, bool], float]] = {}
        self._observer = InotifyObserver(generate_full_events=True)
        self._overflows_seen = 0
        self._last_prune = 0.0

    # -- lifecycle

    def start(self) -> None:
        """Start the observer thread (watches are added by :meth:`refresh`)."""
        _install_overflow_counter()
        self._overflows_seen = _overflows
        self._observer.start()

    def close(self) -> None:
        """Stop watching; every watched source is recorded as polled again."""
        self.flush()
        for source_id in list(self._watches):
            self._unwatch(source_id)
        self._observer.stop()
        self._observer.join(timeout=10)
        self._set_modes({sid: (queries.POLLING_MODE, "the events watcher stopped")
                         for sid in self._known_event_sources()})

    def run(self, stop: threading.Event, *, flush_seconds: float = 0.2) -> None:
        """Watch until ``stop`` is set: refresh the sources, write the events, repeat."""
        self.start()
        next_refresh = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() >= next_refresh:
                    self._guarded(self.refresh)
                    next_refresh = time.monotonic() + self.refresh_seconds
                self._guarded(self.flush)
                stop.wait(flush_seconds)
        finally:
            self._guarded(self.close)

    @property
    def watched(self) -> set[int]:
        """Ids of the sources watched now."""
        return set(self._watches)

    # -- the source list

    def refresh(self) -> None:
        """Read the local sources and bring the watches and recorded modes in line."""
        with self.catalog.session() as session:
            setting_on = bool(get_setting(session, "watch.fs_events_enabled"))
            sources = queries.event_sources(session, setting_on=setting_on)
        modes: dict[int, tuple[str, str | None]] = {}
        listed = {s.id for s in sources}
        for source_id in [sid for sid in self._watches if sid not in listed]:
            self._unwatch(source_id)  # the source was deleted
        lost = self._overflow_happened()
        for source in sources:
            key = (source.local_path, source.recursive)
            if not source.wanted:
                self._unwatch(source.id)
                if source.fs_events_mode is not None:
                    modes[source.id] = (queries.POLLING_MODE, _why_off(setting_on))
                continue
            current = self._watches.get(source.id)
            if current is not None and current.key == key and self._alive(current):
                if lost:
                    modes[source.id] = (queries.EVENTS_MODE, lost)
                    self._sink.put(_Seen(source.id, "", queries.RESCAN, datetime.now(UTC)))
                continue
            if current is not None:  # its folder or recursion changed, or its thread ended
                self._unwatch(source.id)
            failed = self._failed.get(source.id)
            if failed and failed[0] == key and time.monotonic() < failed[1]:
                continue
            modes[source.id] = self._watch(source.id, key)
        self._set_modes(modes)

    def _watch(self, source_id: int, key: tuple[str, bool]) -> tuple[str, str | None]:
        """Start watching one source's root; its mode and reason."""
        local_path, recursive = key
        try:
            root = resolve_root(self.watch_folder, local_path)
        except (SourceError, OSError) as exc:
            return self._fail(source_id, key, f"cannot watch the source folder: {exc}")
        fs_type = self.fs_type(root)
        if is_network_fs(fs_type):
            return self._fail(source_id, key, f"network file system ({fs_type}): changes made "
                                              "on other machines raise no events")
        if self.max_watches is not None:
            folders = _count_folders(root, recursive, stop_after=self.max_watches + 1)
            if folders > self.max_watches:
                return self._fail(source_id, key, f"inotify watch limit: more than "
                                                  f"{self.max_watches} folders to watch")
        try:
            watch = self._observer.schedule(_Handler(source_id, root, self._sink), str(root),
                                            recursive=recursive)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                return self._fail(source_id, key, "inotify watch limit reached "
                                                  "(fs.inotify.max_user_watches)")
            return self._fail(source_id, key, f"cannot watch the source folder: {exc}")
        self._watches[source_id] = _Watch(key, watch)
        self._failed.pop(source_id, None)
        # Whatever landed while nobody watched is found by a full scan on the next tick.
        self._sink.put(_Seen(source_id, "", queries.RESCAN, datetime.now(UTC)))
        log.info("source %d: watching %s (%s)", source_id, root, fs_type or "unknown fs")
        return queries.EVENTS_MODE, None

    def _fail(self, source_id: int, key: tuple[str, bool], reason: str) -> tuple[str, str]:
        self._failed[source_id] = (key, time.monotonic() + self.retry_seconds)
        log.warning("source %d: polling, %s", source_id, reason)
        return queries.POLLING_MODE, reason

    def _unwatch(self, source_id: int) -> None:
        current = self._watches.pop(source_id, None)
        if current is not None:
            try:
                self._observer.unschedule(current.watch)  # type: ignore[arg-type]
            except (KeyError, OSError):
                pass  # its thread already ended

    def _alive(self, current: _Watch) -> bool:
        return any(e.watch == current.watch and e.is_alive() for e in self._observer.emitters)

    def _overflow_happened(self) -> str | None:
        if _overflows == self._overflows_seen:
            return None
        self._overflows_seen = _overflows
        return (f"events were lost at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC (inotify queue "
                "overflow); a full scan caught up")

    def _known_event_sources(self) -> list[int]:
        with self.catalog.session() as session:
            return [s.id for s in queries.event_sources(session, setting_on=True)
                    if s.fs_events_mode == queries.EVENTS_MODE]

    def _set_modes(self, modes: dict[int, tuple[str, str | None]]) -> None:
        if not modes:
            return
        now = datetime.now(UTC)
        with self.catalog.session() as session:
            for source_id, (mode, reason) in modes.items():
                queries.set_fs_events_mode(session, source_id, mode, reason, now)

    # -- events

    def flush(self) -> int:
        """Write the buffered events, one row per path and kind; returns the rows written."""
        newest: dict[tuple[int, str, str], datetime] = {}
        while True:
            try:
                seen = self._sink.get_nowait()
            except queue.Empty:
                break
            newest[(seen.source_id, seen.remote_path, seen.kind)] = seen.at
        rows = [{"watch_source_id": sid, "remote_path": path[:2048], "kind": kind, "at": at}
                for (sid, path, kind), at in sorted(newest.items(), key=lambda kv: kv[1])]
        prune = time.monotonic() - self._last_prune > 600
        if not rows and not prune:
            return 0
        try:
            with self.catalog.session() as session:
                queries.record_events(session, rows)
                if prune:
                    queries.prune_events(session, datetime.now(UTC) - EVENT_RETENTION)
        except Exception:
            for (sid, path, kind), at in newest.items():  # written on the next flush
                self._sink.put(_Seen(sid, path, kind, at))
            raise
        if prune:
            self._last_prune = time.monotonic()
        return len(rows)

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # a busy or restarting catalog: the next round tries again
            log.exception("events watcher: %s failed; retrying", step.__name__)


def _why_off(setting_on: bool) -> str:
    if not setting_on:
        return "watch.fs_events_enabled is false"
    return "use_fs_events is off or the source is disabled"


def _count_folders(root: Path, recursive: bool, *, stop_after: int) -> int:
    """Folders an inotify watch of ``root`` needs (one each), counting no further than needed."""
    if not recursive:
        return 1
    count = 0
    for _dirpath, _dirnames, _files in os.walk(root):
        count += 1
        if count >= stop_after:
            break
    return count
