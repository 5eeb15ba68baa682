"""``watch-pipeline store check``: the production stack's bucket set-up, against moto over HTTP."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from watch_pipeline_tests.fixtures.s3_server import S3Server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    bucket = f"stack-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("WATCH_OBJECT_STORE", "s3")
    monkeypatch.setenv("WATCH_S3_BUCKET", bucket)
    monkeypatch.setenv("WATCH_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("WATCH_S3_REGION", s3_server.region)
    monkeypatch.setenv("WATCH_S3_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("WATCH_S3_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    return bucket


def test_check_creates_the_bucket_once(run, s3_env: str, s3_server: S3Server) -> None:
    missing = run("store", "check", code=1)
    assert f"bucket '{s3_env}'" in missing.stderr and "does not exist" in missing.stderr

    first = json.loads(run("store", "check", "--create-bucket", "--json").output)
    assert first == {"backend": "s3", "location": f"s3://{s3_env}/", "created": True}
    again = run("store", "check", "--create-bucket")
    assert "ready" in again.output
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert s3_env in names


def test_check_never_shows_the_secret(run, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "Very-Secret-Value-0123456789"
    monkeypatch.setenv("WATCH_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WATCH_S3_SECRET_ACCESS_KEY", secret)

    result = run("store", "check", "--create-bucket", code=1)

    assert "cannot connect" in result.stderr
    assert secret not in result.output + result.stderr


def test_check_local_store(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCH_OBJECT_STORE", "local")
    monkeypatch.setenv("WATCH_OBJECT_STORE_ROOT", str(tmp_path / "objects"))
    assert "ready" in run("store", "check").output
    assert (tmp_path / "objects").is_dir()
    monkeypatch.setenv("WATCH_OBJECT_STORE", "gcs")
    assert "expected 'local' or 's3'" in run("store", "check", code=1).stderr
