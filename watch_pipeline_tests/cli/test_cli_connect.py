"""`source test` and `source browse` on a local source (S3 and SMB: tests/sources/)."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture
def run(run, tmp_path, monkeypatch):
    """The CLI with a local source ``cams`` (a folder, a media file, a text file) added."""
    watch = tmp_path / "watch"
    (watch / "cams" / "room1").mkdir(parents=True)
    (watch / "cams" / "a.mp4").write_bytes(b"x" * 10)
    (watch / "cams" / "notes.txt").write_text("hi")
    monkeypatch.setenv("WATCH_FOLDER_PATH", str(watch))
    run("source", "add", "--name", "cams", "--type", "local", "--path", "cams")
    run.watch = watch
    return run


def test_source_test_reports_counts_and_latency(run):
    out = run("source", "test", "cams").output
    assert "OK" in out and "1 folder(s), 2 file(s), 1 of them media" in out
    data = json.loads(run("source", "test", "cams", "--json").output)
    assert data["ok"] is True and data["media_files"] == 1 and data["connect_ms"] >= 0


def test_source_test_names_the_reason(run):
    shutil.rmtree(run.watch / "cams")
    result = run("source", "test", "cams", code=1)
    assert "does not exist" in result.stderr and "cams" in result.stderr


def test_browse_shows_folders_and_media(run):
    out = run("source", "browse", "cams").output
    assert "room1/" in out and "a.mp4" in out and "notes.txt" not in out
    assert "notes.txt" in run("source", "browse", "cams", "--all").output
    assert json.loads(run("source", "browse", "cams", "room1", "--json").output) == []
    assert "outside" in run("source", "browse", "cams", "../..", code=1).stderr \
        or "'..'" in run("source", "browse", "cams", "../..", code=1).stderr


@pytest.mark.slow
def test_transcriber_test_hears_the_phrase(run):
    data = json.loads(run("transcriber", "test", "--json").output)
    assert data["backend"] == "whisper" and data["model"].startswith("whisper:tiny.en")
    assert data["words_recognised"] >= 6 and "fox" in data["text"].lower()
