"""Benchmark: a steady-state (nothing changed) scan of a large local source.

The tree holds ``--files`` tiny, distinct WAV files in ``--dirs`` folders. The catalog is first
brought to what a finished scan leaves behind (every file ``imported`` with its fingerprint),
either by bulk-inserting those rows (``--seed insert``, the default: fast) or by running one real
full scan with ``watch.file_stability_seconds`` = 0 (``--seed scan``: slow, fingerprints every
file). Then ``scan_source`` runs again on the unchanged tree; it must report 0 new and write no
``watch_source_file`` row. Its median wall time is printed beside a baseline measured on the same
tree in the same run: a plain recursive ``os.scandir`` walk that stats every file.

Usage: python bench/scan.py [--files 100000] [--dirs 100] [--runs 3] [--seed insert|scan]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import WatchSource, WatchSourceFile
from watch_pipeline.catalog.queries import load_seen
from watch_pipeline.catalog.settings import WatchSettings, set_setting
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION, imohash_fileobj
from watch_pipeline.pipeline.scan import scan_source
from watch_pipeline.sources.base import SourceEntry
from watch_pipeline.sources.local import LocalSourceClient

TARGET_SECONDS = 5.0


def wav_bytes(index: int) -> bytes:
    """A 16-bit mono 8 kHz PCM WAV whose 8 data bytes make it unique (52 bytes in all)."""
    data = struct.pack("<Q", index)
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16,
                         1, 1, 8000, 16000, 2, 16, b"data", len(data))
    return header + data


def make_tree(root: Path, files: int, dirs: int) -> dict[str, str]:
    """Write the files; return ``remote_path -> imohash`` (computed from the bytes written)."""
    per_dir = -(-files // dirs)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fingerprints: dict[str, str] = {}
    for i in range(files):
        d, n = divmod(i, per_dir)
        folder = f"d{d:04d}/sub"
        if n == 0:
            os.makedirs(root / folder)
        rel = f"{folder}/f{n:05d}.wav"
        data = wav_bytes(i)
        fd = os.open(root / rel, flags, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        # Same bytes, same algorithm as the scan (small files are hashed whole).
        fingerprints[rel] = imohash_fileobj(io.BytesIO(data))
    return fingerprints


def seed_by_insert(catalog: Catalog, source_id: int, client: LocalSourceClient,
                   fingerprints: dict[str, str]) -> int:
    """Bulk-insert the rows a finished scan leaves: one ``imported`` row per listed file."""
    now = datetime.now(UTC)
    rows = []
    for entry in client.list_files(recursive=True):
        assert isinstance(entry, SourceEntry), entry
        rows.append(dict(
            watch_source_id=source_id, remote_path=entry.remote_path, filename=entry.filename,
            file_size=entry.size, file_modified_at=entry.mtime, etag=entry.etag,
            imohash=fingerprints[entry.remote_path], imohash_version=ALGORITHM_VERSION,
            status="imported", retry_count=0, wait_scans=0, created_at=now, stable_since=now,
            last_seen_at=now, processed_at=now))
    table = WatchSourceFile.__table__
    with catalog.session() as session:
        for start in range(0, len(rows), 10_000):
            session.execute(sa.insert(table), rows[start:start + 10_000])
    return len(rows)


def seed_by_scan(catalog: Catalog, source_id: int, client: LocalSourceClient) -> float:
    """Run real scans until every file is fingerprinted; mark them imported as an import would."""
    with catalog.session() as session:
        set_setting(session, "watch.file_stability_seconds", 0)
        settings = WatchSettings.load(session)
    started = time.perf_counter()
    while True:
        report = scan_source(catalog, source_id, client, settings=settings,
                             budget_seconds=3600.0)
        if report.error:
            sys.exit(f"seeding scan failed: {report.error}")
        if report.finished:
            break
    elapsed = time.perf_counter() - started
    with catalog.session() as session:
        session.execute(sa.update(WatchSourceFile).where(WatchSourceFile.status == "pending")
                        .values(status="imported"))
    return elapsed


def scandir_walk(root: str) -> int:
    """The baseline: every regular file under ``root`` found and stat'ed, nothing else."""
    count = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    entry.stat(follow_symlinks=False)
                    count += 1
    return count


def timed(fn: Callable[[], object], runs: int) -> tuple[float, list[float], object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


class WriteCounter:
    """Counts INSERT/UPDATE/DELETE statements sent to the catalog, by table."""

    def __init__(self, engine: sa.Engine) -> None:
        self.counts: Counter[str] = Counter()
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany):
        words = statement.split()
        verb = words[0].upper() if words else ""
        if verb in ("INSERT", "UPDATE", "DELETE"):
            table = words[2] if verb in ("INSERT", "DELETE") else words[1]
            self.counts[verb + " " + table.strip('"')] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000, help="files in the tree")
    parser.add_argument("--dirs", type=int, default=100, help="folders they are spread over")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the median is shown")
    parser.add_argument("--seed", choices=("insert", "scan"), default="insert",
                        help="bring the catalog to steady state by bulk insert or by a full scan")
    parser.add_argument("--dir", default=None, help="parent of the temp dir (default: $TMPDIR)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_scan_", dir=args.dir))
    try:
        home, watch = tmp / "dagster_home", tmp / "watch"
        home.mkdir()
        watch.mkdir()
        os.environ["DAGSTER_HOME"] = str(home)
        os.environ.pop("WATCH_CATALOG_URL", None)

        start = time.perf_counter()
        fingerprints = make_tree(watch, args.files, args.dirs)
        print(f"created {args.files:,} files in {args.dirs} folders in "
              f"{time.perf_counter() - start:.1f}s under {watch}")

        catalog = Catalog(f"sqlite:///{home / 'watch_catalog.sqlite'}")
        with catalog.session() as session:
            source_id = create_source(session, None, fields={
                "name": "bench", "source_type": "local", "local_path": ".",
                "auto_transcribe": False}).id
        client = LocalSourceClient(watch)

        start = time.perf_counter()
        if args.seed == "insert":
            rows = seed_by_insert(catalog, source_id, client, fingerprints)
            print(f"seeded {rows:,} imported rows by bulk insert in "
                  f"{time.perf_counter() - start:.1f}s")
        else:
            full = seed_by_scan(catalog, source_id, client)
            print(f"seeded by one full scan (fingerprinting every file) in {full:.1f}s")
        with catalog.session() as session:
            settings = WatchSettings.load(session)
            statuses = Counter(session.scalars(sa.select(WatchSourceFile.status)))
        print(f"catalog rows by status: {dict(statuses)}; "
              f"file_stability_seconds={settings.file_stability_seconds}")

        writes = WriteCounter(catalog.engine)
        reports = []

        def steady_scan() -> object:
            report = scan_source(catalog, source_id, client, settings=settings,
                                 budget_seconds=3600.0)
            reports.append(report)
            return report

        ours, ours_all, _ = timed(steady_scan, args.runs)
        file_writes = {k: v for k, v in writes.counts.items() if "watch_source_file" in k}
        base, base_all, walked = timed(lambda: scandir_walk(str(watch)), args.runs)
        listing, _, _ = timed(lambda: sum(1 for _ in client.list_files(recursive=True)), 1)

        def load() -> int:
            with catalog.session() as session:
                return len(load_seen(session, source_id))

        loading, _, _ = timed(load, 1)

        report = reports[-1]
        ok = (all(not r.new_pending and not r.waiting and not r.skipped and not r.errors
                  and r.finished and r.error is None and r.files_seen == args.files
                  for r in reports) and not file_writes and walked == args.files)
        with catalog.session() as session:
            src = session.get(WatchSource, source_id)
            status = (src.last_scan_status, src.last_scan_files_found)
        print(f"steady-state scan report: {report.summary}; source row: {status}")
        print(f"catalog writes during the steady-state scans: {dict(writes.counts) or 'none'} "
              f"(watch_source_file: {file_writes or 'none'})")
        print(f"verified 0 new and no file-row writes: {'yes' if ok else 'NO'}")
        print("breakdown (1 run each): LocalSourceClient.list_files "
              f"{listing:.2f}s, loading catalog rows {loading:.2f}s")
        print(f"baseline os.scandir walk + stat, median of {args.runs}: {base:7.2f}s  "
              f"({', '.join(f'{t:.2f}' for t in base_all)})")
        print(f"scan_source steady state, median of {args.runs}:  {ours:7.2f}s  "
              f"({', '.join(f'{t:.2f}' for t in ours_all)})")
        print(f"ratio scan_source / scandir walk: {ours / base:.1f}x")
        scaled = ours * 100_000 / args.files
        print(f"target < {TARGET_SECONDS:.0f}s for 100,000 files: "
              + (f"{'met' if ours < TARGET_SECONDS else 'NOT met'} ({ours:.2f}s)"
                 if args.files == 100_000 else
                 f"not measured at this N (linear estimate {scaled:.2f}s)"))
        catalog.dispose()
        if not ok:
            sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
