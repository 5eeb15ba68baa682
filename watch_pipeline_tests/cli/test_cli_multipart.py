"""`multipart test-regex` and the group view of `source files`."""

from __future__ import annotations

import json
import subprocess


def test_test_regex_reports_each_name(run):
    result = run("multipart", "test-regex", "default", "talk_P002.MP4", "talk.mp4", "--json")
    first, second = json.loads(result.output)
    assert first == {"filename": "talk_P002.MP4", "matches": True, "base": "talk",
                     "part_number": 2, "extension": ".mp4"}
    assert second["matches"] is False
    custom = run("multipart", "test-regex", r"^(.+)-part(\d+)(\.\w+)$", "a-part7.wav")
    assert "part 7 of 'a'" in custom.output


def test_bad_regex_exits_2_with_the_reason(run):
    for regex, words in (("([", "invalid regex"), (r"^(.+)_P(\d+)$", "needs exactly 3")):
        assert words in run("multipart", "test-regex", regex, "x", code=2).stderr


def test_source_files_shows_groups_and_wait_state(run, tmp_path, monkeypatch):
    watch = tmp_path / "watch"
    watch.mkdir()
    monkeypatch.setenv("WATCH_FOLDER_PATH", str(watch))
    for n in (1, 3):
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={400 + n}:duration=0.5", str(watch / f"m_P00{n}.wav")],
                       check=True)
    run("settings", "set", "watch.file_stability_seconds", "0")
    run("source", "add", "--name", "w", "--type", "local", "--path", ".", "--multipart")
    run("source", "scan", "w")
    out = run("source", "files", "w").output
    assert "waiting_for_parts" in out and "group" in out and "waiting for part(s) 2" in out
