"""Hostile input at the CLI (issue 13, findings 2, 5 and 9): refused with exit 2, or shown escaped.

Every test here failed on the code before the hardening: the evil regex, the over-long fields,
the control characters, ``smb_path`` with ``:`` and the ``/etc`` symlink were accepted; names
were printed raw; ``--catalog-url not-a-url`` ended in a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from watch_pipeline.catalog.models import WatchSource
from watch_pipeline.catalog.validation import MAX_WIDE_REPEATS

EVIL_REGEX = r"^(a+)+(\d)(x)$"
"""Took 12.5 s on a 28-character name before (exponential backtracking)."""


@pytest.fixture
def watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$WATCH_FOLDER_PATH`` with a folder ``cams`` in it."""
    folder = tmp_path / "watch"
    (folder / "cams").mkdir(parents=True)
    monkeypatch.setenv("WATCH_FOLDER_PATH", str(folder))
    return folder


# -- finding 5: ReDoS ---------------------------------------------------------------------------

@pytest.mark.parametrize("regex", [
    EVIL_REGEX,
    r"^(a|aa)*_P(\d{3})(\.mp4)$",  # ambiguous alternation under a repeat
    r"^((\w{1,3})*)_P(\d{3})\.mp4$",  # bounded quantifier inside a repeat
    "^" + r"(.*)(.*)(.*)" + r".*" * MAX_WIDE_REPEATS + "$",  # polynomial: too many wide repeats
])
def test_slow_multipart_regex_is_refused_everywhere(run, watch, regex):
    add = run("source", "add", "--name", "cams", "--type", "local", "--path", "cams",
              "--multipart", "--multipart-regex", regex, code=2)
    assert "invalid multipart_regex" in add.stderr
    assert "quantifier" in add.stderr or "alternation" in add.stderr
    assert "Traceback" not in add.output

    run("source", "add", "--name", "cams", "--type", "local", "--path", "cams")
    update = run("source", "update", "cams", "--multipart-regex", regex, code=2)
    assert "invalid multipart_regex" in update.stderr

    tried = run("multipart", "test-regex", regex, "aaax", code=2)
    assert "invalid multipart_regex" in tried.stderr and len(tried.stderr.splitlines()) == 1


def test_a_slow_regex_stored_before_the_check_fails_the_scan_at_once(run, watch,
                                                                     dagster_home):
    """A row written before the rule existed: the scan reports it instead of backtracking."""
    from watch_pipeline.catalog.db import Catalog, default_catalog_url

    (watch / "cams" / ("a" * 28 + "!.mp4")).write_bytes(b"\0" * 64)
    run(*LOCAL, "--multipart")
    catalog = Catalog(default_catalog_url(dagster_home))
    try:
        with catalog.session() as session:
            session.query(WatchSource).one().multipart_regex = EVIL_REGEX
    finally:
        catalog.dispose()
    result = run("source", "scan", "cams", code=1)
    assert "multi-part regex is unusable" in result.stderr and "nested quantifier" in result.stderr


def test_normal_regex_still_works_and_long_names_are_not_parts(run):
    long_name = "a" * 300 + "_P001.mp4"
    data = json.loads(run("multipart", "test-regex", "default", "talk_P001.mp4", long_name,
                          "--json").output)
    assert data[0]["matches"] is True and data[0]["part_number"] == 1
    assert data[1]["matches"] is False  # over 255 characters: never handed to the regex


# -- finding 9: input longer than its column, control characters, SMB paths ------------------

LOCAL = ("source", "add", "--name", "cams", "--type", "local", "--path", "cams")
S3 = ("source", "add", "--name", "bucket", "--type", "s3", "--bucket", "media-in")
SMB = ("source", "add", "--name", "share", "--type", "smb", "--server", "files.example",
       "--share", "rec")


@pytest.mark.parametrize(("command", "extra", "field"), [
    (S3, ("--region", "r" * 65), "s3_region"),
    (S3, ("--access-key", "A" * 256, "--secret-key-stdin"), "s3_access_key_id"),
    (S3, ("--prefix", "p/" * 520), "s3_prefix"),
    (S3, ("--endpoint-url", "http://minio.example/" + "e" * 1010), "s3_endpoint_url"),
    (LOCAL, ("--path", "cams/" + "d" * 1020), "local_path"),
    (LOCAL, ("--multipart-regex", r"^(.+?)_P(\d{3})(\.[^.]+)$" + "(?:)" * 120),
     "multipart_regex"),
    (SMB, ("--smb-path", "/" + "f" * 1024), "smb_path"),
    (SMB, ("--domain", "D" * 256), "smb_domain"),
    (SMB, ("--username", "u" * 256, "--password-stdin"), "smb_username"),
    (LOCAL, ("--name", "n" * 201), "name"),
])
def test_input_longer_than_its_column_is_refused(run, command, extra, field):
    args = list(command)
    if "--name" in extra:  # replace the command's own name
        args = args[:2] + args[4:]
    result = run(*args, *extra, input="secret\n", code=2)
    assert f"invalid {field}:" in result.stderr
    assert "characters" in result.stderr


@pytest.mark.parametrize(("command", "option", "value", "field"), [
    (LOCAL, "--name", "cam\x1b[31mred", "name"),
    (LOCAL, "--name", "ding\x07", "name"),
    (LOCAL, "--name", "two\rlines", "name"),
    (LOCAL, "--path", "cams/a\nb", "local_path"),
    (LOCAL, "--path", "cams/\x1b]0;pwned\x07", "local_path"),
    (LOCAL, "--tags", "ok,bad\x1b", "tags"),
    (S3, "--prefix", "in\x00coming/", "s3_prefix"),
    (SMB, "--smb-path", "/room\x1b1", "smb_path"),
    (SMB, "--share", "re\x07c", "smb_share"),
    (SMB, "--domain", "CORP\x1b", "smb_domain"),
])
def test_control_characters_are_refused(run, command, option, value, field):
    args = list(command)
    if option == "--name":
        args = args[:2] + args[4:]
    elif option in args:
        at = args.index(option)
        args = args[:at] + args[at + 2:]
    result = run(*args, option, value, code=2)
    assert f"invalid {field}: must not contain control characters" in result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr


def test_email_configuration_refuses_control_characters_and_long_fields(run):
    def add(*changes: str, flags: tuple[str, ...] = (), **kwargs):
        fields = {"--name": "relay", "--provider": "smtp", "--from": "watch@example.test",
                  "--host": "127.0.0.1"}
        fields.update(zip(changes[::2], changes[1::2], strict=True))
        return run("email", "add", *(x for pair in fields.items() for x in pair), *flags,
                   **kwargs)

    assert "invalid name: must not contain control" in add("--name", "relay\x1b[2J",
                                                           code=2).stderr
    assert "invalid from_address" in add("--from", "w\x1b@example.test", code=2).stderr
    assert "invalid default_recipients" in add("--recipients", "ops\x07@example.test",
                                               code=2).stderr
    assert "invalid smtp_host" in add("--host", "mail\x1b.example", code=2).stderr
    assert "invalid smtp_username" in add("--username", "u" * 256, flags=("--password-stdin",),
                                          input="pw\n", code=2).stderr


@pytest.mark.parametrize("path", ["/rec:2024", "/a*b", "/what?", "/x|y", "/<in>"])
def test_smb_path_the_client_refuses_is_refused_at_add(run, path):
    result = run(*SMB, "--smb-path", path, code=2)
    assert "invalid smb_path" in result.stderr and "SMB refuses" in result.stderr


def test_smb_share_name_with_forbidden_characters_is_refused(run):
    assert "invalid smb_share" in run("source", "add", "--name", "share", "--type", "smb",
                                      "--server", "files.example", "--share", "rec:1",
                                      code=2).stderr


# -- finding 9: what the CLI prints is escaped -----------------------------------------------

def test_file_names_with_control_characters_are_shown_escaped(run, watch):
    hostile = "evil\x1b[31m\x07.mp4"
    (watch / "cams" / hostile).write_bytes(b"\0" * 64)
    (watch / "cams" / "fine.mp4").write_bytes(b"\0" * 64)
    run(*LOCAL)

    browse = run("source", "browse", "cams").output
    dry = run("source", "scan", "cams", "--dry-run").output
    run("settings", "set", "watch.file_stability_seconds", "0")
    run("source", "scan", "cams")
    listed = run("source", "files", "cams").output
    tried = run("multipart", "test-regex", "default", "cam\x1b[2J_P001.mp4").output

    for output in (browse, dry, listed, tried):
        assert "\x1b" not in output and "\x07" not in output
    assert "evil\\x1b[31m\\x07.mp4" in browse and "fine.mp4" in browse
    assert "evil\\x1b[31m\\x07.mp4" in listed
    assert "cam\\x1b[2J_P001.mp4" in tried
    assert "\x1b" not in run("source", "files", "cams", "--json").output


def test_catalog_rows_are_shown_escaped(run, dagster_home):
    """A row written before validation existed (here directly) still prints harmlessly."""
    from watch_pipeline.catalog.db import Catalog, default_catalog_url

    run(*LOCAL)
    catalog = Catalog(default_catalog_url(dagster_home))
    try:
        with catalog.session() as session:
            row = session.query(WatchSource).one()
            row.local_path = "cams\x1b[8m"
            row.tags = ["t\x1b[5m"]
    finally:
        catalog.dispose()
    for command in (("source", "show", "cams"), ("source", "list")):
        output = run(*command).output
        assert "\x1b" not in output and "\\x1b[8m" in output


# -- finding 9: a URL that is not one -----------------------------------------------------------

@pytest.mark.parametrize("url", ["not-a-url", "foo://", "mysql://db.example/watch"])
def test_bad_catalog_url_is_one_line_exit_1(url, dagster_home):
    exe = Path(sys.executable).with_name("watch-pipeline")
    proc = subprocess.run([str(exe), "--catalog-url", url, "source", "list"],
                          env={**os.environ, "DAGSTER_HOME": dagster_home},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the catalog URL")


# -- finding 2: a local source's root may not leave the watch folder -------------------------

def test_symlink_out_of_the_watch_folder_is_refused_and_never_listed(run, watch, dagster_home):
    (watch / "escape").symlink_to("/etc")
    (watch / "cams" / "inner").symlink_to("/etc")
    for path in ("escape", "cams/inner", "escape/ssl"):
        result = run("source", "add", "--name", "out", "--type", "local", "--path", path,
                     code=2)
        assert "invalid local_path" in result.stderr and "outside" in result.stderr
    run(*LOCAL)
    result = run("source", "update", "cams", "--path", "escape", code=2)
    assert "invalid local_path" in result.stderr
    assert json.loads(run("source", "show", "cams", "--json").output)["local_path"] == "cams"

    # A row that points outside anyway (written before this check, or the link came later):
    from watch_pipeline.catalog.db import Catalog, default_catalog_url

    catalog = Catalog(default_catalog_url(dagster_home))
    try:
        with catalog.session() as session:
            session.query(WatchSource).one().local_path = "escape"
    finally:
        catalog.dispose()
    outputs = [run("source", "test", "cams", code=1),
               run("source", "browse", "cams", code=1),
               run("source", "scan", "cams", "--dry-run", code=1)]
    for result in outputs:
        assert "outside" in result.stderr
        assert "passwd" not in result.output + result.stderr
        assert "hosts" not in result.output + result.stderr
