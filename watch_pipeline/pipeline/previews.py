"""The previews of one stored media item: ``thumbnail`` and ``waveform``, and its glance.

Plain Python, no Dagster, in the shape of :mod:`watch_pipeline.pipeline.steps`: each step takes
a :class:`~watch_pipeline.pipeline.steps.StepContext`, the catalog, the scratch space and the
object store, and returns a frozen result whose :meth:`metadata` holds plain values.

Objects, beside the media object (``user_{owner}/file_{id}/``):

* ``thumbnail.webp`` (640 px wide) and ``thumbnail_small.webp`` (160 px) for video;
* ``waveform.json`` (BBC audiowaveform JSON v2) and ``waveform.png`` for anything with audio.

Audio-only media has no thumbnail of its own: its ``waveform.png`` is the thumbnail. The
``thumbnail`` step says so (status ``audio only``) and stores nothing; ``media thumbnail``
returns the PNG.

ffmpeg reads the stored media in place: the store's :meth:`~ObjectStore.stream_url` is a local
path or, on S3, a presigned GET URL read with range requests (the thumbnail seeks, the waveform
reads once through), so neither step downloads the object; a store without one (``None``) is
copied to scratch first (``steps.readable_copy``). The URL carries a signature and the access key
id: it is handed to ffmpeg only, and every message (ffmpeg's stderr, the step's reason, the log)
names the object as ``s3://bucket/key`` instead.

Each step is idempotent: when its objects are already stored it reports them as cached and
does nothing. A failure never raises: the media stays usable, the step's result carries the
reason (status ``failed``), the log says how to retry (re-materialize the asset), and neither the
import nor the transcript depends on it.
"""

from __future__ import annotations

import base64
import contextlib
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import MediaFile
from watch_pipeline.catalog.settings import get_setting
from watch_pipeline.media import limits, previews
from watch_pipeline.media.probe import ProbeError, probe
from watch_pipeline.media.process import ToolInput
from watch_pipeline.pipeline.steps import (
    Metadata,
    SourceAccess,
    StepContext,
    known,
    readable_copy,
)
from watch_pipeline.store.base import STREAM_URL_SECONDS, ObjectStore, ObjectStoreError

THUMBNAIL = "thumbnail"
WAVEFORM = "waveform"
PREVIEW_STEPS = (WAVEFORM, THUMBNAIL)
"""The preview steps in the order an import runs them (an audio thumbnail is the waveform)."""

MAX_PICTURE_BYTES = 12 * 1024
"""The largest image inlined into metadata as a ``data:`` URI (the 160 px WebP is ~2-5 KB)."""

FIRST_LINES = 5
"""Lines of the transcript shown in the ``transcript`` metadata."""

AUDIO_ONLY = "audio only: waveform.png is the thumbnail"

_FAILURES = (previews.PreviewError, ProbeError, ObjectStoreError, OSError, ValueError)
_CONTENT_TYPES = {".webp": "image/webp", ".png": "image/png", ".json": "application/json"}


@dataclass(frozen=True)
class PreviewKeys:
    """Where the previews of a media object are stored (its folder, fixed names)."""

    thumbnail: str
    thumbnail_small: str
    waveform: str
    waveform_png: str

    @classmethod
    def of(cls, object_key: str) -> PreviewKeys:
        """The preview keys beside ``object_key`` (``user_{owner}/file_{id}/...``)."""
        folder = object_key.rsplit("/", 1)[0]
        return cls(thumbnail=f"{folder}/thumbnail.webp",
                   thumbnail_small=f"{folder}/thumbnail_small.webp",
                   waveform=f"{folder}/waveform.json", waveform_png=f"{folder}/waveform.png")

    def as_dict(self) -> dict[str, str]:
        """Name → key."""
        return {"thumbnail": self.thumbnail, "thumbnail_small": self.thumbnail_small,
                "waveform": self.waveform, "waveform_png": self.waveform_png}


def is_audio_only(record: MediaFile) -> bool | None:
    """Whether the media has no picture, by its content type; ``None`` when that cannot tell."""
    kind = (record.content_type or "").split("/", 1)[0]
    return {"audio": True, "video": False}.get(kind)


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThumbnailPreview:
    """The outcome of ``thumbnail``.

    Attributes:
        status: ``made``, ``cached``, ``audio only``, ``failed`` or ``skipped``.
        reason: Why it failed, was skipped, or is audio only.
        picture: The small image as a Markdown ``data:`` URI image, when small enough.
    """

    status: str
    key: str = ""
    small_key: str = ""
    size: int = 0
    width: int = 0
    height: int = 0
    small_size: int = 0
    small_width: int = 0
    small_height: int = 0
    seconds: float = 0.0
    reason: str = ""
    picture: str = ""

    def metadata(self) -> Metadata:
        """The materialization's metadata (``picture`` is Markdown)."""
        return known(status=self.status, reason=self.reason, object_key=self.key,
                     bytes=self.size or None, width=self.width or None,
                     height=self.height or None,
                     pixels=self.width * self.height or None, small_key=self.small_key,
                     small_bytes=self.small_size or None, small_width=self.small_width or None,
                     small_height=self.small_height or None,
                     seconds=round(self.seconds, 3) if self.status == "made" else None,
                     picture=self.picture)


@dataclass(frozen=True)
class WaveformPreview:
    """The outcome of ``waveform``.

    Attributes:
        status: ``made``, ``cached``, ``failed`` or ``skipped``.
        length: Pixels (min/max pairs) in the JSON.
        audio_seconds: Seconds of audio the peaks cover.
    """

    status: str
    key: str = ""
    png_key: str = ""
    size: int = 0
    png_size: int = 0
    png_width: int = 0
    png_height: int = 0
    length: int = 0
    samples_per_pixel: int = 0
    sample_rate: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    reason: str = ""
    picture: str = ""

    def metadata(self) -> Metadata:
        """The materialization's metadata (``picture`` is Markdown)."""
        return known(status=self.status, reason=self.reason, object_key=self.key,
                     bytes=self.size or None, length=self.length or None,
                     samples_per_pixel=self.samples_per_pixel or None,
                     sample_rate=self.sample_rate or None,
                     audio_seconds=round(self.audio_seconds, 2) if self.audio_seconds else None,
                     png_key=self.png_key, png_bytes=self.png_size or None,
                     png_width=self.png_width or None, png_height=self.png_height or None,
                     seconds=round(self.seconds, 3) if self.status == "made" else None,
                     picture=self.picture)


# -- helpers ---------------------------------------------------------------------------------


def markdown_image(data: bytes, alt: str) -> str:
    """``data`` (a WebP or PNG) as a Markdown image with a ``data:`` URI; "" when too large."""
    if not data or len(data) > MAX_PICTURE_BYTES:
        return ""
    kind = "png" if data.startswith(b"\x89PNG") else "webp"
    return f"![{alt}](data:image/{kind};base64,{base64.b64encode(data).decode()})"


def _head(store: ObjectStore, key: str, limit: int = 64) -> bytes:
    with store.open(key) as fh:
        return fh.read(limit) or b""


def picture(store: ObjectStore, object_key: str) -> str:
    """The media's small picture as Markdown: the 160 px thumbnail, else the waveform PNG."""
    keys = PreviewKeys.of(object_key)
    for key, alt in ((keys.thumbnail_small, "thumbnail"), (keys.waveform_png, "waveform")):
        with contextlib.suppress(ObjectStoreError, OSError):
            found = store.head(key)
            if found is not None and found.size <= MAX_PICTURE_BYTES:
                return markdown_image(store.get_bytes(key), alt)
    return ""


@contextlib.contextmanager
def _workdir(sources: SourceAccess) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="previews-", dir=sources.scratch))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _media_input(store: ObjectStore, key: str, scratch: Path, *,
                 expires: float) -> Iterator[ToolInput]:
    """What ffmpeg reads ``key`` from: the store's stream URL or path, else a scratch copy.

    A failure leaving the block whose message holds a piece of the URL (``probe`` names its
    input) is re-raised as a :class:`~watch_pipeline.media.previews.PreviewError` with the
    message scrubbed.
    """
    location = store.stream_url(key, expires=expires)
    if location is None:
        scratch.mkdir(parents=True, exist_ok=True)
        with readable_copy(store, key, scratch) as path:
            yield ToolInput.of(path)
        return
    source = ToolInput.of(location)
    if source.is_url:
        source = ToolInput(location=location, shown=store.url(key))
    try:
        yield source
    except _FAILURES as exc:
        message = str(exc)
        scrubbed = source.scrub(message)
        if scrubbed == message:
            raise
        raise previews.PreviewError(scrubbed) from None


def _put(store: ObjectStore, key: str, path: Path) -> None:
    store.put_file(key, path, content_type=_CONTENT_TYPES[path.suffix])


def _stored(ctx: StepContext, catalog: Catalog, *, requested: bool) -> MediaFile | str:
    """The partition's stored media row, or why there is no preview to make for it.

    An import run (``requested`` false) makes previews only while ``previews.enabled`` is on;
    a run that asked for the preview itself always makes it.
    """
    if not requested:
        with catalog.session() as session:
            if not get_setting(session, "previews.enabled"):
                return ("previews.enabled is off (materialize this asset for the partition to "
                        "make it anyway)")
    record = queries.media_for(catalog, ctx.partition_key)
    if record is None or not record.object_key:
        return f"no stored media for partition {ctx.partition_key} (media_object stored none)"
    return record


def _failed(ctx: StepContext, exc: Exception) -> str:
    reason = str(exc) or type(exc).__name__
    ctx.log.warning(f"{ctx.step} failed: {reason} (the media stays imported; re-materialize "
                    f"{ctx.step} for partition {ctx.partition_key} to retry)")
    return reason


# -- the steps -------------------------------------------------------------------------------


def make_thumbnail(ctx: StepContext, catalog: Catalog, sources: SourceAccess,
                   store: ObjectStore, *, requested: bool = False) -> ThumbnailPreview:
    """``thumbnail``: a frame that is not black, as 640 px and 160 px WebP beside the media.

    Audio-only media stores nothing (its ``waveform.png`` is the thumbnail). Cached when both
    images are stored. Never raises: a failure is the result's ``reason``. ``requested``: the
    run asked for the thumbnail itself (made even with ``previews.enabled`` off).
    """
    record = _stored(ctx, catalog, requested=requested)
    if isinstance(record, str):
        return ThumbnailPreview(status="skipped", reason=record)
    keys = PreviewKeys.of(record.object_key or "")
    try:
        if is_audio_only(record):
            return _audio_thumbnail(store, keys)
        large, small = store.head(keys.thumbnail), store.head(keys.thumbnail_small)
        if large is not None and small is not None:
            small_bytes = store.get_bytes(keys.thumbnail_small)
            width, height = previews.image_size(_head(store, keys.thumbnail))
            small_width, small_height = previews.image_size(small_bytes)
            return ThumbnailPreview(
                status="cached", key=keys.thumbnail, small_key=keys.thumbnail_small,
                size=large.size, width=width, height=height, small_size=small.size,
                small_width=small_width, small_height=small_height,
                picture=markdown_image(small_bytes, "thumbnail"))
        started = time.monotonic()
        sources.scratch.mkdir(parents=True, exist_ok=True)
        with _media_input(store, record.object_key or "", sources.scratch,
                          expires=STREAM_URL_SECONDS) as source, _workdir(sources) as work:
            if is_audio_only(record) is None and probe(source.location).video is None:
                return _audio_thumbnail(store, keys)
            made = previews.make_thumbnail(source, work / "thumbnail.webp",
                                           work / "thumbnail_small.webp",
                                           duration=record.duration)
            _put(store, keys.thumbnail, made.large.path)
            _put(store, keys.thumbnail_small, made.small.path)
            small_bytes = made.small.path.read_bytes()
    except _FAILURES as exc:
        return ThumbnailPreview(status="failed", reason=_failed(ctx, exc))
    seconds = time.monotonic() - started
    ctx.log.info(f"thumbnail of media {record.id}: {made.large.width}x{made.large.height} "
                 f"({made.large.size} bytes) from {made.window_seconds:.1f}s on, "
                 f"in {seconds:.2f}s")
    return ThumbnailPreview(
        status="made", key=keys.thumbnail, small_key=keys.thumbnail_small, size=made.large.size,
        width=made.large.width, height=made.large.height, small_size=made.small.size,
        small_width=made.small.width, small_height=made.small.height, seconds=seconds,
        picture=markdown_image(small_bytes, "thumbnail"))


def _audio_thumbnail(store: ObjectStore, keys: PreviewKeys) -> ThumbnailPreview:
    found = store.head(keys.waveform_png)
    if found is None:
        return ThumbnailPreview(status="audio only", key=keys.waveform_png,
                                reason=AUDIO_ONLY + " (not made yet: materialize waveform)")
    data = store.get_bytes(keys.waveform_png)
    width, height = previews.image_size(data)
    return ThumbnailPreview(status="audio only", key=keys.waveform_png, reason=AUDIO_ONLY,
                            size=found.size, width=width, height=height,
                            picture=markdown_image(data, "waveform"))


_HEADER = re.compile(rb'"(\w+)":(\d+)')


def waveform_header(start: bytes) -> dict[str, int]:
    """The integer fields found in the first bytes of an audiowaveform JSON document."""
    head = start.split(b'"data"', 1)[0]
    return {key.decode(): int(value) for key, value in _HEADER.findall(head)}


def make_waveform(ctx: StepContext, catalog: Catalog, sources: SourceAccess,
                  store: ObjectStore, *, requested: bool = False) -> WaveformPreview:
    """``waveform``: audiowaveform JSON v2 peaks and a PNG of them, beside the media.

    ``requested``: the run asked for the waveform itself (made even with ``previews.enabled``
    off). Cached when both are stored. Never raises: a failure (no audio stream, undecodable audio)
    is the result's ``reason``.
    """
    record = _stored(ctx, catalog, requested=requested)
    if isinstance(record, str):
        return WaveformPreview(status="skipped", reason=record)
    keys = PreviewKeys.of(record.object_key or "")
    try:
        found, png = store.head(keys.waveform), store.head(keys.waveform_png)
        if found is not None and png is not None:
            header = waveform_header(_head(store, keys.waveform, 512))
            png_bytes = store.get_bytes(keys.waveform_png)
            width, height = previews.image_size(png_bytes)
            return WaveformPreview(
                status="cached", key=keys.waveform, png_key=keys.waveform_png, size=found.size,
                png_size=png.size, png_width=width, png_height=height,
                length=header.get("length", 0),
                samples_per_pixel=header.get("samples_per_pixel", 0),
                sample_rate=header.get("sample_rate", 0),
                picture=markdown_image(png_bytes, "waveform"))
        started = time.monotonic()
        sources.scratch.mkdir(parents=True, exist_ok=True)
        # The URL must outlive the decode, which may take up to its deadline.
        expires = max(STREAM_URL_SECONDS, limits.ffmpeg_timeout(
            record.duration or limits.hours_to_seconds(limits.DEFAULT_MAX_DURATION_HOURS)) + 600)
        with _media_input(store, record.object_key or "", sources.scratch,
                          expires=expires) as source, _workdir(sources) as work:
            wave = previews.make_waveform(source, duration=record.duration)
            data, image = work / "waveform.json", work / "waveform.png"
            with open(data, "w", encoding="ascii") as out:
                wave.write_json(out)
            png_bytes = wave.png()
            image.write_bytes(png_bytes)
            _put(store, keys.waveform, data)
            _put(store, keys.waveform_png, image)
            size = data.stat().st_size
    except _FAILURES as exc:
        return WaveformPreview(status="failed", reason=_failed(ctx, exc))
    seconds = time.monotonic() - started
    width, height = previews.image_size(png_bytes)
    ctx.log.info(f"waveform of media {record.id}: {wave.length} pixels over "
                 f"{wave.seconds:.1f}s of audio in {seconds:.2f}s")
    return WaveformPreview(
        status="made", key=keys.waveform, png_key=keys.waveform_png, size=size,
        png_size=len(png_bytes), png_width=width, png_height=height, length=wave.length,
        samples_per_pixel=wave.samples_per_pixel, sample_rate=wave.sample_rate,
        audio_seconds=wave.seconds, seconds=seconds,
        picture=markdown_image(png_bytes, "waveform"))


# -- the glance: what the media_object and transcript pages show -----------------------------


def glance(catalog: Catalog, store: ObjectStore, partition_key: str, *,
           transcript: bool = False) -> Metadata:
    """What was imported, at a glance: picture, duration, source and path (+ transcript lines).

    Args:
        catalog: The catalog.
        store: The object store (the picture and the transcript's first lines are read there).
        partition_key: The partition.
        transcript: Add ``first_lines`` of the stored plain-text transcript.

    Returns:
        ``picture`` (Markdown, when a preview is stored), ``duration_seconds``, ``source``,
        ``path`` and, with ``transcript``, ``first_lines``; unknown entries are left out.
        Never raises: what cannot be read is left out.
    """
    record = queries.media_for(catalog, partition_key)
    if record is None:
        return {}
    source = path = None
    with contextlib.suppress(queries.NothingToImport):
        item = queries.find_item(catalog, partition_key)
        source, path = item.source_name, item.remote_path
    lines = None
    if transcript and record.transcript_key:
        with contextlib.suppress(ObjectStoreError, OSError, UnicodeDecodeError):
            text = store.get_bytes(record.transcript_key.removesuffix(".json") + ".txt")
            lines = "\n".join(text.decode("utf-8").splitlines()[:FIRST_LINES])[:600]
    return known(picture=picture(store, record.object_key) if record.object_key else None,
                 duration_seconds=None if record.duration is None else round(record.duration, 2),
                 source=source, path=path, first_lines=lines)

