"""stitch: real ffmpeg on synthesised speech, test-pattern video, mixed codecs and junk parts."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import replace
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


def _overstated_mp3(dest: Path) -> Path:
    """6 s of VBR MP3 without a Xing header: ffprobe estimates ~20 s from the quiet start."""
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo:d=2",
            "-f", "lavfi", "-i", "anoisesrc=r=44100:d=4:a=0.5",
            "-filter_complex", "[0][1]concat=n=2:v=0:a=1", "-c:a", "libmp3lame", "-q:a", "0",
            "-write_xing", "0", str(dest))  # fmt: skip
    return dest


@pytest.mark.parametrize("suffix", [".mp3", ".mkv"])  # measured as written / by ffmpeg's clock
def test_parts_whose_headers_overstate_their_length_fail(tmp_path, isolated_tmp, suffix):
    parts = [_overstated_mp3(tmp_path / f"rec_P00{i}.mp3") for i in (1, 2, 3)]
    stated = sum(probe(p).duration for p in parts)
    assert stated > 3 * 12  # what the parts claim; they hold 3 x 6 s
    dest = tmp_path / f"rec{suffix}"

    reason = rf"stitched rec\{suffix} lasts [\d.]+ s but its 3 parts sum to {stated:.3f} s"
    with pytest.raises(StitchError, match=reason):
        stitch(parts, dest)
    assert not dest.exists()
    assert _leftovers(tmp_path, *parts) == []
    assert list(isolated_tmp.iterdir()) == []


@pytest.fixture
def probe_calls(monkeypatch):
    """The paths stitch() runs ffprobe on, in order (the real probe still runs)."""
    calls: list[Path] = []
    real_probe = stitch_module.probe

    def counting_probe(path, **kwargs):
        calls.append(Path(path))
        return real_probe(path, **kwargs)

    monkeypatch.setattr(stitch_module, "probe", counting_probe)
    return calls


def _wav_parts(folder: Path, count: int = 3) -> list[Path]:
    return [make_part(folder / f"talk_P00{i}.wav", video=None, audio="pcm_s16le")
            for i in range(1, count + 1)]  # fmt: skip


@pytest.mark.parametrize("kind", ["wav copy", "mp4 copy", "mp4 reencode"])
def test_given_probes_are_used_and_nothing_is_probed_again(tmp_path, probe_calls, kind):
    if kind == "wav copy":
        parts, dest = _wav_parts(tmp_path), tmp_path / "talk.wav"
    else:
        parts = [make_part(tmp_path / f"cam_P00{i}.mp4") for i in (1, 2, 3)]
        if kind == "mp4 reencode":
            make_part(parts[1], video="96x48")
        dest = tmp_path / "cam.mp4"
    probes = {p: probe(p) for p in parts}
    children = _children()

    result = stitch(parts, dest, probes=probes)

    assert probe_calls == []
    assert result.mode == kind.split()[1]
    assert result.parts_duration == pytest.approx(3.0, abs=0.1)
    assert result.duration == pytest.approx(3.0, abs=0.2)
    assert probe(dest).duration == pytest.approx(result.duration, abs=0.1)
    assert _children() <= children


def test_only_parts_without_a_usable_probe_are_probed(tmp_path, probe_calls):
    parts = [make_part(tmp_path / f"cam_P00{i}.mp4") for i in (1, 2, 3)]
    stale = probe(parts[2])
    make_part(parts[2], seconds=2.0)  # fetched again since: another file under the same name
    probes = {parts[0]: probe(parts[0]), parts[2]: stale}

    result = stitch(parts, tmp_path / "cam.mp4", probes=probes)

    assert probe_calls == [parts[1], parts[2]]
    assert result.parts_duration == pytest.approx(4.0, abs=0.1)
    assert result.duration == pytest.approx(4.0, abs=0.2)


def test_a_corrupt_part_is_named_when_the_others_probes_are_given(tmp_path, isolated_tmp):
    parts = [make_part(tmp_path / f"cam_P00{i}.mp4") for i in (1, 2, 3)]
    probes = {parts[0]: probe(parts[0]), parts[2]: probe(parts[2])}
    parts[1].write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    children = _children()

    with pytest.raises(StitchError, match=r"part 2 of 3 \(cam_P002\.mp4\) is unreadable"):
        stitch(parts, tmp_path / "cam.mp4", probes=probes)

    assert _children() <= children
    assert _leftovers(tmp_path, *parts) == []
    assert list(isolated_tmp.iterdir()) == []


@pytest.mark.parametrize("suffix", [".wav", ".mp4"])  # measured by size / by ffmpeg's clock
def test_tolerance_is_per_part(tmp_path, suffix):
    if suffix == ".wav":
        parts = _wav_parts(tmp_path)
    else:
        parts = [make_part(tmp_path / f"cam_P00{i}.mp4") for i in (1, 2, 3)]
    # Probes that understate each part by 0.8 s: the output is 2.4 s longer than they sum to,
    # as if a part had been repeated in part.
    probes = {p: replace(info, duration=info.duration - 0.8)
              for p in parts if (info := probe(p))}  # fmt: skip

    ok = stitch(parts, tmp_path / f"ok{suffix}", probes=probes, tolerance_per_part=1.0)  # < 3
    assert ok.duration - ok.parts_duration == pytest.approx(2.4, abs=0.1)
    reason = r"lasts 3\.\d+ s but its 3 parts sum to 0\.6\d+ s \(allowed difference 1\.5 s\)"
    with pytest.raises(StitchError, match=reason):
        stitch(parts, tmp_path / f"bad{suffix}", probes=probes, tolerance_per_part=0.5)
    assert not (tmp_path / f"bad{suffix}").exists()


def test_flac_parts_are_reencoded_so_the_header_carries_the_whole_length(tmp_path):
    # A FLAC stream copy would keep part 1's STREAMINFO: ffprobe would report 1.5 s for 4.5 s.
    parts = [make_part(tmp_path / f"take_P00{i}.flac", video=None, audio="flac",
                       seconds=1.5) for i in (1, 2, 3)]  # fmt: skip
    dest = tmp_path / "take.flac"

    result = stitch(parts, dest)

    assert result.mode == "reencode"
    assert "FLAC" in (result.reencode_reason or "")
    assert probe(dest).duration == pytest.approx(4.5, abs=0.1)
