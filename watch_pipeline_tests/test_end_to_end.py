"""End to end: the real dagster-daemon as a subprocess on a temp DAGSTER_HOME, files dropped into
the watch folder, transcripts read back through the CLI. Includes a daemon restart mid-run.

Every test runs twice (the ``stack`` fixture's ids):

- ``sqlite``: the embedded default, ``./dagster.yaml`` with the catalog in SQLite under
  DAGSTER_HOME and its key in the key file there.
- ``postgres``: the production instance, ``docker/dagster.yaml`` as shipped (PostgreSQL storage
  from ``DAGSTER_PG_*``, queued run coordinator, same policy blocks) except the run launcher,
  which is Dagster's default (runs as subprocesses; the Docker launcher is tested with the
  stack). Dagster's storage and the catalog (``WATCH_CATALOG_URL``) each get a fresh database on
  the session's throwaway PostgreSQL. As in the production image, ``WATCH_SECRET_KEY`` is unset
  and ``WATCH_SECRET_KEY_FILE`` names a key file outside DAGSTER_HOME (there: a volume every
  container mounts), created on first use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from watch_pipeline.catalog.secrets import KEY_FILENAME
from watch_pipeline_tests.fixtures.installed import BIN, RunsTheCli, sql_rows, start_logged
from watch_pipeline_tests.fixtures.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def production_instance_config() -> dict:
    """``docker/dagster.yaml`` with Dagster's default run launcher in place of Docker's."""
    config = yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())
    config["run_launcher"] = {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
    return config


class Stack(RunsTheCli):
    """One instance: DAGSTER_HOME, watch folder, catalog, and the daemon once started.

    Args:
        tmp: The test's private folder.
        postgres: ``None`` for the embedded SQLite instance, else the server on which the
            production instance gets its two databases (Dagster storage and catalog).
    """

    def __init__(self, tmp: Path, postgres: PostgresServer | None = None) -> None:
        self.home = tmp / "home"
        self.watch = tmp / "watch"
        self.home.mkdir()
        self.watch.mkdir()
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home),
                    "WATCH_FOLDER_PATH": str(self.watch), "WATCH_TEMP_DIR": str(tmp / "scratch"),
                    "WATCH_SENSOR_INTERVAL_SECONDS": "2", "HF_HUB_OFFLINE": "1"}
        self.env.pop("WATCH_CATALOG_URL", None)
        self.env.pop("WATCH_SECRET_KEY", None)
        self.env.pop("WATCH_SECRET_KEY_FILE", None)
        self.key_file = self.home / KEY_FILENAME
        self.postgres = postgres
        self.databases: list[str] = []
        if postgres is None:
            shutil.copyfile(ROOT / "dagster.yaml", self.home / "dagster.yaml")
            self.catalog_url = f"sqlite:///{self.home}/watch_catalog.sqlite"
        else:
            tag = uuid.uuid4().hex[:12]
            dagster_db, catalog_db = f"e2e_dagster_{tag}", f"e2e_catalog_{tag}"
            self.dagster_url = postgres.create_database(dagster_db)
            self.databases.append(dagster_db)
            self.catalog_url = postgres.create_database(catalog_db)
            self.databases.append(catalog_db)
            (self.home / "dagster.yaml").write_text(
                yaml.safe_dump(production_instance_config(), sort_keys=False))
            self.key_file = tmp / "keys" / KEY_FILENAME
            self.env.update({
                "DAGSTER_PG_USERNAME": postgres.user, "DAGSTER_PG_PASSWORD": "unused",  # trust
                "DAGSTER_PG_HOST": postgres.host, "DAGSTER_PG_PORT": str(postgres.port),
                "DAGSTER_PG_DB": dagster_db, "WATCH_CATALOG_URL": self.catalog_url,
                "WATCH_SECRET_KEY_FILE": str(self.key_file)})
        self.log = tmp / "daemon.log"
        self.daemon: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.daemon = start_logged(
            [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT, env=self.env, log=self.log)

    def stop(self, *, graceful: bool = False) -> None:
        """Stop the daemon: only its own process when ``graceful`` (runs already launched go
        on, as in a service restart), else its whole process group."""
        if self.daemon is None:
            return
        try:
            if graceful:
                self.daemon.send_signal(signal.SIGTERM)
            else:
                os.killpg(self.daemon.pid, signal.SIGTERM)
            self.daemon.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.daemon.pid, signal.SIGKILL)
        self.daemon = None

    def query(self, sql: str, url: str | None = None) -> list[tuple]:
        """Rows of ``sql`` on the catalog (or on the database at ``url``)."""
        return sql_rows(url or self.catalog_url, sql)

    def check_production_instance(self) -> None:
        """The postgres variant really ran on PostgreSQL, queued, with the production key."""
        enqueued = self.query("SELECT count(*) FROM event_logs "
                              "WHERE dagster_event_type = 'PIPELINE_ENQUEUED'", self.dagster_url)
        assert enqueued[0][0] >= 1, "no run went through the queued run coordinator"
        assert not (self.home / "history").exists(), "Dagster wrote SQLite storage"
        assert not (self.home / KEY_FILENAME).exists(), "WATCH_SECRET_KEY_FILE was ignored"
        assert not (self.home / "watch_catalog.sqlite").exists()

    def drop_databases(self) -> None:
        """Drop this stack's databases (closing any connection left open)."""
        while self.postgres is not None and self.databases:
            self.postgres.drop_database(self.databases.pop())

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.daemon is not None and self.daemon.poll() is not None:
                break
            time.sleep(1)
        raise AssertionError(f"timed out waiting for {what}; daemon log:\n"
                             + self.log.read_text()[-6000:])


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request, tmp_path):
    postgres = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    s = Stack(tmp_path, postgres)
    try:
        s.cli("source", "add", "--name", "watch", "--type", "local", "--path", ".",
              "--polling-interval-minutes", "1")
        s.cli("settings", "set", "watch.file_stability_seconds", "1")
        yield s
        s.stop()
        # run workers launched by the daemon end with their runs; give stragglers a moment
        time.sleep(1)
        if postgres is not None:
            s.check_production_instance()
    finally:
        s.stop()
        s.drop_databases()


def completed(stack: Stack) -> int:
    return stack.query("SELECT count(*) FROM media_file WHERE status = 'completed'")[0][0]


def test_dropped_files_are_transcribed_once_by_the_daemon(stack, speech_factory, tmp_path,
                                                         smtp_server):
    stack.env["WATCH_NOTIFY_INTERVAL_SECONDS"] = "2"
    stack.cli("email", "add", "--name", "ops", "--provider", "smtp", "--from",
              "watch@example.com", "--recipients", "ops@example.com", "--host", "127.0.0.1",
              "--port", str(smtp_server.port), "--no-tls")
    stack.cli("email", "link", "ops", "--source", "watch")
    staging = tmp_path / "staging"
    speech_factory("the quick brown fox jumps over the lazy dog", staging / "fox.wav")
    speech_factory("seven purple elephants sing in the morning", staging / "song.mp4", fmt="mp4")
    stack.start()
    # The drop appears at once (one rename of a hidden folder), as a recorder's upload would:
    # a scan never sees half of it, so the whole drop makes exactly one notification.
    hidden = stack.watch / ".incoming"
    hidden.mkdir()
    for f in staging.iterdir():
        shutil.copyfile(f, hidden / f.name)
    shutil.copyfile(staging / "fox.wav", hidden / "fox-copy.wav")  # same recording twice
    hidden.rename(stack.watch / "drop")

    stack.wait_for(lambda: completed(stack) >= 2, 300, "two transcripts")
    time.sleep(5)  # a few more ticks: nothing else may be imported
    media = stack.query("SELECT id, filename, imohash FROM media_file ORDER BY id")
    assert len(media) == 2
    assert len({m[2] for m in media}) == 2
    statuses = sorted(r[0] for r in stack.query("SELECT status FROM watch_source_file"))
    assert {r[0] for r in stack.query("SELECT remote_path FROM watch_source_file")} == {
        "drop/fox.wav", "drop/song.mp4", "drop/fox-copy.wav"}
    assert statuses == ["imported", "imported", "skipped_duplicate"]
    by_name = {m[1]: m[0] for m in media}
    fox_id = by_name.get("fox.wav") or by_name["fox-copy.wav"]
    text = stack.cli("media", "transcript", str(fox_id), "--format", "txt").lower()
    assert "quick" in text and "fox" in text
    song = stack.cli("media", "transcript", str(by_name["song.mp4"]), "--format", "srt").lower()
    assert "-->" in song and "elephant" in song and "morning" in song
    # exactly one mail about the scan and its imports, naming the recordings
    stack.wait_for(lambda: len(smtp_server.messages) >= 1, 60, "the notification mail")
    time.sleep(6)
    assert len(smtp_server.messages) == 1, [m.part("plain") for m in smtp_server.messages]
    body = smtp_server.messages[0].part("plain")
    assert "fox" in body and "song" in body and "duplicate_same_source" in body


def test_daemon_restart_mid_run_loses_nothing_and_imports_nothing_twice(stack, speech_factory,
                                                                       tmp_path):
    staging = tmp_path / "staging"
    phrases = ["one small step for a man", "the rain in spain stays mainly in the plain",
               "a stitch in time saves nine"]
    for i, phrase in enumerate(phrases):
        speech_factory(phrase, staging / f"clip{i}.wav")
    stack.start()
    for f in staging.iterdir():
        shutil.copyfile(f, stack.watch / f.name)
    # wait until an import is under way, then restart the daemon
    stack.wait_for(lambda: stack.query(
        "SELECT count(*) FROM watch_source_file WHERE run_key IS NOT NULL")[0][0] >= 1,
        180, "the first import request")
    stack.stop(graceful=True)
    time.sleep(2)
    stack.start()
    stack.wait_for(lambda: completed(stack) >= 3, 420, "three transcripts after the restart")
    time.sleep(5)
    media = stack.query("SELECT imohash FROM media_file")
    assert len(media) == 3 and len({m[0] for m in media}) == 3
    assert {r[0] for r in stack.query("SELECT status FROM watch_source_file")} == {"imported"}


def test_parts_dropped_one_by_one_become_one_media_through_the_daemon(stack, speech_factory,
                                                                    tmp_path):
    stack.cli("source", "update", "watch", "--multipart", "--multipart-wait-scans", "5")
    staging = tmp_path / "staging"
    phrases = {1: "first part says apple", 2: "second part says banana",
               3: "third part says orange"}
    for n, phrase in phrases.items():
        speech_factory(phrase, staging / f"lecture_P00{n}.wav")
    stack.start()
    for n in (1, 3, 2):  # one by one, each seen by its own scan
        shutil.copyfile(staging / f"lecture_P00{n}.wav", stack.watch / f"lecture_P00{n}.wav")
        time.sleep(1.2)  # past the stability window
        stack.cli("source", "scan", "watch")
    stack.wait_for(lambda: completed(stack) >= 1, 300, "the stitched transcript")
    time.sleep(4)
    (media,) = stack.query("SELECT id, filename FROM media_file")
    assert media[1] == "lecture.wav"
    text = stack.cli("media", "transcript", str(media[0])).lower()
    for word in ("apple", "banana", "orange"):
        assert word in text
    assert {r[0] for r in stack.query("SELECT status FROM watch_source_file")} == {
        "stitched_part"}
