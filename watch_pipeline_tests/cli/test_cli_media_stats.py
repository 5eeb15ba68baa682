"""`media stats` and the transcript's `landed_to_transcript_seconds`: lag from the mtime."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from watch_pipeline.catalog.models import FileStatus, MediaFile, MediaStatus, WatchSourceFile
from watch_pipeline.catalog.queries import ImportItem, PartRef
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.pipeline.steps import _landed_at
from watch_pipeline_tests.defs.harness import add_source, age, env, run_import, tick  # noqa: F401

NOW = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)


def _source(session) -> int:
    return create_source(session, None, fields={"name": "watch", "source_type": "local",
                                                "local_path": "."}).id


def _media(session, *, done: datetime, status=MediaStatus.COMPLETED, transcript=True) -> int:
    media = MediaFile(title="talk", filename="talk.mp4", status=status, created_at=done,
                      updated_at=done, transcript_key="t.json" if transcript else None)
    session.add(media)
    session.flush()
    return media.id


def _file(session, source_id: int, media_id: int | None, name: str, mtime: datetime | None,
          status=FileStatus.IMPORTED, **fields) -> int:
    row = WatchSourceFile(watch_source_id=source_id, remote_path=name, filename=name,
                          file_size=10, file_modified_at=mtime, status=status,
                          media_file_id=media_id, created_at=NOW, **fields)
    session.add(row)
    session.flush()
    return row.id


def _stats(run) -> dict:
    return json.loads(run("media", "stats", "--json").output)


def test_stats_with_no_transcripts_say_so(run):
    assert _stats(run) == {
        "transcripts": 0, "landed_unknown": 0,
        "landed_to_transcript_seconds": {"count": 0, "p50": None, "p95": None, "max": None}}
    assert "no data yet" in run("media", "stats").output


def test_stats_are_the_distribution_from_landing(run, sqlite_catalog):
    with sqlite_catalog.session() as s:
        source = _source(s)
        for lag in range(1, 21):  # 20 transcripts, 1 s to 20 s after their file's mtime
            media = _media(s, done=NOW)
            _file(s, source, media, f"f{lag}.mp4", NOW - timedelta(seconds=lag))
        # a multi-part recording counts from its newest part; a later duplicate does not count
        group = _media(s, done=NOW)
        _file(s, source, group, "p1.mp4", NOW - timedelta(seconds=900),
              FileStatus.STITCHED_PART, part_group="p", part_number=1)
        _file(s, source, group, "p2.mp4", NOW - timedelta(seconds=7.5),
              FileStatus.STITCHED_PART, part_group="p", part_number=2)
        _file(s, source, group, "copy.mp4", NOW - timedelta(days=30),
              FileStatus.SKIPPED_DUPLICATE)
        # no mtime reported: counted, but not in the distribution
        _file(s, source, _media(s, done=NOW), "nomtime.mp4", None)
        # not transcribed (yet, or auto_transcribe off): not counted
        _file(s, source, _media(s, done=NOW, status=MediaStatus.PROCESSING, transcript=False),
              "busy.mp4", NOW - timedelta(hours=1))
        _file(s, source, _media(s, done=NOW, transcript=False), "off.mp4", NOW - timedelta(hours=1))

    stats = _stats(run)

    assert stats["transcripts"] == 22
    assert stats["landed_unknown"] == 1
    assert stats["landed_to_transcript_seconds"] == {"count": 21, "p50": 10.0, "p95": 19.0,
                                                     "max": 20.0}
    text = run("media", "stats").output
    assert "transcripts: 22 (1 without a landing time)" in text
    assert "p50 10.0 s, p95 19.0 s, max 20.0 s (of 21)" in text


def test_a_multipart_recording_landed_with_its_newest_part(sqlite_catalog):
    with sqlite_catalog.session() as s:
        source = _source(s)
        old = _file(s, source, None, "p1.mp4", NOW - timedelta(seconds=600),
                    FileStatus.IMPORTING, part_group="p", part_number=1)
        new = _file(s, source, None, "p2.mp4", NOW - timedelta(seconds=30),
                    FileStatus.IMPORTING, part_group="p", part_number=2)
        unknown = _file(s, source, None, "x.mp4", None, FileStatus.IMPORTING)
    item = ImportItem(
        fingerprint="k", file_id=old, source_id=source, source_name="watch", source_type="local",
        remote_path="p1.mp4", filename="p1.mp4", file_size=20, owner_id=1, collections=(),
        tags=(), auto_transcribe=True, delete_after_import=False,
        upload_stitched_to_source=False, min_speakers=1, max_speakers=1, detected_at=NOW,
        parts=(PartRef(old, 1, "p1.mp4", "p1.mp4", 10, "a"),
               PartRef(new, 2, "p2.mp4", "p2.mp4", 10, "b")))

    assert _landed_at(sqlite_catalog, item) == NOW - timedelta(seconds=30)
    single = ImportItem(**{**item.__dict__, "file_id": unknown, "parts": ()})
    assert _landed_at(sqlite_catalog, single) is None


@pytest.mark.slow
def test_transcript_reports_the_lag_from_the_files_mtime(env, speech_factory, run, monkeypatch):  # noqa: F811
    add_source(env)
    talk = speech_factory("the quick brown fox jumps over the lazy dog", env["watch"] / "talk.wav")
    age(talk, 600)  # landed ten minutes ago; the scan sees it only now
    (request,), _ = tick(env)

    result = run_import(env, request.partition_key)

    mats = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert "detection_to_transcript_seconds" not in mats["transcript"]
    assert mats["transcript"]["landed_to_transcript_seconds"].value >= 600
    monkeypatch.setenv("WATCH_CATALOG_URL", env["catalog"].url)
    stats = _stats(run)
    assert stats["transcripts"] == 1
    assert stats["landed_to_transcript_seconds"]["p50"] >= 600


def test_a_file_moved_into_place_lands_with_its_watcher_event(run, sqlite_catalog):
    from watch_pipeline.catalog.models import WatchEvent
    from watch_pipeline.catalog.queries import landed_at

    with sqlite_catalog.session() as s:
        source = _source(s)
        media = _media(s, done=NOW)
        # `mv` keeps the file's old mtime; the watcher saw it arrive 4 s before the transcript
        moved = _file(s, source, media, "moved.mp4", NOW - timedelta(days=3))
        s.add(WatchEvent(watch_source_id=source, remote_path="moved.mp4", kind="moved",
                         at=NOW - timedelta(seconds=4)))
        s.add(WatchEvent(watch_source_id=source, remote_path="moved.mp4", kind="modified",
                         at=NOW - timedelta(seconds=1)))  # not a settle event: ignored

    assert landed_at(sqlite_catalog, [moved]) == NOW - timedelta(seconds=4)
    assert _stats(run)["landed_to_transcript_seconds"]["max"] == 4.0
