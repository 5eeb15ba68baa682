"""Media limits with real ffmpeg: deadlines that fire, capped stderr, silence bombs, the cap."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from watch_pipeline.catalog.settings import (
    SETTINGS,
    WatchSettings,
    coerce,
    get_setting,
    set_setting,
)
from watch_pipeline.catalog.validation import ValidationError
from watch_pipeline.media import limits
from watch_pipeline.media.audio import AudioTimeout, AudioTooLong, normalize_audio
from watch_pipeline.media.errors import MediaTooLong, ProbeError, ProbeTimeout, ToolTimeout
from watch_pipeline.media.probe import probe
from watch_pipeline.media.process import ToolProcess, run_tool
from watch_pipeline.media.stitch import StitchTimeout, stitch
from watch_pipeline_tests.fixtures.speech import SPEECH_SENTENCE

BOMB_SECONDS = 31 * 60
HALF_HOUR = 0.5
WAV_BYTES_PER_SECOND = 16_000 * 2


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True
    )


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    """31 minutes of silence as FLAC, three ways: honest, without a stated length, lying.

    * ``honest``: STREAMINFO states the 31 minutes (about 340 KB for 31 minutes of audio);
    * ``unstated``: written to a pipe, so STREAMINFO's sample count is 0 (unknown);
    * ``liar``: the honest file with STREAMINFO patched to claim 10 seconds.
    """
    folder = tmp_path_factory.mktemp("bombs")
    honest = folder / "honest.flac"
    silence = ["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(BOMB_SECONDS)]
    _ffmpeg(*silence, "-c:a", "flac", str(honest))
    unstated = folder / "unstated.flac"
    with open(unstated, "wb") as out:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", *silence, "-c:a", "flac", "-f", "flac",
             "pipe:1"],
            stdout=out, check=True,
        )  # fmt: skip
    liar = folder / "liar.flac"
    liar.write_bytes(_claim_samples(honest.read_bytes(), 16_000 * 10))
    return {"honest": honest, "unstated": unstated, "liar": liar}


def _claim_samples(flac: bytes, samples: int) -> bytes:
    """``flac`` with STREAMINFO's 36-bit total-sample count set to ``samples`` (MD5 zeroed)."""
    assert flac[:4] == b"fLaC"
    data = bytearray(flac)
    info = 8  # "fLaC" + the 4-byte metadata block header; STREAMINFO comes first
    packed = int.from_bytes(data[info + 10 : info + 18], "big")
    packed = (packed & ~((1 << 36) - 1)) | samples
    data[info + 10 : info + 18] = packed.to_bytes(8, "big")
    data[info + 18 : info + 34] = bytes(16)
    return bytes(data)


# -- the duration cap ----------------------------------------------------------------------------


def test_the_timeout_is_sixty_seconds_plus_twice_the_duration():
    assert limits.ffmpeg_timeout(0) == 60
    assert limits.ffmpeg_timeout(3600) == 60 + 7200
    assert limits.ffmpeg_timeout(None) == limits.ffmpeg_timeout(float("nan")) == 60


def test_a_silence_bomb_reports_its_real_length_and_is_refused(bombs):
    info = probe(bombs["honest"])

    assert bombs["honest"].stat().st_size < 400_000
    assert info.duration == pytest.approx(BOMB_SECONDS)
    with pytest.raises(MediaTooLong) as raised:
        limits.check_duration(info, HALF_HOUR)
    assert isinstance(raised.value, ProbeError)  # the import step's probe-failure family
    assert str(raised.value) == (
        "media lasts 31.0 min, longer than the 0.5 h limit (watch.max_media_duration_hours)"
    )
    assert raised.value.duration == pytest.approx(BOMB_SECONDS)
    assert limits.check_duration(info, 12) == pytest.approx(BOMB_SECONDS)


def test_a_bomb_without_a_stated_length_is_counted(bombs):
    info = probe(bombs["unstated"])

    assert info.duration_counted
    assert info.duration == pytest.approx(BOMB_SECONDS, abs=0.5)
    with pytest.raises(MediaTooLong, match=r"31\.0 min or more"):
        limits.check_duration(info, HALF_HOUR)
    # The count stops at its limit: a longer file reports (at least) the limit.
    assert probe(bombs["unstated"], count_limit=600).duration == pytest.approx(600, abs=0.5)


def test_the_parts_of_a_group_are_summed(tmp_path):
    part = tmp_path / "part.flac"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "1200", str(part))
    info = probe(part)

    assert limits.check_duration([info], HALF_HOUR) == pytest.approx(1200)
    with pytest.raises(MediaTooLong, match=r"lasts 40\.0 min"):
        limits.check_duration([info, info], HALF_HOUR)


def test_normalising_a_bomb_stops_at_the_cap(bombs, tmp_path):
    dest = tmp_path / "out.wav"

    with pytest.raises(AudioTooLong, match=r"honest\.flac: lasts 31\.0 min, over the 30\.0 min"):
        normalize_audio(bombs["honest"], dest, max_seconds=HALF_HOUR * 3600)
    assert not dest.exists()


def test_a_lying_bomb_never_writes_more_than_the_cap(bombs, tmp_path):
    """The header says 10 s; the decode goes on for 31 min. The kernel refuses any write past
    the cap's WAV size (RLIMIT_FSIZE), so a normalisation without ``-t`` would fail otherwise."""
    assert probe(bombs["liar"]).duration == pytest.approx(10)
    dest = tmp_path / "out.wav"
    cap_seconds = HALF_HOUR * 3600
    cap_bytes = int((cap_seconds + limits.CAP_MARGIN_SECONDS) * WAV_BYTES_PER_SECOND) + 4096
    script = textwrap.dedent(f"""
        import json, resource, signal
        from pathlib import Path
        from watch_pipeline.media.audio import AudioError, normalize_audio
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, ({cap_bytes}, {cap_bytes}))
        try:
            normalize_audio(Path({str(bombs["liar"])!r}), Path({str(dest)!r}),
                            max_seconds={cap_seconds})
        except AudioError as exc:
            print(json.dumps([type(exc).__name__, str(exc)]))
    """)

    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)  # fmt: skip

    assert json.loads(run.stdout) == [
        "AudioTooLong",
        "liar.flac: decodes to more than the 30.0 min limit (its header says 10.0 s)",
    ]
    assert not dest.exists()


def test_the_setting_defaults_to_twelve_hours_and_takes_positive_hours(sqlite_catalog):
    spec = SETTINGS["watch.max_media_duration_hours"]
    assert spec.default == limits.DEFAULT_MAX_DURATION_HOURS == 12
    assert coerce(spec.key, "0.5") == 0.5
    assert coerce(spec.key, 2) == 2.0
    for bad, reason in (("0", "greater than 0"), ("-1", "greater than 0"), ("soon", "number"),
                        ("nan", "finite"), ("37", "at most 36"), (True, "number")):  # fmt: skip
        with pytest.raises(ValidationError, match=reason):
            coerce(spec.key, bad)
    with sqlite_catalog.session() as session:
        assert WatchSettings.load(session).max_media_duration_hours == 12
        set_setting(session, spec.key, "0.5")
    with sqlite_catalog.session() as session:
        assert get_setting(session, spec.key) == 0.5
        assert WatchSettings.load(session).max_media_duration_hours == 0.5


# -- deadlines -----------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux ``/proc``)."""
    found, queue = [], [pid]
    while queue:
        for task in Path(f"/proc/{queue.pop()}/task").glob("*"):
            children = [int(c) for c in (task / "children").read_text().split()]
            found += children
            queue += children
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped by init, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _eventually(condition, seconds: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass (a kill acts asynchronously)."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def fifo(tmp_path) -> Path:
    """A named pipe nobody ever writes to: ffmpeg/ffprobe opening it wait forever."""
    path = tmp_path / "never.wav"
    os.mkfifo(path)
    return path


def _has_reader(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO when nobody reads
    except OSError:
        return False
    os.close(fd)
    return True


def test_ffprobe_on_a_pipe_that_never_gets_data_is_killed(fifo):
    with pytest.raises(ProbeTimeout, match=r"ffprobe timed out after 0\.5 s") as raised:
        probe(fifo, timeout=0.5)

    assert isinstance(raised.value, ToolTimeout)
    assert not _has_reader(fifo)  # the ffprobe that was reading it is gone


def test_a_timeout_kills_ffmpeg_and_its_children(fifo):
    command = ["sh", "-c", f"ffmpeg -nostdin -i '{fifo}' -f null - & wait"]
    with ToolProcess(command) as proc:
        assert _eventually(lambda: "ffmpeg" in [_name(p) for p in _descendants(proc.pid)])
        [ffmpeg] = _descendants(proc.pid)
        try:
            with pytest.raises(ToolTimeout, match=r"sh did not finish within 0\.2 s"):
                proc.wait(0.2)

            assert _eventually(lambda: not _alive(ffmpeg))
            assert not _has_reader(fifo)
        finally:
            if _alive(ffmpeg):  # only when the test fails: leave nothing running
                os.kill(ffmpeg, signal.SIGKILL)


@pytest.fixture
def instant_deadlines(monkeypatch):
    """Derived ffmpeg deadlines of a few microseconds: every real decode outlives them."""
    monkeypatch.setattr(limits, "FFMPEG_TIMEOUT_BASE_SECONDS", 0.0)
    monkeypatch.setattr(limits, "FFMPEG_SECONDS_PER_MEDIA_SECOND", 1e-6)


def test_normalisation_has_a_deadline_by_default(tmp_path, speech_wav, instant_deadlines):
    dest = tmp_path / "out.wav"

    with pytest.raises(AudioTimeout, match=r"\.wav: ffmpeg timed out after [\d.e-]+ s"):
        normalize_audio(speech_wav, dest)
    assert not dest.exists()


def test_stitching_has_a_deadline_by_default(tmp_path, speech_factory, instant_deadlines):
    # Different codecs: a re-encode, started once the probes are done, outlives the deadline.
    parts = [
        speech_factory(SPEECH_SENTENCE, tmp_path / f"talk_P00{i}.{fmt}", fmt=fmt)
        for i, fmt in ((1, "mp3"), (2, "wav"))
    ]
    dest = tmp_path / "talk.mp3"

    with pytest.raises(StitchTimeout, match="ffmpeg timed out after"):
        stitch(parts, dest)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk_P001.mp3", "talk_P002.wav"]


# -- stderr --------------------------------------------------------------------------------------


def test_only_the_end_of_a_chatty_stderr_is_kept():
    # ashowinfo logs a line per audio frame: five minutes of it is about 2.5 MB of stderr.
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-v", "info",
               "-f", "lavfi", "-i", "sine=duration=300,ashowinfo", "-f", "null", "-"]  # fmt: skip
    full = subprocess.run(command, capture_output=True, check=True).stderr

    result = run_tool(command, timeout=120)

    assert result.returncode == 0
    assert len(full) > 2_000_000
    assert result.stderr_bytes > 2_000_000  # about len(full): only the speed figure differs
    assert len(result.stderr.encode()) == limits.STDERR_TAIL_BYTES == 64 * 1024
    # The kept bytes are the end of the stream: its last lines, up to the final summary.
    kept = _comparable(result.stderr.split("\n", 1)[1])  # the first line is cut short
    assert len(kept) > 50_000
    assert _comparable(full.decode()).endswith(kept)
    assert "muxing overhead" in kept.splitlines()[-1]


def _comparable(text: str) -> str:
    """``text`` without what differs between two runs: log contexts' addresses, the speed."""
    return re.sub(r" @ 0x[0-9a-f]+|speed=\s*\S+", "", text)


def test_a_process_killed_from_outside_reports_its_signal(fifo):
    # Not a timeout: the exit status says what happened, and nothing is raised.
    with ToolProcess(["ffmpeg", "-nostdin", "-i", str(fifo), "-f", "null", "-"]) as proc:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30).returncode == -signal.SIGTERM
