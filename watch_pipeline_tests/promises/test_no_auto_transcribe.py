"""``--no-auto-transcribe``: the import stores the media and no transcript; a later
``transcribe_job`` run (one partition of a backfill) fills the transcript in."""

from __future__ import annotations

import shutil

import pytest

from watch_pipeline.catalog.models import MediaStatus
from watch_pipeline_tests.defs import harness
from watch_pipeline_tests.promises import drive

pytestmark = pytest.mark.slow  # the backfill transcribes real speech


def test_import_skips_the_transcript_and_a_backfill_fills_it_in(env, speech_wav):
    added = drive.watch_pipeline(env, "source", "add", "--name", "archive", "--type", "local",
                                 "--path", ".", "--no-auto-transcribe")
    assert added.exit_code == 0, added.output + added.stderr
    shutil.copyfile(speech_wav, env["watch"] / "fox.wav")
    harness.age(env["watch"] / "fox.wav")

    (run,) = drive.scan_and_import(env)
    assert run.success
    (media,) = harness.media_rows(env)
    assert harness.files(env)["fox.wav"].status == "imported"
    # Imported and done: not "processing" (nothing is coming), no transcript anywhere.
    assert media.status == MediaStatus.COMPLETED and media.error_message is None
    assert media.transcript_key is None and media.transcript_model is None
    store = drive.store(env)
    assert store.path(media.object_key).read_bytes() == speech_wav.read_bytes()
    assert not (store.path(media.object_key).parent / "transcripts").exists()
    (skipped,) = drive.materializations(run, "transcript")
    assert skipped == {"skipped": "auto_transcribe is off for source archive"}
    shown = drive.watch_pipeline(env, "media", "transcript", str(media.id))
    assert shown.exit_code == 1 and "has no transcript" in shown.stderr

    # Later someone wants the transcript after all: a backfill of transcribe_job.
    backfill = drive.run_transcribe_job(env, media.partition_key)
    assert backfill.success
    (made,) = drive.materializations(backfill, "transcript")
    assert made["words"] >= 5
    (media,) = harness.media_rows(env)
    assert media.status == MediaStatus.COMPLETED and media.transcript_key == made["transcript_key"]
    text = drive.watch_pipeline(env, "media", "transcript", str(media.id)).output.lower()
    for word in ("quick", "brown", "fox"):
        assert word in text
    # The source still says no: the next import from it is not transcribed.
    drive.tone(env["watch"] / "later.wav", 523)
    harness.age(env["watch"] / "later.wav")
    harness.rewind_scans(env)
    (run,) = drive.scan_and_import(env)
    assert run.success and drive.materializations(run, "transcript")[0]["skipped"]
    assert harness.media_rows(env)[1].transcript_key is None
