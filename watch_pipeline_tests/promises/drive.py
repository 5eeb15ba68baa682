"""Drive the pipeline as the product does: scan (a watch sensor tick) → claim → import runs.

A sensor tick applies its dynamic-partition requests and returns its run requests; each request
runs in-process on the test's Dagster instance, as ``import_job`` or ``import_batch_job``
(whichever the sensor chose).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
from click.testing import CliRunner, Result

from watch_pipeline.cli.main import cli
from watch_pipeline.defs.jobs import transcribe_job
from watch_pipeline.defs.sensors import build_watch_sensor
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline_tests.defs import harness

SENSORS = {kind: build_watch_sensor(kind) for kind in ("local", "s3", "smb")}


def tone(path: Path, frequency: int, seconds: float = 1.0) -> Path:
    """A sine tone WAV (a recording nobody has imported yet: one frequency, one fingerprint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={frequency}:duration={seconds}", str(path)], check=True)
    return path


def tick(env: dict[str, Any], kind: str = "local") -> list[dg.RunRequest]:
    """One tick of ``<kind>_watch_sensor``: its partitions added, its run requests returned."""
    context = dg.build_sensor_context(instance=env["instance"], resources=env["resources"])
    result = SENSORS[kind](context)
    if isinstance(result, dg.SkipReason):
        return []
    for request in result.dynamic_partitions_requests:
        env["instance"].add_dynamic_partitions(request.partitions_def_name,
                                               list(request.partition_keys))
    return list(result.run_requests)


def scan_and_import(env: dict[str, Any], kind: str = "local") -> list[dg.ExecuteInProcessResult]:
    """A tick, then every run it requested; a failed run is returned, not raised."""
    return [harness.run_request(env, request) for request in tick(env, kind)]


def materializations(result: Any, asset: str) -> list[dict[str, Any]]:
    """The metadata (plain values) of ``asset``'s materializations in a run."""
    return [{key: value.value for key, value in event.materialization.metadata.items()}
            for event in result.get_asset_materialization_events()
            if event.asset_key.to_user_string() == asset]


def run_transcribe_job(env: dict[str, Any], partition_key: str,
                       resources: dict[str, Any] | None = None) -> dg.ExecuteInProcessResult:
    """One partition of ``transcribe_job``, as one run of a backfill executes it."""
    defs = dg.Definitions(assets=harness.ASSETS, jobs=[transcribe_job],
                          resources=resources or env["resources"])
    return defs.resolve_job_def("transcribe_job").execute_in_process(
        partition_key=partition_key, instance=env["instance"], raise_on_error=False)


def store(env: dict[str, Any]) -> LocalObjectStore:
    """The test's object store (the local backend under DAGSTER_HOME)."""
    return LocalObjectStore(env["home"] / "object_store")


def watch_pipeline(env: dict[str, Any], *args: str) -> Result:
    """``watch-pipeline ARGS`` on the test's catalog and object store, in process."""
    runner = CliRunner(env={"DAGSTER_HOME": str(env["home"])})
    return runner.invoke(cli, ["--catalog-url", env["catalog"].url, *args])
