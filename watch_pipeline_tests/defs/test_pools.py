"""The ``watch_imports`` concurrency pool: which steps it holds, how its limit follows the setting,
and that a real dagster-daemon never runs more imports at once than the limit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from watch_pipeline.catalog.db import Catalog, resolve_catalog_url
from watch_pipeline.catalog.models import MediaFile, WatchSource, WatchSourceFile
from watch_pipeline.catalog.settings import SETTINGS, WatchSettings, set_setting
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.cli.main import cli
from watch_pipeline.definitions import defs
from watch_pipeline.defs.jobs import IMPORT_ASSETS, import_job
from watch_pipeline.defs.pools import IMPORT_POOL, sync_import_pool
from watch_pipeline.pipeline.scan import scan_source
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline_tests.defs.harness import age, tick

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SETTING = "watch.max_concurrent_imports"
STEP_END = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
RUN_END = {dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE}


def pool_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    return {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (one ending as another starts do not overlap)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def test_max_overlap():
    assert max_overlap([]) == 0
    assert max_overlap([(0, 1), (1, 2), (2, 3)]) == 1
    assert max_overlap([(0, 3), (1, 2), (1.5, 4), (3.5, 5)]) == 3


# --- which steps are in the pool ---------------------------------------------------------------

def test_every_import_step_is_in_the_pool_and_nothing_else(dagster_home):
    definitions = defs()
    expected = {"import_job": 6, "import_batch_job": 1, "transcribe_job": 1,
                "recompute_fingerprints_job": 0, "cleanup_temp_job": 0}
    for name, in_pool in expected.items():
        pools = [node.definition.pool for node in definitions.resolve_job_def(name).graph.nodes]
        assert pools == ([IMPORT_POOL] * in_pool or [None]), (name, pools)


def test_both_instance_configs_default_the_pool_to_the_setting_default():
    for path in (ROOT / "dagster.yaml", ROOT / "docker" / "dagster.yaml"):
        pools = yaml.safe_load(path.read_text())["concurrency"]["pools"]
        assert pools == {"granularity": "run", "default_limit": SETTINGS[SETTING].default}, path


# --- the sync function ---------------------------------------------------------------------------

def test_sync_writes_the_limit_only_when_it_differs(monkeypatch):
    with dg.instance_for_test() as instance:
        first = sync_import_pool(instance, 2)
        assert first.changed and first.previous is None
        assert first.describe() == "concurrency pool watch_imports: limit set to 2 (had none)"
        assert pool_limits(instance) == {IMPORT_POOL: 2}

        def no_write(*_args: object) -> None:
            raise AssertionError("an unchanged limit was written again")

        with monkeypatch.context() as patched:
            patched.setattr(instance.event_log_storage, "set_concurrency_slots", no_write)
            again = sync_import_pool(instance, 2)
        assert not again.changed and again.describe().endswith("limit 2 (unchanged)")

        lowered = sync_import_pool(instance, 1)
        assert lowered.changed and lowered.describe().endswith("limit 2 -> 1")
        assert pool_limits(instance) == {IMPORT_POOL: 1}


def test_sync_replaces_a_limit_taken_from_the_instance_default():
    overrides = {"concurrency": {"pools": {"granularity": "run", "default_limit": 5}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(IMPORT_POOL)  # what the run queue does
        assert [(p.limit, p.from_default) for p in storage.get_pool_limits()] == [(5, True)]
        sync = sync_import_pool(instance, 5)
        assert sync.changed and sync.was_default
        # set for this pool now: a later change of default_limit no longer moves it
        assert [(p.limit, p.from_default) for p in storage.get_pool_limits()] == [(5, False)]
        assert not sync_import_pool(instance, 5).changed


def test_sync_on_postgres_with_the_production_policy(postgres_url):
    policy = yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())["concurrency"]
    overrides = {"storage": {"postgres": {"postgres_url": postgres_url}}, "concurrency": policy}
    with dg.instance_for_test(overrides=overrides) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 5
        assert sync_import_pool(instance, 3).changed
        assert not sync_import_pool(instance, 3).changed
        assert pool_limits(instance) == {IMPORT_POOL: 3}


# --- the watch sensor keeps the pool in step with the setting ----------------------------------

def test_watch_sensor_tick_sets_the_pool_limit_from_the_setting(env):
    with env["catalog"].session() as s:
        set_setting(s, SETTING, 3)
    _, skip = tick(env)
    assert skip == "no enabled local watch source"  # applied before any early return
    assert pool_limits(env["instance"]) == {IMPORT_POOL: 3}

    with env["catalog"].session() as s:
        set_setting(s, SETTING, 7)
        set_setting(s, "watch.enabled", False)
    tick(env)
    assert pool_limits(env["instance"]) == {IMPORT_POOL: 7}


# --- a real daemon: the pool alone bounds the import runs --------------------------------------

PHRASES = ["one small step for a man", "the rain in spain stays mainly in the plain",
           "a stitch in time saves nine", "seven purple elephants sing in the morning",
           "the quick brown fox jumps over the lazy dog", "every good boy deserves fudge"]


def _drop_and_scan(watch: Path, speech_factory) -> Catalog:  # type: ignore[no-untyped-def]
    """Six stable recordings in a local source, scanned: six fingerprints wait for import."""
    for i, phrase in enumerate(PHRASES):
        age(speech_factory(phrase, watch / f"clip{i}.wav"))
    catalog = Catalog(resolve_catalog_url(os.environ))
    with catalog.session() as s:
        source_id = create_source(s, None, fields={"name": "watch", "source_type": "local",
                                                   "local_path": "."}).id
    with catalog.session() as s:
        settings = WatchSettings.load(s)
        client = SourcesResource(watch_folder=str(watch)).client_for(s.get(WatchSource, source_id))
    with client:
        report = scan_source(catalog, source_id, client, settings=settings)
    assert len(report.new_pending) == len(PHRASES), report.summary
    return catalog


def _intervals(instance: dg.DagsterInstance, runs: list[dg.DagsterRun], *,
               steps: bool) -> list[tuple[float, float]]:
    """(start, end) of every step of ``runs``, or of each run from its launch, from the event
    log (a run holds its pool slot from launch to end, start-up included)."""
    begin, end = ((dg.DagsterEventType.STEP_START, STEP_END) if steps
                  else (dg.DagsterEventType.RUN_STARTING, RUN_END))
    intervals = []
    for run in runs:
        opened: dict[str | None, float] = {}
        for entry in instance.all_logs(run.run_id, of_type={begin, *end}):
            if entry.dagster_event_type == begin:
                opened[entry.step_key] = entry.timestamp
            else:
                intervals.append((opened.pop(entry.step_key), entry.timestamp))
        assert not opened, f"run {run.run_id}: {sorted(map(str, opened))} never ended"
    return intervals


@pytest.mark.slow
def test_daemon_never_runs_more_imports_at_once_than_the_pool_allows(
        dagster_home, tmp_path, monkeypatch, speech_factory):
    home = Path(dagster_home)
    watch = tmp_path / "watch"
    watch.mkdir()
    monkeypatch.setenv("WATCH_FOLDER_PATH", str(watch))
    monkeypatch.setenv("WATCH_TEMP_DIR", str(tmp_path / "scratch"))
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    # Room in the run queue for all six runs at once (dagster.yaml dequeues every second): only
    # the pool may hold them back.
    config["concurrency"]["runs"]["max_concurrent_runs"] = 10
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "watch_pipeline_tests.defs.pool_location", "location_name": "pool_test",
        "working_directory": str(ROOT)}}]}))
    catalog = _drop_and_scan(watch, speech_factory)

    log = tmp_path / "daemon.log"
    with dg.DagsterInstance.get() as instance:
        # Shut while the sensor queues all six runs, so that they all wait at once.
        sync_import_pool(instance, 0)
        with open(log, "wb") as out:
            daemon = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], cwd=ROOT,
                env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            def wait_for(what: str, runs: dg.RunsFilter) -> None:
                deadline = time.monotonic() + 240  # generous: 2 cores may be busy elsewhere
                while instance.get_runs_count(runs) < len(PHRASES):
                    if time.monotonic() > deadline or daemon.poll() is not None:
                        pytest.fail(f"timed out waiting for {what}; daemon log:\n"
                                    + log.read_text()[-6000:])
                    time.sleep(0.5)

            wait_for("the sensor's six runs", dg.RunsFilter(job_name=import_job.name))
            # The operator's command opens the pool at once, for the running daemon.
            result = CliRunner().invoke(cli, ["settings", "set", SETTING, "2"],
                                        catch_exceptions=False)
            assert result.exit_code == 0, result.output
            assert "concurrency pool watch_imports: limit 0 -> 2" in result.output
            wait_for("six finished runs", dg.RunsFilter(statuses=[
                dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]))
            runs = instance.get_runs(dg.RunsFilter(job_name=import_job.name))
            steps = _intervals(instance, runs, steps=True)
            in_progress = _intervals(instance, runs, steps=False)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)

    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert len(runs) == len(PHRASES) and len(steps) == len(IMPORT_ASSETS) * len(PHRASES)
    # Two import runs in progress at once, never three (without the pool: up to six) ...
    assert max_overlap(in_progress) == 2, sorted(in_progress)
    # ... so never more than two import steps at once. (Whether two steps really overlapped
    # depends on how long each run takes to start on a busy machine: a run holds its slot from
    # launch, start-up included.)
    assert max_overlap(steps) <= 2, sorted(steps)
    with catalog.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(MediaFile)
                        .where(MediaFile.status == "completed")) == len(PHRASES)
        assert set(s.scalars(sa.select(WatchSourceFile.status))) == {"imported"}
    catalog.dispose()
