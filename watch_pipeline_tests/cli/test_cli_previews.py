"""`media show` lists the preview keys; `media thumbnail` and `media waveform` fetch them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from watch_pipeline.media.previews import image_size
from watch_pipeline.pipeline import previews, steps
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline_tests.media.test_previews import black_then_colour, ffmpeg
from watch_pipeline_tests.pipeline.test_previews import stored

LOG = logging.getLogger("test_cli_previews")


@pytest.fixture
def store(dagster_home, monkeypatch) -> LocalObjectStore:
    root = Path(dagster_home) / "objects"
    monkeypatch.setenv("WATCH_OBJECT_STORE", "local")
    monkeypatch.setenv("WATCH_OBJECT_STORE_ROOT", str(root))
    return LocalObjectStore(root)


def make_previews(catalog, store, key: str, scratch: Path) -> None:
    access = steps.SourceAccess(client_for=lambda _row: None, scratch=scratch)
    for make, step in ((previews.make_waveform, "waveform"),
                       (previews.make_thumbnail, "thumbnail")):
        make(steps.StepContext(partition_key=key, step=step, log=LOG), catalog, access, store)


def test_show_lists_the_preview_keys_and_the_commands_fetch_them(run, sqlite_catalog, store,
                                                                 tmp_path):
    stored(sqlite_catalog, store, black_then_colour(tmp_path / "talk.mp4"),
           content_type="video/mp4", duration=5.0, key="video")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2", str(tmp_path / "memo.wav"))
    stored(sqlite_catalog, store, tmp_path / "memo.wav", content_type="audio/wav",
           duration=2.0, key="audio")
    for key in ("video", "audio"):
        make_previews(sqlite_catalog, store, key, tmp_path / "scratch")

    shown = json.loads(run("media", "show", "1", "--json").output)
    assert shown["previews"] == {"thumbnail": "user_1/file_1/thumbnail.webp",
                                 "thumbnail_small": "user_1/file_1/thumbnail_small.webp",
                                 "waveform": "user_1/file_1/waveform.json",
                                 "waveform_png": "user_1/file_1/waveform.png"}
    assert "user_1/file_1/thumbnail.webp" in run("media", "show", "1").output
    audio = json.loads(run("media", "show", "2", "--json").output)["previews"]
    assert audio["thumbnail"] is None and audio["waveform_png"] == "user_1/file_2/waveform.png"

    out = tmp_path / "out"
    out.mkdir()
    run("media", "thumbnail", "1", "-o", str(out / "t.webp"))
    assert image_size((out / "t.webp").read_bytes()) == (640, 480)
    run("media", "thumbnail", "1", "--small", "-o", str(out / "s.webp"))
    assert image_size((out / "s.webp").read_bytes()) == (160, 120)
    run("media", "waveform", "1", "-o", str(out / "w.json"))
    doc = json.loads((out / "w.json").read_text())
    assert doc["version"] == 2 and len(doc["data"]) == 2 * doc["length"]
    run("media", "waveform", "1", "--png", "-o", str(out / "w.png"))
    assert image_size((out / "w.png").read_bytes()) == (640, 96)

    # audio only: the thumbnail is the waveform picture
    said = run("media", "thumbnail", "2", "-o", str(out / "memo.png")).output
    assert "user_1/file_2/waveform.png" in said
    assert (out / "memo.png").read_bytes() == store.get_bytes("user_1/file_2/waveform.png")


def test_a_missing_preview_is_an_error_that_says_what_to_do(run, sqlite_catalog, store,
                                                            tmp_path):
    stored(sqlite_catalog, store, black_then_colour(tmp_path / "talk.mp4", black=0.5,
                                                    colour=1.0),
           content_type="video/mp4", duration=1.5, key="video")
    failed = run("media", "thumbnail", "1", "-o", str(tmp_path / "t.webp"), code=1)
    assert "media 1 has no thumbnail yet: materialize the thumbnail asset" in failed.stderr
    assert not (tmp_path / "t.webp").exists()
    assert run("media", "waveform", "9", "-o", str(tmp_path / "w.json"), code=1).stderr
