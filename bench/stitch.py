"""Benchmark: our ``stitch()`` of 3 large parts vs the same ffmpeg concat command run by hand.

Three parts of ``--part-mib`` MiB each are made quickly: ``--kind wav`` (default) streams random
16-bit stereo 48 kHz samples from Python into a WAV; ``--kind mp4`` encodes one testsrc2 720p +
sine MP4 with x264 ultrafast/lossless until it reaches the size (``-fs``) and copies it twice.
Equal parts, so ``stitch`` takes its stream-copy path.

Timing: the baseline is the concat-demuxer command ``stitch`` runs (same list file, maps, muxer),
launched by hand with ``subprocess``; ours is ``stitch()`` itself, which adds an ffprobe of each
part and of the output plus the duration check. Runs alternate after one untimed warm-up of each
(page cache); wall-time medians and minima and CPU time (this process and its reaped children)
are printed with their ratios (want <= 1.1x). On a shared machine the minimum and the CPU ratio
are the steadier figures.

Memory: each is run once more in a fresh child Python that reports ``getrusage`` of itself
(``RUSAGE_SELF``) and of its own children (``RUSAGE_CHILDREN``: ffmpeg, ffprobe); the peak RSS of
any process involved must stay under 300 MiB.

Usage: python bench/stitch.py [--part-mib 200] [--kind wav|mp4] [--runs 7] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
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

from watch_pipeline.media.stitch import stitch

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part-mib", type=int, default=200)
    parser.add_argument("--kind", choices=["wav", "mp4"], default="wav")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each, alternating")
    parser.add_argument("--dir", default=None, help="where to write the parts (default: temp)")
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
        # Warm-up (page cache, ffmpeg's shared libraries), untimed.
        run_hand(command)
        dest.unlink()
        stitch(parts, dest)
        dest.unlink()

        hand_wall, our_wall, hand_cpu, our_cpu = [], [], [], []
        for _ in range(args.runs):
            wall, cpu, _ = timed(lambda: run_hand(command))
            hand_wall.append(wall)
            hand_cpu.append(cpu)
            dest.unlink()
            wall, cpu, result = timed(lambda: stitch(parts, dest))
            our_wall.append(wall)
            our_cpu.append(cpu)
            dest.unlink()

        our_rss = measure_rss("ours", dest, parts, args.kind)
        hand_rss = measure_rss("hand", dest, parts, args.kind)

        total = sum(sizes)
        med = statistics.median
        # Baseline and our figure, measured in the same run on the same files. The minimum is
        # the run least disturbed by other load; CPU time is what the load cannot inflate.
        print(f"{args.runs} runs each         wall median   wall min   CPU median  (MiB/s at min)")
        for name, wall, cpu in (
            ("ffmpeg concat by hand", hand_wall, hand_cpu),
            (f"stitch() ({result.mode})", our_wall, our_cpu),
        ):
            print(
                f"{name:22s} {med(wall):9.3f} s {min(wall):8.3f} s {med(cpu):9.3f} s"
                f"  ({total / min(wall):,.0f})"
            )
        print(f"output {result.size / MIB:.0f} MiB, {result.duration:.1f} s of media")
        print(
            f"ratio stitch / by hand: wall median {med(our_wall) / med(hand_wall):.3f}x, "
            f"wall min {min(our_wall) / min(hand_wall):.3f}x, "
            f"CPU {med(our_cpu) / med(hand_cpu):.3f}x  (want <= 1.1x)"
        )
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        peak = max(our_rss.values()) / 1024
        print(f"peak RSS, stitch(): python {our_rss['self_kib'] / 1024:.0f} MiB, "
              f"ffmpeg/ffprobe {our_rss['children_kib'] / 1024:.0f} MiB  -> {peak:.0f} MiB "
              f"(want < 300 MiB)")  # fmt: skip
        print(f"peak RSS, by hand:  python {hand_rss['self_kib'] / 1024:.0f} MiB, "
              f"ffmpeg {hand_rss['children_kib'] / 1024:.0f} MiB")  # fmt: skip
    # TemporaryDirectory removed the parts and the list file.


if __name__ == "__main__":
    main()
