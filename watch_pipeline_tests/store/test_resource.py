from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from watch_pipeline.store.base import ObjectStoreError
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline.store.resource import ObjectStoreResource
from watch_pipeline.store.s3 import S3ObjectStore
from watch_pipeline_tests.fixtures.s3_server import S3Server


def test_local_backend_uses_local_root(tmp_path: Path) -> None:
    resource = ObjectStoreResource(local_root=str(tmp_path / "objects"))

    store = resource.get_store()

    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "objects"
    assert resource.get_store() is store


def test_local_backend_defaults_below_dagster_home_at_launch(tmp_path: Path) -> None:
    from watch_pipeline.defs.resources import build_object_store

    store = build_object_store({"DAGSTER_HOME": str(tmp_path)}).get_store()

    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "object_store"


def test_local_backend_without_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # The resource never looks at the environment: only launch (defs/resources.py) does.
    monkeypatch.setenv("DAGSTER_HOME", "/nonexistent")

    with pytest.raises(ObjectStoreError, match="needs local_root"):
        ObjectStoreResource().get_store()


def test_s3_backend_without_bucket_is_a_clear_error() -> None:
    with pytest.raises(ObjectStoreError, match="s3_bucket"):
        ObjectStoreResource(backend="s3").get_store()


def test_s3_backend_stores_in_the_bucket(s3_server: S3Server, s3_bucket: str) -> None:
    resource = ObjectStoreResource(
        backend="s3",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_bucket=s3_bucket,
        s3_region=s3_server.region,
        s3_access_key_id=s3_server.access_key_id,
        s3_secret_access_key=s3_server.secret_access_key,
        s3_prefix="media",
    )

    store = resource.get_store()
    store.put_bytes("a.txt", b"hi")

    assert isinstance(store, S3ObjectStore)
    assert (
        s3_server.client().get_object(Bucket=s3_bucket, Key="media/a.txt")["Body"].read() == b"hi"
    )


def test_resource_in_a_dagster_run(tmp_path: Path) -> None:
    @dg.asset
    def note(object_store: ObjectStoreResource) -> dg.MaterializeResult:
        stored = object_store.get_store().put_bytes("notes/n.txt", b"hello")
        return dg.MaterializeResult(metadata={"checksum": stored.checksum})

    result = dg.materialize(
        [note], resources={"object_store": ObjectStoreResource(local_root=str(tmp_path))}
    )

    assert result.success
    assert (tmp_path / "notes" / "n.txt").read_bytes() == b"hello"


def test_environment_selects_s3_and_keeps_the_secret_out_of_run_config(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from watch_pipeline.defs.resources import build_object_store

    monkeypatch.setenv("WATCH_OBJECT_STORE", "s3")
    monkeypatch.setenv("WATCH_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("WATCH_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("WATCH_S3_REGION", s3_server.region)
    monkeypatch.setenv("WATCH_S3_PREFIX", "env")
    monkeypatch.setenv("WATCH_S3_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("WATCH_S3_SECRET_ACCESS_KEY", s3_server.secret_access_key)

    @dg.asset
    def note(object_store: ObjectStoreResource) -> None:
        object_store.get_store().put_bytes("n.txt", b"via env")

    result = dg.materialize([note], resources={"object_store": build_object_store()})

    assert result.success
    body = s3_server.client().get_object(Bucket=s3_bucket, Key="env/n.txt")["Body"].read()
    assert body == b"via env"
    # the secret is an EnvVar reference, not a value anywhere in the run's config
    assert s3_server.secret_access_key not in repr(result.dagster_run.run_config)


def test_environment_defaults_to_the_local_store_and_rejects_unknown_backends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from watch_pipeline.defs.resources import build_object_store

    monkeypatch.delenv("WATCH_OBJECT_STORE", raising=False)
    monkeypatch.setenv("WATCH_OBJECT_STORE_ROOT", str(tmp_path))
    assert build_object_store().get_store().put_bytes("a", b"1").size == 1
    assert (tmp_path / "a").read_bytes() == b"1"
    monkeypatch.setenv("WATCH_OBJECT_STORE", "ftp")
    with pytest.raises(ValueError, match="WATCH_OBJECT_STORE='ftp'"):
        build_object_store()
