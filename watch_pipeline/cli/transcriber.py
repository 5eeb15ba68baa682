"""``watch-pipeline transcriber test``: check the configured speech service end to end."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import click

from watch_pipeline.cli.context import CliContext, emit_json, fail, pass_cli

PHRASE = "the quick brown fox jumps over the lazy dog"


@click.group()
def transcriber() -> None:
    """The transcription service configured in defs/resources.py."""


@transcriber.command("test")
@click.option("--text", default=PHRASE, show_default=True, help="Phrase to synthesize.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def test(cli: CliContext, text: str, as_json: bool) -> None:
    """Synthesize a short phrase (espeak-ng), transcribe it, print backend, model, latency, text."""
    from watch_pipeline.defs.resources import build_transcriber
    from watch_pipeline.transcribe.base import TranscriptionError

    if shutil.which("espeak-ng") is None:
        fail("espeak-ng is not installed (apt-get install espeak-ng)")
    # Resolves EnvVar fields (RIVA_API_KEY) as a run would.
    resource = build_transcriber(cli.environ).process_config_and_initialize()
    with tempfile.TemporaryDirectory(prefix="transcriber-test-") as tmp:
        wav = Path(tmp) / "phrase.wav"
        subprocess.run(["espeak-ng", "-s", "140", "-g", "10", "-w", str(wav), text], check=True,
                       capture_output=True, timeout=60)
        started = time.monotonic()
        try:
            engine = resource.get_transcriber()
            result = engine.transcribe(wav)
        except TranscriptionError as exc:
            fail(f"transcription failed: {exc}")
            return
        latency = time.monotonic() - started
    expected = set(text.lower().split())
    heard = set(result.text.lower().replace(".", " ").replace(",", " ").split())
    data = {"backend": result.backend, "model": engine.model_id,
            "latency_seconds": round(latency, 3), "audio_seconds": round(result.audio_duration, 2),
            "text": result.text, "words_recognised": len(expected & heard),
            "words_spoken": len(expected)}
    if as_json:
        emit_json(data)
    else:
        click.echo(f"backend {data['backend']}, model {data['model']}: {latency:.2f}s for "
                   f"{data['audio_seconds']}s of audio")
        click.echo(f"heard: {result.text}")
        click.echo(f"{data['words_recognised']} of {data['words_spoken']} words recognised")
