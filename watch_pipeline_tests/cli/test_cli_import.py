"""``watch-pipeline media import``: what a person sees for good files, bad paths and URLs."""

from __future__ import annotations

import json
import os
import threading

import sqlalchemy as sa

from watch_pipeline.catalog.db import Catalog, default_catalog_url
from watch_pipeline.catalog.models import FileStatus, WatchSourceFile
from watch_pipeline.pipeline import manual as manual_module
from watch_pipeline_tests.fakes import tone_wav


def _wav(path, frequency=440):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tone_wav(frequency, seconds=0.5))
    return path


def test_a_media_file_is_queued_with_its_options(run, tmp_path):
    path = _wav(tmp_path / "Board Meeting.wav")
    out = run("media", "import", str(path), "--owner", "4", "--collection", "board",
              "--tag", "q4", "--tag", "minutes", "--no-transcribe", "--json").output
    (arrival,) = json.loads(out)["arrivals"]
    assert arrival["outcome"] == "queued" and arrival["origin"] == "upload"
    assert arrival["path"] == str(path.resolve())
    assert arrival["partition_key"].startswith("board-meeting-")
    text = run("media", "import", str(path)).output
    assert text.startswith("already_queued") and "Board Meeting.wav" in text


def test_the_hidden_source_shows_only_when_asked(run, tmp_path):
    run("media", "import", str(_wav(tmp_path / "a.wav")))
    assert "manual imports" not in run("source", "list").output
    assert "manual imports (system)" in run("source", "list", "--all").output


def test_missing_folder_and_non_media_paths_are_refused(run, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("meeting notes, not a recording\n" * 20)
    good = _wav(tmp_path / "good.wav")
    result = run("media", "import", str(tmp_path / "nope.wav"), str(tmp_path / "folder"),
                 str(tmp_path / "notes.txt"), str(good), code=2)
    assert f"{tmp_path / 'nope.wav'}: no such file" in result.stderr
    assert f"{tmp_path / 'folder'}: is a folder" in result.stderr
    assert f"{tmp_path / 'notes.txt'}: is not a media file" in result.stderr
    assert result.output.startswith("queued")  # the good one is queued all the same


def test_an_unreadable_file_is_refused(run, tmp_path, monkeypatch):
    path = _wav(tmp_path / "locked.wav")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: refuse the open as the kernel would
        real_open = open

        def deny(file, *args, **kwargs):
            if str(file) == str(path.resolve()):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(manual_module, "open", deny, raising=False)
    result = run("media", "import", str(path), code=2)
    assert f"{path}: cannot be read (permission denied)" in result.stderr


def test_nothing_to_import_is_a_usage_error(run):
    assert "give at least one PATH or --url URL" in run("media", "import", code=2).stderr


def test_a_missing_url_is_reported(run, http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("WATCH_TEMP_DIR", str(tmp_path / "scratch"))
    result = run("media", "import", "--url", http_server.url("/gone.wav?token=s3cret"), code=1)
    assert "/gone.wav?… failed: 404" in result.stderr and "s3cret" not in result.stderr


def test_a_url_is_downloaded_and_queued(run, http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("WATCH_TEMP_DIR", str(tmp_path / "scratch"))
    http_server.route("/talk.wav", tone_wav(300, seconds=0.5))
    (arrival,) = json.loads(run("media", "import", "--url", http_server.url("/talk.wav"),
                                "--json").output)["arrivals"]
    assert (arrival["outcome"], arrival["origin"], arrival["filename"]) == (
        "queued", "url", "talk.wav")
    assert list((tmp_path / "scratch" / "manual").rglob("talk.wav"))


def test_wait_reports_the_import(run, dagster_home, tmp_path):
    path = _wav(tmp_path / "a.wav")
    catalog = Catalog(default_catalog_url(dagster_home))
    done = threading.Event()

    def import_it():  # what the import run does to the row, once the CLI registered it
        while not done.wait(0.05):
            with catalog.session() as s:
                row = s.scalar(sa.select(WatchSourceFile))
                if row is not None and row.status == FileStatus.PENDING:
                    row.status = FileStatus.IMPORTED
                    done.set()

    worker = threading.Thread(target=import_it)
    worker.start()
    try:
        out = run("media", "import", str(path), "--wait").output
    finally:
        done.set()
        worker.join()
        catalog.dispose()
    assert "queued" in out and "imported as media" in out


def test_wait_gives_up_after_the_timeout(run, tmp_path):
    result = run("media", "import", str(_wav(tmp_path / "a.wav")), "--wait", "--timeout", "1",
                 code=1)
    assert "still pending when --timeout passed" in result.output
    assert "did not import" in result.stderr
