"""``scripts/start.sh`` as a newcomer runs it: a quiet first screen, and Ctrl-C / SIGTERM stop it.

The script is started in a session of its own on a temp DAGSTER_HOME, watch folder and port; the
test waits for the web UI, sends the signal, and then looks at every process of that session
(the script, ``dg dev``, webserver, daemon, code servers, run workers): none may be left 10 s
later.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STOP_BOUND_SECONDS = 10.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_members(sid: int) -> set[int]:
    """Pids of the live processes in session ``sid`` (zombies, already dead, excluded)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...: comm may hold spaces, so split after ")"
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.add(int(entry.name))
    return members


def _ui_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture
def started(tmp_path):
    """start.sh running on temp paths with its web UI answering; yields (process, log path)."""
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"),
           "WATCH_FOLDER_PATH": str(tmp_path / "watch"), "WATCH_UI_PORT": str(port),
           "WATCH_SENSOR_INTERVAL_SECONDS": "5"}
    for name in ("WATCH_CATALOG_URL", "WATCH_SECRET_KEY", "WATCH_SECRET_KEY_FILE",
                 "PYTHONWARNINGS", "WATCH_TEMP_DIR"):
        env.pop(name, None)
    log = tmp_path / "start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ROOT / "scripts" / "start.sh")], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not _ui_up(port):
            assert proc.poll() is None, f"start.sh exited early:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no web UI:\n{log.read_text()[-4000:]}"
            time.sleep(1)
        # the first screen: a few sensor ticks after the UI is up
        time.sleep(8)
        yield proc, log
    finally:
        for pid in session_members(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)


def _first_screen_problems(text: str) -> list[str]:
    """Lines a newcomer would read as warnings about the setup itself."""
    problems = []
    for line in ANSI.sub("", text).splitlines():
        if ("superseded" in line or "will not be used to configure Dagster" in line
                or re.search(r"\b\w*Warning\b:", line)
                or re.search(r" - dagster[\w.\-]* - WARNING - (?!.*__repository__)", line)):
            problems.append(line)
    return problems


@pytest.mark.parametrize("how", ["SIGTERM to the script", "Ctrl-C (SIGINT to its group)"])
def test_start_script_shows_no_warning_and_stops_within_ten_seconds(started, how):
    proc, log = started
    members = session_members(proc.pid)
    assert len(members) >= 4, "expected the script, dg dev, the webserver and the daemon"
    first_screen = log.read_text(errors="replace")
    assert "Serving dagster-webserver" in first_screen
    assert _first_screen_problems(first_screen) == []

    sent = time.monotonic()
    if how.startswith("SIGTERM"):
        os.kill(proc.pid, signal.SIGTERM)
    else:
        # A terminal's Ctrl-C goes to the foreground process group: the script's.
        os.killpg(proc.pid, signal.SIGINT)
    while session_members(proc.pid) and time.monotonic() - sent < STOP_BOUND_SECONDS + 5:
        time.sleep(0.2)
    elapsed = time.monotonic() - sent
    left = session_members(proc.pid)
    assert not left, f"still running {elapsed:.1f}s after {how}: {sorted(left)}"
    assert elapsed <= STOP_BOUND_SECONDS, f"stopped only after {elapsed:.1f}s"
    assert proc.wait(timeout=1) == 0
    assert "[start] stopped" in log.read_text(errors="replace")
