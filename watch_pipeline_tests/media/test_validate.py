from __future__ import annotations

import io
import shutil
import subprocess

import pytest

from watch_pipeline.media.validate import HEAD_SIZE, ValidationResult, sniff, validate_media

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

VIDEO = ["-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=25"]
AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]

# file name → (ffmpeg arguments, the content type sniff must report)
SAMPLES: dict[str, tuple[list[str], str]] = {
    "a.wav": (AUDIO, "audio/wav"),
    "a.mp3": ([*AUDIO, "-c:a", "libmp3lame"], "audio/mpeg"),
    "bare.mp3": ([*AUDIO, "-c:a", "libmp3lame", "-id3v2_version", "0"], "audio/mpeg"),
    "a.flac": (AUDIO, "audio/flac"),
    "a.ogg": ([*AUDIO, "-c:a", "libvorbis"], "audio/ogg"),
    "a.opus": (AUDIO, "audio/ogg"),
    "a.m4a": (AUDIO, "audio/mp4"),
    "a.aac": (AUDIO, "audio/aac"),
    "a.aiff": (AUDIO, "audio/aiff"),
    "a.wma": (AUDIO, "audio/x-ms-wma"),
    "v.mp4": ([*VIDEO, *AUDIO, "-c:v", "libx264", "-c:a", "aac"], "video/mp4"),
    "v.mov": ([*VIDEO, *AUDIO, "-c:v", "libx264", "-c:a", "aac"], "video/quicktime"),
    "v.3gp": ([*VIDEO, *AUDIO, "-c:v", "libx264", "-c:a", "aac"], "video/3gpp"),
    "v.webm": ([*VIDEO, *AUDIO], "video/webm"),
    "v.mkv": ([*VIDEO, *AUDIO], "video/x-matroska"),
    "v.avi": ([*VIDEO, *AUDIO], "video/x-msvideo"),
    "v.ts": ([*VIDEO, *AUDIO], "video/mp2t"),
    "v.m2ts": ([*VIDEO, *AUDIO], "video/mp2t"),
    "v.mpg": ([*VIDEO, *AUDIO, "-c:v", "mpeg1video", "-c:a", "mp2"], "video/mpeg"),
    "v.flv": ([*VIDEO, *AUDIO], "video/x-flv"),
    "v.wmv": ([*VIDEO, *AUDIO], "video/x-ms-wmv"),
}


def make_media(directory, name: str) -> bytes:
    args, _ = SAMPLES[name]
    path = directory / name
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *args, "-t", "1", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("media")
    for name in SAMPLES:
        make_media(directory, name)
    return directory


class CountingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


class BrokenReader(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        raise OSError("connection reset by peer")


@pytest.mark.parametrize("name", list(SAMPLES))
def test_real_media_is_sniffed_and_accepted(media_dir, name):
    data = (media_dir / name).read_bytes()
    expected = SAMPLES[name][1]

    assert sniff(data[:HEAD_SIZE]) == expected
    with open(media_dir / name, "rb") as fh:
        result = validate_media(fh, len(data))
    assert result == ValidationResult(
        ok=True, content_type=expected, skip_reason=None, message=f"looks like {expected}"
    )


def test_reads_at_most_the_first_64_kib(media_dir):
    data = (media_dir / "a.wav").read_bytes() * 20  # big enough to exceed the window
    assert len(data) > 4 * HEAD_SIZE
    fh = CountingReader(data)

    assert validate_media(fh, len(data)).ok
    assert fh.bytes_read <= HEAD_SIZE


def test_reads_from_the_start_even_when_positioned_elsewhere(media_dir):
    data = (media_dir / "v.mp4").read_bytes()
    fh = io.BytesIO(data)
    fh.seek(1000)

    assert validate_media(fh, len(data)).content_type == "video/mp4"


def test_empty_file_fails_validation(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with open(path, "rb") as fh:
        result = validate_media(fh, 0)

    assert not result.ok
    assert result.skip_reason == "validation_failed"
    assert result.content_type is None
    assert "empty" in result.message


def test_unreadable_file_fails_validation():
    result = validate_media(BrokenReader(), 1000)

    assert not result.ok
    assert result.skip_reason == "validation_failed"
    assert "connection reset by peer" in result.message


def test_file_shorter_than_listed_fails_validation(media_dir):
    data = (media_dir / "a.wav").read_bytes()[:100]
    result = validate_media(io.BytesIO(data), 5000)

    assert result.skip_reason == "validation_failed"
    assert "100" in result.message


def test_text_renamed_to_mp4_is_invalid_type(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("Meeting notes\nThis is not a video at all.\n" * 50)
    with open(path, "rb") as fh:
        result = validate_media(fh, path.stat().st_size)

    assert not result.ok
    assert result.skip_reason == "invalid_type"
    assert result.content_type is None
    assert "Meeting notes" in result.message


@pytest.mark.parametrize(
    "head",
    [
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,  # image
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 100,  # JPEG: 0xFF but no audio sync
        b"%PDF-1.7\n" + b"\x00" * 100,
        b"PK\x03\x04" + b"\x00" * 100,  # zip / docx
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",  # RIFF, but an image
        b"\x00\x00\x00\x00" * 40,
        b"\x47" + b"\x00" * 400,  # one TS sync byte is not a transport stream
        b"",
    ],
)
def test_non_media_heads_are_not_sniffed(head):
    assert sniff(head) is None


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"#!AMR\n\x3c" + b"\x00" * 40, "audio/amr"),
        (b"#!AMR-WB\n\x04" + b"\x00" * 40, "audio/amr-wb"),
        (b"\x00\x00\x00\x08wide\x00\x00\x10\x00mdat", "video/quicktime"),
        (b"\x00\x00\x00\x18ftypM4V \x00\x00\x00\x01M4V isom", "video/x-m4v"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "video/mp4"),
    ],
)
def test_hand_made_heads(head, expected):
    assert sniff(head) == expected


def test_a_truncated_mp4_is_refused_even_with_its_index_in_front(tmp_path):
    whole = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=500:duration=2", "-c:a", "aac", "-movflags", "+faststart",
                    str(whole)], check=True)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with open(whole, "rb") as fh:
        assert validate_media(fh, len(data)).ok
    with open(cut, "rb") as fh:
        result = validate_media(fh, len(data) // 2)
    assert not result.ok and result.skip_reason == "validation_failed"
    assert "truncated recording" in result.message and "mdat" in result.message
