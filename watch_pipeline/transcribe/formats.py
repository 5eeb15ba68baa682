"""Pure renderings of a :class:`Transcript`: JSON (round-trips), SRT, WebVTT and plain text."""

from __future__ import annotations

import json
from typing import Any

from watch_pipeline.transcribe.base import Segment, Transcript, Word

JSON_SCHEMA_VERSION = 1
"""Bumped when :func:`to_json`'s keys change meaning; :func:`from_json` rejects newer versions."""


def to_json(t: Transcript) -> str:
    """Serialise ``t`` as indented JSON with a fixed key order (stable across runs and versions).

    Args:
        t: The transcript.

    Returns:
        JSON text; :func:`from_json` turns it back into an equal :class:`Transcript`.
    """
    document = {
        "schema_version": JSON_SCHEMA_VERSION,
        "backend": t.backend,
        "model": t.model,
        "language": t.language,
        "audio_duration": t.audio_duration,
        "processing_seconds": t.processing_seconds,
        "text": t.text,
        "segments": [
            {
                "start": s.start,
                "end": s.end,
                "speaker": s.speaker,
                "text": s.text,
                "words": [{"start": w.start, "end": w.end, "text": w.text} for w in s.words],
            }
            for s in t.segments
        ],
        "extra": dict(sorted(t.extra.items())),
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def from_json(s: str) -> Transcript:
    """Parse the output of :func:`to_json`.

    Args:
        s: JSON text.

    Returns:
        The transcript.

    Raises:
        ValueError: ``s`` is not a transcript document of a known schema version.
    """
    try:
        document: dict[str, Any] = json.loads(s)
        version = document.get("schema_version", JSON_SCHEMA_VERSION)
        if version > JSON_SCHEMA_VERSION:
            raise ValueError(f"transcript JSON schema {version} is newer than this code")
        return Transcript(
            segments=tuple(
                Segment(
                    start=float(seg["start"]),
                    end=float(seg["end"]),
                    text=seg["text"],
                    speaker=seg.get("speaker"),
                    words=tuple(
                        Word(start=float(w["start"]), end=float(w["end"]), text=w["text"])
                        for w in seg.get("words", ())
                    ),
                )
                for seg in document["segments"]
            ),
            text=document["text"],
            language=document["language"],
            model=document["model"],
            backend=document["backend"],
            audio_duration=float(document["audio_duration"]),
            processing_seconds=float(document["processing_seconds"]),
            extra={str(k): str(v) for k, v in document.get("extra", {}).items()},
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a transcript JSON document: {exc!r}") from exc


def to_srt(t: Transcript) -> str:
    """Render SubRip subtitles: numbered cues, ``HH:MM:SS,mmm`` times, ``Speaker: text`` lines.

    Args:
        t: The transcript; segments with empty text are left out.

    Returns:
        SRT text (empty string when there is no speech).
    """
    cues = []
    for index, segment in enumerate(_spoken(t), start=1):
        text = f"{segment.speaker}: {segment.text}" if segment.speaker else segment.text
        start, end = _timestamp(segment.start, ","), _timestamp(segment.end, ",")
        cues.append(f"{index}\n{start} --> {end}\n{text}\n")
    return "\n".join(cues)


def to_vtt(t: Transcript) -> str:
    """Render WebVTT: ``HH:MM:SS.mmm`` times, speakers as ``<v Speaker>`` voice spans.

    Args:
        t: The transcript; segments with empty text are left out.

    Returns:
        VTT text starting with the ``WEBVTT`` header.
    """
    cues = ["WEBVTT\n"]
    for segment in _spoken(t):
        text = _vtt_escape(segment.text)
        if segment.speaker:
            text = f"<v {_vtt_escape(segment.speaker)}>{text}"
        start, end = _timestamp(segment.start, "."), _timestamp(segment.end, ".")
        cues.append(f"{start} --> {end}\n{text}\n")
    return "\n".join(cues)


def to_text(t: Transcript) -> str:
    """Render plain text: one line per segment, or per speaker turn when speakers are known.

    Args:
        t: The transcript.

    Returns:
        Text ending in a newline (empty string when there is no speech).
    """
    segments = _spoken(t)
    if not segments:
        return f"{t.text}\n" if t.text else ""
    lines: list[str] = []
    turn_speaker: str | None = None
    for segment in segments:
        if segment.speaker and lines and segment.speaker == turn_speaker:
            lines[-1] = f"{lines[-1]} {segment.text}"
        elif segment.speaker:
            lines.append(f"{segment.speaker}: {segment.text}")
        else:
            lines.append(segment.text)
        turn_speaker = segment.speaker
    return "\n".join(lines) + "\n"


def _spoken(t: Transcript) -> list[Segment]:
    return [segment for segment in t.segments if segment.text.strip()]


def _timestamp(seconds: float, decimal_mark: str) -> str:
    """``HH:MM:SS<mark>mmm`` rounded to the millisecond; hours grow past 99 if needed."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
