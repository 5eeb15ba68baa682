"""Readable partition keys through a real scan and claim: named after the file, one per content."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime

import sqlalchemy as sa

from watch_pipeline.catalog.models import MediaFile, WatchSourceFile
from watch_pipeline.catalog.settings import WatchSettings
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.pipeline import claims
from watch_pipeline.pipeline.fingerprint import imohash_path
from watch_pipeline.pipeline.keys import media_partition_key
from watch_pipeline.pipeline.multipart import group_fingerprint
from watch_pipeline.pipeline.scan import scan_source
from watch_pipeline.sources.local import LocalSourceClient

SETTINGS = WatchSettings(enabled=True, file_stability_seconds=0, max_concurrent_imports=5,
                         fs_events_enabled=False)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _wav(path, frequency):
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={frequency}:duration=0.3", str(path)], check=True)
    return path


def _source(catalog, root, name="w", **fields):
    root.mkdir(parents=True, exist_ok=True)
    with catalog.session() as s:
        return create_source(s, None, fields={"name": name, "source_type": "local",
                                              "local_path": ".", **fields}).id


def _keys(catalog):
    with catalog.session() as s:
        return dict(s.execute(sa.select(WatchSourceFile.remote_path,
                                        WatchSourceFile.partition_key)).tuples().all())


def test_new_content_is_keyed_by_its_file_name_and_copies_share_the_key(any_catalog, tmp_path):
    root = tmp_path / "watch"
    sid = _source(any_catalog, root)
    board = imohash_path(_wav(root / "Board Meeting 2026.wav", 440))
    reading = imohash_path(_wav(root / "reading.wav", 660))
    shutil.copyfile(root / "reading.wav", root / "zz copy of reading.wav")

    report = scan_source(any_catalog, sid, LocalSourceClient(root), settings=SETTINGS)

    assert _keys(any_catalog) == {"Board Meeting 2026.wav": f"board-meeting-2026-{board}",
                                  "reading.wav": f"reading-{reading}",
                                  "zz copy of reading.wav": f"reading-{reading}"}
    assert dict(report.decisions)["reading.wav"] == f"import: new content reading-{reading}"
    requests = claims.claim_imports(any_catalog, [sid], slots=5, now=NOW)
    # one run per content; the run key stays the fingerprint
    assert sorted((r.partition_key, r.run_key) for r in requests) == [
        (f"board-meeting-2026-{board}", board), (f"reading-{reading}", reading)]


def test_content_with_a_bare_fingerprint_partition_keeps_it(any_catalog, tmp_path):
    root = tmp_path / "watch"
    sid = _source(any_catalog, root)
    fingerprint = imohash_path(_wav(tmp_path / "old.wav", 440))
    with any_catalog.session() as s:  # a file of this content failed before keys were readable
        s.add(WatchSourceFile(watch_source_id=sid, remote_path="gone/old.wav", filename="old.wav",
                              imohash=fingerprint, partition_key=fingerprint, status="error",
                              run_key=fingerprint, retry_count=1, created_at=NOW))
    shutil.copyfile(tmp_path / "old.wav", root / "new name.wav")

    scan_source(any_catalog, sid, LocalSourceClient(root), settings=SETTINGS)

    assert _keys(any_catalog)["new name.wav"] == fingerprint
    (request,) = claims.claim_imports(any_catalog, [sid], slots=5, now=NOW)
    assert request.partition_key == fingerprint
    assert request.run_key.startswith(f"{fingerprint}-retry-")  # the old key was used


def test_a_copy_keyed_by_a_concurrent_scan_joins_the_partition_of_its_content(any_catalog,
                                                                              tmp_path):
    fingerprint = "a4b6094a52720c0123456789abcdef01"
    a = _source(any_catalog, tmp_path / "a", name="a")
    b = _source(any_catalog, tmp_path / "b", name="b")
    with any_catalog.session() as s:
        # Two sensors scanned at once: neither saw the other's row, each named the content.
        for sid, name in ((a, "interview.wav"), (b, "Copy.wav")):
            s.add(WatchSourceFile(watch_source_id=sid, remote_path=name, filename=name,
                                  imohash=fingerprint, status="pending", created_at=NOW,
                                  partition_key=media_partition_key(name, fingerprint)))

    (first,) = claims.claim_imports(any_catalog, [b], slots=5, now=NOW)
    (second,) = claims.claim_imports(any_catalog, [a], slots=5, now=NOW)

    assert first.partition_key == second.partition_key == f"interview-{fingerprint}"
    assert set(_keys(any_catalog).values()) == {f"interview-{fingerprint}"}
    assert first.run_key == fingerprint


def test_a_group_is_keyed_by_its_stitched_name_and_deduplicated_by_content(sqlite_catalog,
                                                                           tmp_path):
    parts = {"one": tmp_path / "one", "two": tmp_path / "two"}
    for number, frequency in ((1, 300), (2, 350)):
        _wav(parts["one"] / f"talk_P00{number}.wav", frequency)
        parts["two"].mkdir(exist_ok=True)
        shutil.copyfile(parts["one"] / f"talk_P00{number}.wav",
                        parts["two"] / f"Budget Review_P00{number}.wav")
    fields = {"multipart_enabled": True, "multipart_wait_scans": 1}
    one = _source(sqlite_catalog, parts["one"], name="one", **fields)
    scan_source(sqlite_catalog, one, LocalSourceClient(parts["one"]), settings=SETTINGS)
    group = group_fingerprint([imohash_path(parts["one"] / f"talk_P00{n}.wav") for n in (1, 2)])
    assert set(_keys(sqlite_catalog).values()) == {f"talk-{group}"}
    with sqlite_catalog.session() as s:  # imported; the source and its rows are gone since
        s.add(MediaFile(title="talk", filename="talk.wav", imohash="f" * 32,
                        partition_key=f"talk-{group}", status="completed"))
        s.execute(sa.delete(WatchSourceFile))

    two = _source(sqlite_catalog, parts["two"], name="two", **fields)
    report = scan_source(sqlite_catalog, two, LocalSourceClient(parts["two"]), settings=SETTINGS)

    # Another name, so another slug: still the same recording, not imported again.
    assert report.new_pending == []
    assert report.skipped == {"duplicate_existing": 2}
