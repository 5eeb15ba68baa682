"""File-system events for local sources: real inotify, real files, the real catalog.

The watcher (``watch-pipeline events``' :class:`EventWatcher`) runs in a thread; a "tick" is
what the local watch sensor does: scan the due sources, then claim imports. "Requested" means
the tick would start an import run for the file. The stability window stays at its default
30 s throughout, so a file requested sooner was released by its events, not by the window.
"""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from watchdog.observers.inotify_c import Inotify, InotifyConstants

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.models import WatchEvent, WatchSource, WatchSourceFile
from watch_pipeline.catalog.settings import WatchSettings, set_setting
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.pipeline import claims, scan
from watch_pipeline.pipeline import plan as planner
from watch_pipeline.sources.events import EventWatcher, is_network_fs, mount_fs_type
from watch_pipeline.sources.local import LocalSourceClient

WINDOW = timedelta(seconds=30)  # the default stability window (watch.file_stability_seconds)
# Only a bound against a hang; every assertion is about what happened, not how fast.
PATIENCE = 25.0


# -- helpers -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wav_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("media") / "tone.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=2", str(path)], check=True)
    return path.read_bytes()


@pytest.fixture
def watch(sqlite_catalog, tmp_path):
    """The watch folder and one local source on its root, events allowed (default window)."""
    root = tmp_path / "watch"
    root.mkdir()
    with sqlite_catalog.session() as s:
        source_id = create_source(s, None, fields={
            "name": "w", "source_type": "local", "local_path": ".", "use_fs_events": True}).id
        set_setting(s, "watch.fs_events_enabled", True)
    return root, source_id


@contextmanager
def running(watcher: EventWatcher):
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), kwargs={"flush_seconds": 0.05})
    thread.start()
    try:
        yield watcher
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


def _watcher(catalog, root: Path, **kwargs) -> EventWatcher:
    return EventWatcher(catalog, root, refresh_seconds=0.3, **kwargs)


@contextmanager
def watching(catalog, watch: tuple[Path, int]):
    """A running watcher of the ``watch`` fixture's source, once the source is in events mode."""
    root, source_id = watch
    with running(_watcher(catalog, root)) as watcher:
        wait_for(lambda: mode(catalog, source_id) == ("events", None), "events mode")
        yield watcher


@contextmanager
def polling(catalog, watch: tuple[Path, int], why: str, **kwargs):
    """A running watcher that fell back to polling the source, saying ``why``, and watches
    nothing."""
    root, source_id = watch
    with running(_watcher(catalog, root, **kwargs)) as watcher:
        wait_for(lambda: mode(catalog, source_id)[0] == "polling", "polling mode")
        assert why in mode(catalog, source_id)[1]
        assert watcher.watched == set()
        yield watcher


def tick(catalog, root: Path) -> set[str]:
    """One local watch-sensor tick: scan what is due, claim imports; the paths requested."""
    with catalog.session() as s:
        settings = WatchSettings.load(s)
        enabled = queries.enabled_sources(s, "local")
    scan.scan_due_sources(catalog, enabled, settings=settings,
                          client_for=lambda row: LocalSourceClient(root / row.local_path),
                          budget_seconds=40, log=logging.getLogger("test"),
                          first_import_seconds=2.0)
    return {r.remote_path for r in claims.claim_imports(catalog, [e.id for e in enabled],
                                                        slots=50)}


def wait_for(condition, what: str):
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"gave up waiting for {what}")


def mode(catalog, source_id: int) -> tuple[str | None, str | None]:
    with catalog.session() as s:
        src = s.get(WatchSource, source_id)
        return src.fs_events_mode, src.fs_events_reason


def events_of(catalog, path: str) -> list[str]:
    with catalog.session() as s:
        return list(s.scalars(sa.select(WatchEvent.kind).where(WatchEvent.remote_path == path)
                              .order_by(WatchEvent.at)))


def rows(catalog) -> dict[str, str]:
    with catalog.session() as s:
        return dict(s.execute(sa.select(WatchSourceFile.remote_path,
                                        WatchSourceFile.status)).tuples().all())


def move_in(data: bytes, outside: Path, dest: Path) -> datetime:
    """Write a file outside the watch folder, then move it in whole; its mtime."""
    outside.mkdir(exist_ok=True)
    tmp = outside / dest.name
    tmp.write_bytes(data)
    os.rename(tmp, dest)
    return datetime.fromtimestamp(dest.stat().st_mtime, UTC)


def tick_until_requested(catalog, root: Path, name: str) -> datetime:
    def requested():
        return name in tick(catalog, root) and datetime.now(UTC)
    return wait_for(requested, f"{name} to be requested")


# -- with events -------------------------------------------------------------------------------

def test_a_file_written_slowly_is_imported_after_its_writer_closes_it(
        sqlite_catalog, watch, wav_bytes):
    root = watch[0]
    with watching(sqlite_catalog, watch):
        tick(sqlite_catalog, root)  # the first scan (the watch's own rescan) of an empty folder
        step = -(-len(wav_bytes) // 5)
        with open(root / "slow.wav", "wb") as fh:
            for i in range(5):
                fh.write(wav_bytes[i * step:(i + 1) * step])
                fh.flush()
                writes = i + 1
                wait_for(lambda n=writes: events_of(sqlite_catalog, "slow.wav").count("modified")
                         >= n, "the write's event")
                time.sleep(1)  # longer than the quiet delay: only a close may release it
                assert "slow.wav" not in tick(sqlite_catalog, root), f"after write {writes}"
                assert rows(sqlite_catalog)["slow.wav"] == "pending"
        last_write = datetime.fromtimestamp((root / "slow.wav").stat().st_mtime, UTC)
        requested_at = tick_until_requested(sqlite_catalog, root, "slow.wav")
    assert "closed" in events_of(sqlite_catalog, "slow.wav")
    assert requested_at - last_write < WINDOW  # its close released it, not the 30 s window


def test_a_file_moved_in_whole_is_imported_without_waiting_for_the_window(
        sqlite_catalog, watch, wav_bytes, tmp_path):
    root = watch[0]
    with watching(sqlite_catalog, watch):
        tick(sqlite_catalog, root)
        (root / "in").mkdir()
        time.sleep(0.5)  # the new folder's watch is added by the watcher
        mtime = move_in(wav_bytes, tmp_path / "outside", root / "in" / "moved.wav")
        requested_at = tick_until_requested(sqlite_catalog, root, "in/moved.wav")
    assert events_of(sqlite_catalog, "in/moved.wav") == ["moved"]
    assert requested_at - mtime < WINDOW


def test_a_write_after_the_close_keeps_the_file_waiting():
    """Pure planner: closed, then written again (no event seen yet): the window applies."""
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    closed = planner.FileEvents(now - timedelta(seconds=5), settled=True)
    kwargs = dict(size=10, etag=None, now=now, skip_older_than_days=None, stability_seconds=30,
                  trust_mtime=True)
    assert planner.classify(None, mtime=now - timedelta(seconds=6), events=closed,
                            **kwargs) is planner.Action.FINGERPRINT
    assert planner.classify(None, mtime=now - timedelta(seconds=2), events=closed,
                            **kwargs) is planner.Action.RECORD_NEW
    modified = planner.FileEvents(now - timedelta(seconds=5), settled=False)
    assert planner.classify(None, mtime=now - timedelta(seconds=6), events=modified,
                            **kwargs) is planner.Action.RECORD_NEW
    just_closed = planner.FileEvents(now - timedelta(seconds=0.5), settled=True)
    assert planner.classify(None, mtime=now - timedelta(seconds=6), events=just_closed,
                            **kwargs) is planner.Action.RECORD_NEW


# -- without events: polling and the window, as before -----------------------------------------

def _behaves_as_polling(catalog, root: Path, source_id: int, data: bytes, outside: Path):
    tick(catalog, root)
    move_in(data, outside, root / "late.wav")
    time.sleep(1.5)  # past the quiet delay: events, had there been any, would release it
    for _ in range(3):
        assert "late.wav" not in tick(catalog, root)
    assert events_of(catalog, "late.wav") == []
    with catalog.session() as s:
        settings = WatchSettings.load(s)
        assert settings.file_stability_seconds == 30
    # A poll once the window has passed imports it, as it always did.
    later = datetime.now(UTC) + WINDOW + timedelta(seconds=1)
    report = scan.scan_source(catalog, source_id, LocalSourceClient(root), settings=settings,
                              now=lambda: later)
    assert report.new_pending == ["late.wav"]


def test_events_off_behaves_as_polling_with_the_window(sqlite_catalog, watch, wav_bytes,
                                                       tmp_path):
    root, source_id = watch
    with sqlite_catalog.session() as s:
        set_setting(s, "watch.fs_events_enabled", False)
    with running(_watcher(sqlite_catalog, root)) as watcher:
        time.sleep(1)  # several refreshes
        assert watcher.watched == set() and mode(sqlite_catalog, source_id) == (None, None)
        _behaves_as_polling(sqlite_catalog, root, source_id, wav_bytes, tmp_path / "o")


def test_a_network_file_system_is_polled_and_says_why(sqlite_catalog, watch, wav_bytes,
                                                      tmp_path):
    root, source_id = watch
    with polling(sqlite_catalog, watch, "network file system (nfs4)",
                 fs_type=lambda _path: "nfs4"):
        _behaves_as_polling(sqlite_catalog, root, source_id, wav_bytes, tmp_path / "o")


def test_more_folders_than_the_watch_limit_fall_back_to_polling(sqlite_catalog, watch):
    root = watch[0]
    for name in "abc":
        (root / name).mkdir()
    with polling(sqlite_catalog, watch, "inotify watch limit", max_watches=3):
        pass  # the fallback and its reason are checked on entry


def test_files_dropped_while_the_watcher_was_down_are_found_by_the_next_poll(
        sqlite_catalog, watch, wav_bytes, tmp_path):
    root, source_id = watch
    with watching(sqlite_catalog, watch):
        tick(sqlite_catalog, root)
    assert mode(sqlite_catalog, source_id) == ("polling", "the events watcher stopped")
    move_in(wav_bytes, tmp_path / "o", root / "a.wav")
    (root / "b.wav").write_bytes(wav_bytes + b"b")
    tick(sqlite_catalog, root)
    assert rows(sqlite_catalog) == {}  # polled every 15 minutes: not due yet, no events
    with watching(sqlite_catalog, watch):
        wait_for(lambda: "rescan" in events_of(sqlite_catalog, ""), "the restart's rescan")
        tick(sqlite_catalog, root)
    assert rows(sqlite_catalog) == {"a.wav": "pending", "b.wav": "pending"}


# -- the first import does not wait for the whole scan (issue 14, item 4) ----------------------

def test_a_scan_stops_soon_after_its_first_new_file_and_the_next_resumes(
        sqlite_catalog, tmp_path, wav_bytes):
    root = tmp_path / "burst"
    root.mkdir()
    for i in range(6):
        (root / f"f{i}.wav").write_bytes(wav_bytes + bytes([i]))
    with sqlite_catalog.session() as s:
        source_id = create_source(s, None, fields={"name": "b", "source_type": "local",
                                                   "local_path": "."}).id
    settings = WatchSettings(enabled=True, file_stability_seconds=0, max_concurrent_imports=5,
                             fs_events_enabled=False)
    first = scan.scan_source(sqlite_catalog, source_id, LocalSourceClient(root),
                             settings=settings, first_import_seconds=0)
    assert not first.finished and len(first.new_pending) == 1
    assert len(claims.claim_imports(sqlite_catalog, [source_id], slots=10)) == 1
    rest = scan.scan_source(sqlite_catalog, source_id, LocalSourceClient(root),
                            settings=settings)
    assert rest.finished and len(rest.new_pending) == 5


# -- the mount's file-system type --------------------------------------------------------------

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /mnt/nas rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2
41 40 0:36 / /mnt/nas/local rw shared:21 - tmpfs tmpfs rw
42 22 0:37 / /mnt/my\\040share rw - cifs //host/share rw
43 22 0:38 / /home/u/remote rw - fuse.sshfs u@h: rw
"""


@pytest.mark.parametrize(("path", "fs_type", "network"), [
    ("/srv/watch", "ext4", False),
    ("/mnt/nas", "nfs4", True),
    ("/mnt/nas/media/a", "nfs4", True),
    ("/mnt/nas/local/x", "tmpfs", False),
    ("/mnt/nasty", "ext4", False),
    ("/mnt/my share/in", "cifs", True),
    ("/home/u/remote/x", "fuse.sshfs", True),
])
def test_the_mount_holding_a_path_decides(path, fs_type, network):
    assert mount_fs_type(Path(path), MOUNTINFO) == fs_type
    assert is_network_fs(fs_type) is network


def test_this_machines_mount_table_is_read(tmp_path):
    assert mount_fs_type(tmp_path.resolve()) != ""


def test_a_queue_overflow_makes_the_next_tick_scan_and_says_events_were_lost(
        sqlite_catalog, watch, wav_bytes, tmp_path):
    """watchdog drops IN_Q_OVERFLOW silently; the watcher counts it and asks for a full scan."""
    root, source_id = watch
    with watching(sqlite_catalog, watch):
        tick(sqlite_catalog, root)
        (root / "lost.wav").write_bytes(wav_bytes)
        wait_for(lambda: "closed" in events_of(sqlite_catalog, "lost.wav"), "its events")
        with sqlite_catalog.session() as s:  # as if they had been in the lost batch
            s.execute(sa.delete(WatchEvent))
        assert tick(sqlite_catalog, root) == set() and rows(sqlite_catalog) == {}
        overflow = struct.pack("iIII", -1, InotifyConstants.IN_Q_OVERFLOW, 0, 0)
        assert list(Inotify._parse_event_buffer(overflow)) == [
            (-1, InotifyConstants.IN_Q_OVERFLOW, 0, b"")]
        wait_for(lambda: "overflow" in (mode(sqlite_catalog, source_id)[1] or ""),
                 "the reason to say events were lost")
        assert mode(sqlite_catalog, source_id)[0] == "events"
        wait_for(lambda: "rescan" in events_of(sqlite_catalog, ""), "a rescan event")
        tick(sqlite_catalog, root)
    assert rows(sqlite_catalog) == {"lost.wav": "pending"}


# -- the local watch sensor ticks often ---------------------------------------------------------

@pytest.mark.parametrize(("environ", "local", "others"), [
    ({}, 3, 30),
    ({"WATCH_SENSOR_INTERVAL_SECONDS": "7"}, 7, 7),  # the old variable still sets every sensor
    ({"WATCH_SENSOR_INTERVAL_SECONDS": "20", "WATCH_LOCAL_SENSOR_INTERVAL_SECONDS": "2"}, 2, 20),
])
def test_the_local_sensor_has_its_own_shorter_interval(environ, local, others):
    from watch_pipeline.defs.resources import launch
    from watch_pipeline.defs.sensors import build_watch_sensors

    config = launch(environ)
    sensors = {s.name: s.minimum_interval_seconds for s in build_watch_sensors(
        config.sensor_interval_seconds, config.local_sensor_interval_seconds)}
    assert sensors == {"local_watch_sensor": local, "s3_watch_sensor": others,
                       "smb_watch_sensor": others}
