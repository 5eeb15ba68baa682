"""Temp-dir housekeeping: stale items go, fresh or in-use ones stay; and its Dagster job."""

from __future__ import annotations

import os
import time

import dagster as dg

from watch_pipeline.defs.schedules import cleanup_temp_job, cleanup_temp_schedule
from watch_pipeline.ops.maintenance import cleanup_temp
from watch_pipeline.sources.resource import SourcesResource


def _make(path, age):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 100)
    t = time.time() - age
    os.utime(path, (t, t))
    os.utime(path.parent, (t, t))


def test_cleanup_removes_only_stale_items_not_in_use(tmp_path):
    _make(tmp_path / "imports" / "old" / "a.wav.part", 3 * 3600)
    _make(tmp_path / "imports" / "busy" / "b.wav", 3 * 3600)
    _make(tmp_path / "imports" / "fresh" / "c.wav", 60)
    _make(tmp_path / "transcribe-x1" / "d.wav", 3 * 3600)
    report = cleanup_temp(tmp_path, in_use={"busy"})
    assert not (tmp_path / "imports" / "old").exists()
    assert not (tmp_path / "transcribe-x1").exists()
    assert (tmp_path / "imports" / "busy").exists() and (tmp_path / "imports" / "fresh").exists()
    assert report.bytes_freed == 200 and len(report.kept_in_use) == 1


def test_cleanup_job_runs_hourly_and_cleans(tmp_path):
    _make(tmp_path / "imports" / "old" / "a.wav", 3 * 3600)
    assert cleanup_temp_schedule.cron_schedule == "0 * * * *"
    with dg.instance_for_test() as instance:
        result = cleanup_temp_job.execute_in_process(
            instance=instance, resources={"sources": SourcesResource(temp_dir=str(tmp_path))})
    assert result.success and not (tmp_path / "imports" / "old").exists()
