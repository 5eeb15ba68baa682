"""stitch: real ffmpeg on synthesised speech, test-pattern video, mixed codecs and junk parts."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from watch_pipeline.media import stitch as stitch_module
from watch_pipeline.media.probe import probe
from watch_pipeline.media.stitch import StitchError, stitch

PHRASES = (
    "the quick brown fox jumps over the lazy dog",
    "seven purple elephants sing in the morning",
    "a cold wind blows across the quiet harbour",
)


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
    )


def make_part(
    dest: Path,
    *,
    video: str | None = "64x64",
    audio: str | None = "aac",
    sample_rate: int = 44_100,
    seconds: float = 1.0,
) -> Path:
    """A ``seconds``-long testsrc (``video`` = size) + sine (``audio`` = encoder) file."""
    args: list[str] = []
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc=size={video}:rate=10:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}"
                 f":duration={seconds}"]  # fmt: skip
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", audio]
    _ffmpeg(*args, str(dest))
    return dest


@pytest.fixture
def isolated_tmp(tmp_path, monkeypatch):
    """Point tempfile at a private directory, so a test can see that stitch left nothing there."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _children() -> set[str]:
    """Process ids of this process's children (Linux), to see that no ffmpeg is left running."""
    tasks = Path(f"/proc/{os.getpid()}/task")
    return {pid for task in tasks.iterdir() for pid in (task / "children").read_text().split()}


def _leftovers(folder: Path, *keep: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p not in keep and p.name != "scratch")


def test_three_speech_parts_are_stream_copied(tmp_path, speech_factory, isolated_tmp):
    parts = [
        speech_factory(text, tmp_path / f"talk_P00{i}.wav")
        for i, text in enumerate(PHRASES, start=1)
    ]
    expected = sum(probe(p).duration for p in parts)
    dest = tmp_path / "talk.wav"

    result = stitch(parts, dest)

    assert result.mode == "copy"
    assert result.reencode_reason is None
    assert result.parts_duration == pytest.approx(expected)
    assert result.duration == pytest.approx(expected, abs=0.05)
    out = probe(dest)
    assert out.duration == pytest.approx(expected, abs=0.05)
    assert out.audio is not None and out.audio.codec == "pcm_s16le"
    assert result.size == dest.stat().st_size
    assert _leftovers(tmp_path, *parts, dest) == []
    assert list(isolated_tmp.iterdir()) == []


def test_three_video_parts_with_equal_codecs_are_stream_copied(tmp_path, isolated_tmp):
    parts = [make_part(tmp_path / f"cam_P00{i}.mp4") for i in (1, 2, 3)]
    dest = tmp_path / "cam.mp4"

    result = stitch(parts, dest)

    assert result.mode == "copy"
    assert result.parts_duration == pytest.approx(3.0, abs=0.1)
    assert result.duration == pytest.approx(3.0, abs=0.2)
    out = probe(dest)
    assert (out.video.codec, out.video.width, out.video.height) == ("h264", 64, 64)
    assert out.audio.codec == "aac"
    assert _leftovers(tmp_path, *parts, dest) == []
    assert list(isolated_tmp.iterdir()) == []


def test_mixed_codecs_sizes_and_rates_are_reencoded(tmp_path, isolated_tmp):
    parts = [
        make_part(tmp_path / "cam_P001.mp4"),
        make_part(tmp_path / "cam_P002.mp4", video="96x48", audio="libmp3lame", sample_rate=22_050),
        make_part(tmp_path / "cam_P003.mp4", seconds=2.0),
    ]
    dest = tmp_path / "cam.mp4"
    children = _children()  # session fixtures may run servers of their own

    result = stitch(parts, dest)

    assert result.mode == "reencode"
    assert "part 2 of 3 (cam_P002.mp4)" in result.reencode_reason
    assert result.duration == pytest.approx(4.0, abs=0.3)
    out = probe(dest)
    assert (out.video.codec, out.video.width, out.video.height) == ("h264", 64, 64)
    assert (out.audio.codec, out.audio.sample_rate) == ("aac", 44_100)
    assert _children() <= children  # the speculative stream copy was stopped and reaped
    assert _leftovers(tmp_path, *parts, dest) == []
    assert list(isolated_tmp.iterdir()) == []


def test_a_part_without_audio_contributes_silence(tmp_path):
    parts = [
        make_part(tmp_path / "cam_P001.mp4"),
        make_part(tmp_path / "cam_P002.mp4", audio=None, seconds=2.0),
    ]
    dest = tmp_path / "cam.mp4"

    result = stitch(parts, dest)

    assert result.mode == "reencode"
    out = probe(dest)
    assert out.audio is not None and out.video is not None
    assert result.duration == pytest.approx(3.0, abs=0.3)


def test_an_audio_only_part_in_a_video_group_fails_clearly(tmp_path):
    parts = [
        make_part(tmp_path / "cam_P001.mp4"),
        make_part(tmp_path / "cam_P002.mp4", video=None),
    ]
    dest = tmp_path / "cam.mp4"

    with pytest.raises(StitchError, match=r"part 2 of 2 \(cam_P002\.mp4\) has no video stream"):
        stitch(parts, dest)
    assert not dest.exists()


@pytest.mark.parametrize(
    ("suffix", "codec"),
    [(".wav", "pcm_s16le"), (".mp3", "mp3"), (".m4a", "aac"), (".ogg", "opus"),
     (".opus", "opus"), (".flac", "flac"), (".aiff", "pcm_s16be"), (".mka", "aac")],
)  # fmt: skip
def test_audio_only_reencode_picks_the_codec_from_the_extension(tmp_path, suffix, codec):
    parts = [
        make_part(tmp_path / "a_P001.mkv", video=None, audio="pcm_s16le", sample_rate=16_000),
        make_part(tmp_path / "a_P002.mkv", video=None, audio="pcm_s16le", sample_rate=44_100),
    ]
    dest = tmp_path / f"a{suffix}"

    result = stitch(parts, dest)

    assert result.mode == "reencode"
    out = probe(dest)
    assert out.video is None
    assert out.audio.codec == codec
    assert result.duration == pytest.approx(2.0, abs=0.2)


def test_a_corrupt_part_is_named_with_ffprobes_reason(tmp_path, isolated_tmp):
    parts = [
        make_part(tmp_path / "cam_P001.mp4"),
        tmp_path / "cam_P002.mp4",
        make_part(tmp_path / "cam_P003.mp4"),
    ]
    parts[1].write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    dest = tmp_path / "cam.mp4"
    children = _children()

    with pytest.raises(StitchError, match=r"part 2 of 3 \(cam_P002\.mp4\)") as caught:
        stitch(parts, dest)

    assert "ffprobe failed" in str(caught.value)
    assert _children() <= children
    assert not dest.exists()
    assert _leftovers(tmp_path, *parts) == []
    assert list(isolated_tmp.iterdir()) == []


def test_a_missing_part_is_named(tmp_path):
    parts = [make_part(tmp_path / "cam_P001.mp4"), tmp_path / "cam_P002.mp4"]
    with pytest.raises(StitchError, match=r"part 2 of 2 \(cam_P002\.mp4\): no such file"):
        stitch(parts, tmp_path / "cam.mp4")


def test_no_parts_is_an_error(tmp_path):
    with pytest.raises(StitchError, match="no parts"):
        stitch([], tmp_path / "cam.mp4")


@pytest.mark.parametrize(
    "name", ["with space_P00{}.mp4", 'it\'s "quoted"_P00{}.mp4', "réunion 会议 \\ ' _P00{}.mp4"]
)
def test_awkward_paths_are_stream_copied(tmp_path, name):
    folder = tmp_path / "dir with 'quote' and ünïcode"
    folder.mkdir()
    parts = [make_part(folder / name.format(i)) for i in (1, 2, 3)]
    dest = folder / name.format("").replace("_P00", "")

    result = stitch(parts, dest)

    assert result.mode == "copy"
    assert probe(dest).duration == pytest.approx(3.0, abs=0.2)


def test_an_existing_destination_is_replaced(tmp_path):
    parts = [make_part(tmp_path / f"cam_P00{i}.mp4") for i in (1, 2)]
    dest = tmp_path / "cam.mp4"
    dest.write_bytes(b"old")

    result = stitch(parts, dest)

    assert dest.stat().st_size == result.size > 3


def test_output_duration_off_by_more_than_the_tolerance_fails(tmp_path, monkeypatch, isolated_tmp):
    parts = [make_part(tmp_path / f"cam_P00{i}.mp4") for i in (1, 2, 3)]
    dest = tmp_path / "cam.mp4"
    real_probe = stitch_module.probe

    def probe_with_long_output(path, **kwargs):
        info = real_probe(path, **kwargs)
        if Path(path) in parts:
            return info
        return type(info)(**{**info.__dict__, "duration": 7.0})  # as if a part were repeated

    monkeypatch.setattr(stitch_module, "probe", probe_with_long_output)

    reason = r"lasts 7\.000 s but its 3 parts sum to [\d.]+ s \(allowed difference 3 s\)"
    with pytest.raises(StitchError, match=reason):
        stitch(parts, dest)
    assert not dest.exists()
    assert _leftovers(tmp_path, *parts) == []
    assert list(isolated_tmp.iterdir()) == []


def test_tolerance_is_per_part(tmp_path, monkeypatch):
    parts = [make_part(tmp_path / f"cam_P00{i}.mp4") for i in (1, 2, 3)]
    real_probe = stitch_module.probe

    def probe_with_drift(path, **kwargs):
        info = real_probe(path, **kwargs)
        if Path(path) in parts:
            return info
        return type(info)(**{**info.__dict__, "duration": info.duration + 2.5})

    monkeypatch.setattr(stitch_module, "probe", probe_with_drift)

    assert stitch(parts, tmp_path / "ok.mp4", tolerance_per_part=1.0).mode == "copy"  # 2.5 < 3
    with pytest.raises(StitchError, match=r"allowed difference 1\.5 s"):
        stitch(parts, tmp_path / "bad.mp4", tolerance_per_part=0.5)
