"""The operator CLI: every command, --json output, exit codes, and secrets never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from watch_pipeline.cli.main import cli

SMB_PASSWORD = "Sm8-pa55-very-secret"
S3_SECRET = "s3-SECRET-key-value-xyz"


def _add_all(run):
    run(*("source add --name local-cam --type local --path cams --delete-after-import "
          "--extensions MP4,.wav --tags a,b --collections c1 --owner 3 --never-skip-old".split()))
    run(*("source add --name bucket --type s3 --endpoint-url http://127.0.0.1:9000 "
          "--bucket media-in --prefix incoming/ --region eu-west-1 --access-key AKIA1 "
          "--secret-key-stdin --no-ssl --polling-interval-minutes 5".split()),
        input=S3_SECRET + "\n")
    run(*("source add --name share --type smb --server files.example --share rec "
          "--smb-path /room1 --username bob --domain CORP --port 4445 --password-stdin "
          "--multipart --multipart-wait-scans 5 --multipart-time-window-hours 12 "
          "--upload-stitched-to-source --min-speakers 2 --max-speakers 4 --disabled "
          "--no-recursive --no-auto-transcribe --skip-older-than-days 7".split()),
        input=SMB_PASSWORD + "\n")


def test_add_each_type_round_trips_through_show_json(run):
    _add_all(run)
    local = json.loads(run("source", "show", "local-cam", "--json").output)
    assert local["source_type"] == "local" and local["local_path"] == "cams"
    assert local["delete_after_import"] is True
    assert local["file_extensions"] == [".mp4", ".wav"]
    assert local["tags"] == ["a", "b"] and local["collections"] == ["c1"]
    assert local["owner_id"] == 3 and local["skip_files_older_than_days"] is None
    assert local["has_secret"] is False

    s3 = json.loads(run("source", "show", "bucket", "--json").output)
    assert s3["s3_endpoint_url"] == "http://127.0.0.1:9000" and s3["s3_bucket_name"] == "media-in"
    assert s3["s3_prefix"] == "incoming/" and s3["s3_region"] == "eu-west-1"
    assert s3["s3_access_key_id"] == "AKIA1" and s3["s3_use_ssl"] is False
    assert s3["polling_interval_minutes"] == 5 and s3["has_secret"] is True

    smb = json.loads(run("source", "show", "3", "--json").output)
    assert (smb["smb_server"], smb["smb_share"], smb["smb_path"]) == ("files.example", "rec",
                                                                      "/room1")
    assert (smb["smb_username"], smb["smb_domain"], smb["smb_port"]) == ("bob", "CORP", 4445)
    assert smb["multipart_enabled"] is True and smb["multipart_wait_scans"] == 5
    assert smb["multipart_time_window_hours"] == 12 and smb["upload_stitched_to_source"] is True
    assert (smb["min_speakers"], smb["max_speakers"]) == (2, 4)
    assert smb["is_enabled"] is False and smb["recursive"] is False
    assert smb["auto_transcribe"] is False and smb["skip_files_older_than_days"] == 7
    assert smb["has_secret"] is True


def test_list_show_update_enable_disable_remove(run):
    _add_all(run)
    listing = json.loads(run("source", "list", "--json").output)
    assert [s["name"] for s in listing] == ["local-cam", "bucket", "share"]
    assert "local-cam" in run("source", "list").output
    assert "polling_interval_minutes" in run("source", "show", "bucket").output
    assert json.loads(run("source", "list", "--type", "s3", "--json").output)[0]["name"] == "bucket"

    run("source", "update", "bucket", "--polling-interval-minutes", "60", "--ssl")
    data = json.loads(run("source", "show", "bucket", "--json").output)
    assert data["polling_interval_minutes"] == 60 and data["s3_use_ssl"] is True

    run("source", "disable", "local-cam")
    assert json.loads(run("source", "show", "1", "--json").output)["is_enabled"] is False
    run("source", "enable", "local-cam")
    assert json.loads(run("source", "show", "1", "--json").output)["is_enabled"] is True

    run("source", "remove", "share", "--yes")
    run("source", "show", "share", code=1)


def test_secret_update_from_stdin(run, dagster_home):
    _add_all(run)
    run("source", "update", "share", "--password-stdin", input="new-password-42\n")
    from watch_pipeline.catalog.db import Catalog, resolve_catalog_url
    from watch_pipeline.catalog.keys import active_box
    from watch_pipeline.catalog.secrets import KeyConfig
    from watch_pipeline.catalog.sources import find_source, source_secret

    catalog = Catalog(resolve_catalog_url(os.environ))
    with catalog.session() as s:
        box = active_box(KeyConfig.from_environ(os.environ))[0]
        assert source_secret(box, find_source(s, "share")) == "new-password-42"
    catalog.dispose()


@pytest.mark.parametrize(("args", "field"), [
    (["--name", "x", "--type", "local", "--path", "../out"], "local_path"),
    (["--name", "x", "--type", "local", "--path", "/etc"], "local_path"),
    (["--name", "x", "--type", "local", "--path", "."
      , "--polling-interval-minutes", "0"], "polling_interval_minutes"),
    (["--name", "x", "--type", "local", "--path", ".", "--min-speakers", "9",
      "--max-speakers", "2"], "min_speakers"),
    (["--name", "x", "--type", "local", "--path", ".", "--max-speakers", "30"], "max_speakers"),
    (["--name", "x", "--type", "local", "--path", ".", "--multipart-regex", "([a-"],
     "multipart_regex"),
    (["--name", "x", "--type", "local", "--path", ".", "--multipart-regex", "(a)(b)"],
     "multipart_regex"),
    (["--name", "x", "--type", "local", "--path", ".", "--extensions", "m p4"],
     "file_extensions"),
    (["--name", "", "--type", "local", "--path", "."], "name"),
    (["--type", "local", "--path", "."], "name"),
    (["--name", "x", "--path", "."], "source_type"),
    (["--name", "x", "--type", "local", "--path", ".", "--bucket", "b"], "s3_bucket_name"),
    (["--name", "x", "--type", "s3"], "s3_bucket_name"),
    (["--name", "x", "--type", "s3", "--bucket", "bkt", "--access-key", "AK"], "secret-key"),
    (["--name", "x", "--type", "smb", "--share", "s"], "smb_server"),
    (["--name", "x", "--type", "local", "--path", ".", "--skip-older-than-days", "3",
      "--never-skip-old"], "skip_files_older_than_days"),
])
def test_every_validation_rule_exits_2_naming_the_field(run, args, field):
    result = run("source", "add", *args, code=2)
    assert f"invalid {field}" in result.stderr


def test_update_rules(run):
    _add_all(run)
    assert "cannot be changed" in run("source", "update", "bucket", "--type", "smb",
                                      code=2).stderr
    assert "unique" in run("source", "update", "bucket", "--name", "share", code=2).stderr
    assert "nothing to update" in run("source", "update", "bucket", code=2).stderr
    assert "no watch source" in run("source", "update", "ghost", "--tags", "a", code=1).stderr


def test_settings_get_set(run):
    assert json.loads(run("settings", "get", "--json").output) == {
        "watch.enabled": True, "watch.file_stability_seconds": 30,
        "watch.max_concurrent_imports": 5, "watch.fs_events_enabled": True,
        "fingerprints.recompute_complete": False, "watch.max_media_duration_hours": 12.0,
        "watch.fs_events_quiet_seconds": 1.0, "import.url_max_bytes": 20 * 1024**3,
        "import.url_timeout_seconds": 60.0, "import.url_max_redirects": 5,
        "previews.enabled": True}
    run("settings", "set", "watch.max_concurrent_imports", "2")
    assert run("settings", "get", "watch.max_concurrent_imports").output.strip() == "2"
    assert json.loads(run("settings", "get", "watch.max_concurrent_imports", "--json").output) \
        == {"watch.max_concurrent_imports": 2}
    assert "at least 1" in run("settings", "set", "watch.max_concurrent_imports", "0",
                               code=2).stderr
    assert "unknown setting" in run("settings", "set", "nope", "1", code=2).stderr
    assert "true or false" in run("settings", "set", "watch.enabled", "perhaps", code=2).stderr


def test_settings_set_applies_the_import_limit_to_the_dagster_pool_at_once(run, dagster_home):
    import dagster as dg

    root = Path(__file__).resolve().parents[2]
    (Path(dagster_home) / "dagster.yaml").write_text((root / "dagster.yaml").read_text())
    out = run("settings", "set", "watch.max_concurrent_imports", "3").output
    assert out.splitlines() == ["watch.max_concurrent_imports = 3",
                                "concurrency pool watch_imports: limit set to 3 (had none)"]
    assert run("settings", "set", "watch.max_concurrent_imports", "2").output.splitlines()[1] \
        == "concurrency pool watch_imports: limit 3 -> 2"
    assert "(unchanged)" in run("settings", "set", "watch.max_concurrent_imports", "2").output
    assert "pool" not in run("settings", "set", "watch.file_stability_seconds", "5").output
    with dg.DagsterInstance.get() as instance:
        limits = instance.event_log_storage.get_pool_limits()
    assert [(p.name, p.limit) for p in limits] == [("watch_imports", 2)]


def test_settings_set_without_an_instance_leaves_the_pool_to_the_sensors(run, monkeypatch,
                                                                          tmp_path):
    monkeypatch.setenv("WATCH_CATALOG_URL", f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    monkeypatch.delenv("DAGSTER_HOME")
    out = run("settings", "set", "watch.max_concurrent_imports", "4").output
    assert "DAGSTER_HOME is not set" in out and "next tick" in out


def test_settings_set_keeps_the_setting_when_the_instance_cannot_open(run, dagster_home):
    (Path(dagster_home) / "dagster.yaml").write_text("concurrency: {pools: {granularity: all}}\n")
    result = run("settings", "set", "watch.max_concurrent_imports", "4")
    assert "could not set the Dagster pool watch_imports to 4" in result.stderr
    assert run("settings", "get", "watch.max_concurrent_imports").output.strip() == "4"


def test_db_upgrade_and_current(run):
    assert "upgraded from empty" in run("db", "upgrade").output
    assert "up to date" in run("db", "upgrade").output
    assert "current 0" in run("db", "current").output


def test_secrets_rotate_with_default_key_file(run, dagster_home, tmp_path):
    _add_all(run)
    before = json.loads(run("source", "show", "share", "--json").output)
    new_key = tmp_path / "next.key"
    out = run("secrets", "rotate", "--new-key-file", str(new_key)).output
    assert "re-encrypted 2 secret(s)" in out
    assert oct(new_key.stat().st_mode & 0o777) == "0o600"
    assert (Path(dagster_home) / "watch_pipeline.key").read_text() == new_key.read_text()
    # the rotated secrets decrypt with the installed key
    run("source", "update", "share", "--tags", "z")
    from watch_pipeline.catalog.db import Catalog, resolve_catalog_url
    from watch_pipeline.catalog.keys import active_box
    from watch_pipeline.catalog.secrets import KeyConfig
    from watch_pipeline.catalog.sources import find_source, source_secret

    catalog = Catalog(resolve_catalog_url(os.environ))
    with catalog.session() as s:
        box = active_box(KeyConfig.from_environ(os.environ))[0]
        assert source_secret(box, find_source(s, "share")) == SMB_PASSWORD
    catalog.dispose()
    assert before["has_secret"] is True


def test_wrong_key_is_a_clear_runtime_error(run, dagster_home, monkeypatch, tmp_path):
    _add_all(run)
    from watch_pipeline.catalog.secrets import generate_key

    monkeypatch.setenv("WATCH_SECRET_KEY", generate_key())
    result = run("secrets", "rotate", "--new-key-file", str(tmp_path / "k"), code=1)
    assert "encrypted with key" in result.stderr and "active key" in result.stderr
    assert SMB_PASSWORD not in result.stderr and S3_SECRET not in result.stderr


def test_secrets_never_in_output_or_database_bytes(run, dagster_home):
    _add_all(run)
    outputs = [run("source", "list").output, run("source", "list", "--json").output,
               run("source", "show", "share").output, run("source", "show", "bucket", "--json")
               .output]
    for out in outputs:
        assert SMB_PASSWORD not in out and S3_SECRET not in out
    blob = b"".join(p.read_bytes() for p in Path(dagster_home).glob("watch_catalog.sqlite*"))
    assert blob  # the catalog really is there
    assert SMB_PASSWORD.encode() not in blob and S3_SECRET.encode() not in blob


def test_secret_is_never_read_from_argv():
    result = CliRunner().invoke(cli, ["source", "add", "--password", "x"])
    assert result.exit_code == 2  # no such option: secrets come from stdin or a prompt


def test_entry_point_runs_as_a_program(dagster_home):
    env = {**os.environ, "DAGSTER_HOME": dagster_home}
    exe = Path(sys.executable).with_name("watch-pipeline")
    proc = subprocess.run([str(exe), "source", "list", "--json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    bad = subprocess.run([str(exe), "source", "add", "--name", "x", "--type", "local",
                          "--path", "../x"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid local_path" in bad.stderr


def test_missing_home_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("WATCH_CATALOG_URL", raising=False)
    result = CliRunner().invoke(cli, ["source", "list"])
    assert result.exit_code == 1 and "DAGSTER_HOME" in result.stderr


def test_catalog_on_postgres(postgres_url, dagster_home):
    result = CliRunner().invoke(cli, ["--catalog-url", postgres_url, "source", "add", "--name",
                                      "pg", "--type", "local", "--path", "."])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["--catalog-url", postgres_url, "source", "list", "--json"])
    assert json.loads(result.output)[0]["name"] == "pg"
