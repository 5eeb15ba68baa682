"""The preview steps without Dagster: a real catalog, real ffmpeg, the local and the S3 store."""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import socket
import struct
import threading
from urllib.parse import urlsplit

import pytest

from watch_pipeline.catalog.models import MediaFile, MediaStatus
from watch_pipeline.catalog.settings import set_setting
from watch_pipeline.media.previews import image_size
from watch_pipeline.pipeline import previews, steps
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline.store.s3 import S3ObjectStore
from watch_pipeline_tests.fakes import FakeObjectStore
from watch_pipeline_tests.media.test_previews import black_then_colour, ffmpeg

LOG = logging.getLogger("test_previews")


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    server = request.getfixturevalue("s3_server")
    return S3ObjectStore(request.getfixturevalue("s3_bucket"), **server.options())


@pytest.fixture
def access(tmp_path):
    return steps.SourceAccess(client_for=lambda _row: None, scratch=tmp_path / "scratch")


def stored(catalog, store, path, *, content_type, duration, key="fp1", media_id=None) -> str:
    """A media item as ``media_object`` leaves it: its row and its object. Returns its key."""
    with catalog.session() as s:
        row = MediaFile(title=path.name, filename=path.name, partition_key=key,
                        content_type=content_type, duration=duration,
                        status=MediaStatus.PROCESSING, file_size=path.stat().st_size)
        s.add(row)
        s.flush()
        row.object_key = f"user_1/file_{row.id}/{path.name}"
        object_key = row.object_key
    store.put_file(object_key, path, content_type=content_type)
    return object_key


def ctx(step: str, key: str = "fp1") -> steps.StepContext:
    return steps.StepContext(partition_key=key, step=step, log=LOG)


def test_video_previews_are_stored_beside_the_media_then_cached(sqlite_catalog, store, access,
                                                                 tmp_path):
    video = black_then_colour(tmp_path / "talk.mp4")
    object_key = stored(sqlite_catalog, store, video, content_type="video/mp4", duration=5.0)
    assert object_key == "user_1/file_1/talk.mp4"

    wave = previews.make_waveform(ctx("waveform"), sqlite_catalog, access, store)
    thumb = previews.make_thumbnail(ctx("thumbnail"), sqlite_catalog, access, store)

    assert wave.status == "made" and thumb.status == "made", (wave.reason, thumb.reason)
    assert thumb.key == "user_1/file_1/thumbnail.webp"
    assert thumb.small_key == "user_1/file_1/thumbnail_small.webp"
    assert wave.key == "user_1/file_1/waveform.json"
    assert wave.png_key == "user_1/file_1/waveform.png"
    assert image_size(store.get_bytes(thumb.key)) == (640, 480)
    assert image_size(store.get_bytes(thumb.small_key)) == (160, 120)
    meta = thumb.metadata()
    assert (meta["width"], meta["height"], meta["pixels"]) == (640, 480, 640 * 480)
    assert meta["bytes"] == store.head(thumb.key).size and meta["seconds"] >= 0
    assert wave.metadata()["length"] == wave.length > 0
    assert abs(wave.audio_seconds - 5.0) < 0.2
    # the small picture is inlined, as the Dagster UI renders Markdown images
    prefix = "![thumbnail](data:image/webp;base64,"
    assert thumb.picture.startswith(prefix)
    inlined = base64.b64decode(thumb.picture[len(prefix):-1])
    assert inlined == store.get_bytes(thumb.small_key)

    again = previews.make_thumbnail(ctx("thumbnail"), sqlite_catalog, access, store)
    wave_again = previews.make_waveform(ctx("waveform"), sqlite_catalog, access, store)
    assert (again.status, wave_again.status) == ("cached", "cached")
    assert again.metadata()["width"] == 640 and again.picture == thumb.picture
    assert (wave_again.length, wave_again.sample_rate) == (wave.length, 16000)

    shown = previews.glance(sqlite_catalog, store, "fp1")
    assert shown["picture"] == thumb.picture and shown["duration_seconds"] == 5.0


def test_audio_only_uses_the_waveform_png_as_thumbnail(sqlite_catalog, store, access, tmp_path):
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2", str(tmp_path / "memo.wav"))
    stored(sqlite_catalog, store, tmp_path / "memo.wav", content_type="audio/wav", duration=2.0)

    early = previews.make_thumbnail(ctx("thumbnail"), sqlite_catalog, access, store)
    assert early.status == "audio only" and "not made yet" in early.reason

    assert previews.make_waveform(ctx("waveform"), sqlite_catalog, access, store).status == "made"
    thumb = previews.make_thumbnail(ctx("thumbnail"), sqlite_catalog, access, store)
    assert thumb.status == "audio only"
    assert thumb.reason == "audio only: waveform.png is the thumbnail"
    assert thumb.key == "user_1/file_1/waveform.png"
    assert (thumb.width, thumb.height) == (640, 96)
    assert thumb.picture.startswith("![waveform](data:image/png;base64,")
    assert store.head("user_1/file_1/thumbnail.webp") is None


def test_a_preview_failure_is_a_reason_not_an_exception(sqlite_catalog, store, access, tmp_path,
                                                        caplog):
    good = black_then_colour(tmp_path / "good.mp4", black=0.5, colour=1.5)
    ffmpeg("-i", str(good), "-c", "copy", "-bsf:v", "noise=amount=1", str(tmp_path / "bad.mp4"))
    stored(sqlite_catalog, store, tmp_path / "bad.mp4", content_type="video/mp4", duration=2.0)

    with caplog.at_level(logging.WARNING):
        thumb = previews.make_thumbnail(ctx("thumbnail"), sqlite_catalog, access, store)
    assert thumb.status == "failed" and "bad.mp4" in thumb.reason
    assert thumb.metadata() == {"status": "failed", "reason": thumb.reason}
    assert "re-materialize thumbnail for partition fp1 to retry" in caplog.text
    assert store.head("user_1/file_1/thumbnail.webp") is None
    assert not list((tmp_path / "scratch").iterdir()), "temp files left behind"


def test_previews_off_skips_them_in_an_import_but_not_when_asked_for(sqlite_catalog, store,
                                                                    access, tmp_path):
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1", str(tmp_path / "memo.wav"))
    stored(sqlite_catalog, store, tmp_path / "memo.wav", content_type="audio/wav", duration=1.0)
    with sqlite_catalog.session() as s:
        set_setting(s, "previews.enabled", False)

    skipped = previews.make_waveform(ctx("waveform"), sqlite_catalog, access, store)
    assert skipped.status == "skipped" and "previews.enabled is off" in skipped.reason
    assert store.head("user_1/file_1/waveform.json") is None

    asked = previews.make_waveform(ctx("waveform"), sqlite_catalog, access, store,
                                   requested=True)
    assert asked.status == "made" and store.head("user_1/file_1/waveform.json") is not None
    thumb = previews.make_thumbnail(ctx("thumbnail"), sqlite_catalog, access, store)
    assert thumb.status == "skipped"


def test_nothing_stored_is_skipped(sqlite_catalog, access, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    result = previews.make_waveform(ctx("waveform", "nope"), sqlite_catalog, access, store)
    assert result.status == "skipped" and "no stored media" in result.reason


# -- S3: ffmpeg reads the object through a presigned URL --------------------------------------

ACCESS_KEY_ID = "AKIAPREVIEWSCRUB0042"


class CountingProxy:
    """A loopback TCP proxy in front of moto counting the bytes sent back to its clients.

    Its sockets' buffers are small, so what it counts is close to what the client read, not what
    the kernel buffered ahead for a connection the client was about to close after a seek.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.bytes_down = 0
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="counting-accept", daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            server.connect(self._upstream)
            with self._lock:
                self.connections += 1
            for src, dst, down in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while data := src.recv(16 * 1024):
                dst.sendall(data)
                if down:
                    with self._lock:
                        self.bytes_down += len(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            src.close()


@pytest.fixture
def counting_proxy(s3_server):
    proxy = CountingProxy(int(s3_server.endpoint_url.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


def top_level_boxes(path) -> list[str]:
    """The MP4's top-level box types in file order."""
    kinds, offset, size = [], 0, path.stat().st_size
    with open(path, "rb") as fh:
        while offset < size:
            fh.seek(offset)
            length, kind = struct.unpack(">I4s", fh.read(8))
            if length == 1:
                length = struct.unpack(">Q", fh.read(8))[0]
            kinds.append(kind.decode())
            offset += length or size
    return kinds


def test_s3_previews_read_the_object_by_ranges_without_a_copy(
        sqlite_catalog, s3_server, s3_bucket, counting_proxy, access, tmp_path):
    # 4 minutes at 10 fps, lossless, a key frame every 2 s: ~25 MB, moov written at the END
    video = tmp_path / "lecture.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=10:d=240",
           "-f", "lavfi", "-i", "sine=frequency=440:duration=240",
           "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", "20", "-pix_fmt",
           "yuv420p", "-c:a", "aac", "-b:a", "32k", str(video))
    assert top_level_boxes(video)[-1] == "moov"
    size = video.stat().st_size
    store = S3ObjectStore(s3_bucket, **{**s3_server.options(),
                                        "endpoint_url": counting_proxy.endpoint_url})
    stored(sqlite_catalog, store, video, content_type="video/mp4", duration=240.0)
    uploaded = counting_proxy.bytes_down

    thumb = previews.make_thumbnail(ctx("thumbnail"), sqlite_catalog, access, store)
    thumbnail_bytes = counting_proxy.bytes_down - uploaded
    wave = previews.make_waveform(ctx("waveform"), sqlite_catalog, access, store)

    assert (thumb.status, wave.status) == ("made", "made"), (thumb.reason, wave.reason)
    assert image_size(store.get_bytes(thumb.key)) == (640, 480)
    small = store.get_bytes(thumb.small_key)
    assert image_size(small) == (160, 120)
    assert thumb.picture.endswith(base64.b64encode(small).decode() + ")")
    # the seek to 10 % read the moov at the end and a few key frames, not the object
    assert thumbnail_bytes < size / 4, (thumbnail_bytes, size)
    assert abs(wave.audio_seconds - 240.0) < 0.5
    assert wave.length == math.ceil(wave.audio_seconds * 16000 / 256)
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())


@pytest.mark.parametrize(("case", "content_type"), [
    ("not media", "video/mp4"),
    ("not media", "application/octet-stream"),  # probed first: ffprobe names its input too
    ("deleted", "video/mp4"),  # the URL answers 404
])
def test_s3_ffmpeg_failures_name_the_key_never_the_presigned_url(
        sqlite_catalog, s3_server, s3_bucket, access, tmp_path, caplog, case, content_type):
    store = S3ObjectStore(s3_bucket, **{**s3_server.options(), "access_key_id": ACCESS_KEY_ID,
                                        "secret_access_key": "scrub-secret-0042"})
    notes = tmp_path / "notes.mp4"
    notes.write_bytes(b"these are meeting notes, not a video\n" * 2000)
    object_key = stored(sqlite_catalog, store, notes, content_type=content_type, duration=60.0)
    if case == "deleted":
        store.delete(object_key)
    shown = f"s3://{s3_bucket}/{object_key}"
    query = urlsplit(store.stream_url(object_key)).query

    with caplog.at_level(logging.INFO):  # not DEBUG: botocore's own debug log shows the signing
        thumb = previews.make_thumbnail(ctx("thumbnail"), sqlite_catalog, access, store)
        wave = previews.make_waveform(ctx("waveform"), sqlite_catalog, access, store)

    for result in (thumb, wave):
        assert result.status == "failed"
        assert shown in result.reason, result.reason
        if case == "deleted":
            assert "404" in result.reason
        else:
            assert "Invalid data" in result.reason
    recorded = " ".join([thumb.reason, wave.reason, str(thumb.metadata()),
                         str(wave.metadata()), caplog.text])
    assert shown in caplog.text
    for secret in ("X-Amz-", "Signature", ACCESS_KEY_ID, "scrub-secret-0042",
                   query[:40], s3_server.endpoint_url):
        assert secret not in recorded, secret


def test_a_store_without_a_stream_url_is_copied_to_scratch_and_cleaned_up(
        sqlite_catalog, access, tmp_path):
    store = FakeObjectStore()  # keeps ObjectStore.stream_url's default: None
    video = black_then_colour(tmp_path / "clip.mp4", black=0.5, colour=1.5)
    stored(sqlite_catalog, store, video, content_type="video/mp4", duration=2.0)
    assert store.stream_url("user_1/file_1/clip.mp4") is None

    thumb = previews.make_thumbnail(ctx("thumbnail"), sqlite_catalog, access, store)
    wave = previews.make_waveform(ctx("waveform"), sqlite_catalog, access, store)

    assert (thumb.status, wave.status) == ("made", "made"), (thumb.reason, wave.reason)
    assert image_size(store.get_bytes(thumb.key)) == (640, 480)
    assert not list((tmp_path / "scratch").iterdir()), "the scratch copy was left behind"
