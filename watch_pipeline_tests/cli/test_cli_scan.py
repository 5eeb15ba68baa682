"""The operator CLI's scan, file and media commands, on real files and a real SQLite catalog."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.db import Catalog, default_catalog_url
from watch_pipeline.catalog.models import MediaFile, WatchSourceFile
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline.transcribe import formats
from watch_pipeline.transcribe.base import Segment, Transcript

FILE_KEYS = {"id", "remote_path", "filename", "file_size", "file_modified_at", "etag", "imohash",
             "media_file_id", "status", "skip_reason", "part_group", "part_number",
             "error_message", "retry_count", "wait_scans", "processed_at", "created_at"}
MEDIA_LIST_KEYS = {"id", "title", "filename", "imohash", "status", "object_key", "duration",
                   "created_at"}


@pytest.fixture(scope="module")
def tone(tmp_path_factory) -> Path:
    """One second of a 440 Hz sine as WAV, made by ffmpeg once per module."""
    path = tmp_path_factory.mktemp("media") / "tone.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=1", "-y", str(path)], check=True)
    return path


@pytest.fixture
def cams(run, tmp_path, monkeypatch) -> Path:
    """A local source ``cams`` at ``$WATCH_FOLDER_PATH/cams``; returns that folder."""
    watch = tmp_path / "watch"
    folder = watch / "cams"
    folder.mkdir(parents=True)
    monkeypatch.setenv("WATCH_FOLDER_PATH", str(watch))
    run("source", "add", "--name", "cams", "--type", "local", "--path", "cams")
    return folder


@pytest.fixture
def stable_now(run) -> None:
    run("settings", "set", "watch.file_stability_seconds", "0")


@pytest.fixture
def catalog(dagster_home):
    cat = Catalog(default_catalog_url(dagster_home))
    yield cat
    cat.dispose()


def _files(run, *extra: str) -> list[dict]:
    return json.loads(run("source", "files", "cams", "--json", *extra).output)


def _by_path(rows: list[dict]) -> dict[str, dict]:
    return {r["remote_path"]: r for r in rows}


def _decisions(output: str) -> dict[str, str]:
    lines = [line.strip() for line in output.splitlines() if line.startswith("  ")]
    return dict(line.split(None, 1) for line in lines)


def test_dry_run_writes_nothing_and_names_each_decision(run, cams, tone, stable_now):
    shutil.copy(tone, cams / "a.wav")
    (cams / "empty.wav").touch()
    (cams / "notes.mp4").write_text("not a video, just text\n")

    result = run("source", "scan", "cams", "--dry-run")

    assert "dry run, nothing written" in result.output
    decisions = _decisions(result.output)
    assert decisions["a.wav"].startswith("import: new content ")
    assert decisions["empty.wav"] == "skip: validation_failed"
    assert decisions["notes.mp4"] == "skip: invalid_type"
    assert "1 new file(s) would be queued" in result.output
    assert _files(run) == []
    assert json.loads(run("source", "show", "cams", "--json").output)["last_scan_at"] is None

    data = json.loads(run("source", "scan", "cams", "--dry-run", "--json").output)
    assert data["dry_run"] is True and data["files_seen"] == 3
    assert {d["remote_path"] for d in data["decisions"]} == {"a.wav", "empty.wav", "notes.mp4"}
    assert _files(run) == []


def test_scan_records_pending_rows_once(run, cams, tone, stable_now):
    shutil.copy(tone, cams / "a.wav")

    out = run("source", "scan", "cams").output
    assert "1 new file(s) queued; the local_watch_sensor starts their imports" in out
    rows = _files(run)
    assert len(rows) == 1 and set(rows[0]) == FILE_KEYS
    assert rows[0]["status"] == "pending" and len(rows[0]["imohash"]) == 32
    assert rows[0]["filename"] == "a.wav"
    assert rows[0]["file_size"] == (cams / "a.wav").stat().st_size

    again = json.loads(run("source", "scan", "cams", "--json").output)
    assert again["files_seen"] == 1 and again["new_pending"] == [] and again["error"] is None
    assert _files(run) == rows
    assert json.loads(run("source", "show", "cams", "--json").output)["last_scan_status"] \
        == "success"


def test_empty_and_mislabelled_files_are_skipped_with_reason(run, cams, stable_now):
    (cams / "empty.wav").touch()
    (cams / "notes.mp4").write_text("not a video, just text\n")

    run("source", "scan", "cams")

    rows = _by_path(_files(run))
    assert (rows["empty.wav"]["status"], rows["empty.wav"]["skip_reason"]) == \
        ("skipped_invalid", "validation_failed")
    assert (rows["notes.mp4"]["status"], rows["notes.mp4"]["skip_reason"]) == \
        ("skipped_invalid", "invalid_type")
    assert rows["notes.mp4"]["error_message"]


def test_same_recording_under_two_names_is_pending_twice_with_one_fingerprint(
        run, cams, tone, stable_now):
    shutil.copy(tone, cams / "take.wav")
    shutil.copy(tone, cams / "take copy.wav")

    out = run("source", "scan", "cams").output

    assert "1 new file(s) queued" in out  # one fingerprint, so one import
    rows = _by_path(_files(run))
    assert rows["take.wav"]["status"] == rows["take copy.wav"]["status"] == "pending"
    assert rows["take.wav"]["imohash"] == rows["take copy.wav"]["imohash"] is not None


def test_fresh_file_waits_until_stable(run, cams, tone):
    path = cams / "a.wav"
    shutil.copy(tone, path)
    now = time.time()
    os.utime(path, (now, now))

    assert _decisions(run("source", "scan", "cams", "--dry-run").output) == \
        {"a.wav": "wait: not stable yet"}
    run("source", "scan", "cams")
    (row,) = _files(run)
    assert row["status"] == "pending" and row["imohash"] is None


def test_files_status_filter_and_limit(run, cams, tone, stable_now):
    shutil.copy(tone, cams / "a.wav")
    (cams / "empty.wav").touch()
    (cams / "notes.mp4").write_text("text\n")
    run("source", "scan", "cams")

    assert [r["remote_path"] for r in _files(run, "--status", "pending")] == ["a.wav"]
    assert {r["remote_path"] for r in _files(run, "--status", "skipped_invalid")} == \
        {"empty.wav", "notes.mp4"}
    assert _files(run, "--status", "imported") == []
    assert len(_files(run, "--limit", "2")) == 2
    assert len(json.loads(run("source", "files", "list", "cams", "--json").output)) == 3
    table = run("source", "files", "cams", "--status", "skipped_invalid").output
    assert "invalid_type" in table and "a.wav" not in table

    result = run("source", "files", "cams", "--status", "bogus", code=2)
    assert "--status" in result.stderr and "bogus" in result.stderr
    run("source", "files", "cams", "--limit", "0", code=2)


def test_files_retry_releases_failed_rows(run, cams, tone, stable_now, catalog):
    shutil.copy(tone, cams / "a.wav")
    shutil.copy(tone, cams / "b.wav")
    run("source", "scan", "cams")
    with catalog.session() as s:
        s.execute(sa.update(WatchSourceFile).values(status="error", retry_count=5,
                                                    error_message="ffmpeg failed"))

    assert "released 1 failed file(s) at 'b.wav'" in run("source", "files", "retry", "cams",
                                                         "b.wav").output
    rows = _by_path(_files(run))
    assert rows["b.wav"]["retry_count"] == 0 and rows["a.wav"]["retry_count"] == 5
    assert "released 2 failed file(s) of source 'cams'" in run("source", "files", "retry",
                                                               "cams").output
    assert [r["retry_count"] for r in _files(run, "--status", "error")] == [0, 0]
    assert "released 0" in run("source", "files", "retry", "cams", "nope.wav").output
    assert "no watch source" in run("source", "files", "retry", "ghost", code=1).stderr


def test_files_help_shows_both_forms(run, cams):
    out = run("source", "files", "--help").output
    assert "NAME [OPTIONS] | COMMAND" in out and "retry" in out and "list" in out
    assert "--status" in run("source", "files", "cams", "--help").output


def test_scan_errors_exit_1_with_a_message(run, cams, monkeypatch):
    assert "no watch source" in run("source", "scan", "ghost", code=1).stderr

    run("source", "add", "--name", "gone", "--type", "local", "--path", "missing")
    result = run("source", "scan", "gone", code=1)
    assert "scan failed" in result.output and "failed" in result.stderr
    assert json.loads(run("source", "show", "gone", "--json").output)["last_scan_status"] \
        == "error"

    # the secret is decrypted, the endpoint is unreachable: a specific reason, never the secret
    run("source", "add", "--name", "bucket", "--type", "s3", "--bucket", "media-in",
        "--endpoint-url", "http://127.0.0.1:9", "--access-key", "AK", "--secret-key-stdin",
        "--no-ssl", input="s3-secret\n")
    stderr = run("source", "scan", "bucket", code=1).stderr
    assert "cannot reach" in stderr and "s3-secret" not in stderr

    monkeypatch.delenv("WATCH_FOLDER_PATH")
    assert "WATCH_FOLDER_PATH is not set" in run("source", "scan", "cams", code=1).stderr


# -- media ------------------------------------------------------------------------------------

TRANSCRIPT = Transcript(
    segments=(Segment(0.0, 1.5, "Hello there.", speaker="A"),
              Segment(1.5, 3.25, "General Kenobi.", speaker="B")),
    text="Hello there. General Kenobi.", language="en", model="tiny.en", backend="whisper",
    audio_duration=3.25, processing_seconds=0.5)
JSON_KEY = "user_1/file_1/transcript.json"


@pytest.fixture
def media_rows(catalog, dagster_home) -> LocalObjectStore:
    """Two media rows (1 transcribed, 2 still processing); returns the local object store."""
    with catalog.session() as s:
        s.add(MediaFile(title="meeting", filename="meeting.wav", imohash="a" * 32,
                        partition_key="a" * 32, object_key="user_1/file_1/meeting.wav",
                        duration=3.25, status="completed", transcript_key=JSON_KEY,
                        transcript_model="tiny.en"))
        s.add(MediaFile(title="later", filename="later.mp4", imohash="b" * 32,
                        status="processing"))
    store = LocalObjectStore(Path(dagster_home) / "object_store")
    store.put_bytes(JSON_KEY, formats.to_json(TRANSCRIPT).encode())
    store.put_bytes("user_1/file_1/transcript.srt", formats.to_srt(TRANSCRIPT).encode())
    return store


def test_media_list_and_show(run, media_rows):
    rows = json.loads(run("media", "list", "--json").output)
    assert [r["id"] for r in rows] == [2, 1]
    assert all(set(r) == MEDIA_LIST_KEYS for r in rows)
    assert rows[1]["object_key"] == "user_1/file_1/meeting.wav" and rows[1]["duration"] == 3.25
    assert [r["id"] for r in json.loads(run("media", "list", "--status", "completed",
                                            "--json").output)] == [1]
    assert len(json.loads(run("media", "list", "--limit", "1", "--json").output)) == 1
    table = run("media", "list").output
    for word in ("meeting", "meeting.wav", "user_1/file_1/meeting.wav", "a" * 32, "3.2s",
                 "completed", "processing"):
        assert word in table
    assert "--status" in run("media", "list", "--status", "done", code=2).stderr

    shown = json.loads(run("media", "show", "1", "--json").output)
    assert set(shown) == {c.name for c in MediaFile.__table__.columns} | {"previews"}
    assert {"thumbnail", "waveform"} <= set(shown["previews"])  # none stored here
    assert not any(shown["previews"].values())
    assert shown["transcript_key"] == JSON_KEY and shown["transcript_model"] == "tiny.en"
    assert "transcript_model" in run("media", "show", "1").output
    assert "no media numbered 9" in run("media", "show", "9", code=1).stderr


def test_media_transcript_formats(run, media_rows):
    assert run("media", "transcript", "1").output == formats.to_text(TRANSCRIPT)
    assert run("media", "transcript", "1", "--format", "srt").output == formats.to_srt(TRANSCRIPT)
    vtt = run("media", "transcript", "1", "--format", "vtt").output
    assert vtt.startswith("WEBVTT") and "<v A>Hello there." in vtt
    assert formats.from_json(run("media", "transcript", "1", "--format", "json").output) == \
        TRANSCRIPT
    assert "--format" in run("media", "transcript", "1", "--format", "docx", code=2).stderr


def test_media_transcript_prefers_the_stored_sibling(run, media_rows):
    media_rows.put_bytes("user_1/file_1/transcript.txt", b"A: corrected by hand\n")
    assert run("media", "transcript", "1").output == "A: corrected by hand\n"


def test_media_transcript_errors(run, media_rows):
    result = run("media", "transcript", "2", code=1)
    assert "media 2 has no transcript yet (status processing)" in result.stderr
    media_rows.delete(JSON_KEY)
    assert "missing from the object store" in run("media", "transcript", "1", "--format",
                                                  "vtt", code=1).stderr
    assert "no media numbered 7" in run("media", "transcript", "7", code=1).stderr
