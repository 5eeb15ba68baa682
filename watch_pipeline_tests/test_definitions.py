"""The code location loads with the expected names, and every job, sensor and schedule resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg

from watch_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parent.parent


JOBS = ["cleanup_temp_job", "import_batch_job", "import_job", "manual_import_job",
        "recompute_fingerprints_job", "transcribe_job"]
SENSORS = ["import_failure_sensor", "local_watch_sensor", "notification_sensor",
           "recompute_fingerprints_sensor", "s3_watch_sensor", "smb_watch_sensor",
           "source_health_sensor", "stranded_run_sensor"]
SCHEDULES = ["cleanup_temp"]
ASSETS = ["media_object", "raw_file", "stitched_media", "thumbnail", "transcript", "waveform"]
RESOURCES = ["catalog", "mailer", "manual_import", "object_store", "sources", "transcriber"]


def test_definitions_load_and_resolve(dagster_home):
    definitions = defs()
    assert isinstance(definitions, dg.Definitions)
    repo = definitions.get_repository_def()
    # Dagster's implicit asset job aside, these are the names the UI, the CLI and docs use.
    jobs = sorted(j.name for j in definitions.resolve_all_job_defs()
                  if not j.name.startswith("__"))
    assert jobs == JOBS
    for name in JOBS:
        assert definitions.resolve_job_def(name).name == name
    assert sorted(s.name for s in repo.sensor_defs) == SENSORS
    for name in SENSORS:
        assert definitions.resolve_sensor_def(name).name == name
    assert sorted(s.name for s in repo.schedule_defs) == SCHEDULES
    for name in SCHEDULES:
        assert definitions.resolve_schedule_def(name).job_name in JOBS
    assert sorted(k.to_user_string() for k in definitions.resolve_all_asset_keys()) == ASSETS
    assert sorted(repo.get_top_level_resources()) == RESOURCES


def test_dg_check_defs(dagster_home):
    dg_exe = Path(sys.executable).with_name("dg")
    proc = subprocess.run([str(dg_exe), "check", "defs"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr
