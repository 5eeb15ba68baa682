"""`multipart test-regex` and the group view of `source files`."""

from __future__ import annotations

import json
import subprocess

from click.testing import CliRunner

from watch_pipeline.cli.main import cli


def test_test_regex_reports_each_name():
    result = CliRunner().invoke(cli, ["multipart", "test-regex", "default", "talk_P002.MP4",
                                      "talk.mp4", "--json"])
    assert result.exit_code == 0, result.output
    first, second = json.loads(result.output)
    assert first == {"filename": "talk_P002.MP4", "matches": True, "base": "talk",
                     "part_number": 2, "extension": ".mp4"}
    assert second["matches"] is False
    custom = CliRunner().invoke(cli, ["multipart", "test-regex", r"^(.+)-part(\d+)(\.\w+)$",
                                      "a-part7.wav"])
    assert "part 7 of 'a'" in custom.output


def test_bad_regex_exits_2_with_the_reason():
    for regex, words in (("([", "invalid regex"), (r"^(.+)_P(\d+)$", "needs exactly 3")):
        result = CliRunner().invoke(cli, ["multipart", "test-regex", regex, "x"])
        assert result.exit_code == 2 and words in result.stderr


def test_source_files_shows_groups_and_wait_state(dagster_home, tmp_path, monkeypatch):
    watch = tmp_path / "watch"
    watch.mkdir()
    monkeypatch.setenv("WATCH_FOLDER_PATH", str(watch))
    for n in (1, 3):
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={400 + n}:duration=0.5", str(watch / f"m_P00{n}.wav")],
                       check=True)
    runner = CliRunner()
    assert runner.invoke(cli, ["settings", "set", "watch.file_stability_seconds", "0"]
                         ).exit_code == 0
    assert runner.invoke(cli, ["source", "add", "--name", "w", "--type", "local", "--path",
                               ".", "--multipart"]).exit_code == 0
    scan = runner.invoke(cli, ["source", "scan", "w"])
    assert scan.exit_code == 0, scan.output
    out = runner.invoke(cli, ["source", "files", "w"]).output
    assert "waiting_for_parts" in out and "group" in out and "waiting for part(s) 2" in out
