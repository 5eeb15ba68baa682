"""A ``transcribe_job`` backfill launched as a user does: ``dagster job backfill`` against a real
``DAGSTER_HOME`` (SQLite, ``./dagster.yaml``, ``./workspace.yaml``), run by the real daemon.

Two recordings are imported first (in-process, on the same instance): one from a source that
transcribes, one from a ``--no-auto-transcribe`` source. Then the operator switches the model
(``WATCH_WHISPER_PRESET=fast``: ``beam5`` → ``beam1``) and backfills every ``media`` partition.
The first recording gets a second transcript and keeps its first one byte for byte; the second
gets its first transcript.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from watch_pipeline.catalog.db import Catalog, default_catalog_url
from watch_pipeline.defs.resources import build_resources
from watch_pipeline.pipeline.steps import transcript_base
from watch_pipeline_tests.defs import harness
from watch_pipeline_tests.promises import drive

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OLD_MODEL = "whisper:tiny.en:int8:beam5"
NEW_MODEL = "whisper:tiny.en:int8:beam1"
FORMATS = ("json", "srt", "vtt", "txt")

pytestmark = pytest.mark.slow


@pytest.fixture
def instance_env(tmp_path, monkeypatch):
    """The embedded default's instance in a fresh DAGSTER_HOME, as ``start.sh`` sets it up."""
    home, watch = tmp_path / "home", tmp_path / "watch"
    home.mkdir()
    watch.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    for name in ("WATCH_CATALOG_URL", "WATCH_SECRET_KEY", "WATCH_SECRET_KEY_FILE",
                 "WATCH_OBJECT_STORE_ROOT", "WATCH_OBJECT_STORE", "WATCH_WHISPER_PRESET",
                 "WATCH_TRANSCRIBER_BACKEND", "WATCH_WHISPER_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("WATCH_FOLDER_PATH", str(watch))
    monkeypatch.setenv("WATCH_TEMP_DIR", str(tmp_path / "scratch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    catalog = Catalog(default_catalog_url(str(home)))
    with dg.DagsterInstance.get() as instance:
        yield {"watch": watch, "catalog": catalog, "instance": instance,
               "resources": build_resources(), "home": home}
    catalog.dispose()


@contextlib.contextmanager
def daemon(env: dict[str, str], log: Path):
    """``dagster-daemon run`` on the workspace until the block ends (its process group)."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _media(env):
    """The two media rows: the talk (auto-transcribed) and the song (not)."""
    by_name = {media.filename: media for media in harness.media_rows(env)}
    assert sorted(by_name) == ["fox.wav", "song.wav"]
    return by_name["fox.wav"], by_name["song.wav"]


def _transcripts(env, media) -> dict[str, bytes]:
    """The stored transcript files beside a media object, by name."""
    folder = drive.store(env).path(media.object_key).parent / "transcripts"
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*"))}


def test_cli_backfill_after_a_model_change_adds_transcripts_and_keeps_the_old(
        instance_env, speech_factory, tmp_path):
    env = instance_env
    for name, flags in (("talks", ()), ("archive", ("--no-auto-transcribe",))):
        (env["watch"] / name).mkdir()
        added = drive.watch_pipeline(env, "source", "add", "--name", name, "--type", "local",
                                     "--path", name, *flags)
        assert added.exit_code == 0, added.output + added.stderr
    speech_factory("the quick brown fox jumps over the lazy dog",
                   env["watch"] / "talks" / "fox.wav")
    speech_factory("seven purple elephants sing in the morning",
                   env["watch"] / "archive" / "song.wav")
    for path in env["watch"].rglob("*.wav"):
        harness.age(path)
    assert all(run.success for run in drive.scan_and_import(env))
    talk, song = _media(env)
    assert talk.transcript_model == OLD_MODEL and song.transcript_key is None
    before = _transcripts(env, talk)
    assert sorted(before) == sorted(f"whisper_tiny.en_int8_beam5.{f}" for f in FORMATS)

    # The operator switches the model and backfills transcribe_job from a shell.
    shell = {**os.environ, "WATCH_WHISPER_PRESET": "fast"}
    launched = subprocess.run(
        [str(BIN / "dagster"), "job", "backfill", "-w", str(ROOT / "workspace.yaml"),
         "-j", "transcribe_job", "--all", "all", "--noprompt"],
        cwd=ROOT, env=shell, capture_output=True, text=True, timeout=180)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    (backfill,) = env["instance"].get_backfills()
    assert sorted(backfill.partition_names) == sorted([talk.partition_key, song.partition_key])

    log = tmp_path / "daemon.log"
    with daemon(shell, log):
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            if all(m.transcript_model == NEW_MODEL for m in harness.media_rows(env)):
                break
            time.sleep(2)
        else:
            raise AssertionError("the backfill did not finish; daemon log:\n"
                                 + log.read_text()[-6000:])

    runs = env["instance"].get_runs(dg.RunsFilter(job_name="transcribe_job"))
    assert len(runs) == 2
    assert {run.tags.get("dagster/backfill") for run in runs} == {backfill.backfill_id}
    talk, song = _media(env)
    after = _transcripts(env, talk)
    # The first model's four files are still there, unchanged; the new model's are beside them.
    assert {name: data for name, data in after.items() if "beam5" in name} == before
    assert sorted(after) == sorted([*before, *(f"whisper_tiny.en_int8_beam1.{f}"
                                               for f in FORMATS)])
    assert talk.transcript_key == transcript_base(talk.object_key, NEW_MODEL) + ".json"
    # The no-auto-transcribe recording got its first transcript.
    assert song.status == "completed" and song.transcript_model == NEW_MODEL
    text = drive.watch_pipeline(env, "media", "transcript", str(song.id)).output.lower()
    assert "elephant" in text or "purple" in text, text
