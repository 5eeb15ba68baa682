"""The import steps without Dagster: a fake source, store and transcriber over a real catalog.

Real ffprobe reads the recordings; everything else is in memory, so these tests are fast and
say what a user would see: the object stored, the rows' statuses and reasons, the transcript.
"""

from __future__ import annotations

import io
import logging

import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.models import (
    FileStatus,
    MediaFile,
    MediaStatus,
    SkipReason,
    WatchSource,
    WatchSourceFile,
)
from watch_pipeline.pipeline import claims, steps
from watch_pipeline.pipeline.fingerprint import imohash_fileobj
from watch_pipeline_tests.fakes import FakeObjectStore, FakeSource, FakeTranscriber, tone_wav

LOG = logging.getLogger("test_steps")


@pytest.fixture
def world(sqlite_catalog, tmp_path):
    """A catalog with one remote-like source, its fake client, a fake store and transcriber."""
    source = FakeSource()
    with sqlite_catalog.session() as s:
        row = WatchSource(name="cloud", source_type="s3", s3_bucket_name="b")
        s.add(row)
        s.flush()
        source_id = row.id
    access = steps.SourceAccess(client_for=lambda _row: source, scratch=tmp_path / "scratch")
    return {"catalog": sqlite_catalog, "source": source, "source_id": source_id,
            "access": access, "store": FakeObjectStore(), "transcriber": FakeTranscriber()}


def drop(world, path: str, data: bytes, *, source_id: int | None = None) -> str:
    """A file as a scan leaves it: in the source, fingerprinted, pending. Returns its partition."""
    world["source"].put(path, data)
    fingerprint = imohash_fileobj(io.BytesIO(data))
    with world["catalog"].session() as s:
        s.add(WatchSourceFile(watch_source_id=source_id or world["source_id"], remote_path=path,
                              filename=path.rsplit("/", 1)[-1], file_size=len(data),
                              imohash=fingerprint, partition_key=fingerprint,
                              status=FileStatus.PENDING))
    return fingerprint


def ctx(key: str, step: str, **kw) -> steps.StepContext:
    return steps.StepContext(partition_key=key, step=step, log=LOG, **kw)


def import_all(world, key: str, **kw) -> list[steps.Result]:
    """The four steps of partition ``key``, in order, as one run would do them."""
    cat, access, store = world["catalog"], world["access"], world["store"]
    return [
        steps.fetch_raw_file(ctx(key, steps.RAW_FILE, **kw), cat, access),
        steps.stitch_media(ctx(key, steps.STITCHED_MEDIA, **kw), cat, access),
        steps.store_media(ctx(key, steps.MEDIA_OBJECT, **kw), cat, access, store),
        steps.transcribe_media(ctx(key, steps.TRANSCRIPT, **kw), cat, access, store,
                               world["transcriber"]),
    ]


def rows(world) -> dict[str, WatchSourceFile]:
    with world["catalog"].session() as s:
        return {r.remote_path: r for r in s.scalars(sa.select(WatchSourceFile))}


def media(world) -> list[MediaFile]:
    with world["catalog"].session() as s:
        return list(s.scalars(sa.select(MediaFile).order_by(MediaFile.id)))


def test_a_dropped_file_is_stored_and_transcribed(world):
    data = tone_wav(440)
    key = drop(world, "in/talk.wav", data)
    raw, stitched, stored, transcript = import_all(world, key)

    assert raw.metadata()["path"] == "in/talk.wav" and raw.metadata()["bytes"] == len(data)
    assert raw.metadata()["duration_seconds"] == pytest.approx(1.0, abs=0.01)
    assert stitched.metadata()["mode"] == "single file (pass-through)"
    assert stored.object_key == "user_1/file_1/talk.wav" and not stored.cached
    assert world["store"].objects[stored.object_key] == data
    assert stored.metadata()["url"] == "fake://user_1/file_1/talk.wav"
    text = world["store"].get_bytes("user_1/file_1/transcripts/fake_1.txt").decode()
    assert "hello from the fake transcriber" in text
    assert {"user_1/file_1/transcripts/fake_1" + ext for ext in (".json", ".srt", ".vtt")} \
        <= set(world["store"].objects)
    assert transcript.metadata()["words"] == 5 and transcript.model == "fake:1"
    assert world["transcriber"].heard == [data]  # read through a copy: the store is remote

    (m,) = media(world)
    assert (m.status, m.filename, m.partition_key) == (MediaStatus.COMPLETED, "talk.wav", key)
    assert m.transcript_key == "user_1/file_1/transcripts/fake_1.json"
    assert rows(world)["in/talk.wav"].status == FileStatus.IMPORTED
    assert world["source"].downloads == ["in/talk.wav"]
    assert not (world["access"].scratch / "imports" / key).exists()  # temp copy gone


def test_a_second_run_reports_the_import_instead_of_repeating_it(world):
    key = drop(world, "a.wav", tone_wav(500))
    import_all(world, key)
    puts = list(world["store"].puts)
    raw = steps.fetch_raw_file(ctx(key, steps.RAW_FILE), world["catalog"], world["access"])
    stored = steps.store_media(ctx(key, steps.MEDIA_OBJECT), world["catalog"], world["access"],
                               world["store"])
    assert raw.metadata() == {"status": "already imported", "media_id": 1}
    assert stored.metadata() == {"object_key": "user_1/file_1/a.wav", "media_id": 1,
                                 "cached": True}
    assert world["store"].puts == puts and len(media(world)) == 1


def test_same_content_under_two_names_is_imported_once(world):
    data = tone_wav(610)
    key = drop(world, "one.wav", data)
    drop(world, "copy/one-again.wav", data)
    stored = import_all(world, key)[2]
    assert stored.duplicates_marked == 1
    twin = rows(world)["copy/one-again.wav"]
    assert (twin.status, twin.skip_reason) == (FileStatus.SKIPPED_DUPLICATE,
                                               SkipReason.DUPLICATE_SAME_SOURCE)
    assert "imported once as media 1" in twin.error_message
    assert len(media(world)) == 1 and len(world["store"].puts) == 1 + 4  # media + transcripts


def test_content_changed_since_the_scan_goes_back_to_the_scan(world):
    key = drop(world, "moving.wav", tone_wav(700))
    world["source"].put("moving.wav", tone_wav(701))  # replaced after fingerprinting
    with pytest.raises(steps.StepFailed, match="changed since it was scanned"):
        steps.fetch_raw_file(ctx(key, steps.RAW_FILE), world["catalog"], world["access"])
    row = rows(world)["moving.wav"]
    assert (row.status, row.imohash) == (FileStatus.PENDING, None)
    assert "content changed" in row.error_message and media(world) == []


def test_a_file_that_is_not_media_is_an_error_with_its_reason_and_a_retry(world):
    key = drop(world, "notes.wav", b"this is not a recording at all " * 40)
    with pytest.raises(steps.StepFailed, match="not importable"):
        steps.fetch_raw_file(ctx(key, steps.RAW_FILE), world["catalog"], world["access"])
    row = rows(world)["notes.wav"]
    assert row.status == FileStatus.ERROR and row.retry_count == 1
    assert row.error_message.startswith("raw_file: notes.wav is not importable")
    assert row.next_retry_at is not None
    assert not (world["access"].scratch / "imports" / key).exists()


def test_an_unreachable_source_keeps_the_file_for_a_retry(world):
    key = drop(world, "far.wav", tone_wav(800))
    world["source"].down = True
    with pytest.raises(steps.StepFailed, match="fake source is down"):
        steps.fetch_raw_file(ctx(key, steps.RAW_FILE), world["catalog"], world["access"])
    assert rows(world)["far.wav"].status == FileStatus.ERROR
    world["source"].down = False
    import_all(world, key)  # the retry imports it
    assert rows(world)["far.wav"].status == FileStatus.IMPORTED


def test_a_store_that_refuses_writes_fails_the_import_and_keeps_nothing_half_done(world):
    key = drop(world, "big.wav", tone_wav(900))
    world["store"].fail_puts = True
    cat, access = world["catalog"], world["access"]
    steps.fetch_raw_file(ctx(key, steps.RAW_FILE), cat, access)
    steps.stitch_media(ctx(key, steps.STITCHED_MEDIA), cat, access)
    with pytest.raises(steps.StepFailed, match="refuses writes"):
        steps.store_media(ctx(key, steps.MEDIA_OBJECT), cat, access, world["store"])
    assert rows(world)["big.wav"].status == FileStatus.ERROR
    (m,) = media(world)
    assert m.status == MediaStatus.ERROR and m.object_key is None
    world["store"].fail_puts = False
    import_all(world, key)  # retried: the same media row, now stored
    assert [x.status for x in media(world)] == [MediaStatus.COMPLETED]


def test_a_transcription_failure_keeps_the_import(world):
    key = drop(world, "mumble.wav", tone_wav(300))
    world["transcriber"].error = "model exploded"
    with pytest.raises(steps.StepFailed, match="transcription failed: model exploded"):
        import_all(world, key)
    (m,) = media(world)
    assert m.status == MediaStatus.ERROR and m.object_key == "user_1/file_1/mumble.wav"
    assert "re-materialize transcript" in m.error_message
    assert rows(world)["mumble.wav"].status == FileStatus.IMPORTED


def test_auto_transcribe_off_skips_the_transcript(world):
    with world["catalog"].session() as s:
        s.get(WatchSource, world["source_id"]).auto_transcribe = False
    key = drop(world, "quiet.wav", tone_wav(350))
    transcript = import_all(world, key)[3]
    assert transcript.metadata() == {"skipped": "auto_transcribe is off for source cloud"}
    assert world["transcriber"].heard == [] and media(world)[0].status == MediaStatus.COMPLETED


def test_a_partition_held_by_a_live_run_is_refused_and_left_alone(world):
    key = drop(world, "shared.wav", tone_wav(1000))
    cat, access = world["catalog"], world["access"]
    steps.fetch_raw_file(ctx(key, steps.RAW_FILE, run_id="run-a"), cat, access)
    with pytest.raises(steps.StepFailed, match="being imported by run run-a"):
        steps.fetch_raw_file(ctx(key, steps.RAW_FILE, run_id="run-b"), cat, access)
    # ... and the refused run's failure path (import_failure_sensor) does not fail the holder
    assert claims.fail(cat, key, "run run-b failed", run_id="run-b") == 0
    row = rows(world)["shared.wav"]
    assert (row.status, row.import_run_id, row.error_message) == (
        FileStatus.IMPORTING, "run-a", None)  # the holder's row is untouched
    steps.stitch_media(ctx(key, steps.STITCHED_MEDIA, run_id="run-a"), cat, access)
    stored = steps.store_media(ctx(key, steps.MEDIA_OBJECT, run_id="run-a"), cat, access,
                               world["store"])
    assert claims.fail(cat, key, "run run-b failed", run_id="run-b") == 0
    assert media(world)[0].status == MediaStatus.PROCESSING and stored.media_id == 1


def test_a_partition_held_by_a_dead_run_is_taken_over(world):
    key = drop(world, "orphan.wav", tone_wav(1100))
    cat, access = world["catalog"], world["access"]
    steps.fetch_raw_file(ctx(key, steps.RAW_FILE, run_id="crashed"), cat, access)
    results = import_all(world, key, run_id="rescuer", is_live=lambda run: run != "crashed")
    assert results[2].object_key == "user_1/file_1/orphan.wav"
    row = rows(world)["orphan.wav"]
    assert (row.status, row.import_run_id) == (FileStatus.IMPORTED, "rescuer")


def test_nothing_to_import_fails_clearly(world):
    with pytest.raises(steps.StepFailed, match="no catalog file waits for partition nope"):
        steps.fetch_raw_file(ctx("nope", steps.RAW_FILE), world["catalog"], world["access"])


def test_readable_copy_reads_a_remote_store_through_a_temp_file(world, tmp_path):
    world["store"].put_bytes("user_1/file_9/x.wav", b"bytes")
    with steps.readable_copy(world["store"], "user_1/file_9/x.wav", tmp_path) as path:
        assert path.read_bytes() == b"bytes" and path.parent.parent == tmp_path
    assert not path.exists()


def test_readable_copy_reads_a_local_store_in_place(tmp_path):
    from watch_pipeline.store.local import LocalObjectStore

    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    store.put_bytes("user_1/file_1/a.wav", b"abc")
    with steps.readable_copy(store, "user_1/file_1/a.wav", tmp_path / "scratch") as path:
        assert path == store.path("user_1/file_1/a.wav")
    assert path.exists()


def test_media_longer_than_the_limit_is_skipped_not_stored_and_not_retried(world):
    from watch_pipeline.catalog.settings import set_setting
    from watch_pipeline.pipeline import claims

    with world["catalog"].session() as s:
        set_setting(s, "watch.max_media_duration_hours", 0.0001)  # 0.36 s
    data = tone_wav(1200, seconds=2.0)
    key = drop(world, "long.wav", data)
    drop(world, "long-copy.wav", data)
    raw, stitched, stored, transcript = import_all(world, key)

    row = rows(world)["long.wav"]
    assert (row.status, row.skip_reason) == (FileStatus.SKIPPED_INVALID, SkipReason.TOO_LONG)
    assert "longer than the 0.0001 h limit" in row.error_message
    assert "not imported" in row.error_message and row.retry_count == 0
    twin = rows(world)["long-copy.wav"]
    assert (twin.status, twin.skip_reason) == (FileStatus.SKIPPED_INVALID, SkipReason.TOO_LONG)
    assert raw.metadata()["status"] == "skipped" and "longer than" in raw.metadata()["reason"]
    for later in (stitched, stored, transcript):
        assert "longer than" in later.metadata()["skipped"]
    assert world["store"].objects == {} and media(world) == []
    assert world["transcriber"].heard == []
    assert not (world["access"].scratch / "imports" / key).exists()
    assert claims.claim_imports(world["catalog"], [world["source_id"]], slots=5) == []


def test_media_within_the_limit_is_imported(world):
    from watch_pipeline.catalog.settings import set_setting

    with world["catalog"].session() as s:
        set_setting(s, "watch.max_media_duration_hours", 0.001)  # 3.6 s
    key = drop(world, "short.wav", tone_wav(1300, seconds=2.0))
    assert import_all(world, key)[2].object_key == "user_1/file_1/short.wav"


def test_the_file_is_probed_once_and_the_store_reuses_raw_files_probe(world, monkeypatch):
    calls: list[str] = []
    real_probe = steps.probe
    monkeypatch.setattr(steps, "probe", lambda path, **kw: calls.append(path.name)
                        or real_probe(path, **kw))
    key = drop(world, "in/once.wav", tone_wav(330, seconds=2.0))

    _raw, _stitched, stored, _transcript = import_all(world, key)

    assert calls == ["once.wav"]  # raw_file's; media_object read it back
    (m,) = media(world)
    assert m.duration == pytest.approx(2.0, abs=0.01) and m.content_type == "audio/wav"
    assert stored.object_key == "user_1/file_1/once.wav"


def test_a_probe_that_no_longer_fits_the_file_is_made_again(world, monkeypatch):
    key = drop(world, "in/again.wav", tone_wav(330))
    steps.fetch_raw_file(ctx(key, steps.RAW_FILE), world["catalog"], world["access"])
    probes = next((world["access"].scratch / "imports").rglob("probes.json"))
    probes.write_text("{not json")  # damaged: the store probes the file itself
    calls: list[str] = []
    real_probe = steps.probe
    monkeypatch.setattr(steps, "probe", lambda path, **kw: calls.append(path.name)
                        or real_probe(path, **kw))

    steps.store_media(ctx(key, steps.MEDIA_OBJECT), world["catalog"], world["access"],
                      world["store"])

    assert calls == ["again.wav"]
    assert media(world)[0].duration == pytest.approx(1.0, abs=0.01)
