"""A source's min/max speakers reach Riva through the import, as the server receives them."""

from __future__ import annotations

import json
import shutil

import pytest

from watch_pipeline.transcribe.resource import TranscriberResource
from watch_pipeline_tests.defs import harness
from watch_pipeline_tests.promises import drive


@pytest.fixture
def riva_env(env, riva_server):
    """The in-process pipeline transcribing on the loopback Riva server."""
    env["resources"]["transcriber"] = TranscriberResource(
        backend="riva", riva_uri=riva_server.uri, riva_max_retries=0)
    return env


def _add_source(env, name, *speakers):
    (env["watch"] / name).mkdir()
    added = drive.watch_pipeline(env, "source", "add", "--name", name, "--type", "local",
                                 "--path", name, *speakers)
    assert added.exit_code == 0, added.output + added.stderr


def _import_one(env, riva_server, name, speech_wav):
    target = env["watch"] / name / "call.wav"
    shutil.copyfile(speech_wav, target)
    harness.age(target)
    harness.rewind_scans(env)
    calls_before = len(riva_server.calls)
    (run,) = drive.scan_and_import(env)
    assert run.success
    (call,) = riva_server.calls[calls_before:]
    media = harness.media_rows(env)[-1]
    document = json.loads(drive.store(env).get_bytes(media.transcript_key))
    return call, document


def test_a_sources_speaker_range_reaches_riva(riva_env, riva_server, speech_wav):
    _add_source(riva_env, "meetings", "--min-speakers", "2", "--max-speakers", "4")
    call, document = _import_one(riva_env, riva_server, "meetings", speech_wav)
    # Riva takes a maximum only: diarization on, max_speaker_count = the source's max_speakers.
    assert (call.speaker_diarization, call.max_speaker_count) == (True, 4)
    assert (document["extra"]["min_speakers"], document["extra"]["max_speakers"]) == ("2", "4")
    assert {s["speaker"] for s in document["segments"]} == {"Speaker 1", "Speaker 2"}

    # A changed range applies to the next import from the source.
    updated = drive.watch_pipeline(riva_env, "source", "update", "meetings", "--max-speakers", "6")
    assert updated.exit_code == 0, updated.output + updated.stderr
    drive.tone(riva_env["watch"] / "meetings" / "second.wav", 587)
    harness.age(riva_env["watch"] / "meetings" / "second.wav")
    harness.rewind_scans(riva_env)
    calls_before = len(riva_server.calls)
    (run,) = drive.scan_and_import(riva_env)
    assert run.success
    (call,) = riva_server.calls[calls_before:]
    assert (call.speaker_diarization, call.max_speaker_count) == (True, 6)


def test_one_speaker_turns_riva_diarization_off(riva_env, riva_server, speech_wav):
    _add_source(riva_env, "lectures", "--min-speakers", "1", "--max-speakers", "1")
    call, document = _import_one(riva_env, riva_server, "lectures", speech_wav)
    assert (call.speaker_diarization, call.max_speaker_count) == (False, 0)
    assert not call.config.HasField("diarization_config")
    assert {s["speaker"] for s in document["segments"]} == {None}
