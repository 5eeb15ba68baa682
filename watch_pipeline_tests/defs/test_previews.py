"""The preview assets in the import runs, in-process on a real Dagster instance, real ffmpeg."""

from __future__ import annotations

import subprocess

import dagster as dg
import pytest

from watch_pipeline.defs.batch import batch_run_config, import_batch_job
from watch_pipeline.defs.jobs import import_job
from watch_pipeline.defs.previews import thumbnail, waveform
from watch_pipeline_tests.defs.harness import ASSETS, add_source, age, files, media_rows, tick


def run_import_job(env, partition_key: str) -> dg.ExecuteInProcessResult:
    """``import_job`` as the definitions select it, for one partition."""
    definitions = dg.Definitions(assets=[*ASSETS, waveform, thumbnail], jobs=[import_job],
                                 resources=env["resources"])
    return definitions.resolve_job_def("import_job").execute_in_process(
        partition_key=partition_key, instance=env["instance"], raise_on_error=False)


def materializations(result) -> dict[str, dict]:
    return {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata
                                           .items()}
            for e in result.get_asset_materialization_events()}


def corrupt_video(src, dest) -> None:
    """Every byte of every video packet replaced; the container and the audio stay intact."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-c",
                    "copy", "-bsf:v", "noise=amount=1", str(dest)], check=True)


@pytest.mark.slow
def test_a_corrupt_video_stream_fails_only_the_thumbnail(env, speech_factory, tmp_path):
    add_source(env)
    speech_factory("the quick brown fox jumps over the lazy dog", tmp_path / "talk.mp4",
                   fmt="mp4")
    corrupt_video(tmp_path / "talk.mp4", env["watch"] / "talk.mp4")
    age(env["watch"] / "talk.mp4")
    (request,), _ = tick(env)

    result = run_import_job(env, request.partition_key)

    assert result.success
    order = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
    assert order == ["raw_file", "stitched_media", "media_object", "waveform", "thumbnail",
                     "transcript"]
    meta = materializations(result)
    assert meta["thumbnail"]["status"] == "failed"
    assert "talk.mp4" in meta["thumbnail"]["reason"]
    assert meta["waveform"]["status"] == "made" and meta["waveform"]["length"] > 100
    assert meta["transcript"]["words"] >= 5, meta["transcript"]
    # the transcript's page shows the import at a glance (the waveform: no thumbnail)
    assert meta["transcript"]["picture"].startswith("![waveform](data:image/png;base64,")
    assert "quick" in meta["transcript"]["first_lines"].lower()
    assert meta["transcript"]["source"] == "watch" and meta["transcript"]["path"] == "talk.mp4"
    assert meta["media_object"]["duration_seconds"] > 2
    (media,) = media_rows(env)
    assert media.status == "completed" and files(env)["talk.mp4"].status == "imported"


def test_the_batch_makes_previews_and_a_rerun_finds_them_cached(env, tmp_path):
    add_source(env, auto_transcribe=False)
    ffmpeg = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    subprocess.run([*ffmpeg, "-f", "lavfi", "-i", "color=black:s=320x240:r=25:d=1",
                    "-f", "lavfi", "-i", "testsrc=s=320x240:r=25:d=3", "-filter_complex",
                    "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(env["watch"] / "clip.mp4")], check=True)
    subprocess.run([*ffmpeg, "-f", "lavfi", "-i", "sine=frequency=500:duration=2",
                    str(env["watch"] / "memo.wav")], check=True)
    for name in ("clip.mp4", "memo.wav"):
        age(env["watch"] / name)
    tick(env)
    keys = {name: row.partition_key for name, row in files(env).items()}

    batch = import_batch_job.execute_in_process(
        run_config=batch_run_config([keys["clip.mp4"], keys["memo.wav"]]),
        resources=env["resources"], instance=env["instance"])

    assert batch.success
    by_partition: dict[tuple[str, str], dict] = {}
    for event in batch.get_asset_materialization_events():
        mat = event.materialization
        by_partition[(mat.partition, mat.asset_key.to_user_string())] = {
            k: v.value for k, v in mat.metadata.items()}
    clip, memo = keys["clip.mp4"], keys["memo.wav"]
    assert by_partition[(clip, "thumbnail")]["status"] == "made"
    assert by_partition[(clip, "thumbnail")]["width"] == 640
    assert by_partition[(clip, "waveform")]["status"] == "failed"  # a video without sound
    assert "no audio stream" in by_partition[(clip, "waveform")]["reason"]
    assert by_partition[(memo, "waveform")]["status"] == "made"
    assert by_partition[(memo, "thumbnail")]["reason"] == (
        "audio only: waveform.png is the thumbnail")
    # media_object was stored before its previews: its page gets the picture as an observation
    observed = {(e.event_specific_data.asset_observation.partition,
                 e.asset_key.to_user_string()): e.event_specific_data.asset_observation.metadata
                for e in batch.get_asset_observation_events()}
    assert observed[(clip, "media_object")]["picture"].value.startswith(
        "![thumbnail](data:image/webp;base64,")
    assert observed[(memo, "media_object")]["picture"].value.startswith(
        "![waveform](data:image/png;base64,")

    rerun = run_import_job(env, clip)
    (seen,) = rerun.get_asset_observation_events()
    assert seen.asset_key.to_user_string() == "media_object"
    again = materializations(rerun)
    assert again["thumbnail"]["status"] == "cached"
    assert again["media_object"]["picture"].startswith("![thumbnail](data:image/webp;base64,")
    assert again["media_object"]["path"] == "clip.mp4"
