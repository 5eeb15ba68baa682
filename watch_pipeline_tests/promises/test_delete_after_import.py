"""``--delete-after-import``: the original goes once its media is stored, and only then.

Never after a failed import (corrupt media, an object store that refuses the upload) and never
for a duplicate, which is not imported. Driven as the product does: a watch sensor tick scans
and claims, the runs it requests import in-process on a real Dagster instance.

Local sources through the CLI; S3 (moto's server) and SMB (smbd) with the same cases, plus what
only a remote original can do: be replaced after the scan (kept: it is not the version imported)
or refuse the delete (the import stays completed, with a warning on the file's row).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.keys import active_box
from watch_pipeline.catalog.models import FileStatus, SkipReason, WatchSource
from watch_pipeline.catalog.secrets import KeyConfig
from watch_pipeline.catalog.settings import set_setting
from watch_pipeline.catalog.sources import create_source, find_source, source_to_dict
from watch_pipeline.store.resource import ObjectStoreResource
from watch_pipeline_tests.defs import harness
from watch_pipeline_tests.promises import drive


def _corrupt_mp4(path: Path) -> Path:
    """An MP4 without its index: every box is whole (the scan's checks pass), but the ``moov``
    box is renamed ``junk``, so ffprobe finds no stream to read."""
    whole = path.with_name("whole-" + path.name)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=700:duration=2", "-c:a", "aac", str(whole)], check=True)
    data = whole.read_bytes()
    assert data.count(b"moov") == 1
    path.write_bytes(data.replace(b"moov", b"junk"))
    whole.unlink()
    return path


def _refusing_store(s3_server) -> ObjectStoreResource:
    """An object store whose bucket does not exist: every upload is refused."""
    return ObjectStoreResource(
        backend="s3", s3_endpoint_url=s3_server.endpoint_url, s3_region=s3_server.region,
        s3_bucket=f"missing-{uuid.uuid4().hex[:12]}", s3_access_key_id=s3_server.access_key_id,
        s3_secret_access_key=s3_server.secret_access_key, s3_use_ssl=False)


# -- local -----------------------------------------------------------------------------------


@pytest.fixture
def local(env):
    """A local source ``inbox`` with ``--delete-after-import``, added through the CLI."""
    (env["watch"] / "inbox").mkdir()
    added = drive.watch_pipeline(env, "source", "add", "--name", "inbox", "--type", "local",
                                 "--path", "inbox", "--delete-after-import",
                                 "--no-auto-transcribe")
    assert added.exit_code == 0, added.output + added.stderr
    return env["watch"] / "inbox"


def _drop(folder: Path, name: str, source: Path) -> Path:
    target = folder / name
    shutil.copyfile(source, target)
    harness.age(target)
    return target


def test_local_originals_are_deleted_once_their_media_is_stored(env, local, tmp_path):
    # Three at once: the sensor may hand them to import_job and import_batch_job runs alike.
    tones = {f"talk{i}.wav": drive.tone(tmp_path / f"t{i}.wav", 431 + 10 * i) for i in range(3)}
    originals = [_drop(local, name, path) for name, path in tones.items()]
    runs = drive.scan_and_import(env)
    assert runs and all(run.success for run in runs)
    assert not any(original.exists() for original in originals)
    stored = {m.filename: drive.store(env).path(m.object_key).read_bytes()
              for m in harness.media_rows(env)}
    assert stored == {name: path.read_bytes() for name, path in tones.items()}
    assert {row.status for row in harness.files(env).values()} == {FileStatus.IMPORTED}


def test_local_original_is_kept_when_its_import_fails(env, local, tmp_path, s3_server):
    broken = _corrupt_mp4(local / "broken.mp4")
    harness.age(broken)
    before = broken.read_bytes()
    (run,) = drive.scan_and_import(env)
    assert not run.success
    row = harness.files(env)["broken.mp4"]
    assert row.status == FileStatus.ERROR and "corrupt" in row.error_message
    assert broken.read_bytes() == before

    env["resources"]["object_store"] = _refusing_store(s3_server)
    talk = _drop(local, "talk.wav", drive.tone(tmp_path / "t.wav", 433))
    harness.rewind_scans(env)
    (run,) = drive.scan_and_import(env)
    assert not run.success
    row = harness.files(env)["talk.wav"]
    assert row.status == FileStatus.ERROR and row.error_message.startswith("media_object:")
    assert talk.exists()
    assert all(media.object_key is None for media in harness.media_rows(env))


def test_local_duplicates_are_never_deleted(env, local, tmp_path):
    recording = drive.tone(tmp_path / "t.wav", 437)
    one, two = _drop(local, "one.wav", recording), _drop(local, "two.wav", recording)
    (run,) = drive.scan_and_import(env)  # one run: the same content is claimed once
    assert run.success
    rows = harness.files(env)
    imported = next(name for name, row in rows.items() if row.status == FileStatus.IMPORTED)
    duplicate = next(name for name, row in rows.items() if row.status != FileStatus.IMPORTED)
    assert (rows[duplicate].status, rows[duplicate].skip_reason) == (
        FileStatus.SKIPPED_DUPLICATE, SkipReason.DUPLICATE_SAME_SOURCE)
    assert {p.name for p in (one, two) if p.exists()} == {duplicate}
    assert imported != duplicate
    # The same recording arriving later is a duplicate at scan time: kept too.
    three = _drop(local, "three.wav", recording)
    harness.rewind_scans(env)
    assert drive.scan_and_import(env) == []
    assert harness.files(env)["three.wav"].skip_reason == SkipReason.DUPLICATE_SAME_SOURCE
    assert three.exists() and len(harness.media_rows(env)) == 1


# -- S3 and SMB ------------------------------------------------------------------------------


@dataclass
class Remote:
    """One remote watch place: how a test puts a file there and sees whether it is still there.

    Attributes:
        kind: ``s3`` or ``smb`` (also the watch sensor's kind).
        fields: The source's catalog fields, without ``delete_after_import``.
        secret: The S3 secret key or SMB password.
        put: Upload a local file under a name.
        exists: Whether the name is still there.
    """

    kind: str
    fields: dict[str, Any]
    secret: str
    put: Callable[[Path, str], None]
    exists: Callable[[str], bool]


def _s3(s3_server, bucket: str) -> Remote:
    client = s3_server.client()

    def exists(name: str) -> bool:
        return client.list_objects_v2(Bucket=bucket, Prefix=name).get("KeyCount", 0) > 0

    return Remote(
        kind="s3", secret=s3_server.secret_access_key,
        fields={"source_type": "s3", "s3_bucket_name": bucket,
                "s3_endpoint_url": s3_server.endpoint_url, "s3_region": s3_server.region,
                "s3_access_key_id": s3_server.access_key_id, "s3_use_ssl": False},
        put=lambda path, name: client.upload_file(str(path), bucket, name), exists=exists)


def _smb(smb_server) -> Remote:
    folder = smb_server.share_path / f"delete-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    shutil.chown(folder, smb_server.username)

    def put(path: Path, name: str) -> None:
        shutil.copyfile(path, folder / name)
        shutil.chown(folder / name, smb_server.username)

    return Remote(
        kind="smb", secret=smb_server.password,
        fields={"source_type": "smb", "smb_server": smb_server.host,
                "smb_share": smb_server.share, "smb_port": smb_server.port,
                "smb_username": smb_server.username, "smb_domain": smb_server.domain,
                "smb_path": f"/{folder.name}"},
        put=put, exists=lambda name: (folder / name).exists())


@pytest.fixture(params=["s3", "smb"])
def remote(request, env) -> Remote:
    """An S3 bucket on moto's server, or a folder on smbd's share; stable at first sight."""
    with env["catalog"].session() as s:
        set_setting(s, "watch.file_stability_seconds", 0)
    if request.param == "s3":
        return _s3(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))
    return _smb(request.getfixturevalue("smb_server"))


def _add_remote(env, remote: Remote, **fields: Any) -> int:
    box = active_box(KeyConfig.from_environ(os.environ))[0]
    with env["catalog"].session() as s:
        return create_source(s, box, fields={"name": "remote", "auto_transcribe": False,
                                             **remote.fields, **fields},
                             secret=remote.secret).id


def _remote_deleting(env, remote: Remote) -> int:
    """A remote source with ``delete_after_import`` on."""
    return _add_remote(env, remote, delete_after_import=True)


def test_remote_source_takes_delete_after_import(env, remote):
    source_id = _remote_deleting(env, remote)
    with env["catalog"].session() as s:
        assert source_to_dict(find_source(s, source_id))["delete_after_import"] is True


def test_remote_original_is_deleted_once_its_media_is_stored(env, remote, tmp_path):
    _remote_deleting(env, remote)
    recording = drive.tone(tmp_path / "t.wav", 441)
    remote.put(recording, "talk.wav")
    (run,) = drive.scan_and_import(env, remote.kind)
    assert run.success
    row = harness.files(env)["talk.wav"]
    assert row.status == FileStatus.IMPORTED and row.error_message is None
    assert not remote.exists("talk.wav")
    (media,) = harness.media_rows(env)
    assert drive.store(env).path(media.object_key).read_bytes() == recording.read_bytes()


def test_remote_parts_are_deleted_once_the_stitched_recording_is_stored(env, remote, tmp_path):
    _remote_deleting(env, remote)
    with env["catalog"].session() as s:
        s.execute(sa.update(WatchSource).values(multipart_enabled=True))
    names = ["meet_P001.wav", "meet_P002.wav"]
    for number, name in enumerate(names):
        remote.put(drive.tone(tmp_path / name, 451 + 10 * number), name)
    (run,) = drive.scan_and_import(env, remote.kind)
    assert run.success
    assert {harness.files(env)[name].status for name in names} == {FileStatus.STITCHED_PART}
    assert not any(remote.exists(name) for name in names)
    assert [m.filename for m in harness.media_rows(env)] == ["meet.wav"]


def test_s3_object_replaced_after_the_scan_is_kept(env, s3_server, s3_bucket, tmp_path):
    remote = _s3(s3_server, s3_bucket)
    with env["catalog"].session() as s:
        set_setting(s, "watch.file_stability_seconds", 0)
    _remote_deleting(env, remote)
    scanned = drive.tone(tmp_path / "scanned.wav", 461)
    remote.put(scanned, "talk.wav")
    (request,) = drive.tick(env, "s3")
    key = request.partition_key
    assert key
    fetched = dg.materialize(harness.ASSETS[:2], partition_key=key, instance=env["instance"],
                             resources=env["resources"])
    assert fetched.success
    # Replaced between the download and the store: same size, other bytes (a new ETag).
    replacement = drive.tone(tmp_path / "replacement.wav", 463)
    assert replacement.stat().st_size == scanned.stat().st_size
    remote.put(replacement, "talk.wav")
    stored = dg.materialize(harness.ASSETS[2:3], partition_key=key, instance=env["instance"],
                            resources=env["resources"])
    assert stored.success
    row = harness.files(env)["talk.wav"]
    assert row.status == FileStatus.IMPORTED
    assert "was kept" in row.error_message and "ETag changed" in row.error_message
    body = s3_server.client().get_object(Bucket=s3_bucket, Key="talk.wav")["Body"].read()
    assert body == replacement.read_bytes()
    (media,) = harness.media_rows(env)
    assert drive.store(env).path(media.object_key).read_bytes() == scanned.read_bytes()


def test_smb_delete_refused_leaves_the_import_completed(env, smb_server, tmp_path):
    remote = _smb(smb_server)
    with env["catalog"].session() as s:
        set_setting(s, "watch.file_stability_seconds", 0)
    _remote_deleting(env, remote)
    recording = drive.tone(tmp_path / "t.wav", 467)
    remote.put(recording, "talk.wav")
    folder = smb_server.share_path / remote.fields["smb_path"].lstrip("/")
    folder.chmod(0o555)  # the share's user may read the folder but not remove from it
    try:
        (run,) = drive.scan_and_import(env, "smb")
    finally:
        folder.chmod(0o755)
    assert run.success
    row = harness.files(env)["talk.wav"]
    assert row.status == FileStatus.IMPORTED
    assert "deleting the original talk.wav failed" in row.error_message
    assert remote.exists("talk.wav")
    (media,) = harness.media_rows(env)
    assert media.object_key
    assert drive.store(env).path(media.object_key).read_bytes() == recording.read_bytes()


def test_remote_original_is_kept_when_its_import_fails(env, remote, tmp_path, s3_server):
    _remote_deleting(env, remote)
    remote.put(_corrupt_mp4(tmp_path / "broken.mp4"), "broken.mp4")
    (run,) = drive.scan_and_import(env, remote.kind)
    assert not run.success
    row = harness.files(env)["broken.mp4"]
    assert row.status == FileStatus.ERROR and "corrupt" in row.error_message
    assert remote.exists("broken.mp4")

    env["resources"]["object_store"] = _refusing_store(s3_server)
    remote.put(drive.tone(tmp_path / "t.wav", 443), "talk.wav")
    harness.rewind_scans(env)
    (run,) = drive.scan_and_import(env, remote.kind)
    assert not run.success
    row = harness.files(env)["talk.wav"]
    assert row.status == FileStatus.ERROR and row.error_message.startswith("media_object:")
    assert remote.exists("talk.wav")


def test_remote_duplicates_are_never_deleted(env, remote, tmp_path):
    _remote_deleting(env, remote)
    recording = drive.tone(tmp_path / "t.wav", 447)
    remote.put(recording, "one.wav")
    remote.put(recording, "two.wav")
    (run,) = drive.scan_and_import(env, remote.kind)  # one run: the content is claimed once
    assert run.success
    rows = harness.files(env)
    (duplicate,) = [name for name, row in rows.items() if row.status != FileStatus.IMPORTED]
    assert (rows[duplicate].status, rows[duplicate].skip_reason) == (
        FileStatus.SKIPPED_DUPLICATE, SkipReason.DUPLICATE_SAME_SOURCE)
    assert remote.exists(duplicate)
    # The same recording arriving later is a duplicate at scan time: nothing runs, it stays.
    remote.put(recording, "three.wav")
    harness.rewind_scans(env)
    assert drive.scan_and_import(env, remote.kind) == []
    assert harness.files(env)["three.wav"].skip_reason == SkipReason.DUPLICATE_SAME_SOURCE
    assert remote.exists("three.wav") and len(harness.media_rows(env)) == 1
