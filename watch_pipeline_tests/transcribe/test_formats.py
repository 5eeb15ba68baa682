"""Pure renderings of a Transcript: JSON round trip, SRT, WebVTT, plain text."""

from __future__ import annotations

import json

import pytest

from watch_pipeline.transcribe.base import Segment, Transcript, Word
from watch_pipeline.transcribe.formats import from_json, to_json, to_srt, to_text, to_vtt


def _transcript(*segments: Segment) -> Transcript:
    return Transcript(
        segments=segments,
        text=" ".join(s.text for s in segments),
        language="en",
        model="tiny.en",
        backend="whisper",
        audio_duration=3725.5,
        processing_seconds=12.25,
        extra={"model_id": "whisper:tiny.en:int8:beam1"},
    )


PLAIN = _transcript(
    Segment(0.0, 1.5, "Hello there.", words=(Word(0.0, 0.6, "Hello"), Word(0.6, 1.5, "there."))),
    Segment(61.0426, 3723.9996, "A long one."),
)
SPEAKERS = _transcript(
    Segment(0.0, 1.0, "Hi.", speaker="Alice"),
    Segment(1.0, 2.0, "How are you?", speaker="Alice"),
    Segment(2.0, 3.0, "Fine <really> & well.", speaker="Bob"),
)


def test_json_round_trip():
    for transcript in (PLAIN, SPEAKERS):
        assert from_json(to_json(transcript)) == transcript


def test_json_keys_are_stable():
    document = json.loads(to_json(PLAIN))
    assert list(document) == [
        "schema_version", "backend", "model", "language", "audio_duration",
        "processing_seconds", "text", "segments", "extra",
    ]  # fmt: skip
    assert list(document["segments"][0]) == ["start", "end", "speaker", "text", "words"]
    assert document["segments"][0]["words"][1] == {"start": 0.6, "end": 1.5, "text": "there."}
    assert to_json(PLAIN) == to_json(from_json(to_json(PLAIN)))


def test_from_json_rejects_other_documents():
    with pytest.raises(ValueError):
        from_json('{"segments": []}')
    with pytest.raises(ValueError):
        from_json("not json")
    with pytest.raises(ValueError, match="newer"):
        from_json(json.dumps({**json.loads(to_json(PLAIN)), "schema_version": 99}))


def test_srt_cues_and_timestamps():
    assert to_srt(PLAIN) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n"
        "\n"
        "2\n00:01:01,043 --> 01:02:04,000\nA long one.\n"
    )


def test_vtt_header_and_timestamps():
    assert to_vtt(PLAIN) == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:01.500\nHello there.\n"
        "\n"
        "00:01:01.043 --> 01:02:04.000\nA long one.\n"
    )


def test_speaker_labels():
    assert "1\n00:00:00,000 --> 00:00:01,000\nAlice: Hi.\n" in to_srt(SPEAKERS)
    assert "3\n00:00:02,000 --> 00:00:03,000\nBob: Fine <really> & well.\n" in to_srt(SPEAKERS)
    vtt = to_vtt(SPEAKERS)
    assert "00:00:00.000 --> 00:00:01.000\n<v Alice>Hi.\n" in vtt
    assert "<v Bob>Fine &lt;really&gt; &amp; well.\n" in vtt


def test_text_joins_speaker_turns():
    assert to_text(SPEAKERS) == "Alice: Hi. How are you?\nBob: Fine <really> & well.\n"
    assert to_text(PLAIN) == "Hello there.\nA long one.\n"


def test_empty_transcript():
    empty = _transcript()
    assert to_srt(empty) == ""
    assert to_vtt(empty) == "WEBVTT\n"
    assert to_text(empty) == ""
    assert from_json(to_json(empty)) == empty


def test_hours_past_99_and_negative_times():
    long = _transcript(Segment(-0.2, 360000.0004, "x"))
    assert "00:00:00,000 --> 100:00:00,000" in to_srt(long)
