"""Benchmark: the waveform of a 2-hour recording, and the thumbnail of a 1 GiB video.

Waveform: a 2-hour recording (a 220 Hz tone under pink noise, mono 44.1 kHz AAC at 64 kbit/s,
about 58 MB, made once and kept in ``--dir``) goes through ``make_waveform`` (decode to 16 kHz
mono PCM streamed into the peaks) plus the JSON document and the PNG written to disk. The
baseline is ffmpeg decoding the same audio to nowhere (``ffmpeg -i SRC -map 0:a:0 -f null -``).
Targets: <= 1.2x the baseline's wall time; peak RSS < 150 MiB for our Python process and for
ffmpeg.

Thumbnail: a 1 GiB video (720p30 testsrc2 with a tone, x264 ultrafast lossless, cut at 1 GiB
with ``-fs``; default GOP of 250 frames) goes through ``make_thumbnail`` (seek to 10 %, key
frames of the next minute, then the chosen frame encoded at 640 and 160 px). Beside it, the
least any thumbnail costs: one seek to 10 % and one frame decoded to nowhere. Target: < 3 s.

Thumbnail on S3: the same video stored in a loopback moto server (``python -m moto.server``, as
the tests start it) through ``S3ObjectStore``. Before: the object copied to scratch
(``steps.readable_copy``, as the preview steps did), then ``make_thumbnail`` on the copy. After:
``make_thumbnail`` on the store's presigned ``stream_url``, read by ffmpeg with range requests.
Loopback is the most favourable link for the copy; over a real network the copy only grows.
moto answers every GET of a large object slowly whatever its range (it reads the object whole:
~0.5 s a request for 1 GiB, printed as "one ranged GET"), so "after" here is mostly ffmpeg's
request count (open, moov at the end, the seek; two runs), which S3 and MinIO answer in
milliseconds.

Each measurement runs in a fresh child Python that times the call itself (its start-up is not
counted) and reports ``getrusage`` of itself and of its children (ffmpeg). Runs alternate, after
one untimed warm-up of each (page cache); medians of ``--runs`` (3) are printed with the ratio,
and for the waveform the CPU time of the child and its ffmpeg (steadier on a shared machine).

Usage: python bench/previews.py [--hours 2] [--video-mib 1024] [--runs 3] [--dir /tmp/previews]
                                [--only waveform|thumbnail|s3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _remote_servers import ACCESS_KEY, BUCKET, REGION, REPO_ROOT, SECRET_KEY, moto_server_process

MIB = 1024 * 1024
FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def make_recording(path: Path, hours: float) -> None:
    seconds = int(hours * 3600)
    subprocess.run(
        [*FFMPEG, "-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=44100:duration={seconds}",
         "-f", "lavfi", "-i", f"anoisesrc=color=pink:sample_rate=44100:amplitude=0.2:"
         f"duration={seconds}",
         "-filter_complex", "[0:a][1:a]amix=inputs=2:duration=shortest[a]", "-map", "[a]",
         "-ac", "1", "-c:a", "aac", "-b:a", "64k", str(path)],
        check=True)  # fmt: skip


def make_video(path: Path, mib: int) -> None:
    subprocess.run(
        [*FFMPEG, "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-fs", str(mib * MIB), str(path)],
        check=True)  # fmt: skip


def duration_of(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                          "json", str(path)], check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)["format"]["duration"])


def s3_store(endpoint_url: str):  # type: ignore[no-untyped-def]
    from watch_pipeline.store.s3 import S3ObjectStore

    return S3ObjectStore(BUCKET, endpoint_url=endpoint_url, region=REGION,
                         access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)


def child(kind: str, src: str, out: Path, duration: float) -> None:
    """Run one measurement in this (fresh) process and print its figures as JSON.

    ``src`` is a file, or for the S3 kinds ``<endpoint URL> <object key>``.
    """
    from watch_pipeline.media import previews
    from watch_pipeline.media.process import ToolInput
    from watch_pipeline.pipeline.steps import readable_copy

    store = s3_store(src.split()[0]) if kind.startswith("s3-") else None

    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = own.ru_utime + own.ru_stime  # the imports above are not the measurement
    started = time.perf_counter()
    if kind == "waveform":
        wave = previews.make_waveform(Path(src), duration=duration)
        with open(out / "waveform.json", "w", encoding="ascii") as fh:
            wave.write_json(fh)
        (out / "waveform.png").write_bytes(wave.png())
        detail = {"length": wave.length, "json_bytes": (out / "waveform.json").stat().st_size}
    elif kind == "thumbnail":
        made = previews.make_thumbnail(Path(src), out / "t.webp", out / "s.webp",
                                       duration=duration)
        detail = {"width": made.large.width, "bytes": made.large.size}
    elif kind == "s3-copy" and store is not None:
        key = src.split()[1]
        with readable_copy(store, key, out) as copy:
            made = previews.make_thumbnail(copy, out / "t.webp", out / "s.webp",
                                           duration=duration)
        detail = {"width": made.large.width, "bytes": made.large.size}
    elif kind == "s3-url" and store is not None:
        key = src.split()[1]
        source = ToolInput(location=store.stream_url(key) or "", shown=store.url(key))
        made = previews.make_thumbnail(source, out / "t.webp", out / "s.webp",
                                       duration=duration)
        detail = {"width": made.large.width, "bytes": made.large.size}
    elif kind == "decode":
        subprocess.run([*FFMPEG, "-i", str(src), "-map", "0:a:0", "-f", "null", "-"],
                       check=True)
        detail = {}
    elif kind == "seek":
        subprocess.run([*FFMPEG, "-ss", f"{duration * 0.1:.3f}", "-i", str(src), "-map", "0:v:0",
                        "-frames:v", "1", "-f", "null", "-"], check=True)
        detail = {}
    else:
        raise SystemExit(f"unknown measurement {kind}")
    seconds = time.perf_counter() - started
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "seconds": seconds,
        "cpu_seconds": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime - cpu_before,
        "self_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        **detail}))


def measure(kind: str, src: Path | str, duration: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-previews-") as out:
        proc = subprocess.run([sys.executable, __file__, "--child", kind, str(src), out,
                               str(duration)], check=True, capture_output=True, text=True,
                              # this checkout's package, whatever the venv's install points at
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(ours: str, baseline: str, src: Path | str, runs: int, *,
            duration: float | None = None) -> tuple[list[dict], list[dict]]:
    duration = duration_of(Path(src)) if duration is None else duration
    measure(ours, src, duration)
    measure(baseline, src, duration)  # warm-up: page cache
    mine, base = [], []
    for _ in range(runs):
        mine.append(measure(ours, src, duration))
        base.append(measure(baseline, src, duration))
    return mine, base


def s3_thumbnail(video: Path, runs: int) -> None:
    """The thumbnail of ``video`` stored in moto: a scratch copy first, then the URL."""
    duration = duration_of(video)
    with tempfile.TemporaryDirectory(prefix="bench-previews-moto-") as logs, \
            moto_server_process(Path(logs)) as server:
        started = time.perf_counter()
        s3_store(server.endpoint_url).put_file("bench/video.mp4", video,
                                               content_type="video/mp4")
        print(f"stored {video.stat().st_size / MIB:.0f} MiB in moto in "
              f"{time.perf_counter() - started:.0f} s")
        src = f"{server.endpoint_url} bench/video.mp4"
        reader = s3_store(server.endpoint_url).open("bench/video.mp4")
        latencies = []
        for _ in range(3):
            started = time.perf_counter()
            reader.seek(reader.size // 2)
            reader.read(1)
            latencies.append(time.perf_counter() - started)
        mine, base = compare("s3-url", "s3-copy", src, runs, duration=duration)
    print(f"thumbnail of the {video.stat().st_size / MIB:.0f} MiB video in S3 (loopback moto), "
          f"median of {runs}:")
    print(f"  before: copy to scratch + make_thumbnail  {median(base, 'seconds'):7.2f} s")
    print(f"  after:  make_thumbnail on the URL         {median(mine, 'seconds'):7.2f} s   "
          f"{median(base, 'seconds') / median(mine, 'seconds'):.1f}x faster (target < 3 s); "
          f"runs {runs_of(mine)} vs {runs_of(base)} s")
    print(f"  one ranged GET of 1 byte of this object from moto: "
          f"{statistics.median(latencies):.2f} s (median of 3)")


def runs_of(rows: list[dict]) -> str:
    return ", ".join(f"{row['seconds']:.2f}" for row in rows)


def median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--video-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "previews")
    parser.add_argument("--only", choices=("waveform", "thumbnail", "s3"),
                        help="run one of the three comparisons")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "SRC", "OUT", "DURATION"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))  # this checkout's package (the S3 store), as the children
    if args.child:
        kind, src, out, duration = args.child
        child(kind, src, Path(out), float(duration))
        return

    args.dir.mkdir(parents=True, exist_ok=True)
    recording = args.dir / f"recording-{args.hours:g}h.m4a"
    video = args.dir / f"video-{args.video_mib}mib.mp4"
    wanted = {"waveform": {recording}, "thumbnail": {video}, "s3": {video}}.get(
        args.only or "", {recording, video})
    for path, make in ((recording, lambda p: make_recording(p, args.hours)),
                       (video, lambda p: make_video(p, args.video_mib))):
        if path in wanted and not path.exists():
            started = time.perf_counter()
            make(path.with_suffix(".tmp" + path.suffix))
            path.with_suffix(".tmp" + path.suffix).rename(path)
            print(f"made {path.name} ({path.stat().st_size / MIB:.0f} MiB) in "
                  f"{time.perf_counter() - started:.0f} s")

    if args.only in (None, "waveform"):
        waveform(recording, args.runs)
    if args.only in (None, "thumbnail"):
        thumbnail(video, args.runs)
    if args.only in (None, "s3"):
        s3_thumbnail(video, args.runs)


def waveform(recording: Path, runs: int) -> None:
    mine, base = compare("waveform", "decode", recording, runs)
    ratio = median(mine, "seconds") / median(base, "seconds")
    rss_self = max(r["self_rss_mib"] for r in mine)
    rss_ffmpeg = max(r["children_rss_mib"] for r in mine)
    print(f"waveform of {duration_of(recording) / 3600:.2f} h "
          f"({recording.stat().st_size / MIB:.0f} MiB AAC), median of {runs}:")
    print(f"  ffmpeg decode to null   {median(base, 'seconds'):7.2f} s")
    print(f"  make_waveform+JSON+PNG  {median(mine, 'seconds'):7.2f} s   ratio {ratio:.2f}x "
          f"(target <= 1.2x)  [{mine[0]['length']} pixels, JSON {mine[0]['json_bytes'] / MIB:.1f}"
          f" MiB]")
    cpu = median(mine, "cpu_seconds") / median(base, "cpu_seconds")
    print(f"  CPU (python + ffmpeg): {median(base, 'cpu_seconds'):.2f} s vs "
          f"{median(mine, 'cpu_seconds'):.2f} s, ratio {cpu:.2f}x (steadier on a shared machine)")
    print(f"  peak RSS: python {rss_self:.0f} MiB, ffmpeg {rss_ffmpeg:.0f} MiB (target < 150)")


def thumbnail(video: Path, runs: int) -> None:
    mine, base = compare("thumbnail", "seek", video, runs)
    print(f"thumbnail of {video.stat().st_size / MIB:.0f} MiB video "
          f"({duration_of(video):.0f} s), median of {runs}:")
    print(f"  one seek + one frame    {median(base, 'seconds'):7.2f} s")
    print(f"  make_thumbnail          {median(mine, 'seconds'):7.2f} s   (target < 3 s)  "
          f"ratio {median(mine, 'seconds') / median(base, 'seconds'):.2f}x; peak RSS python "
          f"{max(r['self_rss_mib'] for r in mine):.0f} MiB, ffmpeg "
          f"{max(r['children_rss_mib'] for r in mine):.0f} MiB")


if __name__ == "__main__":
    main()
