"""The watch sensor and the media assets in-process, on a real Dagster instance, with real
ffmpeg and real faster-whisper."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.models import FileStatus, SkipReason, WatchSource, WatchSourceFile
from watch_pipeline.catalog.settings import set_setting
from watch_pipeline.defs.assets import (
    build_transcript_asset,
    media_object,
    raw_file,
    stitched_media,
)
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline.transcribe.resource import TranscriberResource
from watch_pipeline_tests.defs.harness import (
    add_source,
    age,
    files,
    media_rows,
    rewind_scans,
    run_import,
    run_request,
    tick,
)


@pytest.mark.slow
def test_dropped_file_is_imported_and_transcribed(env, speech_factory):
    add_source(env, collections=["inbox"], tags=["auto"])
    speech_factory("the quick brown fox jumps over the lazy dog", env["watch"] / "talk.mp4",
                   fmt="mp4")
    age(env["watch"] / "talk.mp4")
    requests, skip = tick(env)
    assert skip is None and len(requests) == 1
    req = requests[0]
    fingerprint = files(env)["talk.mp4"].imohash
    # The key reads as the file's name; the run key is the content's identity.
    assert (req.partition_key, req.run_key) == (f"talk-{fingerprint}", fingerprint)
    assert req.tags["watch_pipeline/source"] == "watch"

    result = run_import(env, req.partition_key)
    assert result.success
    mats = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert mats["transcript"]["words"].value >= 5
    assert "landed_to_transcript_seconds" in mats["transcript"]
    assert mats["media_object"]["object_key"].value.startswith("user_1/file_1/talk.mp4")

    (media,) = media_rows(env)
    assert media.status == "completed" and media.origin == "watch"
    assert media.collections == ["inbox"] and media.tags == ["auto"]
    assert files(env)["talk.mp4"].status == "imported"
    store = LocalObjectStore(env["home"] / "object_store")
    assert store.path(media.object_key).read_bytes() == (env["watch"] / "talk.mp4").read_bytes()
    text = store.get_bytes(media.transcript_key.replace(".json", ".txt")).decode().lower()
    for word in ("quick", "brown", "fox"):
        assert word in text
    assert store.head(media.transcript_key.replace(".json", ".srt")) is not None
    assert store.head(media.transcript_key.replace(".json", ".vtt")) is not None

    # A second tick and a re-run change nothing: imported exactly once.
    rewind_scans(env)
    assert tick(env)[0] == []
    assert run_import(env, req.partition_key).success
    assert len(media_rows(env)) == 1


def test_tick_with_nothing_new_says_what_was_scanned(env):
    add_source(env)
    add_source(env, name="other", path="other")
    requests, skip = tick(env)
    assert requests == []
    assert "2 sources scanned, 0 files seen, 0 new" in skip


def test_watch_disabled_scans_nothing(env):
    add_source(env)
    with env["catalog"].session() as s:
        set_setting(s, "watch.enabled", False)
    requests, skip = tick(env)
    assert requests == [] and "watch.enabled is false" in skip


def _wav(tmp: Path, name: str, freq: int) -> Path:
    import subprocess

    out = tmp / name
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration=1", str(out)], check=True)
    return out


def test_two_names_for_one_recording_in_one_source_import_once(env, tmp_path):
    add_source(env, auto_transcribe=False)
    src = _wav(tmp_path, "a.wav", 440)
    shutil.copyfile(src, env["watch"] / "one.wav")
    shutil.copyfile(src, env["watch"] / "two.wav")
    for p in env["watch"].iterdir():
        age(p)
    requests, _ = tick(env)
    assert len(requests) == 1
    assert run_import(env, requests[0].partition_key).success
    rows = files(env)
    statuses = sorted((r.status, r.skip_reason) for r in rows.values())
    assert statuses == [("imported", None), ("skipped_duplicate", "duplicate_same_source")]
    assert len(media_rows(env)) == 1
    # a third copy found later is a duplicate at scan time
    shutil.copyfile(src, env["watch"] / "three.wav")
    age(env["watch"] / "three.wav")
    rewind_scans(env)
    assert tick(env)[0] == []
    assert files(env)["three.wav"].skip_reason == "duplicate_same_source"


def test_same_recording_in_two_sources_imports_once(env, tmp_path):
    add_source(env, name="a", path="a", auto_transcribe=False)
    add_source(env, name="b", path="b", auto_transcribe=False)
    src = _wav(tmp_path, "x.wav", 550)
    shutil.copyfile(src, env["watch"] / "a" / "x.wav")
    age(env["watch"] / "a" / "x.wav")
    (req,), _ = tick(env)
    assert run_import(env, req.partition_key).success
    shutil.copyfile(src, env["watch"] / "b" / "copy.wav")
    age(env["watch"] / "b" / "copy.wav")
    rewind_scans(env)
    assert tick(env)[0] == []
    row = files(env)["copy.wav"]
    assert (row.status, row.skip_reason) == ("skipped_duplicate", "duplicate_other_source")
    assert row.media_file_id == media_rows(env)[0].id


def test_file_still_being_written_waits_until_stable(env, tmp_path):
    add_source(env, auto_transcribe=False)
    with env["catalog"].session() as s:
        set_setting(s, "watch.file_stability_seconds", 3)
    shutil.copyfile(_wav(tmp_path, "w.wav", 660), env["watch"] / "growing.wav")
    requests, skip = tick(env)  # fresh mtime: not stable
    assert requests == [] and "1 waiting" in skip
    assert files(env)["growing.wav"].imohash is None
    time.sleep(3.2)
    rewind_scans(env)
    requests, _ = tick(env)
    assert len(requests) == 1


def test_symlink_out_of_root_and_dotdot_are_never_read(env, tmp_path):
    add_source(env, auto_transcribe=False)
    secret = tmp_path / "outside.wav"
    _wav(tmp_path, "outside.wav", 770)
    (env["watch"] / "link.wav").symlink_to(secret)
    requests, _ = tick(env)
    assert requests == []
    row = files(env)["link.wav"]
    assert (row.status, row.skip_reason) == (FileStatus.SKIPPED_INVALID, SkipReason.OUTSIDE_ROOT)
    assert "outside the watch root" in row.error_message and row.imohash is None


def test_invalid_and_empty_files_are_skipped_with_reasons(env):
    add_source(env)
    (env["watch"] / "empty.mp4").write_bytes(b"")
    (env["watch"] / "notes.mp4").write_text("this is not a video\n" * 100)
    for p in env["watch"].iterdir():
        age(p)
    assert tick(env)[0] == []
    rows = files(env)
    assert (rows["empty.mp4"].status, rows["empty.mp4"].skip_reason) == (
        "skipped_invalid", "validation_failed")
    assert (rows["notes.mp4"].status, rows["notes.mp4"].skip_reason) == (
        "skipped_invalid", "invalid_type")


def test_corrupt_recording_is_an_error_with_reason_then_retried(env, tmp_path):
    add_source(env, auto_transcribe=False)
    good = _wav(tmp_path, "c.wav", 880).read_bytes()
    (env["watch"] / "broken.wav").write_bytes(good[:44] + os.urandom(200))  # header + noise
    age(env["watch"] / "broken.wav")
    (req,), _ = tick(env)
    result = run_import(env, req.partition_key, raise_on_error=False)
    if result.success:  # ffprobe may accept noise as PCM: then it imports, which is fine
        return
    row = files(env)["broken.wav"]
    assert row.status == "error" and "corrupt" in row.error_message
    assert row.retry_count == 1 and row.next_retry_at is not None


def test_error_row_does_not_block_a_later_import_of_the_same_content(env, tmp_path):
    add_source(env, auto_transcribe=False)
    src = _wav(tmp_path, "e.wav", 990)
    shutil.copyfile(src, env["watch"] / "first.wav")
    age(env["watch"] / "first.wav")
    (req,), _ = tick(env)
    # the import fails: the file vanished before the run
    (env["watch"] / "first.wav").unlink()
    assert not run_import(env, req.partition_key, raise_on_error=False).success
    assert files(env)["first.wav"].status == "error"
    # the same content arrives under another name and imports
    shutil.copyfile(src, env["watch"] / "second.wav")
    age(env["watch"] / "second.wav")
    rewind_scans(env)
    with env["catalog"].session() as s:  # hold the failed row's automatic retry
        s.execute(sa.update(WatchSourceFile).where(WatchSourceFile.remote_path == "first.wav")
                  .values(retry_count=99))
    (req2,), _ = tick(env)
    assert req2.partition_key == req.partition_key and req2.run_key != req.run_key
    assert run_import(env, req2.partition_key).success
    assert files(env)["second.wav"].status == "imported"


def test_replaced_file_is_fingerprinted_again_and_imported_as_new_media(env, tmp_path):
    add_source(env, auto_transcribe=False)
    target = env["watch"] / "daily.wav"
    shutil.copyfile(_wav(tmp_path, "d1.wav", 300), target)
    age(target, 300)
    (req,), _ = tick(env)
    assert run_import(env, req.partition_key).success
    shutil.copyfile(_wav(tmp_path, "d2.wav", 350), target)
    age(target, 120)
    rewind_scans(env)
    (req2,), _ = tick(env)
    assert req2.partition_key != req.partition_key
    assert run_import(env, req2.partition_key).success
    assert len(media_rows(env)) == 2


def test_max_concurrent_imports_bounds_runs_and_a_burst_is_batched(env, tmp_path):
    add_source(env, auto_transcribe=False)
    with env["catalog"].session() as s:
        set_setting(s, "watch.max_concurrent_imports", 2)
    for i in range(5):
        _wav(env["watch"], f"f{i}.wav", 200 + 37 * i)
        age(env["watch"] / f"f{i}.wav")
    requests, _ = tick(env)
    assert len(requests) == 2  # two runs at most, carrying the five partitions between them
    batched = sorted(len(r.run_config["ops"]["import_batch"]["config"]["partition_keys"])
                     for r in requests)
    assert batched == [2, 3] and {r.job_name for r in requests} == {"import_batch_job"}
    for request in requests:
        assert run_request(env, request).success
    assert len(media_rows(env)) == 5
    assert {r.status for r in files(env).values()} == {"imported"}
    # each partition got its own materialization of each asset
    for key in {r.partition_key for r in files(env).values()}:
        for asset in ("raw_file", "stitched_media", "media_object", "transcript"):
            records = env["instance"].fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]),
                limit=5).records
            assert len(records) == 1
    assert tick(env)[0] == []


def test_a_failing_partition_does_not_stop_its_batch(env, tmp_path):
    add_source(env, auto_transcribe=False)
    for i in range(4):
        _wav(env["watch"], f"g{i}.wav", 900 + 11 * i)
        age(env["watch"] / f"g{i}.wav")
    requests, _ = tick(env)
    (env["watch"] / "g0.wav").unlink()  # vanishes before its import
    results = [run_request(env, r) for r in requests]
    assert not all(r.success for r in results)
    rows = files(env)
    assert rows["g0.wav"].status == FileStatus.ERROR
    assert "g0.wav does not exist" in rows["g0.wav"].error_message
    assert all(rows[f"g{i}.wav"].status == "imported" for i in (1, 2, 3))


def test_unreachable_root_is_recorded_on_the_source_only(env):
    add_source(env, name="gone", path="gone")
    add_source(env, name="fine", path="fine")
    shutil.rmtree(env["watch"] / "gone")
    tick(env)
    with env["catalog"].session() as s:
        gone = s.scalar(sa.select(WatchSource).where(WatchSource.name == "gone"))
        fine = s.scalar(sa.select(WatchSource).where(WatchSource.name == "fine"))
        assert gone.last_scan_status == "error" and "does not exist" in gone.last_scan_message
        assert fine.last_scan_status == "success"


@pytest.mark.slow
def test_model_change_backfill_keeps_old_transcripts(env, speech_factory):
    add_source(env)
    for i, phrase in enumerate(["the quick brown fox", "seven purple elephants sing"]):
        speech_factory(phrase, env["watch"] / f"s{i}.wav")
        age(env["watch"] / f"s{i}.wav")
    requests, _ = tick(env)
    keys = [r.partition_key for r in requests]
    assert len(keys) == 2
    for key in keys:
        assert run_import(env, key).success
    old_model = env["resources"]["transcriber"].model_id

    # the operator changes the model: the asset's code version changes with it
    new_resources = {**env["resources"], "transcriber": TranscriberResource(whisper_beam_size=2)}
    new_model = new_resources["transcriber"].model_id
    assert new_model != old_model
    new_asset = build_transcript_asset(new_model)
    assert new_asset.code_versions_by_key[new_asset.key] == new_model
    for key in keys:  # the backfill of `transcript` over the media partitions
        assert dg.materialize([new_asset], partition_key=key, resources=new_resources,
                              instance=env["instance"]).success
    store = LocalObjectStore(env["home"] / "object_store")
    for media in media_rows(env):
        assert media.transcript_model == new_model
        folder = store.path(media.object_key).parent / "transcripts"
        names = sorted(p.name for p in folder.glob("*.json"))
        assert len(names) == 2  # the old model's transcript is kept beside the new one


def _import_with(env, req, transcriber, model: str, **kwargs):
    """Materialize the whole import of ``req``'s partition, transcribed by ``transcriber``."""
    assets = [raw_file, stitched_media, media_object, build_transcript_asset(model)]
    return dg.materialize(assets, partition_key=req.partition_key, instance=env["instance"],
                          resources={**env["resources"], "transcriber": transcriber}, **kwargs)


def test_transcription_failure_keeps_the_import(env, tmp_path):
    add_source(env)
    _wav(env["watch"], "tone.wav", 440)
    age(env["watch"] / "tone.wav")
    (req,), _ = tick(env)
    broken = TranscriberResource(whisper_model=str(tmp_path / "no-model"))
    result = _import_with(env, req, broken, "broken", raise_on_error=False)
    assert not result.success
    (media,) = media_rows(env)
    assert media.status == "error" and "transcription failed" in media.error_message
    assert media.object_key and files(env)["tone.wav"].status == "imported"
    # retry: materialize transcript again with a working model
    assert dg.materialize([build_transcript_asset()], partition_key=req.partition_key,
                          resources=env["resources"], instance=env["instance"]).success
    assert media_rows(env)[0].status == "completed"


def test_riva_backend_in_the_pipeline(env, riva_server, speech_factory):
    add_source(env, max_speakers=3)
    speech_factory("hello there good morning", env["watch"] / "call.wav")
    age(env["watch"] / "call.wav")
    (req,), _ = tick(env)
    riva = TranscriberResource(backend="riva", riva_uri=riva_server.uri, riva_max_retries=1)
    model = riva.model_id
    assert model.startswith("riva:")
    assert _import_with(env, req, riva, model).success
    (media,) = media_rows(env)
    assert media.transcript_model == model
    store = LocalObjectStore(env["home"] / "object_store")
    srt = store.path(media.transcript_key).with_suffix(".srt").read_text()
    assert "Speaker 1" in srt and "Speaker 2" in srt
    call = riva_server.calls[-1]
    assert call.method == "Recognize"


def test_riva_down_keeps_the_import(env, tmp_path):
    import socket

    add_source(env)
    _wav(env["watch"], "beep.wav", 640)
    age(env["watch"] / "beep.wav")
    (req,), _ = tick(env)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = TranscriberResource(
        backend="riva", riva_uri=f"127.0.0.1:{port}", riva_max_retries=1, riva_timeout=5)
    result = _import_with(env, req, down, "riva", raise_on_error=False)
    assert not result.success
    (media,) = media_rows(env)
    assert media.status == "error" and "unreachable" in media.error_message
    assert media.object_key and files(env)["beep.wav"].status == "imported"


def test_media_longer_than_the_limit_is_skipped_with_a_reason(env, tmp_path):
    add_source(env, auto_transcribe=False)
    with env["catalog"].session() as s:
        set_setting(s, "watch.max_media_duration_hours", 0.0001)  # 0.36 s; the tone lasts 1 s
    _wav(env["watch"], "long.wav", 1234)
    age(env["watch"] / "long.wav")
    (req,), _ = tick(env)
    result = run_import(env, req.partition_key)
    assert result.success  # a refusal, not an error: nothing to retry
    mats = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert "longer than the 0.0001 h limit" in mats["raw_file"]["reason"].value
    assert "longer than" in mats["media_object"]["skipped"].value
    row = files(env)["long.wav"]
    assert (row.status, row.skip_reason) == (FileStatus.SKIPPED_INVALID, SkipReason.TOO_LONG)
    assert "watch.max_media_duration_hours" in row.error_message
    assert media_rows(env) == []
    rewind_scans(env)
    assert tick(env)[0] == []  # never requested again
