"""Previews of a media file with ffmpeg: a thumbnail frame, and the waveform's peaks.

Thumbnail (:func:`make_thumbnail`): a frame that is not black or blank, scaled to
:data:`THUMBNAIL_WIDTH` and :data:`SMALL_WIDTH` pixels wide WebP. ffmpeg seeks (input seeking:
no decoding up to the point) to 10 % of the duration and decodes from there, as tiny grey
frames, only the key frames of the next :data:`KEYFRAME_WINDOW_SECONDS` (at most
:data:`CANDIDATES` of them). The candidate with the most detail (luma standard deviation) that
is neither near black nor near white wins. When no key frame there qualifies (a short clip has
one key frame, at 0), every frame of the next :data:`FRAME_WINDOW_SECONDS` is decoded, sampled
to :data:`CANDIDATES` frames. A second run seeks the same way and encodes the chosen frame at
both sizes. The work is bounded by the windows, not by the file: a 1 GiB video costs two seeks.

Waveform (:func:`make_waveform`): peaks in the BBC audiowaveform JSON format, version 2
(https://github.com/bbc/audiowaveform/blob/master/doc/DataFormat.md), which waveform players
such as peaks.js read as is: ffmpeg decodes the first audio stream to mono 8-bit PCM at
:data:`WAVEFORM_SAMPLE_RATE` Hz (nearest-sample resampling, no low-pass) on its stdout, and
each block of :data:`SAMPLES_PER_PIXEL` samples becomes one pixel, its (min, max) pair in 8 bits
(-128 to 127). The PCM is consumed as it comes
(:class:`~watch_pipeline.media.process.ToolProcess` with a ``stdout_sink``); only the peaks are
kept: 2 bytes a pixel, 4.5 MB for 10 hours. A small PNG renders them.

Both read a local path or, as a :class:`~watch_pipeline.media.process.ToolInput`, a URL: a
presigned S3 GET URL is read in place through ffmpeg's http protocol, with range requests (a
seek, and an MP4 whose ``moov`` is at the end, cost a new ranged GET each, not a download), and
reconnects after a dropped connection at the offset it reached. Both runs go through
``process.py`` (deadline from ``limits.ffmpeg_timeout``, only the end of stderr kept, a URL
scrubbed from it) and raise :class:`PreviewError` with the reason, naming the input by its
``shown`` form (``s3://bucket/key``, or the file name), never by the URL.
"""

from __future__ import annotations

import math
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from watch_pipeline.media import limits
from watch_pipeline.media.errors import ToolTimeout
from watch_pipeline.media.process import ToolInput, ToolProcess, one_line, run_tool

THUMBNAIL_WIDTH = 640
"""Width in pixels of ``thumbnail.webp``."""

SMALL_WIDTH = 160
"""Width in pixels of ``thumbnail_small.webp`` (lists, and the picture in Dagster metadata)."""

WEBP_QUALITY = 75
"""libwebp's lossy quality for both sizes."""

CANDIDATES = 12
"""Frames looked at to choose the thumbnail."""

KEYFRAME_WINDOW_SECONDS = 60.0
"""How far past the seek point key frames are looked at."""

FRAME_WINDOW_SECONDS = 20.0
"""How far past the seek point every frame is decoded when no key frame qualified."""

SEEK_FRACTION = 0.10
"""Where the thumbnail search starts, as a fraction of the duration."""

WAVEFORM_SAMPLE_RATE = 16_000
"""Samples per second the audio is decoded at for the peaks."""

SAMPLES_PER_PIXEL = 256
"""Samples per waveform pixel (16 ms at 16 kHz: 62.5 pixels a second)."""

WAVEFORM_BITS = 8
"""Bits per peak value: values run from -128 to 127."""

PNG_SIZE = (640, 96)
"""Width and height in pixels of ``waveform.png``."""

_CANDIDATE_SIZE = (32, 18)
_DARK, _BRIGHT, _FLAT = 24.0, 232.0, 6.0
_STDERR_TAIL_CHARS = 400
_WAVE_RGB = (0x2F, 0x6F, 0xBD)
_BACKGROUND_RGB = (0xF4, 0xF6, 0xF8)
# Over http(s): reconnect after a dropped connection or a network error (at the byte offset
# reached; a seekable input resumes with a ranged GET), waiting at most 4 s between attempts.
_HTTP_INPUT = ["-reconnect", "1", "-reconnect_on_network_error", "1",
               "-reconnect_delay_max", "4"]


class PreviewError(Exception):
    """ffmpeg could not make the preview (no such stream, nothing decodable, ffmpeg missing)."""


class PreviewTimeout(PreviewError, ToolTimeout):
    """ffmpeg outlived its deadline and was killed."""


_INT8_TEXT = np.array([str(value) for value in range(-128, 128)], dtype=object)
"""The decimal text of every int8 value, indexed by value + 128."""

@dataclass(frozen=True)
class Picture:
    """An image written to a file.

    Attributes:
        path: Where it is.
        width: Width in pixels.
        height: Height in pixels.
        size: Bytes.
    """

    path: Path
    width: int
    height: int
    size: int


@dataclass(frozen=True)
class Thumbnail:
    """The chosen frame at both sizes, and where the window it was found in starts (seconds)."""

    large: Picture
    small: Picture
    window_seconds: float


# -- thumbnail ---------------------------------------------------------------------------------


def _ffmpeg(*args: str) -> list[str]:
    return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *args]


def _input(source: ToolInput) -> list[str]:
    """``-i`` and the input's location, preceded by the http options for a URL."""
    return [*(_HTTP_INPUT if source.is_url else []), "-i", source.location]


def _window(start: float, keyframes: bool, duration: float | None) -> tuple[list[str], str]:
    """Input options and the filter prefix that produce the candidates of one window."""
    if keyframes:
        return (["-skip_frame", "nokey", "-ss", f"{start:.3f}", "-t",
                 f"{KEYFRAME_WINDOW_SECONDS:g}"], "")
    span = FRAME_WINDOW_SECONDS
    if duration is not None and duration > start:
        span = min(span, duration - start)
    rate = CANDIDATES / max(span, 0.5)
    return ["-ss", f"{start:.3f}", "-t", f"{span:.3f}"], f"fps={rate:.6f},"


def _candidates(src: ToolInput, inputs: list[str], prefix: str, timeout: float) -> np.ndarray:
    """The window's frames as tiny grey images, shape ``(frames, height, width)``."""
    width, height = _CANDIDATE_SIZE
    command = _ffmpeg(*inputs, *_input(src), "-map", "0:v:0", "-an", "-sn", "-dn",
                      "-vf", f"{prefix}scale={width}:{height}", "-frames:v", str(CANDIDATES),
                      "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray",
                      "pipe:1")
    result = _run(command, src, timeout, capture_stdout=True)
    frames = len(result) // (width * height)
    return np.frombuffer(result[: frames * width * height], dtype=np.uint8).reshape(
        frames, height, width)


def choose_frame(frames: np.ndarray) -> tuple[int, bool]:
    """The index of the frame with the most detail, preferring ones not black, white or flat.

    Args:
        frames: Grey frames, shape ``(n, height, width)``, ``n >= 1``.

    Returns:
        The index, and whether that frame has content (is not blank).
    """
    flat = frames.reshape(len(frames), -1).astype(np.float32)
    means, spreads = flat.mean(axis=1), flat.std(axis=1)
    content = (means > _DARK) & (means < _BRIGHT) & (spreads > _FLAT)
    score = spreads + np.where(content, 1000.0, 0.0)
    best = int(np.argmax(score))
    return best, bool(content[best])


def make_thumbnail(src: Path | ToolInput, large: Path, small: Path, *, duration: float | None,
                   timeout: float | None = None) -> Thumbnail:
    """Choose a frame of ``src`` that is not black or blank and write it as two WebP images.

    Args:
        src: A video file, or a :class:`ToolInput` (a presigned URL, read by ranged GETs).
        large: Where to write the :data:`THUMBNAIL_WIDTH` px WebP.
        small: Where to write the :data:`SMALL_WIDTH` px WebP.
        duration: The media's duration in seconds (the search starts at 10 % of it), or
            ``None`` to start at 0.
        timeout: Seconds each ffmpeg run may take; ``None`` derives it from the window.

    Returns:
        Both pictures and the second the frame was taken from (approximately).

    Raises:
        PreviewTimeout: ffmpeg outlived its deadline.
        PreviewError: No video frame could be decoded, or ffmpeg failed or is missing.
    """
    src = ToolInput.of(src)
    start = SEEK_FRACTION * duration if duration and math.isfinite(duration) else 0.0
    deadline = timeout or limits.ffmpeg_timeout(KEYFRAME_WINDOW_SECONDS)
    windows = [(True, start), (False, start)] + ([(False, 0.0)] if start > 0 else [])
    chosen: tuple[list[str], str, int, float] | None = None
    for keyframes, at in windows:
        inputs, prefix = _window(at, keyframes, duration)
        frames = _candidates(src, inputs, prefix, deadline)
        if not len(frames):
            continue
        index, content = choose_frame(frames)
        if content or chosen is None:
            chosen = (inputs, prefix, index, at)
        if content:
            break
    if chosen is None:
        raise PreviewError(f"{src.shown}: no video frame could be decoded")
    inputs, prefix, index, at = chosen
    graph = (f"[0:v:0]{prefix}select=eq(n\\,{index}),scale={THUMBNAIL_WIDTH}:-2,split=2[l][s];"
             f"[s]scale={SMALL_WIDTH}:-2[t]")
    webp = ["-c:v", "libwebp", "-quality", str(WEBP_QUALITY), "-frames:v", "1", "-f", "webp"]
    _run(_ffmpeg("-y", *inputs, *_input(src), "-filter_complex", graph,
                 "-map", "[l]", *webp, str(large), "-map", "[t]", *webp, str(small)),
         src, deadline)
    return Thumbnail(large=_picture(large, src), small=_picture(small, src), window_seconds=at)


def _picture(path: Path, src: ToolInput) -> Picture:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PreviewError(f"{src.shown}: ffmpeg wrote no image") from None
    if not data:
        raise PreviewError(f"{src.shown}: ffmpeg wrote an empty image")
    width, height = image_size(data)
    return Picture(path=path, width=width, height=height, size=len(data))


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of a WebP or PNG image, from its header.

    Raises:
        PreviewError: ``data`` is neither.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L" and data[20:21] == b"\x2f":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return (int.from_bytes(data[24:27], "little") + 1,
                    int.from_bytes(data[27:30], "little") + 1)
    raise PreviewError("not a WebP or PNG image")


# -- waveform ----------------------------------------------------------------------------------


class _Peaks:
    """Turns 8-bit PCM (``u8``), as it comes in chunks, into (min, max) pairs per pixel."""

    def __init__(self, samples_per_pixel: int) -> None:
        self.spp = samples_per_pixel
        self.samples = 0
        self.blocks: list[np.ndarray] = []
        self._rest = np.empty(0, dtype=np.uint8)
        self._lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self._lock:
            pcm = np.frombuffer(chunk, dtype=np.uint8)
            self.samples += len(pcm)
            if len(self._rest):
                pcm = np.concatenate([self._rest, pcm])
            full = len(pcm) - len(pcm) % self.spp
            self._rest = pcm[full:].copy()
            if full:
                self.blocks.append(_pairs(pcm[:full].reshape(-1, self.spp)))

    def finish(self) -> np.ndarray:
        """All (min, max) pairs, shape ``(pixels, 2)``, int8; the last block may be partial."""
        with self._lock:
            if len(self._rest):
                self.blocks.append(_pairs(self._rest.reshape(1, -1)))
                self._rest = np.empty(0, dtype=np.uint8)
            if not self.blocks:
                return np.empty((0, 2), dtype=np.int8)
            return np.concatenate(self.blocks)


def _pairs(blocks: np.ndarray) -> np.ndarray:
    """Unsigned 8-bit blocks → signed (min, max) pairs (``u8 - 128``)."""
    pairs = np.stack([blocks.min(axis=1), blocks.max(axis=1)], axis=1)
    return (pairs.astype(np.int16) - 128).astype(np.int8)


@dataclass(frozen=True)
class Waveform:
    """Peaks of one audio channel in the audiowaveform v2 layout.

    Attributes:
        sample_rate: Samples per second of the decoded audio.
        samples_per_pixel: Samples per pixel.
        samples: Samples decoded in all.
        peaks: ``(length, 2)`` int8 (min, max) pairs, one a pixel.
    """

    sample_rate: int
    samples_per_pixel: int
    samples: int
    peaks: np.ndarray

    bits = WAVEFORM_BITS
    channels = 1

    @property
    def length(self) -> int:
        """Pixels: ``ceil(samples / samples_per_pixel)``."""
        return len(self.peaks)

    @property
    def seconds(self) -> float:
        """Seconds of audio decoded."""
        return self.samples / self.sample_rate

    def header(self) -> dict[str, int]:
        """The format's fields other than ``data``, in the format's order."""
        return {"version": 2, "channels": self.channels, "sample_rate": self.sample_rate,
                "samples_per_pixel": self.samples_per_pixel, "bits": self.bits,
                "length": self.length}

    def write_json(self, out: TextIO, chunk: int = 65536) -> None:
        """Write the JSON document to ``out`` a piece at a time (``data`` is min, max, ...)."""
        head = ",".join(f'"{key}":{value}' for key, value in self.header().items())
        out.write("{" + head + ',"data":[')
        flat = self.peaks.reshape(-1)
        for offset in range(0, len(flat), chunk):
            if offset:
                out.write(",")
            # A table of the 256 texts: ~8x faster than str() of each value (900k in a 2-h file).
            out.write(",".join(_INT8_TEXT[flat[offset:offset + chunk].astype(np.int16) + 128]
                               .tolist()))
        out.write("]}\n")

    def png(self, width: int = PNG_SIZE[0], height: int = PNG_SIZE[1]) -> bytes:
        """The peaks drawn as a two-colour PNG, ``width`` x ``height`` pixels."""
        columns = np.zeros((width, 2), dtype=np.int16)
        if self.length:
            starts = (np.arange(width) * self.length) // width
            columns[:, 0] = np.minimum.reduceat(self.peaks[:, 0].astype(np.int16), starts)
            columns[:, 1] = np.maximum.reduceat(self.peaks[:, 1].astype(np.int16), starts)
        middle = (height - 1) / 2
        top = np.floor(middle - columns[:, 1] * middle / 128).astype(np.int32)
        bottom = np.ceil(middle - columns[:, 0] * middle / 128).astype(np.int32)
        rows = np.arange(height)[:, None]
        ink = (rows >= top[None, :]) & (rows <= bottom[None, :])
        return _png_1bit(ink, _BACKGROUND_RGB, _WAVE_RGB)


def _png_1bit(ink: np.ndarray, background: tuple[int, int, int],
              colour: tuple[int, int, int]) -> bytes:
    """A palette PNG of a boolean image (``True`` in ``colour``)."""
    height, width = ink.shape
    packed = np.packbits(ink.astype(np.uint8), axis=1)
    raw = b"".join(b"\x00" + row.tobytes() for row in packed)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0))
            + chunk(b"PLTE", bytes(background) + bytes(colour))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def make_waveform(src: Path | ToolInput, *, duration: float | None = None,
                  timeout: float | None = None,
                  samples_per_pixel: int = SAMPLES_PER_PIXEL,
                  max_seconds: float = limits.hours_to_seconds(
                      limits.DEFAULT_MAX_DURATION_HOURS)) -> Waveform:
    """Decode the first audio stream of ``src`` and reduce it to peaks, streaming.

    Args:
        src: Any audio or video file ffmpeg can read, or a :class:`ToolInput` (a presigned
            URL, read sequentially).
        duration: The media's duration in seconds, for the deadline; ``None`` uses the cap.
        timeout: Seconds ffmpeg may take; ``None`` derives it from the duration.
        samples_per_pixel: Samples per pixel.
        max_seconds: ffmpeg stops decoding just past this much audio.

    Returns:
        The peaks.

    Raises:
        PreviewTimeout: ffmpeg outlived its deadline.
        PreviewError: No audio stream, nothing decodable, or ffmpeg failed or is missing.
    """
    src = ToolInput.of(src)
    peaks = _Peaks(samples_per_pixel)
    # Resampling without a low-pass filter (filter_size=0: the nearest sample): peaks need none,
    # and the default filter costs a fifth of the decode. The samples arrive in 8 bits, the
    # peaks' own resolution: half the bytes through the pipe and through numpy. ffmpeg flushes a
    # pipe after every packet unless told not to (-flush_packets 0): 300 000 tiny writes for 2
    # hours, which doubled the time.
    command = _ffmpeg(*_input(src), "-map", "0:a:0", "-vn", "-sn", "-dn",
                      "-af", f"aresample={WAVEFORM_SAMPLE_RATE}:filter_size=0:phase_shift=0",
                      "-ac", "1", "-c:a", "pcm_u8",
                      "-t", f"{max_seconds + limits.CAP_MARGIN_SECONDS:.3f}",
                      "-flush_packets", "0", "-f", "u8", "pipe:1")
    deadline = timeout or limits.ffmpeg_timeout(max_seconds if duration is None else duration)
    try:
        with ToolProcess(command, stdout_sink=peaks.add, scrub=src.scrub) as proc:
            result = proc.wait(deadline)
    except FileNotFoundError:
        raise PreviewError("ffmpeg is not installed (not found on PATH)") from None
    except ToolTimeout:
        raise PreviewTimeout(f"{src.shown}: ffmpeg timed out after {deadline:g} s") from None
    stderr = result.stderr.strip()
    if result.returncode != 0:
        if "matches no streams" in stderr:
            raise PreviewError(f"{src.shown}: no audio stream")
        raise PreviewError(f"{src.shown}: ffmpeg failed (exit {result.returncode}): "
                           f"{one_line(stderr, _STDERR_TAIL_CHARS)}")
    data = peaks.finish()
    if not peaks.samples:
        raise PreviewError(f"{src.shown}: no audio samples decoded: "
                           f"{one_line(stderr, _STDERR_TAIL_CHARS) or 'empty stream'}")
    return Waveform(sample_rate=WAVEFORM_SAMPLE_RATE, samples_per_pixel=samples_per_pixel,
                    samples=peaks.samples, peaks=data)


def _run(command: list[str], src: ToolInput, timeout: float, *,
         capture_stdout: bool = False) -> bytes:
    try:
        result = run_tool(command, timeout=timeout, capture_stdout=capture_stdout,
                          scrub=src.scrub)
    except FileNotFoundError:
        raise PreviewError("ffmpeg is not installed (not found on PATH)") from None
    except ToolTimeout:
        raise PreviewTimeout(f"{src.shown}: ffmpeg timed out after {timeout:g} s") from None
    if result.returncode != 0:
        stderr = result.stderr.strip()
        if "matches no streams" in stderr:
            raise PreviewError(f"{src.shown}: no video stream")
        raise PreviewError(f"{src.shown}: ffmpeg failed (exit {result.returncode}): "
                           f"{one_line(stderr, _STDERR_TAIL_CHARS)}")
    return result.stdout
