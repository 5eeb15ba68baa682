"""Benchmark: a burst of short recordings dropped at once into the watch folder of a real daemon.

``--files`` distinct spoken phrases (espeak-ng WAVs, ~2 s each) are synthesised into a staging
folder. The baseline is transcribing them all with ``WhisperTranscriber().transcribe(path)`` in
this process (model loaded once, before timing). Then a real ``dagster-daemon run`` is started on
a temporary ``DAGSTER_HOME`` (a copy of the project's ``dagster.yaml``, so the queued run
coordinator's ``max_concurrent_runs`` applies), with one local source, stability 0 s and
``watch.max_concurrent_imports`` set through the CLI. Once the sensor has ticked, the files are
moved into the watch folder at once and the catalog is polled until every ``media_file`` is
``completed``. Wall time runs from the drop to the last transcript (the newest ``updated_at``).

A source is polled at most once a minute (``polling_interval_minutes`` >= 1). To measure the
pipeline rather than that wait, the source's ``last_scan_at`` is cleared at the drop (and again
until every file has been seen), as ``source scan`` would; ``--no-rewind`` keeps the natural wait.

Usage: python bench/burst.py [--files 100] [--max-concurrent-imports 4] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
import yaml
from _processes import leftover_pids, tail

from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import MediaFile, WatchSource, WatchSourceFile

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OVERHEAD_TARGET = 1.0  # seconds of orchestration per file
WORDS = ("zero one two three four five six seven eight nine").split()


def run_limit() -> str:
    """The run queue's limit as the project's dagster.yaml sets it (either spelling)."""
    config = yaml.safe_load((PROJECT / "dagster.yaml").read_text()) or {}
    limit = (config.get("concurrency") or {}).get("runs", {}).get("max_concurrent_runs")
    if limit is None:
        limit = ((config.get("run_coordinator") or {}).get("config") or {}).get(
            "max_concurrent_runs")
    return f"max_concurrent_runs={limit if limit is not None else 'unset (no limit)'}"


def transcripts_heard(store: Path) -> tuple[int, int]:
    """How many stored plain-text transcripts there are, and how many contain 'number'."""
    texts = [p.read_text().lower() for p in store.glob("**/transcripts/*.txt")]
    return len(texts), sum("number" in t for t in texts)


def phrase(k: int) -> str:
    """A distinct short sentence per file, numbers spelled out so the model hears words."""
    digits = " ".join(WORDS[int(d)] for d in str(k))
    return f"file number {digits} says hello"


def speak(text: str, dest: Path) -> Path:
    # As watch_pipeline_tests/fixtures/speech.py: 140 words/min with 100 ms gaps.
    subprocess.run(["espeak-ng", "-w", str(dest), "-s", "140", "-g", "10", text], check=True,
                   capture_output=True)
    return dest


def baseline(files: list[Path]) -> tuple[float, float, int]:
    """Sum of per-file transcription times with one loaded model; also the load time."""
    from watch_pipeline.transcribe.whisper import WhisperTranscriber

    transcriber = WhisperTranscriber()
    start = time.perf_counter()
    transcriber.transcribe(files[0])  # loads the model; not counted
    load = time.perf_counter() - start
    total, heard = 0.0, 0
    for path in files:
        start = time.perf_counter()
        result = transcriber.transcribe(path)
        total += time.perf_counter() - start
        heard += "number" in result.text.lower()
    return total, load, heard


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(BIN / "watch-pipeline"), *args], env=env, check=True,
                   capture_output=True, text=True)


def stop_daemon(daemon: subprocess.Popen, home: Path) -> None:
    """SIGTERM the daemon, then kill it, its process group and any run worker left behind."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    try:
        os.killpg(daemon.pid, signal.SIGTERM)  # the group we created with start_new_session
        time.sleep(2)
        os.killpg(daemon.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in leftover_pids(home):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for_first_scan(catalog: Catalog, daemon: subprocess.Popen, log: Path,
                        timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if daemon.poll() is not None:
            sys.exit(f"dagster-daemon exited ({daemon.returncode}):\n{tail(log)}")
        with catalog.session() as session:
            if session.scalar(sa.select(WatchSource.last_scan_at)) is not None:
                return time.monotonic() - start
        time.sleep(0.5)
    sys.exit(f"the watch sensor did not scan within {timeout:.0f}s:\n{tail(log)}")


def rewind(catalog: Catalog) -> None:
    with catalog.session() as session:
        session.execute(sa.update(WatchSource).values(last_scan_at=None))


def poll_until_done(catalog: Catalog, daemon: subprocess.Popen, log: Path, n: int,
                    timeout: float, rewinding: bool) -> tuple[bool, Counter[str], Counter[str]]:
    start = last_print = time.monotonic()
    while True:
        with catalog.session() as session:
            media = Counter(session.scalars(sa.select(MediaFile.status)))
            files = Counter(session.scalars(sa.select(WatchSourceFile.status)))
        elapsed = time.monotonic() - start
        if media["completed"] >= n:
            return True, media, files
        if rewinding and sum(files.values()) < n:
            rewind(catalog)  # a tick that began before the drop must not hide files for 60 s
        if daemon.poll() is not None:
            print(f"dagster-daemon exited ({daemon.returncode}):\n{tail(log)}")
            return False, media, files
        if elapsed > timeout:
            return False, media, files
        if time.monotonic() - last_print >= 15:
            last_print = time.monotonic()
            print(f"  t={elapsed:5.0f}s files {dict(files)} media {dict(media)}", flush=True)
        time.sleep(0.5)


def run_stats(home: Path) -> str:
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(dg.RunsFilter(tags={"watch_pipeline/kind": "import"}))
    statuses = Counter(r.dagster_run.status.value for r in records)
    durations = [r.end_time - r.start_time for r in records if r.start_time and r.end_time]
    if not durations:
        return f"runs: {dict(statuses)}"
    return (f"runs: {dict(statuses)}; run duration (start to end, per run) median "
            f"{statistics.median(durations):.1f}s, max {max(durations):.1f}s, "
            f"sum {sum(durations):.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100, help="recordings in the burst")
    parser.add_argument("--max-concurrent-imports", type=int, default=4,
                        help="the watch.max_concurrent_imports setting")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds to wait for the last transcript")
    parser.add_argument("--no-rewind", action="store_true",
                        help="wait for the source's own polling interval after the drop")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, catalog)")
    parser.add_argument("--dir", default=None, help="parent of the temp dir (default: $TMPDIR)")
    args = parser.parse_args()
    n = args.files

    print(f"run limits: {run_limit()} (dagster.yaml); watch.max_concurrent_imports="
          f"{args.max_concurrent_imports}; {os.cpu_count()} CPUs")

    tmp = Path(tempfile.mkdtemp(prefix="bench_burst_", dir=args.dir))
    home, watch, staging = tmp / "dagster_home", tmp / "watch", tmp / "staging"
    for d in (home, watch, staging):
        d.mkdir()
    shutil.copyfile(PROJECT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items()
           if k not in ("WATCH_CATALOG_URL", "WATCH_SECRET_KEY", "WATCH_TEMP_DIR")}
    env.update(DAGSTER_HOME=str(home), WATCH_FOLDER_PATH=str(watch),
               WATCH_SENSOR_INTERVAL_SECONDS="5", HF_HUB_OFFLINE="1")
    os.environ["HF_HUB_OFFLINE"] = "1"
    daemon = None
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            files = list(pool.map(lambda k: speak(phrase(k), staging / f"file_{k:04d}.wav"),
                                  range(n)))
        print(f"synthesised {n} recordings in {time.perf_counter() - start:.1f}s")

        base, load, heard = baseline(files)
        print(f"baseline: {n} files transcribed one after another in {base:.1f}s "
              f"({base / n:.2f}s/file; model load {load:.1f}s not counted; "
              f"'number' heard in {heard}/{n})")

        cli(env, "settings", "set", "watch.file_stability_seconds", "0")
        cli(env, "settings", "set", "watch.max_concurrent_imports",
            str(args.max_concurrent_imports))
        cli(env, "source", "add", "--name", "watch", "--type", "local", "--path", ".")
        catalog = Catalog(f"sqlite:///{home / 'watch_catalog.sqlite'}")

        log = tmp / "daemon.log"
        with open(log, "w") as out:
            daemon = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=PROJECT,
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        ready = wait_for_first_scan(catalog, daemon, log, timeout=180)
        print(f"daemon started; first sensor tick after {ready:.1f}s; dropping {n} files")

        dropped_at = datetime.now(UTC)
        for path in files:
            os.rename(path, watch / path.name)
        if not args.no_rewind:
            rewind(catalog)
        ok, media, seen = poll_until_done(catalog, daemon, log, n, args.timeout,
                                          rewinding=not args.no_rewind)
        with catalog.session() as session:
            last = session.scalar(sa.select(sa.func.max(MediaFile.updated_at))
                                  .where(MediaFile.status == "completed"))
        wall = (last - dropped_at).total_seconds() if last else float("nan")
        stored, heard_there = transcripts_heard(home / "object_store")
        print(f"catalog: files {dict(seen)}; media {dict(media)}; {stored} transcripts stored, "
              f"'number' heard in {heard_there}")
        print(run_stats(home))
        overhead = (wall - base) / n
        print(f"baseline (sum of raw transcription times): {base:7.1f}s")
        print(f"burst wall time, drop to last transcript:  {wall:7.1f}s "
              f"({media['completed']}/{n} completed{'' if ok else ', INCOMPLETE'})")
        print(f"ratio wall / baseline: {wall / base:.1f}x")
        verdict = "met" if ok and overhead <= OVERHEAD_TARGET else "NOT met"
        print(f"orchestration overhead per file (wall - baseline) / N: {overhead:.2f}s "
              f"(target <= {OVERHEAD_TARGET:.0f}s/file: {verdict})")
        if args.no_rewind:
            print("note: includes the wait for the source's polling interval (1 min minimum)")
        if not ok:
            sys.exit(1)
    finally:
        if daemon is not None:
            stop_daemon(daemon, home)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
