"""The code location loads, and every job, sensor and schedule resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg

from watch_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parent.parent


def test_definitions_load_and_resolve(dagster_home):
    definitions = defs()
    assert isinstance(definitions, dg.Definitions)
    repo = definitions.get_repository_def()
    for job in repo.get_all_jobs():
        assert job.name
    for sensor in repo.sensor_defs:
        assert sensor.name
    for schedule in repo.schedule_defs:
        assert schedule.name


def test_dg_check_defs(dagster_home):
    dg_exe = Path(sys.executable).with_name("dg")
    proc = subprocess.run([str(dg_exe), "check", "defs"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr
