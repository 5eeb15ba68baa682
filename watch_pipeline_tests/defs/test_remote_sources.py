"""S3 and SMB sources through the watch sensors and the media assets, against real servers
(moto's S3 server over HTTP, Debian's smbd), with real ffmpeg and faster-whisper."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.keys import active_box
from watch_pipeline.catalog.models import WatchSource
from watch_pipeline.catalog.secrets import KeyConfig
from watch_pipeline.catalog.settings import set_setting
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.defs.sensors import build_watch_sensor
from watch_pipeline_tests.defs import harness

SENSORS = {kind: build_watch_sensor(kind) for kind in ("local", "s3", "smb")}


def tick(env, kind):
    ctx = dg.build_sensor_context(instance=env["instance"], resources=env["resources"])
    result = SENSORS[kind](ctx)
    if isinstance(result, dg.SkipReason):
        return [], result.skip_message
    for req in result.dynamic_partitions_requests:
        env["instance"].add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result.run_requests, None


def add(env, secret=None, **fields):
    box = active_box(KeyConfig.from_environ(os.environ))[0] if secret is not None else None
    with env["catalog"].session() as s:
        return create_source(s, box, fields=fields, secret=secret).id


def s3_source(env, s3_server, bucket, name="bucket", secret="testing", **extra):
    return add(env, secret=secret, name=name, source_type="s3", s3_bucket_name=bucket,
               s3_endpoint_url=s3_server.endpoint_url, s3_region=s3_server.region,
               s3_access_key_id=s3_server.access_key_id, s3_use_ssl=False, **extra)


def smb_source(env, smb, name="share", password=None, **extra):
    return add(env, secret=password or smb.password, name=name, source_type="smb",
               smb_server=smb.host, smb_share=smb.share, smb_port=smb.port,
               smb_username=smb.username, smb_domain=smb.domain, **extra)


def stability(env, seconds):
    with env["catalog"].session() as s:
        set_setting(s, "watch.file_stability_seconds", seconds)


def source_row(env, name):
    with env["catalog"].session() as s:
        return s.scalar(sa.select(WatchSource).where(WatchSource.name == name))


def _wav(path: Path, freq: int) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration=1", str(path)], check=True)
    return path


@pytest.mark.slow
def test_s3_object_becomes_a_transcript(env, s3_server, s3_bucket, speech_factory, tmp_path):
    stability(env, 0)
    s3_source(env, s3_server, s3_bucket, s3_prefix="incoming/")
    talk = speech_factory("the quick brown fox jumps over the lazy dog", tmp_path / "talk.mp4",
                          fmt="mp4")
    s3_server.client().upload_file(str(talk), s3_bucket, "incoming/talk.mp4")
    (req,), _ = tick(env, "s3")
    assert harness.run_import(env, req.partition_key).success
    (media,) = harness.media_rows(env)
    assert media.status == "completed"
    assert media.imohash == harness.files(env)["talk.mp4"].imohash
    assert "fox" in (env["home"] / "object_store" / media.transcript_key.replace(
        ".json", ".txt")).read_text().lower()
    # the temp copy is gone after the import
    assert not any((Path(env["home"]).parent / "scratch").rglob("talk.mp4"))


def test_s3_object_still_uploading_waits_for_two_agreeing_listings(env, s3_server, s3_bucket,
                                                                  tmp_path):
    stability(env, 2)
    s3_source(env, s3_server, s3_bucket)
    client = s3_server.client()
    client.upload_file(str(_wav(tmp_path / "a.wav", 440)), s3_bucket, "a.wav")
    assert tick(env, "s3")[0] == []  # first sighting: not importable yet
    client.upload_file(str(_wav(tmp_path / "b.wav", 500)), s3_bucket, "a.wav")  # it grew
    harness.rewind_scans(env)
    assert tick(env, "s3")[0] == []  # changed between listings: the window starts again
    import time

    time.sleep(2.2)
    harness.rewind_scans(env)
    (req,), _ = tick(env, "s3")
    assert harness.run_import(env, req.partition_key).success
    assert harness.files(env)["a.wav"].status == "imported"


def test_wrong_s3_secret_is_recorded_while_a_healthy_source_imports(env, s3_server, s3_bucket,
                                                                   s3_enforced_auth, tmp_path):
    stability(env, 0)
    good = s3_enforced_auth.allowed  # credentials of a user allowed on the bucket
    add(env, secret=good.secret_access_key, name="good", source_type="s3",
        s3_bucket_name=s3_bucket, s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=good.access_key_id, s3_use_ssl=False, auto_transcribe=False)
    add(env, secret="not-the-secret", name="bad", source_type="s3", s3_bucket_name=s3_bucket,
        s3_endpoint_url=s3_server.endpoint_url, s3_access_key_id=good.access_key_id,
        s3_use_ssl=False)
    uploader = s3_server.client(aws_access_key_id=good.access_key_id,
                                aws_secret_access_key=good.secret_access_key)
    uploader.upload_file(str(_wav(tmp_path / "x.wav", 610)), s3_bucket, "x.wav")
    requests, _ = tick(env, "s3")
    assert len(requests) == 1
    bad = source_row(env, "bad")
    assert bad.last_scan_status == "error" and "refused" in bad.last_scan_message
    assert "not-the-secret" not in bad.last_scan_message
    assert source_row(env, "good").last_scan_status == "success"


def test_unreachable_s3_endpoint_is_a_specific_reason(env, s3_server, s3_bucket):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    add(env, secret="x", name="down", source_type="s3", s3_bucket_name="b-down",
        s3_endpoint_url=f"http://127.0.0.1:{port}", s3_access_key_id="k", s3_use_ssl=False)
    tick(env, "s3")
    row = source_row(env, "down")
    assert row.last_scan_status == "error" and "reach" in row.last_scan_message


@pytest.mark.slow
def test_smb_file_becomes_a_transcript(env, smb_server, speech_factory):
    stability(env, 0)
    smb_source(env, smb_server, smb_path="/inbox")
    target = smb_server.share_path / "inbox" / "song.wav"
    speech_factory("seven purple elephants sing in the morning", target)
    shutil.chown(target.parent, smb_server.username)
    shutil.chown(target, smb_server.username)
    (req,), _ = tick(env, "smb")
    assert harness.run_import(env, req.partition_key).success
    (media,) = harness.media_rows(env)
    assert media.status == "completed"
    assert "elephant" in (env["home"] / "object_store" / media.transcript_key.replace(
        ".json", ".txt")).read_text().lower()
    # the domain really reached the server in the login
    assert smb_server.domain in smb_server.log_text()


def test_duplicate_of_a_local_recording_on_the_share_is_not_downloaded(env, smb_server,
                                                                     tmp_path):
    stability(env, 0)
    harness.add_source(env, name="local", path="local", auto_transcribe=False)
    src = _wav(tmp_path / "rec.wav", 720)
    shutil.copyfile(src, env["watch"] / "local" / "rec.wav")
    harness.age(env["watch"] / "local" / "rec.wav")
    (req,), _ = tick(env, "local")
    assert harness.run_import(env, req.partition_key).success
    folder = smb_server.share_path / "dup"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(src, folder / "same.wav")
    shutil.chown(folder, smb_server.username)
    smb_source(env, smb_server, name="share-dup", smb_path="/dup")
    assert tick(env, "smb")[0] == []
    row = harness.files(env)["same.wav"]
    assert (row.status, row.skip_reason) == ("skipped_duplicate", "duplicate_other_source")
    assert not any((Path(env["home"]).parent / "scratch").rglob("same.wav*"))


def test_wrong_smb_password_and_a_healthy_share_in_the_same_tick(env, smb_server, tmp_path):
    stability(env, 0)
    folder = smb_server.share_path / "healthy"
    folder.mkdir(exist_ok=True)
    _wav(folder / "ok.wav", 830)
    shutil.chown(folder, smb_server.username)
    shutil.chown(folder / "ok.wav", smb_server.username)
    smb_source(env, smb_server, name="badpw", password="wrong-password-123")
    smb_source(env, smb_server, name="good", smb_path="/healthy", auto_transcribe=False)
    requests, _ = tick(env, "smb")
    assert len(requests) == 1 and requests[0].tags["watch_pipeline/source"] == "good"
    row = source_row(env, "badpw")
    assert row.last_scan_status == "error" and "refused" in row.last_scan_message.lower()
    assert "wrong-password-123" not in row.last_scan_message


def test_cli_test_and_browse_on_s3_and_smb(env, s3_server, s3_bucket, smb_server, tmp_path):
    import json

    from click.testing import CliRunner

    from watch_pipeline.cli.main import cli

    s3_source(env, s3_server, s3_bucket, name="b")
    client = s3_server.client()
    client.upload_file(str(_wav(tmp_path / "t.wav", 300)), s3_bucket, "room/t.wav")
    client.put_object(Bucket=s3_bucket, Key="readme.txt", Body=b"x")
    smb_source(env, smb_server, name="s")
    runner = CliRunner()
    url = ["--catalog-url", env["catalog"].url]
    out = runner.invoke(cli, [*url, "source", "test", "b", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["folders"] == 1
    out = runner.invoke(cli, [*url, "source", "browse", "b", "room", "--json"])
    assert json.loads(out.output) == [{"kind": "file", "name": "t.wav", "size": (
        tmp_path / "t.wav").stat().st_size}]
    out = runner.invoke(cli, [*url, "source", "test", "s"])
    assert out.exit_code == 0 and "OK" in out.output, out.output
    smb_source(env, smb_server, name="s-bad", password="nope-nope")
    out = runner.invoke(cli, [*url, "source", "test", "s-bad"])
    assert out.exit_code == 1 and "refused" in out.stderr and "nope-nope" not in out.stderr


def test_s3_parts_are_stitched_and_written_back(env, s3_server, s3_bucket, tmp_path):
    stability(env, 0)
    s3_source(env, s3_server, s3_bucket, multipart_enabled=True,
              upload_stitched_to_source=True, auto_transcribe=False)
    client = s3_server.client()
    for n in (1, 2):
        client.upload_file(str(_wav(tmp_path / f"p{n}.wav", 300 + 40 * n)), s3_bucket,
                           f"room/show_P00{n}.wav")
    (req,), _ = tick(env, "s3")
    assert harness.run_import(env, req.partition_key).success
    (media,) = harness.media_rows(env)
    assert media.filename == "show.wav" and 1.5 < media.duration < 2.5
    head = client.head_object(Bucket=s3_bucket, Key="room/show.wav")
    assert head["ContentLength"] > 0
    harness.rewind_scans(env)
    assert tick(env, "s3")[0] == []  # the written-back recording is not imported again
    row = harness.files(env)["room/show.wav"]
    assert (row.status, row.skip_reason) == ("skipped_duplicate", "duplicate_existing")
