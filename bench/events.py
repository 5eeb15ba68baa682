"""Benchmark: the file-system events watcher on 10 000 files under 1 000 folders.

Prints, from one run:

1. the watcher (``watch-pipeline events``' :class:`EventWatcher`, in a process of its own):
   time to set up its watches, resident memory, inotify watches used (read from
   ``/proc/<pid>/fdinfo``), and the time from a new file's close to its ``closed`` event in the
   catalog (N files, one at a time, in random folders; p50 / max);
2. the baseline from the same run: what a poll costs (one full listing of the source) and what
   the watch sensor's tick costs when nothing is due and nothing happened (the price of ticking
   every few seconds);
3. the fallback when the inotify watch limit is lower than the folder count: simulated with the
   watcher's own cap (``--max-watches``, below the folder count), because lowering the kernel's
   ``fs.inotify.max_user_watches`` would starve every other watcher on the machine. The source
   is recorded as ``polling`` with the reason, no watch is taken, and a new file is found by
   the next poll (its listing time above).

Usage: python bench/events.py [--files 10000] [--folders 1000] [--samples 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import WatchEvent, WatchSource, WatchSourceFile
from watch_pipeline.catalog.settings import WatchSettings
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.pipeline import claims, scan
from watch_pipeline.sources.events import EventWatcher
from watch_pipeline.sources.local import LocalSourceClient


def child(url: str, root: str, max_watches: int | None) -> None:
    """The watcher process: runs until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    EventWatcher(Catalog(url), Path(root), max_watches=max_watches,
                 refresh_seconds=1.0).run(stop)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def inotify_watches(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
        except OSError:
            continue
        count += sum(1 for line in info.splitlines() if line.startswith("inotify wd:"))
    return count


def mode(catalog: Catalog, source_id: int) -> tuple[str | None, str | None]:
    with catalog.session() as s:
        src = s.get(WatchSource, source_id)
        return src.fs_events_mode, src.fs_events_reason


def wait(condition, timeout: float = 600.0, step: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("gave up waiting")


def build_tree(root: Path, files: int, folders: int) -> list[Path]:
    dirs = []
    for i in range(folders):
        d = root / f"d{i // 50:02d}" / f"sub{i:04d}" if i else root
        d.mkdir(parents=True, exist_ok=True)
        dirs.append(d)
    for i in range(files):
        (dirs[i % folders] / f"f{i:05d}.wav").write_bytes(b"RIFF" + bytes(40))
    return dirs


def start_watcher(url: str, root: Path, max_watches: int | None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", url, str(root)]
    if max_watches is not None:
        cmd += ["--max-watches", str(max_watches)]
    return subprocess.Popen(cmd, stderr=subprocess.DEVNULL)


def stop_watcher(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def notice_times(catalog: Catalog, dirs: list[Path], root: Path, samples: int) -> list[float]:
    """Seconds from a new file's close to its ``closed`` row in the catalog."""
    times = []
    rng = random.Random(7)
    for n in range(samples):
        folder = rng.choice(dirs)
        rel = (folder / f"new{n:03d}.wav").relative_to(root).as_posix()
        with open(folder / f"new{n:03d}.wav", "wb") as fh:
            fh.write(b"RIFF" + bytes(4000))
        closed = time.monotonic()

        def seen(rel: str = rel) -> bool:
            with catalog.session() as s:
                return s.scalar(sa.select(sa.func.count()).select_from(WatchEvent).where(
                    WatchEvent.remote_path == rel, WatchEvent.kind == "closed")) > 0
        wait(seen, timeout=30)
        times.append(time.monotonic() - closed)
    return times


def tick_cost(catalog: Catalog, root: Path, runs: int = 20) -> tuple[float, float]:
    """(scan_due_sources + claim_imports) with nothing due: p50 and max, milliseconds."""
    log = logging.getLogger("bench")
    costs = []
    for _ in range(runs):
        started = time.perf_counter()
        with catalog.session() as s:
            settings = WatchSettings.load(s)
            enabled = queries.enabled_sources(s, "local")
        tick = scan.scan_due_sources(catalog, enabled, settings=settings,
                                     client_for=lambda _row: LocalSourceClient(root),
                                     budget_seconds=40, log=log, first_import_seconds=2.0)
        claims.claim_imports(catalog, [e.id for e in enabled], slots=10)
        costs.append((time.perf_counter() - started) * 1000)
        assert tick.scanned == 0, tick.describe()
    return statistics.median(costs), max(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--folders", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--child", nargs=2, metavar=("URL", "ROOT"))
    parser.add_argument("--max-watches", type=int, default=None)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.max_watches)
        return

    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        root = Path(tmp) / "watch"
        url = f"sqlite:///{tmp}/catalog.sqlite"
        catalog = Catalog(url)
        started = time.perf_counter()
        dirs = build_tree(root, args.files, args.folders)
        folders = sum(1 for _ in os.walk(root))
        print(f"tree: {args.files} files in {args.folders} folders ({folders} with the "
              f"intermediate ones; {time.perf_counter() - started:.1f} s to write)")
        with catalog.session() as s:
            source_id = create_source(s, None, fields={
                "name": "bench", "source_type": "local", "local_path": ".",
                "polling_interval_minutes": 15, "use_fs_events": True}).id

        # The baseline: what one poll costs, and the first scan that records every file.
        client = LocalSourceClient(root)
        started = time.perf_counter()
        listed = sum(1 for _ in client.list_files(recursive=True, extensions=()))
        listing = time.perf_counter() - started
        with catalog.session() as s:
            settings = WatchSettings.load(s)
        first = dataclasses.replace(settings, file_stability_seconds=0)  # decide every file now
        scan.scan_source(catalog, source_id, client, settings=first, budget_seconds=600)
        print(f"baseline: one poll (full listing of {listed} files) {listing * 1000:.0f} ms; "
              "a file is noticed by polling after up to one polling interval plus that")

        # 1. the watcher
        proc = start_watcher(url, root, None)
        try:
            started = time.perf_counter()
            wait(lambda: mode(catalog, source_id)[0] == "events")
            setup = time.perf_counter() - started
            time.sleep(1.5)  # its start-up rescan event written, memory settled
            rss, watches = rss_mib(proc.pid), inotify_watches(proc.pid)
            times = notice_times(catalog, dirs, root, args.samples)
            rss_after = rss_mib(proc.pid)
        finally:
            stop_watcher(proc)
        print(f"events: watching took {setup:.2f} s from process start (imports included); "
              f"{watches} inotify watches ({folders} folders); RSS {rss:.1f} MiB "
              f"({rss_after:.1f} MiB after {args.samples} new files)")
        print(f"events: close -> 'closed' row in the catalog: p50 "
              f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
              f"(n={len(times)}; rows are written every 0.2 s)")
        print(f"mode after the watcher stopped: {mode(catalog, source_id)}")

        # 2. the price of ticking often
        time.sleep(2.5)  # the last events are older than the lookback of a fresh scan
        with catalog.session() as s:  # events on, not due, no fresh events: nothing to do
            src = s.get(WatchSource, source_id)
            src.last_scan_at, src.fs_events_mode = datetime.now(UTC), "events"
        p50, worst = tick_cost(catalog, root)
        with catalog.session() as s:
            events = s.scalar(sa.select(sa.func.count()).select_from(WatchEvent))
        print(f"sensor tick with nothing due and no new event ({events} event rows kept): "
              f"p50 {p50:.1f} ms, max {worst:.1f} ms")

        # 3. the fallback: fewer watches allowed than folders
        limit = folders // 2
        proc = start_watcher(url, root, limit)
        try:
            wait(lambda: mode(catalog, source_id)[0] == "polling"
                 and "limit" in (mode(catalog, source_id)[1] or ""))
            fallback_mode = mode(catalog, source_id)
            time.sleep(1.0)
            watches, rss = inotify_watches(proc.pid), rss_mib(proc.pid)
            (dirs[-1] / "late.wav").write_bytes(b"RIFF" + bytes(4000))
            time.sleep(1.5)
            with catalog.session() as s:
                noticed = s.scalar(sa.select(sa.func.count()).select_from(WatchEvent).where(
                    WatchEvent.remote_path.like("%late.wav")))
                s.get(WatchSource, source_id).last_scan_at = (
                    datetime.now(UTC) - timedelta(minutes=16))  # the next poll is due
            started = time.perf_counter()
            with catalog.session() as s:
                enabled = queries.enabled_sources(s, "local")
            tick = scan.scan_due_sources(catalog, enabled, settings=settings,
                                         client_for=lambda _row: LocalSourceClient(root),
                                         budget_seconds=40, log=logging.getLogger("bench"))
            poll = time.perf_counter() - started
            with catalog.session() as s:
                found = s.scalar(sa.select(sa.func.count()).select_from(WatchSourceFile).where(
                    WatchSourceFile.remote_path.like("%late.wav")))
        finally:
            stop_watcher(proc)
        print(f"fallback (--max-watches {limit} < {folders} folders): mode "
              f"{fallback_mode[0]} ({fallback_mode[1]}); {watches} inotify watches, RSS "
              f"{rss:.1f} MiB; events recorded for a new file: {noticed}; the next poll "
              f"({tick.scanned} source, {poll * 1000:.0f} ms) found it: {bool(found)}")
        print(f"kernel limits here: fs.inotify.max_user_watches="
              f"{Path('/proc/sys/fs/inotify/max_user_watches').read_text().strip()}, "
              f"max_queued_events="
              f"{Path('/proc/sys/fs/inotify/max_queued_events').read_text().strip()}")
        catalog.dispose()


if __name__ == "__main__":
    main()
