"""Thumbnails and waveforms with real ffmpeg: the frame chosen, the sizes, the JSON format."""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from watch_pipeline.media import previews
from watch_pipeline.media.process import ToolInput, ToolProcess


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def black_then_colour(dest: Path, *, black: float = 2.0, colour: float = 3.0,
                      keyint: int | None = None) -> Path:
    """A video that is black for ``black`` seconds, then a colour test pattern, with a tone."""
    gop = ["-g", str(keyint)] if keyint else []
    ffmpeg("-f", "lavfi", "-i", f"color=black:s=320x240:r=25:d={black}",
           "-f", "lavfi", "-i", f"testsrc=s=320x240:r=25:d={colour}",
           "-f", "lavfi", "-i", f"sine=frequency=440:duration={black + colour}",
           "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-map", "2:a",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", *gop, "-c:a", "aac", str(dest))
    return dest


def grey(image: Path) -> np.ndarray:
    """The image decoded by ffmpeg as 32x18 grey pixels."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(image), "-vf",
                          "scale=32:18", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).astype(float)


def probe_size(image: Path) -> tuple[int, int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height", "-of", "json", str(image)],
                         check=True, capture_output=True, text=True).stdout
    stream = json.loads(out)["streams"][0]
    return stream["width"], stream["height"]


@pytest.mark.parametrize("keyint", [None, 25], ids=["one-keyframe", "keyframe-each-second"])
def test_thumbnail_skips_the_black_start(tmp_path, keyint):
    video = black_then_colour(tmp_path / "talk.mp4", keyint=keyint)
    made = previews.make_thumbnail(video, tmp_path / "t.webp", tmp_path / "s.webp", duration=5.0)

    for picture in (made.large, made.small):
        pixels = grey(picture.path)
        assert pixels.mean() > 40 and pixels.std() > 20, "the thumbnail is a black frame"
    assert probe_size(tmp_path / "t.webp") == (640, 480)
    assert probe_size(tmp_path / "s.webp") == (160, 120)
    assert (made.large.width, made.large.height) == (640, 480)
    assert (made.small.width, made.small.height) == (160, 120)
    assert made.large.size == (tmp_path / "t.webp").stat().st_size
    assert made.small.size < 8 * 1024, "the small image is inlined in metadata"


def test_an_all_black_video_still_gets_a_thumbnail(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "color=black:s=320x180:r=25:d=2", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(tmp_path / "dark.mp4"))
    made = previews.make_thumbnail(tmp_path / "dark.mp4", tmp_path / "t.webp",
                                   tmp_path / "s.webp", duration=2.0)
    assert (made.large.width, made.large.height) == (640, 360)


def test_a_corrupt_video_stream_is_refused_with_the_reason(tmp_path):
    good = black_then_colour(tmp_path / "good.mp4", black=0.5, colour=1.5)
    bad = tmp_path / "bad.mp4"
    ffmpeg("-i", str(good), "-c", "copy", "-bsf:v", "noise=amount=1", str(bad))
    with pytest.raises(previews.PreviewError,
                       match=r"^bad\.mp4: (no video frame could be decoded|ffmpeg failed)"):
        previews.make_thumbnail(bad, tmp_path / "t.webp", tmp_path / "s.webp", duration=2.0)
    # its audio is intact: the waveform is still made
    assert previews.make_waveform(bad).length > 0


def test_audio_only_has_no_thumbnail(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1", str(tmp_path / "a.wav"))
    with pytest.raises(previews.PreviewError, match="no video stream"):
        previews.make_thumbnail(tmp_path / "a.wav", tmp_path / "t.webp", tmp_path / "s.webp",
                                duration=1.0)


def test_waveform_is_audiowaveform_v2_json(tmp_path):
    # 1 s of a loud tone (amplitude 0.5), then 1.5 s of silence, at 44.1 kHz stereo
    ffmpeg("-f", "lavfi", "-i",
           "aevalsrc=exprs='if(lt(t,1),0.5*sin(2*PI*440*t),0)|if(lt(t,1),0.5*sin(2*PI*440*t),0)'"
           ":s=44100:d=2.5", "-c:a", "libmp3lame", str(tmp_path / "tone.mp3"))
    wave = previews.make_waveform(tmp_path / "tone.mp3", duration=2.5)
    out = io.StringIO()
    wave.write_json(out)
    doc = json.loads(out.getvalue())

    assert set(doc) == {"version", "channels", "sample_rate", "samples_per_pixel", "bits",
                        "length", "data"}
    assert (doc["version"], doc["channels"], doc["bits"]) == (2, 1, 8)
    assert (doc["sample_rate"], doc["samples_per_pixel"]) == (16000, 256)
    assert abs(wave.samples - 2.5 * 16000) < 0.1 * 16000  # mp3 pads a little
    assert doc["length"] == math.ceil(wave.samples / 256)
    assert len(doc["data"]) == 2 * doc["length"] * doc["channels"]
    assert all(-128 <= v <= 127 and isinstance(v, int) for v in doc["data"])
    mins, maxes = doc["data"][0::2], doc["data"][1::2]
    assert all(lo <= hi for lo, hi in zip(mins, maxes, strict=True))
    per_second = 16000 / 256
    loud = maxes[int(0.2 * per_second):int(0.8 * per_second)]
    quiet = maxes[int(1.3 * per_second):int(2.3 * per_second)]
    assert 55 <= min(loud) and max(loud) <= 66  # 0.5 of full scale is 64 in 8 bits
    assert max(quiet) <= 1 and min(mins[int(0.2 * per_second):int(0.8 * per_second)]) <= -55


def test_waveform_png_draws_the_peaks(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2", str(tmp_path / "a.wav"))
    wave = previews.make_waveform(tmp_path / "a.wav")
    (tmp_path / "w.png").write_bytes(wave.png())
    assert probe_size(tmp_path / "w.png") == previews.PNG_SIZE
    assert previews.image_size(wave.png()) == previews.PNG_SIZE
    pixels = grey(tmp_path / "w.png")
    assert pixels.min() < pixels.max(), "the picture is blank"


def test_waveform_of_media_without_audio_says_so(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=1", "-c:v", "libx264",
           str(tmp_path / "mute.mp4"))
    with pytest.raises(previews.PreviewError, match="no audio stream"):
        previews.make_waveform(tmp_path / "mute.mp4")


def test_peaks_do_not_depend_on_how_the_pcm_is_chunked():
    rng = random.Random(7)
    samples = np.array([rng.randint(0, 255) for _ in range(10_000)], dtype=np.uint8)
    pcm = samples.tobytes()
    peaks = previews._Peaks(256)
    offset = 0
    while offset < len(pcm):  # chunks that split pixels anywhere
        step = rng.randint(1, 3001)
        peaks.add(pcm[offset:offset + step])
        offset += step
    got = peaks.finish()
    assert peaks.samples == 10_000 and len(got) == math.ceil(10_000 / 256)
    for pixel in (0, 17, len(got) - 1):
        block = samples[pixel * 256:(pixel + 1) * 256].astype(int) - 128
        assert tuple(got[pixel]) == (block.min(), block.max())


def test_image_size_reads_webp_and_png_headers(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=200x100:d=1", "-frames:v", "1", "-c:v", "libwebp",
           "-lossless", "1", str(tmp_path / "lossless.webp"))
    assert previews.image_size((tmp_path / "lossless.webp").read_bytes()) == (200, 100)
    with pytest.raises(previews.PreviewError):
        previews.image_size(b"GIF89a....")


# -- a presigned URL as input: never in a message ---------------------------------------------

PRESIGNED = ("http://127.0.0.1:9000/media/user_1/file_7/talk.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Credential=AKIAEXAMPLEKEY0007%2F20261207%2Fus-east-1%2Fs3%2Faws4_request"
             "&X-Amz-Date=20261207T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=" + "5d1f0e" * 10 + "abcd")
SHOWN = "s3://media/user_1/file_7/talk.mp4"
LEAKS = ("X-Amz", "AKIAEXAMPLEKEY0007", "5d1f0e5d1f0e", "aws4_request", "127.0.0.1:9000")


def assert_clean(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, (leak, text)


@pytest.mark.parametrize("printed", [
    PRESIGNED + ": Server returned 403 Forbidden (access denied)",
    "[http @ 0x55d0] Opening '" + PRESIGNED.split("?")[0] + "' for reading",
    PRESIGNED[170:] + ": Invalid data found when processing input",  # a line cut in the query
    PRESIGNED[60:120] + " | " + PRESIGNED[-30:],
    "Credential=AKIAEXAMPLEKEY0007/20261207/us-east-1/s3/aws4_request",  # unescaped
])
def test_scrub_replaces_the_url_and_every_piece_of_its_query(printed):
    source = ToolInput(location=PRESIGNED, shown=SHOWN)
    scrubbed = source.scrub(printed)
    assert_clean(scrubbed)
    if printed.startswith(("http", "[http")):
        assert SHOWN in scrubbed
    assert ToolInput.of(Path("/data/talk.mp4")).scrub(printed) == printed  # a path: as it is


def test_a_stderr_tail_cut_inside_the_signature_keeps_no_piece_of_it():
    source = ToolInput(location=PRESIGNED, shown=SHOWN)
    noise = "".join(f"[h264 @ 0x55] error {i} in the stream\n" for i in range(40))
    script = f"import sys; sys.stderr.write({noise + PRESIGNED + ': I/O error' + chr(10)!r})"
    with ToolProcess([sys.executable, "-c", script], stderr_limit=50,
                     scrub=source.scrub) as proc:
        result = proc.wait(30)
    assert result.stderr_bytes > len(PRESIGNED)
    assert_clean(result.stderr)


def test_a_waveform_over_http_names_the_shown_location_on_failure(tmp_path):
    # nothing listens on port 9 of loopback: ffmpeg prints the URL in its connection error
    source = ToolInput(location=PRESIGNED.replace("127.0.0.1:9000", "127.0.0.1:9"),
                       shown=SHOWN)
    with pytest.raises(previews.PreviewError) as failed:
        previews.make_waveform(source, duration=1.0)
    assert str(failed.value).startswith(SHOWN + ": ffmpeg failed")
    assert_clean(str(failed.value))
    assert "127.0.0.1:9/" not in str(failed.value)
