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


def _multipart_source(catalog, tmp_path):
    root = tmp_path / "watch"
    root.mkdir()
    for name, freq in [("talk_P001.wav", 300), ("talk_P002.wav", 350), ("talk_P003.wav", 400),
                       ("lone_P002.wav", 450), ("single.wav", 500)]:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={freq}:duration=0.3", str(root / name)], check=True)
    with catalog.session() as s:
        source_id = create_source(s, None, fields={
            "name": "parts", "source_type": "local", "local_path": ".",
            "multipart_enabled": True, "multipart_wait_scans": 1}).id
    return root, source_id


def test_dry_run_and_real_scan_agree_on_a_multipart_source(sqlite_catalog, tmp_path):
    root, source_id = _multipart_source(sqlite_catalog, tmp_path)
    dry = scan_source(sqlite_catalog, source_id, LocalSourceClient(root), settings=SETTINGS,
                      dry_run=True)
    assert _rows(sqlite_catalog) == []  # a dry run writes nothing
    real = scan_source(sqlite_catalog, source_id, LocalSourceClient(root), settings=SETTINGS)

    assert dry.decisions == real.decisions
    assert dry.new_pending == real.new_pending
    decisions = dict(real.decisions)
    # the complete group is released as one import, not "waits for its group"
    assert decisions["talk.wav (3 parts)"] == "import"
    assert decisions["lone_P002.wav"].startswith("import (imported on its own")
    assert sorted(real.new_pending) == ["lone_P002.wav", "single.wav", "talk.wav (3 parts)"]
    with sqlite_catalog.session() as s:
        statuses = dict(s.execute(sa.select(WatchSourceFile.remote_path,
                                            WatchSourceFile.status)).tuples().all())
    assert set(statuses.values()) == {"pending"}


class _ExplodingListing(LocalSourceClient):
    """A local client whose listing fails with an error no source is expected to raise."""

    def list_files(self, **kwargs):
        yield from list(super().list_files(**kwargs))[:2]
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


def test_an_unexpected_listing_error_is_recorded_on_the_source(sqlite_catalog, tmp_path):
    root, source_id = _setup(sqlite_catalog, tmp_path, n=4)
    report = scan_source(sqlite_catalog, source_id, _ExplodingListing(root), settings=SETTINGS)

    assert "UnicodeDecodeError" in report.error
    with sqlite_catalog.session() as s:
        src = s.get(WatchSource, source_id)
        assert src.last_scan_status == "error" and "UnicodeDecodeError" in src.last_scan_message
        assert src.consecutive_scan_failures == 1
    assert len(_rows(sqlite_catalog)) == 2  # what was listed before the failure is kept


class _UnreadableFile(LocalSourceClient):
    def open(self, remote_path):
        if remote_path == "f1.wav":
            raise ValueError("embedded null byte")
        return super().open(remote_path)


def test_one_unreadable_file_is_recorded_on_its_row_and_the_scan_goes_on(sqlite_catalog,
                                                                         tmp_path):
    root, source_id = _setup(sqlite_catalog, tmp_path, n=3)
    report = scan_source(sqlite_catalog, source_id, _UnreadableFile(root), settings=SETTINGS)

    assert report.error is None and len(report.new_pending) == 2
    rows = {r.remote_path: r for r in _rows(sqlite_catalog)}
    assert rows["f1.wav"].status == "error" and rows["f0.wav"].status == "pending"


def test_a_tick_records_a_broken_source_and_scans_the_others(sqlite_catalog, tmp_path):
    import logging

    from watch_pipeline.catalog import queries
    from watch_pipeline.pipeline.scan import scan_due_sources

    root, good_id = _setup(sqlite_catalog, tmp_path, n=2)
    with sqlite_catalog.session() as s:
        bad_id = create_source(s, None, fields={"name": "bad", "source_type": "local",
                                                "local_path": "."}).id
        s.get(WatchSource, good_id).last_scan_status = "running"  # a scan that died
        enabled = queries.enabled_sources(s, "local")

    def client_for(source):
        if source.id == bad_id:
            raise RuntimeError("symlink loop in the root")
        return LocalSourceClient(root)

    tick = scan_due_sources(sqlite_catalog, enabled, settings=SETTINGS, client_for=client_for,
                            budget_seconds=30, log=logging.getLogger("test"))

    assert tick.scanned == 2 and tick.new == 2
    with sqlite_catalog.session() as s:
        bad, good = s.get(WatchSource, bad_id), s.get(WatchSource, good_id)
        assert bad.last_scan_status == "error" and "symlink loop" in bad.last_scan_message
        assert bad.consecutive_scan_failures == 1
        assert good.last_scan_status == "success"
