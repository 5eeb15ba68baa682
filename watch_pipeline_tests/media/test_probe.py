from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from watch_pipeline.media.probe import (
    MediaInfo,
    ProbeError,
    StreamInfo,
    content_type_for,
    load_probes,
    probe,
    save_probes,
)
from watch_pipeline.media.validate import sniff

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe not installed",
)

VIDEO = ["-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=10"]
AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:duration=2"]


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True, timeout=60
    )


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe")
    ffmpeg(*AUDIO, str(d / "tone.wav"))
    ffmpeg(*AUDIO, "-c:a", "libmp3lame", str(d / "tone.mp3"))
    ffmpeg(*AUDIO, str(d / "tone.flac"))
    ffmpeg(*AUDIO, "-c:a", "libvorbis", str(d / "tone.ogg"))
    ffmpeg(*AUDIO, "-c:a", "aac", str(d / "tone.m4a"))
    ffmpeg(*AUDIO, "-c:a", "wmav2", str(d / "tone.wma"))
    av = [*VIDEO, "-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
    ffmpeg(*av, "-c:v", "libx264", "-c:a", "aac", "-shortest", str(d / "clip.mp4"))
    ffmpeg(*av, "-c:v", "libx264", "-c:a", "aac", "-shortest", str(d / "clip.mov"))
    ffmpeg(*av, "-c:v", "libvpx", "-c:a", "libopus", "-shortest", str(d / "clip.webm"))
    ffmpeg(*av, "-c:v", "libx264", "-c:a", "flac", "-shortest", str(d / "clip.mkv"))
    ffmpeg(*av, "-shortest", str(d / "clip.avi"))
    ffmpeg(*av, "-shortest", str(d / "clip.ts"))
    ffmpeg(*av, "-shortest", str(d / "clip.flv"))
    ffmpeg(*av, "-shortest", str(d / "clip.wmv"))
    # An MP3 with cover art: ffprobe lists the picture as a video stream.
    ffmpeg(*VIDEO, "-frames:v", "1", str(d / "cover.png"))
    ffmpeg(
        *AUDIO,
        "-i",
        str(d / "cover.png"),
        "-map",
        "0",
        "-map",
        "1",
        "-c:a",
        "libmp3lame",
        "-c:v",
        "mjpeg",
        "-disposition:v",
        "attached_pic",
        str(d / "cover.mp3"),
    )
    return d


def test_wav_facts(media_dir):
    path = media_dir / "tone.wav"
    info = probe(path)

    assert info.format_name == "wav"
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.size == path.stat().st_size
    assert info.video is None
    assert info.audio == StreamInfo(codec="pcm_s16le", sample_rate=44100, channels=1)
    assert info.bit_rate == pytest.approx(705_600, rel=0.01)


def test_mp4_facts(media_dir):
    info = probe(media_dir / "clip.mp4")

    assert "mp4" in info.format_name.split(",")
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert info.video == StreamInfo(codec="h264", width=64, height=64)
    assert info.audio is not None
    assert info.audio.codec == "aac"
    assert info.audio.sample_rate == 44100
    assert info.bit_rate and info.bit_rate > 0


def test_cover_art_is_not_video(media_dir):
    info = probe(media_dir / "cover.mp3")

    assert info.video is None
    assert info.audio is not None and info.audio.codec == "mp3"
    assert content_type_for(info, "cover.mp3") == "audio/mpeg"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tone.wav", "audio/wav"),
        ("tone.mp3", "audio/mpeg"),
        ("tone.flac", "audio/flac"),
        ("tone.ogg", "audio/ogg"),
        ("tone.m4a", "audio/mp4"),
        ("tone.wma", "audio/x-ms-wma"),
        ("clip.mp4", "video/mp4"),
        ("clip.mov", "video/quicktime"),
        ("clip.webm", "video/webm"),
        ("clip.mkv", "video/x-matroska"),
        ("clip.avi", "video/x-msvideo"),
        ("clip.ts", "video/mp2t"),
        ("clip.flv", "video/x-flv"),
        ("clip.wmv", "video/x-ms-wmv"),
    ],
)
def test_content_type_agrees_with_magic_bytes(media_dir, name, expected):
    path = media_dir / name
    info = probe(path)

    assert content_type_for(info, name) == expected
    assert sniff(path.read_bytes()[: 64 * 1024]) == expected


def test_extension_picks_the_member_of_a_container_family():
    mp4_family = "mov,mp4,m4a,3gp,3g2,mj2"
    video = StreamInfo(codec="h264", width=64, height=64)
    audio = StreamInfo(codec="aac", sample_rate=48000, channels=2)
    with_video = MediaInfo(1.0, mp4_family, 100, video, audio, 1000)
    audio_only = MediaInfo(1.0, mp4_family, 100, None, audio, 1000)

    assert content_type_for(with_video, "X.MOV") == "video/quicktime"
    assert content_type_for(with_video, "x.3gp") == "video/3gpp"
    assert content_type_for(with_video, "x.mp4") == "video/mp4"
    assert content_type_for(audio_only, "x.mp4") == "audio/mp4"
    unknown = MediaInfo(1.0, "weird", 100, None, audio, None)
    assert content_type_for(unknown, "x.mp3") == "audio/mpeg"
    assert content_type_for(unknown, "x.zzz") == "application/octet-stream"


def test_text_file_named_mp4_raises(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n" * 100)

    with pytest.raises(ProbeError) as exc:
        probe(path)

    message = str(exc.value)
    assert "notes.mp4" in message
    assert "Invalid data found" in message


def test_truncated_mp4_raises_with_ffprobes_reason(media_dir, tmp_path):
    data = (media_dir / "clip.mp4").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])  # ffmpeg writes the moov index last

    with pytest.raises(ProbeError, match="moov atom not found") as exc:
        probe(path)
    assert "truncated.mp4" in str(exc.value)


def test_garbled_mp4_raises(media_dir, tmp_path):
    data = bytearray((media_dir / "clip.mp4").read_bytes())
    moov = data.rfind(b"moov")
    data[moov - 4 :] = b"\xa5" * (len(data) - moov + 4)
    path = tmp_path / "garbled.mp4"
    path.write_bytes(bytes(data))

    with pytest.raises(ProbeError, match=r"garbled\.mp4"):
        probe(path)


def test_subtitles_only_raise(tmp_path):
    path = tmp_path / "talk.srt"
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n\n")

    with pytest.raises(ProbeError, match="no audio or video stream"):
        probe(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ProbeError, match="No such file"):
        probe(tmp_path / "absent.wav")


def fake_ffprobe(tmp_path, body: str):
    script = tmp_path / "fake_ffprobe"
    script.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_stderr_is_kept_short(tmp_path):
    noisy = fake_ffprobe(
        tmp_path,
        "sys.stderr.write('noise line\\n' * 20000 + 'the real reason\\n'); sys.exit(1)",
    )

    with pytest.raises(ProbeError) as exc:
        probe(tmp_path / "x.mp4", ffprobe=noisy)

    message = str(exc.value)
    assert len(message) < 1000
    assert message.endswith("the real reason")
    assert "exit 1" in message


def test_timeout_raises(tmp_path):
    slow = fake_ffprobe(tmp_path, "time.sleep(30)")

    with pytest.raises(ProbeError, match="timed out"):
        probe(tmp_path / "x.mp4", ffprobe=slow, timeout=0.5)


def test_missing_ffprobe_raises(tmp_path):
    with pytest.raises(ProbeError, match="not found"):
        probe(tmp_path / "x.mp4", ffprobe=str(tmp_path / "no-such-ffprobe"))


def test_unknown_durations_fall_back_to_streams(tmp_path):
    report = (
        '{"format": {"format_name": "wav", "duration": "N/A", "size": "56000"},'
        ' "streams": [{"codec_type": "audio", "codec_name": "pcm_s16le", "duration": "3.5",'
        ' "sample_rate": "8000", "channels": 1}]}'
    )
    fake = fake_ffprobe(tmp_path, f"print({report!r})")

    info = probe(tmp_path / "x.wav", ffprobe=fake)

    assert info == MediaInfo(
        duration=3.5,
        format_name="wav",
        size=56000,
        video=None,
        audio=StreamInfo(codec="pcm_s16le", sample_rate=8000, channels=1),
        bit_rate=None,
    )


def test_saved_probes_read_back_equal(media_dir, tmp_path):
    probes = {media_dir / name: probe(media_dir / name) for name in ("tone.wav", "clip.mp4")}
    record = tmp_path / "probes.json"

    save_probes(record, probes)

    assert load_probes(record) == probes
    assert [p.name for p in tmp_path.iterdir()] == ["probes.json"]


@pytest.mark.parametrize("text", [None, "", "{not json", '{"a.wav": {"duration": 1}}', "[1]"])
def test_missing_or_damaged_saved_probes_read_as_none(tmp_path, text):
    record = tmp_path / "probes.json"
    if text is not None:
        record.write_text(text)

    assert load_probes(record) == {}
