"""Shared pieces of the in-process pipeline tests: the ``env`` fixture and small drivers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.db import Catalog, default_catalog_url
from watch_pipeline.catalog.models import MediaFile, WatchSource, WatchSourceFile
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.settings import set_setting
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.defs.assets import (
    build_transcript_asset,
    media_object,
    raw_file,
    stitched_media,
)
from watch_pipeline.defs.resources import build_resources
from watch_pipeline.defs.sensors import build_watch_sensor
from watch_pipeline.store.resource import ObjectStoreResource

ASSETS = [raw_file, stitched_media, media_object, build_transcript_asset()]
SENSOR = build_watch_sensor("local")


@pytest.fixture
def env(dagster_home, tmp_path, monkeypatch):
    watch = tmp_path / "watch"
    watch.mkdir()
    monkeypatch.setenv("WATCH_FOLDER_PATH", str(watch))
    monkeypatch.setenv("WATCH_TEMP_DIR", str(tmp_path / "scratch"))
    # The resources read the key's location at launch; instance_for_test below moves
    # DAGSTER_HOME, so name the key file for both the resources and the test's own box.
    monkeypatch.setenv("WATCH_SECRET_KEY_FILE", str(Path(dagster_home) / "watch_pipeline.key"))
    catalog = Catalog(default_catalog_url(dagster_home))
    with catalog.session() as s:
        set_setting(s, "watch.file_stability_seconds", 2)
    # instance_for_test points DAGSTER_HOME at its own temp dir: pin our locations explicitly.
    resources = build_resources()
    resources["catalog"] = CatalogResource(url=catalog.url)
    resources["object_store"] = ObjectStoreResource(
        backend="local", local_root=str(Path(dagster_home) / "object_store"))
    with dg.instance_for_test() as instance:
        yield {"watch": watch, "catalog": catalog, "instance": instance,
               "resources": resources, "home": Path(dagster_home)}
    catalog.dispose()


def add_source(env, name="watch", path=".", **fields):
    (env["watch"] / path).mkdir(parents=True, exist_ok=True)
    with env["catalog"].session() as s:
        return create_source(s, None, fields={"name": name, "source_type": "local",
                                              "local_path": path, **fields}).id


def age(path: Path, seconds: float = 120) -> None:
    """Make a file look untouched for ``seconds`` (stable)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def tick(env):
    ctx = dg.build_sensor_context(instance=env["instance"], resources=env["resources"])
    result = SENSOR(ctx)
    if isinstance(result, dg.SkipReason):
        return [], result.skip_message
    for req in result.dynamic_partitions_requests:
        env["instance"].add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result.run_requests, None


def rewind_scans(env):
    with env["catalog"].session() as s:
        s.execute(sa.update(WatchSource).values(last_scan_at=None))


def run_import(env, partition_key, raise_on_error=True):
    return dg.materialize(ASSETS, partition_key=partition_key, resources=env["resources"],
                          instance=env["instance"], raise_on_error=raise_on_error)


def files(env):
    with env["catalog"].session() as s:
        return {r.remote_path: r for r in s.scalars(sa.select(WatchSourceFile))}


def media_rows(env):
    with env["catalog"].session() as s:
        return list(s.scalars(sa.select(MediaFile).order_by(MediaFile.id)))




def run_request(env, request: dg.RunRequest, raise_on_error=False):
    """Execute what a sensor asked for: one partition of the import assets, or a batch."""
    if request.partition_key:
        return run_import(env, request.partition_key, raise_on_error=raise_on_error)
    from watch_pipeline.defs.batch import import_batch_job

    return import_batch_job.execute_in_process(
        run_config=request.run_config, resources=env["resources"], instance=env["instance"],
        tags=request.tags, raise_on_error=raise_on_error)
