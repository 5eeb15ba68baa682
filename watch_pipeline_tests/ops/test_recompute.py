"""Recomputing fingerprints of an older algorithm version: job, gating sensor, results."""

from __future__ import annotations

import dagster as dg
import imohash
import sqlalchemy as sa

from watch_pipeline.catalog.models import MediaFile, WatchSourceFile
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.settings import get_setting
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.defs.jobs import recompute_fingerprints_job
from watch_pipeline.defs.sensors import recompute_fingerprints_sensor
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline.store.resource import ObjectStoreResource


def test_stale_fingerprints_are_recomputed_once(sqlite_catalog, tmp_path):
    watch = tmp_path / "watch"
    watch.mkdir()
    (watch / "a.bin").write_bytes(bytes(range(256)) * 1000)
    store_root = tmp_path / "store"
    LocalObjectStore(store_root).put_bytes("user_1/file_1/m.bin", b"media bytes" * 5000)
    with sqlite_catalog.session() as s:
        src = create_source(s, None, fields={"name": "w", "source_type": "local",
                                             "local_path": "."})
        s.add(WatchSourceFile(watch_source_id=src.id, remote_path="a.bin", filename="a.bin",
                              status="imported", imohash="0" * 32, imohash_version="blake2b"))
        s.add(MediaFile(title="m", filename="m.bin", imohash="1" * 32,
                        object_key="user_1/file_1/m.bin", status="completed"))
    resources = {"catalog": CatalogResource(url=sqlite_catalog.url),
                 "sources": SourcesResource(watch_folder=str(watch)),
                 "object_store": ObjectStoreResource(local_root=str(store_root))}
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        assert isinstance(recompute_fingerprints_sensor(ctx), dg.RunRequest)
        assert recompute_fingerprints_job.execute_in_process(
            instance=instance, resources=resources).success
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        assert "current" in recompute_fingerprints_sensor(ctx).skip_message
    with sqlite_catalog.session() as s:
        row = s.scalar(sa.select(WatchSourceFile))
        assert row.imohash == imohash.hashfile(str(watch / "a.bin"), hexdigest=True)
        assert row.imohash_version == ALGORITHM_VERSION
        media = s.scalar(sa.select(MediaFile))
        assert media.imohash != "1" * 32 and media.imohash_version == ALGORITHM_VERSION
        assert get_setting(s, "fingerprints.recompute_complete") is True
