"""The preview steps without Dagster: a real catalog, real ffmpeg, the local and the S3 store."""

from __future__ import annotations

import base64
import logging

import pytest

from watch_pipeline.catalog.models import MediaFile, MediaStatus
from watch_pipeline.media.previews import image_size
from watch_pipeline.pipeline import previews, steps
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline.store.s3 import S3ObjectStore
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


def test_nothing_stored_is_skipped(sqlite_catalog, access, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    result = previews.make_waveform(ctx("waveform", "nope"), sqlite_catalog, access, store)
    assert result.status == "skipped" and "no stored media" in result.reason
