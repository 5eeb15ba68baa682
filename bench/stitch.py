"""Benchmark: our ``stitch()`` of 3 large parts vs the same ffmpeg concat command run by hand.

Three parts of ``--part-mib`` MiB each are made quickly: ``--kind wav`` (default) streams random
16-bit stereo 48 kHz samples from Python into a WAV; ``--kind mp4`` encodes one testsrc2 720p +
sine MP4 with x264 ultrafast/lossless until it reaches the size (``-fs``) and copies it twice.
Equal parts, so ``stitch`` takes its stream-copy path.

Timing: the baseline is the concat-demuxer command ``stitch`` runs (same list file, maps, muxer),
launched by hand with ``subprocess``; ours is ``stitch()`` itself, twice: with the parts' probes
given (as the pipeline passes those ``raw_file`` made; made once, untimed) and without (it then
runs an ffprobe per part, concurrently with the copy). Both measure the output from ffmpeg's own
``-progress`` report (MP4) or its size (WAV) and check its duration. Runs alternate after one
untimed warm-up of each (page cache); wall-time medians and minima and CPU time (this process and
its reaped children) are printed with their ratios (want <= 1.1x). On a shared machine the
minimum and the CPU ratio are the steadier figures.

``--profile`` adds where the time goes: one ffprobe of a part, ffmpeg's start-up alone, and
``stitch()`` under cProfile (its own Python, the waits on ffmpeg and ffprobe).

Memory: each is run once more in a fresh child Python that reports ``getrusage`` of itself
(``RUSAGE_SELF``) and of its own children (``RUSAGE_CHILDREN``: ffmpeg, ffprobe); the peak RSS of
any process involved must stay under 300 MiB.

Usage: python bench/stitch.py [--part-mib 200] [--kind wav|mp4] [--runs 3] [--dir /tmp]
                              [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from watch_pipeline.media.probe import MediaInfo, probe
from watch_pipeline.media.stitch import StitchResult, stitch

MIB = 1024 * 1024
T = TypeVar("T")
PARTS = 3


def make_wav(path: Path, part_mib: int) -> None:
    # Random samples, streamed 1 MiB at a time: real bytes, no compressible silence.
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(48_000)
        for _ in range(part_mib):
            out.writeframesraw(os.urandom(MIB))


def make_mp4(path: Path, part_mib: int) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-fs", str(part_mib * MIB), str(path)],
        check=True,
    )  # fmt: skip


def hand_command(parts: list[Path], listing: Path, dest: Path, kind: str) -> list[str]:
    # What stitch() runs in copy mode, written out by hand.
    listing.write_text(
        "".join("file '" + str(p).replace("'", "'\\''") + "'\n" for p in parts), encoding="utf-8"
    )
    maps = ["-map", "0:a:0"] if kind == "wav" else ["-map", "0:V:0", "-map", "0:a:0"]
    muxer = ["-f", "wav", "-rf64", "auto"] if kind == "wav" else ["-f", "mp4"]
    return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "concat", "-safe", "0", "-i", str(listing), *maps, "-c", "copy",
            *muxer, str(dest)]  # fmt: skip


def run_hand(command: list[str]) -> None:
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL)


def cpu_seconds() -> float:
    # This process and every child it has reaped (ffmpeg, ffprobe): user + system time.
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], T]) -> tuple[float, float, T]:
    """Wall seconds, CPU seconds (this process and its children) and the value of ``fn()``."""
    cpu, start = cpu_seconds(), time.perf_counter()
    value = fn()
    return time.perf_counter() - start, cpu_seconds() - cpu, value


def child(mode: str, dest: Path, parts: list[Path], kind: str) -> None:
    """Run one stitch (ours or by hand) and print this process tree's peak RSS as JSON."""
    if mode == "ours":
        result = stitch(parts, dest)
        assert result.mode == "copy", result
    else:
        run_hand(hand_command(parts, dest.with_suffix(".txt"), dest, kind))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"self_kib": own, "children_kib": kids}))


def measure_rss(mode: str, dest: Path, parts: list[Path], kind: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--kind", kind, str(dest), *map(str, parts)],
        check=True,
        capture_output=True,
        text=True,
    )
    dest.unlink()
    return json.loads(out.stdout)


def profile(parts: list[Path], dest: Path, probes: dict[Path, MediaInfo], runs: int) -> None:
    """Print where ``stitch()``'s time goes beyond ffmpeg's copy itself."""
    med = statistics.median
    probe_wall, probe_cpu, start_wall = [], [], []
    for _ in range(runs):
        seconds, cpu_used, _ = timed(lambda: probe(parts[0]))
        probe_wall.append(seconds)
        probe_cpu.append(cpu_used)
        seconds, _, _ = timed(lambda: subprocess.run(["ffmpeg", "-version"], check=True,
                                                     stdout=subprocess.DEVNULL))  # fmt: skip
        start_wall.append(seconds)
    print(f"one ffprobe of a part: wall {med(probe_wall):.3f} s, CPU {med(probe_cpu):.3f} s; "
          f"ffmpeg start-up alone (-version): wall {med(start_wall):.3f} s")  # fmt: skip
    for label, given in (("probes given", probes), ("no probes", None)):
        profiler = cProfile.Profile()
        profiler.enable()
        stitch(parts, dest, probes=given)
        profiler.disable()
        dest.unlink()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(12)
        print(f"cProfile of stitch(), {label} (cumulative; waits are ffmpeg/ffprobe running):")
        print("\n".join(text.getvalue().strip().splitlines()[:30]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part-mib", type=int, default=200)
    parser.add_argument("--kind", choices=["wav", "mp4"], default="wav")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each, alternating")
    parser.add_argument("--dir", default=None, help="where to write the parts (default: temp)")
    parser.add_argument("--profile", action="store_true", help="show where stitch's time goes")
    parser.add_argument("--child", choices=["ours", "hand"], help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        dest, *parts = (Path(p) for p in args.paths)
        child(args.child, dest, parts, args.kind)
        return

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_stitch_") as tmp:
        folder = Path(tmp)
        parts = [folder / f"session_P00{i}.{args.kind}" for i in range(1, PARTS + 1)]
        start = time.perf_counter()
        if args.kind == "wav":
            for part in parts:
                make_wav(part, args.part_mib)
        else:
            make_mp4(parts[0], args.part_mib)
            for part in parts[1:]:
                shutil.copyfile(parts[0], part)
        sizes = [p.stat().st_size / MIB for p in parts]
        print(f"made {PARTS} {args.kind} parts of {sizes[0]:.0f} MiB in "
              f"{time.perf_counter() - start:.1f}s in {folder}")  # fmt: skip

        dest = folder / f"session.{args.kind}"
        command = hand_command(parts, folder / "list.txt", dest, args.kind)
        probes = {part: probe(part) for part in parts}  # what raw_file made, untimed

        def ours() -> object:
            return stitch(parts, dest)

        def ours_with_probes() -> object:
            return stitch(parts, dest, probes=probes)

        variants: list[tuple[str, Callable[[], object]]] = [
            ("ffmpeg concat by hand", lambda: run_hand(command)),
            ("stitch(), probes given", ours_with_probes),
            ("stitch(), no probes", ours),
        ]
        # Warm-up (page cache, ffmpeg's shared libraries), untimed.
        for _, fn in variants:
            fn()
            dest.unlink()

        wall: dict[str, list[float]] = {name: [] for name, _ in variants}
        cpu: dict[str, list[float]] = {name: [] for name, _ in variants}
        result = None
        for _ in range(args.runs):
            for name, fn in variants:
                seconds, cpu_used, value = timed(fn)
                wall[name].append(seconds)
                cpu[name].append(cpu_used)
                result = value if value is not None else result
                dest.unlink()

        our_rss = measure_rss("ours", dest, parts, args.kind)
        hand_rss = measure_rss("hand", dest, parts, args.kind)

        total = sum(sizes)
        med = statistics.median
        hand = variants[0][0]
        # Baseline and our figures, measured in the same run on the same files. The minimum is
        # the run least disturbed by other load; CPU time is what the load cannot inflate.
        print(f"{args.runs} runs each          wall median   wall min   CPU median  (MiB/s at min)")
        for name, _ in variants:
            print(
                f"{name:23s} {med(wall[name]):9.3f} s {min(wall[name]):8.3f} s "
                f"{med(cpu[name]):9.3f} s  ({total / min(wall[name]):,.0f})"
            )
        assert isinstance(result, StitchResult) and result.mode == "copy", result
        print(f"output {result.size / MIB:.0f} MiB, {result.duration:.1f} s of media")
        for name, _ in variants[1:]:
            print(
                f"ratio {name} / by hand: wall median {med(wall[name]) / med(wall[hand]):.3f}x, "
                f"wall min {min(wall[name]) / min(wall[hand]):.3f}x, "
                f"CPU {med(cpu[name]) / med(cpu[hand]):.3f}x  (want <= 1.1x)"
            )
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        peak = max(our_rss.values()) / 1024
        print(f"peak RSS, stitch(): python {our_rss['self_kib'] / 1024:.0f} MiB, "
              f"ffmpeg/ffprobe {our_rss['children_kib'] / 1024:.0f} MiB  -> {peak:.0f} MiB "
              f"(want < 300 MiB)")  # fmt: skip
        print(f"peak RSS, by hand:  python {hand_rss['self_kib'] / 1024:.0f} MiB, "
              f"ffmpeg {hand_rss['children_kib'] / 1024:.0f} MiB")  # fmt: skip
        if args.profile:
            profile(parts, dest, probes, args.runs)
    # TemporaryDirectory removed the parts and the list file.


if __name__ == "__main__":
    main()
