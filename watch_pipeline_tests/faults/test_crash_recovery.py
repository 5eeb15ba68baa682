"""A crash of the embedded default: every file is imported once after the restart.

``dg dev`` runs as ``scripts/start.sh`` starts it (the project's ``dagster.yaml`` in a temp
DAGSTER_HOME, started from there), on :mod:`crash_location` (the real definitions with a slow
transcriber). Twelve spoken clips are dropped; while import runs are in flight the whole process
group (webserver, daemon, code server, run workers) is SIGKILLed, as a power cut or an OOM kill
would, and started again; twice. Then every clip must be imported exactly once.

The in-process tests below pin the stranded-run rules: a dead worker's run is failed, a live
worker's run is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.models import WatchSource, WatchSourceFile
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.defs.recovery import STRANDED_TAG, build_stranded_run_sensor
from watch_pipeline.pipeline import claims, recovery
from watch_pipeline_tests.fixtures.installed import BIN, RunsTheCli, sql_rows, start_logged

ROOT = Path(__file__).resolve().parents[2]
IMPORT_TAGS = {"watch_pipeline/kind": "import"}
UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]
PHRASES = [
    "one small step for a man", "the rain in spain stays in the plain",
    "a stitch in time saves nine", "seven purple elephants sing", "the quick brown fox",
    "every cloud has a silver lining", "good things come to those who wait",
    "the early bird catches the worm", "actions speak louder than words",
    "better late than never", "practice makes perfect", "time flies like an arrow",
]


# ---------------------------------------------------------------- the rules, with real processes


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_worker_process_that_runs_is_alive_and_a_finished_one_is_not():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert recovery.local_worker_alive(sleeper.pid, time.time())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not recovery.local_worker_alive(sleeper.pid, time.time())
    assert not recovery.local_worker_alive(_dead_pid(), time.time())


def test_a_zombie_worker_is_dead():
    zombie = subprocess.Popen(["true"])  # exits at once; not reaped until wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        assert not recovery.local_worker_alive(zombie.pid, time.time())
    finally:
        zombie.wait()


def test_a_reused_pid_is_not_the_worker():
    # A report written after this process started names it; one written an hour before it
    # started named another process that had the same pid.
    started, alive = recovery.process_started_at(os.getpid())
    assert alive and started is not None
    assert recovery.local_worker_alive(os.getpid(), started + 5)
    assert not recovery.local_worker_alive(os.getpid(), started - 3600)


def test_runs_whose_worker_never_came_up_are_stranded_after_the_launch_window():
    now = time.time()
    local = recovery.WorkerCheck.LOCAL_PROCESS

    def run(status: str, silent: float, pid: int | None = None) -> recovery.InFlightRun:
        return recovery.InFlightRun("r", status, pid, now - silent if pid else None, now - silent)

    window = recovery.LOST_LAUNCH_SECONDS
    assert recovery.stranded_reason(run("STARTING", window + 5), local, now=now)
    assert recovery.stranded_reason(run("NOT_STARTED", window + 5), local, now=now)
    assert recovery.stranded_reason(run("STARTING", window - 5), local, now=now) is None
    # a remote launcher's slow start is left to run monitoring's start timeout
    health = recovery.WorkerCheck.HEALTH_CHECK
    assert recovery.stranded_reason(run("STARTING", window + 5), health, now=now) is None
    # a live worker, however quiet, is never stranded
    quiet = run("STARTED", 10 * 3600, pid=4242)
    assert recovery.stranded_reason(quiet, local, now=now, alive=lambda _pid, _at: True) is None
    assert recovery.stranded_reason(quiet, local, now=now, alive=lambda _pid, _at: False)
    # with a health check, the launcher decides
    failed = recovery.InFlightRun("r", "STARTED", 1, now, now, worker_failed=True)
    running = recovery.InFlightRun("r", "STARTED", 1, now, now, worker_failed=False)
    assert recovery.stranded_reason(failed, health, now=now)
    assert recovery.stranded_reason(running, health, now=now) is None


@dg.op
def _noop() -> None:
    pass


@dg.job
def _some_job() -> None:
    _noop()


def _started_run(instance: dg.DagsterInstance, pid: int, tags: dict[str, str]) -> dg.DagsterRun:
    run = instance.create_run_for_job(_some_job, tags=tags, status=dg.DagsterRunStatus.STARTED)
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run)
    return run


def _tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, catalog) -> str:
    context = dg.build_sensor_context(
        instance=instance, resources={"catalog": CatalogResource(url=str(catalog.url))})
    return sensor(context).skip_message


def test_the_sensor_fails_a_dead_workers_import_run_and_never_a_live_one(sqlite_catalog):
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        with dg.instance_for_test() as instance:
            alive = _started_run(instance, sleeper.pid, IMPORT_TAGS)
            dead = _started_run(instance, _dead_pid(), IMPORT_TAGS)
            other = _started_run(instance, _dead_pid(), {"watch_pipeline/kind": "maintenance"})
            sensor = build_stranded_run_sensor(30)
            assert dead.run_id in _tick(sensor, instance, sqlite_catalog)
            status = {r.run_id: instance.get_run_by_id(r.run_id).status
                      for r in (alive, dead, other)}
            assert status == {alive.run_id: dg.DagsterRunStatus.STARTED,
                              dead.run_id: dg.DagsterRunStatus.FAILURE,
                              other.run_id: dg.DagsterRunStatus.STARTED}
            assert instance.get_run_by_id(dead.run_id).tags[STRANDED_TAG] == "true"
            assert STRANDED_TAG not in instance.get_run_by_id(alive.run_id).tags
            # the next tick finds nothing more to do
            assert _tick(sensor, instance, sqlite_catalog) == "no stranded import run"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stranded_runs_files_are_retried_at_once_and_the_crash_is_not_counted(
        sqlite_catalog):
    fingerprint, run_key = "f" * 32, "f" * 32
    with dg.instance_for_test() as instance:
        dead = _started_run(instance, _dead_pid(), {**IMPORT_TAGS, "dagster/run_key": run_key})
        with sqlite_catalog.session() as session:
            source = WatchSource(name="watch", source_type="local", local_path=".")
            session.add(source)
            session.flush()
            source_id = source.id
            session.add(WatchSourceFile(
                watch_source_id=source_id, remote_path="clip.wav", filename="clip.wav",
                imohash=fingerprint, partition_key=fingerprint, status="importing",
                run_key=run_key, import_run_id=dead.run_id))
        sensor = build_stranded_run_sensor(30)
        assert dead.run_id in _tick(sensor, instance, sqlite_catalog)
        # what import_failure_sensor does with the failure: error, counted, with a backoff
        assert claims.fail(sqlite_catalog, fingerprint, f"run {dead.run_id} failed: stranded",
                           run_key=run_key) == 1
        assert claims.claim_imports(sqlite_catalog, [source_id], slots=5) == []

        assert "1 file(s) released" in _tick(sensor, instance, sqlite_catalog)
        assert "released" not in _tick(sensor, instance, sqlite_catalog)  # released once
        with sqlite_catalog.session() as session:
            row = session.scalars(sa.select(WatchSourceFile)).one()
            assert (row.status, row.retry_count) == ("error", 0)
        (request,) = claims.claim_imports(sqlite_catalog, [source_id], slots=5)
        assert request.fingerprint == fingerprint and request.run_key != run_key


# ---------------------------------------------------------------- the real crash, twice


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                if fields[0] != "Z" and int(fields[2]) == pgid:
                    members.append(int(entry.name))
    return members


class EmbeddedDefault(RunsTheCli):
    """Dagster started as ``scripts/start.sh`` starts it, on a temp DAGSTER_HOME."""

    def __init__(self, tmp: Path) -> None:
        self.home, self.watch = tmp / "home", tmp / "watch"
        self.home.mkdir()
        self.watch.mkdir()
        shutil.copyfile(ROOT / "dagster.yaml", self.home / "dagster.yaml")
        self.workspace = tmp / "workspace.yaml"
        self.workspace.write_text(
            "load_from:\n  - python_module:\n"
            "      module_name: watch_pipeline_tests.faults.crash_location\n"
            "      location_name: watch_pipeline\n"
            f"      working_directory: {ROOT}\n")
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home),
                    "WATCH_FOLDER_PATH": str(self.watch), "WATCH_TEMP_DIR": str(tmp / "scratch"),
                    "WATCH_SENSOR_INTERVAL_SECONDS": "2", "HF_HUB_OFFLINE": "1"}
        for name in ("WATCH_CATALOG_URL", "WATCH_SECRET_KEY", "WATCH_SECRET_KEY_FILE"):
            self.env.pop(name, None)
        self.catalog_url = f"sqlite:///{self.home}/watch_catalog.sqlite"
        self.log = tmp / "dagster.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_logged(
            [str(BIN / "dg"), "dev", "-w", str(self.workspace), "-h", "127.0.0.1",
             "-p", str(_free_port())], cwd=self.home, env=self.env, log=self.log)

    def crash(self) -> None:
        """SIGKILL every process of the group at once: daemon, code server, run workers."""
        assert self.proc is not None
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 30
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_members(pgid), "processes survived SIGKILL"
        self.proc = None

    def rows(self, sql: str) -> list[tuple]:
        return sql_rows(self.catalog_url, sql)

    def statuses(self) -> dict[str, int]:
        return dict(self.rows("SELECT status, count(*) FROM watch_source_file GROUP BY status"))

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            assert self.proc is None or self.proc.poll() is None, self.log.read_text()[-6000:]
            time.sleep(1)
        raise AssertionError(f"timed out waiting for {what}; files {self.statuses()}; log:\n"
                             + self.log.read_text()[-6000:])


@pytest.fixture
def embedded(tmp_path):
    instance = EmbeddedDefault(tmp_path)
    try:
        yield instance
    finally:
        if instance.proc is not None:
            instance.crash()


def _import_runs(instance: dg.DagsterInstance, **filters) -> list[dg.RunRecord]:
    return list(instance.get_run_records(dg.RunsFilter(tags=IMPORT_TAGS, **filters)))


@pytest.mark.slow
def test_two_crashes_with_imports_in_flight_lose_nothing_and_double_nothing(
        embedded, speech_factory, request, record_property):
    embedded.cli("db", "upgrade")
    embedded.cli("source", "add", "--name", "watch", "--type", "local", "--path", ".",
                 "--polling-interval-minutes", "1")
    embedded.cli("settings", "set", "watch.file_stability_seconds", "0")
    names = {f"clip{i:02d}.wav" for i in range(len(PHRASES))}
    hidden = embedded.watch / ".incoming"
    for i, phrase in enumerate(PHRASES):
        speech_factory(phrase, hidden / f"clip{i:02d}.wav")
    hidden.rename(embedded.watch / "drop")  # the whole drop appears at once

    dagster = dg.DagsterInstance.from_config(str(embedded.home))
    request.addfinalizer(dagster.dispose)
    crashes: list[datetime] = []
    retry_delays: list[float] = []

    def in_flight() -> bool:
        """A live import run is at work while files are still to be imported.

        It may hold files it is importing, or be transcribing one while the rest of its batch
        waits: a file is 'importing' only until it is stored, a short window that a poll once a
        second can miss when imports are quick, so waiting for that alone was flaky.
        """
        started = {r.dagster_run.run_id
                   for r in _import_runs(dagster, statuses=[dg.DagsterRunStatus.STARTED])}
        if not started:
            return False
        holders = {r[0] for r in embedded.rows(
            "SELECT import_run_id FROM watch_source_file WHERE status = 'importing'")}
        left = embedded.rows("SELECT id FROM watch_source_file WHERE status != 'imported'")
        return bool(started & holders) or bool(left)

    def retried_since(restart: datetime) -> bool:
        """Every file not yet imported has been requested again after ``restart``."""
        waiting = embedded.rows(
            "SELECT run_requested_at FROM watch_source_file WHERE status != 'imported'")
        return all(at is not None and datetime.fromisoformat(str(at)).replace(tzinfo=UTC)
                   >= restart for (at,) in waiting)

    embedded.start()
    for _ in range(2):
        embedded.wait_for(in_flight, 300, "import runs in flight")
        stranded = {r.dagster_run.run_id for r in _import_runs(dagster, statuses=UNFINISHED)}
        embedded.crash()
        crashes.append(datetime.now(UTC))
        embedded.start()
        restarted = time.monotonic()
        # the killed runs are failed, and their files are asked for again with new runs
        embedded.wait_for(lambda s=stranded: all(
            dagster.get_run_by_id(r).status == dg.DagsterRunStatus.FAILURE for r in s),
            240, "the stranded runs to be marked failed")
        embedded.wait_for(lambda c=crashes[-1]: retried_since(c), 300,
                          "every unfinished file requested again")
        retry_delays.append(time.monotonic() - restarted)

    embedded.wait_for(lambda: embedded.statuses().get("imported") == len(names), 420,
                      "every clip imported")
    time.sleep(6)  # a few more ticks: nothing else may be imported

    media = json.loads(embedded.cli("media", "list", "--json"))
    assert sorted(m["filename"] for m in media) == sorted(names)  # 0 lost, 0 twice
    assert embedded.statuses() == {"imported": len(names)}
    assert len(embedded.rows("SELECT id FROM media_file")) == len(names)
    # every killed run was recognised as stranded, and only runs from before a crash were
    marked = [r for r in _import_runs(dagster) if r.dagster_run.tags.get(STRANDED_TAG)]
    assert marked
    for record in marked:
        assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE
        assert record.create_timestamp < crashes[-1]
    assert not _import_runs(dagster, statuses=UNFINISHED)
    delays = ", ".join(f"{d:.0f}s" for d in retry_delays)
    record_property("retry_after_restart", delays)
    sys.stderr.write(f"\nretries requested {delays} after each restart\n")
