"""Multi-part recordings through the watch sensor and the assets (real ffmpeg and whisper)."""

from __future__ import annotations

import pytest

from watch_pipeline.catalog.models import MediaFile
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline_tests.defs import harness

PHRASES = ["first part says apple", "second part says banana", "third part says orange"]


def drop(env, speech_factory, folder, number, phrase=None, fmt="wav"):
    path = env["watch"] / folder / f"meeting_P{number:03d}.{fmt}"
    speech_factory(phrase or PHRASES[number - 1], path, fmt=fmt)
    harness.age(path)
    return path


def rescan(env):
    harness.rewind_scans(env)
    return harness.tick(env)


@pytest.mark.slow
def test_parts_dropped_one_by_one_become_one_transcribed_media(env, speech_factory):
    harness.add_source(env, name="rec", path="rec", multipart_enabled=True, multipart_wait_scans=5)
    drop(env, speech_factory, "rec", 1)
    assert rescan(env)[0] == []  # a lone part waits for the rest of its group
    assert harness.files(env)["meeting_P001.wav"].status == "waiting_for_parts"
    drop(env, speech_factory, "rec", 3)
    assert rescan(env)[0] == []  # 1 and 3: part 2 missing
    assert "waiting for part(s) 2" in harness.files(env)["meeting_P003.wav"].error_message
    drop(env, speech_factory, "rec", 2)
    (req,), _ = rescan(env)
    assert req.partition_key not in {r.imohash for r in harness.files(env).values()}
    assert req.partition_key.startswith("meeting-")  # named after the stitched recording
    assert harness.run_import(env, req.partition_key).success
    (media,) = harness.media_rows(env)
    assert media.filename == "meeting.wav" and media.status == "completed"
    assert 8 < media.duration < 20
    rows = harness.files(env)
    assert {r.status for r in rows.values()} == {"stitched_part"}
    assert {r.media_file_id for r in rows.values()} == {media.id}
    assert len({r.part_group for r in rows.values()}) == 1
    text = (LocalObjectStore(env["home"] / "object_store").path(media.transcript_key)
            .with_suffix(".txt").read_text().lower())
    for word in ("apple", "banana", "orange"):
        assert word in text
    # a scan again changes nothing; a late part 4 is recorded, not imported on its own
    drop(env, speech_factory, "rec", 4, phrase="fourth part says date")
    assert rescan(env)[0] == []
    late = harness.files(env)["meeting_P004.wav"]
    assert late.status == "skipped_invalid" and "after its group was stitched" in \
        late.error_message
    assert len(harness.media_rows(env)) == 1


def test_incomplete_group_stitches_after_exactly_the_wait_scans(env, tmp_path):
    import subprocess

    harness.add_source(env, name="rec", path="rec", multipart_enabled=True, multipart_wait_scans=3,
               auto_transcribe=False)
    (env["watch"] / "rec").mkdir(exist_ok=True)
    for n in (1, 3):
        out = env["watch"] / "rec" / f"talk_P{n:03d}.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={300 + n * 100}:duration=1", str(out)], check=True)
        harness.age(out)
    assert rescan(env)[0] == []  # scan 1
    assert rescan(env)[0] == []  # scan 2
    with env["catalog"].session() as s:  # a failure count must not hurry the group
        from sqlalchemy import update

        from watch_pipeline.catalog.models import WatchSourceFile

        s.execute(update(WatchSourceFile).values(retry_count=7))
    (req,), _ = rescan(env)  # scan 3: stitched with what arrived
    result = harness.run_import(env, req.partition_key)
    assert result.success
    stitched = next(e.materialization.metadata
                    for e in result.get_asset_materialization_events()
                    if e.asset_key.to_user_string() == "stitched_media")
    assert stitched["missing_parts"].value == "2"
    (media,) = harness.media_rows(env)
    assert media.filename == "talk.wav" and 1.5 < media.duration < 2.5


def test_complete_group_stitches_at_once_and_write_back_is_not_reimported(env, tmp_path):
    import subprocess

    harness.add_source(env, name="rec", path="rec", multipart_enabled=True, auto_transcribe=False,
               upload_stitched_to_source=True)
    (env["watch"] / "rec" / "day1").mkdir(parents=True)
    for n in (1, 2):
        out = env["watch"] / "rec" / "day1" / f"cam_P{n:03d}.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={500 + n * 50}:duration=1", str(out)], check=True)
        harness.age(out)
    (req,), _ = rescan(env)
    assert harness.run_import(env, req.partition_key).success
    written = env["watch"] / "rec" / "day1" / "cam.wav"
    assert written.exists()
    harness.age(written)
    assert rescan(env)[0] == []
    row = harness.files(env)["day1/cam.wav"]
    assert (row.status, row.skip_reason) == ("skipped_duplicate", "duplicate_existing")
    with env["catalog"].session() as s:
        assert s.query(MediaFile).count() == 1
