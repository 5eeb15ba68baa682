"""The scan runner against the real catalog and a real folder: budget, idempotency, races."""

from __future__ import annotations

import os
import subprocess
import threading

import sqlalchemy as sa

from watch_pipeline.catalog.models import WatchSource, WatchSourceFile
from watch_pipeline.catalog.settings import WatchSettings
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.pipeline.scan import scan_source
from watch_pipeline.sources.local import LocalSourceClient

SETTINGS = WatchSettings(enabled=True, file_stability_seconds=0, max_concurrent_imports=5,
                         fs_events_enabled=False)


def _setup(catalog, tmp_path, n=6):
    root = tmp_path / "watch"
    root.mkdir()
    for i in range(n):
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={300 + 50 * i}:duration=0.3", str(root / f"f{i}.wav")],
                       check=True)
    with catalog.session() as s:
        source_id = create_source(s, None, fields={"name": "w", "source_type": "local",
                                                   "local_path": "."}).id
    return root, source_id


def _rows(catalog):
    with catalog.session() as s:
        return s.execute(sa.select(WatchSourceFile.remote_path, WatchSourceFile.status,
                                   WatchSourceFile.imohash)).all()


def test_scan_is_idempotent_and_records_status(any_catalog, tmp_path):
    root, source_id = _setup(any_catalog, tmp_path)
    report = scan_source(any_catalog, source_id, LocalSourceClient(root), settings=SETTINGS)
    assert report.finished and len(report.new_pending) == 6
    first = sorted(_rows(any_catalog))
    again = scan_source(any_catalog, source_id, LocalSourceClient(root), settings=SETTINGS)
    assert again.new_pending == [] and sorted(_rows(any_catalog)) == first
    with any_catalog.session() as s:
        src = s.get(WatchSource, source_id)
        assert src.last_scan_status == "success" and src.last_scan_files_found == 6
        assert "6 files seen" in src.last_scan_message


def test_budget_exhausted_scan_resumes_next_time(sqlite_catalog, tmp_path):
    root, source_id = _setup(sqlite_catalog, tmp_path)
    report = scan_source(sqlite_catalog, source_id, LocalSourceClient(root), settings=SETTINGS,
                         budget_seconds=0)
    assert not report.finished and "unfinished" in report.summary
    with sqlite_catalog.session() as s:
        assert s.get(WatchSource, source_id).last_scan_at is None  # still due
    report = scan_source(sqlite_catalog, source_id, LocalSourceClient(root), settings=SETTINGS)
    assert report.finished and len(_rows(sqlite_catalog)) == 6


def test_racing_scans_never_create_a_second_row(any_catalog, tmp_path):
    root, source_id = _setup(any_catalog, tmp_path)
    errors = []

    def scan():
        try:
            scan_source(any_catalog, source_id, LocalSourceClient(root), settings=SETTINGS)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scan) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    paths = [r.remote_path for r in _rows(any_catalog)]
    assert sorted(paths) == sorted(set(paths)) and len(paths) == 6


def test_dry_run_writes_nothing(sqlite_catalog, tmp_path):
    root, source_id = _setup(sqlite_catalog, tmp_path)
    report = scan_source(sqlite_catalog, source_id, LocalSourceClient(root), settings=SETTINGS,
                         dry_run=True)
    assert len(report.new_pending) == 6 and len(report.decisions) == 6
    assert _rows(sqlite_catalog) == []


def test_unreachable_root_is_recorded(sqlite_catalog, tmp_path):
    root, source_id = _setup(sqlite_catalog, tmp_path)
    os.rename(root, tmp_path / "moved")
    report = scan_source(sqlite_catalog, source_id, LocalSourceClient(root), settings=SETTINGS)
    assert report.error and "does not exist" in report.error
    with sqlite_catalog.session() as s:
        src = s.get(WatchSource, source_id)
        assert src.last_scan_status == "error" and "does not exist" in src.last_scan_message
