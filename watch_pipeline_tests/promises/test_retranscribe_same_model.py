"""Re-transcribing under the same model id keeps an earlier transcript that says otherwise.

A model id does not pin the weights: Riva's ``riva:default:en-US:diar`` is whatever model the
server deploys as its default, and a Whisper model directory can be replaced under the same name.
A ``transcribe_job`` run after such a change must not overwrite the transcript made before it.
"""

from __future__ import annotations

import json
import shutil

from watch_pipeline.transcribe.resource import TranscriberResource
from watch_pipeline_tests.defs import harness
from watch_pipeline_tests.fixtures.riva_server import FakeWord
from watch_pipeline_tests.promises import drive

UPGRADED = ((FakeWord("Good", 100, 400), FakeWord("evening.", 450, 900)),)
"""What the server's new default model hears in the same recording."""


def _texts(env, media) -> dict[str, str]:
    """Each stored transcript JSON beside the media, by file name: its text."""
    folder = drive.store(env).path(media.object_key).parent / "transcripts"
    return {path.name: json.loads(path.read_text())["text"] for path in folder.glob("*.json")}


def test_a_changed_server_model_keeps_the_earlier_transcript(env, riva_server, speech_wav):
    env["resources"]["transcriber"] = TranscriberResource(
        backend="riva", riva_uri=riva_server.uri, riva_max_retries=0)
    harness.add_source(env, max_speakers=1)
    shutil.copyfile(speech_wav, env["watch"] / "call.wav")
    harness.age(env["watch"] / "call.wav")
    (run,) = drive.scan_and_import(env)
    assert run.success
    (media,) = harness.media_rows(env)
    assert _texts(env, media) == {media.transcript_key.rsplit("/", 1)[1]:
                                  "Hello there, good morning. How are you?"}

    # A run of transcribe_job with the same words changes nothing and keeps no copy.
    assert drive.run_transcribe_job(env, media.partition_key).success
    assert len(_texts(env, media)) == 1
    earlier = drive.store(env).get_bytes(media.transcript_key)

    riva_server.servicer.results = UPGRADED  # the server's default model was upgraded
    assert drive.run_transcribe_job(env, media.partition_key).success
    (media,) = harness.media_rows(env)
    texts = _texts(env, media)
    assert texts[media.transcript_key.rsplit("/", 1)[1]] == "Good evening."
    assert sorted(texts.values()) == ["Good evening.", "Hello there, good morning. How are you?"]
    (kept,) = [name for name, text in texts.items() if text.startswith("Hello")]
    folder = drive.store(env).path(media.object_key).parent / "transcripts"
    assert (folder / kept).read_bytes() == earlier
    stem = kept.removesuffix(".json")
    for fmt in ("srt", "vtt", "txt"):
        assert "Hello" in (folder / f"{stem}.{fmt}").read_text()
