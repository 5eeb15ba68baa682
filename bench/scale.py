"""Benchmark: the watch pipeline at production scale, everything on PostgreSQL.

A throwaway PostgreSQL cluster is started as the tests start theirs (``_remote_servers``); the
Dagster instance (``storage: postgres:`` in a ``dagster.yaml`` that is the project's own plus that
block, in a temp ``DAGSTER_HOME``) and the catalog (``WATCH_CATALOG_URL``) both live on it.
``--files`` tiny distinct WAVs are written into one local watch source, and the keys of the
``media`` partitions are those files' fingerprints. Three things are measured:

1. **Sensor ticks with ``--files`` known files.** First, one real tick on an empty catalog (the
   files are old, so a first scan fingerprints them on sight): how far it gets in the sensor's
   40 s budget, hence how many ticks a first scan of the source takes (measured on a scratch
   catalog database, dropped afterwards). Then the catalog is bulk-filled with what finished
   imports leave (one ``imported`` file row and one ``completed`` media row per file) and the real
   ``local_watch_sensor`` is evaluated against the Dagster instance, as the tests' harness does:
   with the source not due (most ticks), due with nothing changed (a full scan), and due with
   ``--new-files`` new files (fingerprinted, claimed, one ``SensorResult`` with run requests and
   a partition request, which is then applied as the daemon applies it). Baseline: a plain
   ``os.scandir`` walk that stats every file. Catalog rows and ``pg_total_relation_size`` per
   table, and ``pg_database_size``, are printed.
2. **``--tick-partitions`` new partitions in one tick.** The sensor's request
   (``media.build_add_request(keys)``) is applied by the daemon's own handler
   (``dagster._daemon.sensor._handle_dynamic_partitions_requests``: one ``has_dynamic_partition``
   query per key, then one INSERT; a private function, called with a stand-in for the tick
   context) and the tick row is written with its result, as the daemon does. Baseline: one
   ``instance.add_dynamic_partitions`` call with as many keys. Then ``get_dynamic_partitions``
   (which the sensor calls on every tick that requests runs) and ``has_dynamic_partition``.
3. **The asset's partitions page with ``--partitions`` partitions.** A real ``dagster-webserver``
   on loopback (``workspace.yaml``) answers the GraphQL queries that page issues, taken verbatim
   (fragments resolved) from the installed UI bundle's source maps: ``AssetViewDefinitionQuery``,
   ``AssetGraphLiveQuery``, ``PartitionHealthQuery`` (every partition key, and the materialized /
   failed / in-progress subsets), ``AssetPartitionDetailQuery`` and ``AssetPartitionStaleQuery``
   for the selected (newest) partition; plus the plain GET of the page route. Each is timed to
   the first response byte and to the end of the body, ``--runs`` times. Baseline: the same
   queries with ``--baseline-partitions`` partitions, measured earlier in the same run.

No partition is materialized (no run is launched), so the page shows every partition
"missing"; materialization history is not part of these figures.

The full run (defaults) takes 5.5 minutes on 2 idle CPUs (9 to 13 under load), about half of it in
part 2. Its findings are printed at the end ("limits reached (LIMIT) and findings"). On an idle
machine (2026-11-25, 2 CPUs): due tick over 100,000 unchanged files 2.2 s (4.3x a scandir walk),
10 new files 2.4 s; 10,000 partitions in one tick 144 s (158x a plain add, 13 ms per key);
get_dynamic_partitions at 100,000 keys 0.38 s; PartitionHealthQuery at 100,000 partitions 0.58 s
(15x the 1,000-partition figure, 3.3 MiB). Those of three earlier full runs (2 shared CPUs under a
load of 4 to 9, so absolute figures are pessimistic):

* LIMIT: the sensor daemon applies a partition request by checking each key with
  ``has_dynamic_partition`` (on PostgreSQL two fresh connections per call, as the storage uses
  ``NullPool``: 28 to 42 ms) before one INSERT. 10,000 keys in one tick took 290 to 400 s, ~190
  to 230x a plain ``add_dynamic_partitions`` of the same keys (1.4 to 2 s); the tick row keeps
  every key (352 KiB). Mitigation, already in place: the sensor asks for at most
  ``watch.max_concurrent_imports`` x ``BATCH_MAX`` (5 x 25 = 125) keys per tick, about 4 s of
  checks, so a burst is batched over ticks; do not raise that bound far.
* The sensor reads every ``media`` key (``get_dynamic_partitions``) on each tick that requests
  runs: 0.5 to 1 s at 100,000 keys (7 to 10x the 11,000-key figure), paid every 30 s while a
  backlog drains. Checking only the claimed keys would bound it.
* The partitions page at 100,000 partitions: ``PartitionHealthQuery`` ~1 to 1.4 s and 3.3 MiB
  (every key; 14 to 35x the 1,000-partition figure), the others under 1 s; far from the
  webserver's 15 s statement timeout. Dagster's retention never deletes dynamic partitions;
  deleting those of purged media (``instance.delete_dynamic_partition``) is the lever if it grows.
* A due tick over 100,000 unchanged files: 1.8 to 4.2 s of the sensor's 40 s budget (3.8 to 5x
  a plain ``os.scandir`` walk); the catalog holds ~55 MiB per 100,000 imported files in each of
  ``watch_source_file`` and ``media_file`` (~118 MiB database). A first scan of 100,000 old files
  fingerprints 4,200 to 12,500 files per tick, so it spans 8 to 24 ticks (bounded by design).

Usage: python bench/scale.py [--files 100000] [--tick-partitions 10000] [--partitions 100000]
           [--baseline-partitions 1000] [--new-files 10] [--runs 3] [--dir /tmp]
Smoke (about a minute): python bench/scale.py --files 2000 --tick-partitions 200
           --partitions 3000 --baseline-partitions 100 --runs 2
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
import yaml
from _remote_servers import free_port, load_note, postgres_server
from dagster._core.scheduler.instigation import InstigatorType, TickData, TickStatus
from dagster._daemon.sensor import _handle_dynamic_partitions_requests
from dagster._serdes import serialize_value
from scan import make_tree, scandir_walk, wav_bytes

from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import Base, MediaFile, WatchSource, WatchSourceFile
from watch_pipeline.catalog.queries import object_key
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.settings import WatchSettings
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.defs.partitions import media
from watch_pipeline.defs.resources import launch
from watch_pipeline.defs.sensors import TICK_BUDGET_SECONDS, build_watch_sensors
from watch_pipeline.pipeline.claims import BATCH_MAX
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION
from watch_pipeline.sources.local import LocalSourceClient

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SENSOR = next(s for s in build_watch_sensors() if s.name == "local_watch_sensor")
SEED_CHUNK = 5_000
UI_QUERIES = ("AssetViewDefinitionQuery", "AssetGraphLiveQuery", "PartitionHealthQuery",
              "AssetPartitionDetailQuery", "AssetPartitionStaleQuery")
SENSOR_TIMEOUT_SECONDS = 60  # the daemon's default limit on one sensor evaluation
WEBSERVER_STATEMENT_TIMEOUT_MS = 15_000  # dagster-webserver's --db-statement-timeout default


# ---------------------------------------------------------------------------------- helpers


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_of(fn: Callable[[], Any], runs: int,
              before: Callable[[], Any] | None = None) -> tuple[float, list[float], Any]:
    """Median wall time of ``fn`` over ``runs`` calls (``before`` runs untimed each time)."""
    times, result = [], None
    for _ in range(runs):
        if before is not None:
            before()
        elapsed, result = timed(fn)
        times.append(elapsed)
    return statistics.median(times), times, result


def fmt_times(times: Iterable[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def age_tree(root: Path, seconds: float = 3600) -> None:
    """Give every file an mtime ``seconds`` ago: an archive that nobody is writing to."""
    t = time.time() - seconds
    for folder, _, names in os.walk(root):
        for name in names:
            os.utime(os.path.join(folder, name), (t, t))


# ---------------------------------------------------------------------------------- catalog


def add_source(catalog: Catalog) -> int:
    with catalog.session() as session:
        return create_source(session, None, fields={
            "name": "archive", "source_type": "local", "local_path": ".",
            "auto_transcribe": False}).id


def seed_imported(catalog: Catalog, source_id: int, client: LocalSourceClient,
                  fingerprints: dict[str, str]) -> int:
    """Insert, chunk by chunk, what finished imports leave: a media row and an imported file row.

    Media ids are drawn from the table's sequence first, so each object key is the one an import
    would have written (``user_{owner}/file_{id}/{name}``) without a second write per row.
    """
    now = datetime.now(UTC)
    media_table, file_table = MediaFile.__table__, WatchSourceFile.__table__
    count = 0
    for batch in chunks(client.list_files(recursive=True), SEED_CHUNK):
        with catalog.session() as session:
            ids = session.scalars(sa.text(
                "SELECT nextval(pg_get_serial_sequence('media_file', 'id')) "
                "FROM generate_series(1, :n)"), {"n": len(batch)}).all()
            media_rows, file_rows = [], []
            for media_id, entry in zip(ids, batch, strict=True):
                fp = fingerprints[entry.remote_path]
                key = object_key(1, media_id, entry.filename)
                media_rows.append(dict(
                    id=media_id, owner_id=1, title=entry.filename.rsplit(".", 1)[0],
                    filename=entry.filename, imohash=fp, imohash_version=ALGORITHM_VERSION,
                    partition_key=fp, object_key=key,
                    checksum_sha256=hashlib.sha256(fp.encode()).hexdigest(),
                    file_size=entry.size, content_type="audio/wav", duration=0.0005,
                    status="completed", origin="watch", watch_source_id=source_id,
                    collections=[], tags=[],
                    transcript_key=f"{key.rsplit('/', 1)[0]}/transcripts/tiny-en.json",
                    transcript_model="tiny.en", created_at=now, updated_at=now))
                file_rows.append(dict(
                    watch_source_id=source_id, remote_path=entry.remote_path,
                    filename=entry.filename, file_size=entry.size,
                    file_modified_at=entry.mtime, etag=entry.etag, imohash=fp,
                    imohash_version=ALGORITHM_VERSION, media_file_id=media_id,
                    partition_key=fp, status="imported", retry_count=0, wait_scans=0,
                    created_at=now, stable_since=now, last_seen_at=now, processed_at=now))
            session.execute(sa.insert(media_table), media_rows)
            session.execute(sa.insert(file_table), file_rows)
        count += len(batch)
    return count


def rewind(catalog: Catalog) -> None:
    """Make the source due now, as ``source scan`` does."""
    with catalog.session() as session:
        session.execute(sa.update(WatchSource).values(last_scan_at=None))


def mark_imported(catalog: Catalog) -> None:
    """What the import runs would do for the files a tick requested (none is launched here)."""
    with catalog.session() as session:
        session.execute(sa.update(WatchSourceFile).where(WatchSourceFile.status == "pending")
                        .values(status="imported"))


def catalog_size(catalog: Catalog) -> list[str]:
    lines = []
    with catalog.session() as session:
        session.execute(sa.text("ANALYZE"))
        for table in Base.metadata.sorted_tables:
            rows = session.scalar(sa.select(sa.func.count()).select_from(table))
            size = session.scalar(sa.text("SELECT pg_total_relation_size(:t)"),
                                  {"t": table.name})
            if rows:
                per_row = f"; {size / rows:,.0f} B/row" if rows >= 100 else ""
                lines.append(f"    {table.name:<22} {rows:>9,} rows  {mib(size):>10} "
                             f"(table + indexes + TOAST{per_row})")
        total = session.scalar(sa.text("SELECT pg_database_size(current_database())"))
    lines.append(f"    pg_database_size(catalog): {mib(total)}")
    return lines


# ---------------------------------------------------------------------------------- sensor


def resources_for(url: str) -> dict[str, Any]:
    # The sources as the code location configures them at launch (WATCH_FOLDER_PATH, ...).
    return {"catalog": CatalogResource(url=url), "sources": launch().sources}


def run_tick(instance: dg.DagsterInstance, resources: dict[str, Any]) -> Any:
    """Evaluate the real local watch sensor against the instance, as the tests' harness does."""
    return SENSOR(dg.build_sensor_context(instance=instance, resources=resources))


class TickStandIn:
    """What the daemon's partition handler needs of its tick context: a logger and the tick."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.logger = logging.getLogger("bench.scale.tick")
        self.logger.propagate = False
        self.tick = instance.create_tick(TickData(
            instigator_origin_id="bench-scale", instigator_name=SENSOR.name,
            instigator_type=InstigatorType.SENSOR, status=TickStatus.STARTED,
            timestamp=time.time(), selector_id="bench-scale"))

    def add_dynamic_partitions_request_result(self, result: Any) -> None:
        self.tick = self.tick.with_dynamic_partitions_request_result(result)


def apply_like_daemon(instance: dg.DagsterInstance,
                      requests: list[Any]) -> tuple[float, float, int]:
    """Apply a SensorResult's partition requests with the daemon's code; write the tick row.

    Returns the handler's seconds, the tick write's seconds and the tick body's size in bytes.
    """
    stand_in = TickStandIn(instance)
    handled, _ = timed(lambda: _handle_dynamic_partitions_requests(requests, instance, stand_in))
    done = stand_in.tick.with_status(TickStatus.SUCCESS)
    written, _ = timed(lambda: instance.update_tick(done))
    return handled, written, len(serialize_value(done.tick_data))


def drop_new_files(watch: Path, start_index: int, count: int, tag: str) -> None:
    """``count`` new WAVs, an hour old, so the tick that sees them also imports them.

    (A file still being written is first recorded and imported a tick later; this is the
    costlier of those two ticks.)
    """
    folder = watch / f"new_{tag}"
    folder.mkdir()
    t = time.time() - 3600
    for j in range(count):
        path = folder / f"drop{j:03d}.wav"
        path.write_bytes(wav_bytes(start_index + j))
        os.utime(path, (t, t))


# ---------------------------------------------------------------------------------- UI


_DEFINITION = re.compile(r"\b(?:(?:query|mutation|subscription)\s+([A-Za-z_]\w*)\s*[({]"
                         r"|fragment\s+([A-Za-z_]\w*)\s+on\s+\w+\s*\{)")


def _definitions(text: str) -> Iterator[tuple[str, str]]:
    pos = 0
    while (match := _DEFINITION.search(text, pos)) is not None:
        depth, i = 0, text.index("{", match.start())
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        yield match.group(1) or match.group(2), text[match.start():i]
        pos = i


def ui_documents() -> dict[str, str]:
    """Every named GraphQL definition in the installed UI's sources (from its source maps)."""
    import dagster_webserver

    build = Path(dagster_webserver.__file__).parent / "webapp" / "build"
    found: dict[str, str] = {}
    for path in sorted(build.rglob("*.js.map")):
        for source in json.loads(path.read_text()).get("sourcesContent") or []:
            if not source or "gql`" not in source:
                continue
            for template in re.findall(r"gql`(.*?)`", source, re.S):
                # ${FRAGMENT} interpolations name definitions found elsewhere in the sources.
                found.update(_definitions(re.sub(r"\$\{[^}]*\}", " ", template)))
    return found


def ui_query(name: str, documents: dict[str, str]) -> str:
    """The query ``name`` with every fragment it spreads, as the UI sends it."""
    needed: list[str] = []
    todo = [name]
    while todo:
        current = todo.pop()
        if current in needed:
            continue
        if current not in documents:
            raise SystemExit(f"GraphQL definition {current!r} not found in the UI bundle")
        needed.append(current)
        todo.extend(f for f in re.findall(r"\.\.\.\s*([A-Za-z_]\w*)", documents[current])
                    if f != "on")
    return "\n\n".join(documents[n] for n in needed)


def http_timed(port: int, method: str, path: str,
               body: bytes | None = None) -> tuple[float, float, bytes, int]:
    """Seconds to the first response (status line and headers) and to the end of the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    try:
        start = time.perf_counter()
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        first = time.perf_counter() - start
        data = response.read()
        return first, time.perf_counter() - start, data, response.status
    finally:
        conn.close()


def graphql(port: int, name: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"operationName": name, "query": query, "variables": variables}).encode()
    first, total, data, status = http_timed(port, "POST", f"/graphql?op={name}", body)
    errors = []
    if status != 200:
        errors.append(f"HTTP {status}: {data[:300]!r}")
    else:
        payload = json.loads(data)
        errors += [e.get("message", str(e))[:300] for e in payload.get("errors") or []]
        text = json.dumps(payload.get("data"))
        errors += re.findall(r'"__typename": "(PythonError|AssetNotFoundError)"', text)
    return {"first": first, "total": total, "bytes": len(data), "errors": errors,
            "head": data[:400].decode(errors="replace")}


@contextlib.contextmanager
def webserver(env: dict[str, str], log: Path) -> Iterator[tuple[int, float]]:
    """``dagster-webserver`` on loopback for the project's workspace; yield (port, start-up s)."""
    port = free_port()
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
             "-w", str(PROJECT / "workspace.yaml")],
            cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        query = ("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                 "locationOrLoadError { __typename ... on PythonError { message } } } } } }")
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"dagster-webserver exited ({proc.returncode}):\n"
                                 f"{log.read_text()[-3000:]}")
            if time.perf_counter() - start > 300:
                raise SystemExit(f"dagster-webserver not ready in 300 s:\n"
                                 f"{log.read_text()[-3000:]}")
            try:
                _, _, data, status = http_timed(port, "POST", "/graphql",
                                                json.dumps({"query": query}).encode())
            except OSError:
                time.sleep(0.5)
                continue
            entries = (json.loads(data)["data"]["workspaceOrError"].get("locationEntries")
                       if status == 200 else None) or []
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                kinds = {e["locationOrLoadError"]["__typename"] for e in entries}
                if kinds != {"RepositoryLocation"}:
                    raise SystemExit(f"code location failed to load: {entries}")
                break
            time.sleep(0.5)
        yield port, time.perf_counter() - start
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group we created: webserver + code server
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def measure_ui(port: int, queries: dict[str, str], asset: str, partition: str,
               runs: int, verbose: bool = False) -> dict[str, dict[str, Any]]:
    """Each query (and the page GET) ``runs`` times; medians, all totals and any errors."""
    key = {"path": [asset]}
    variables = {
        "AssetViewDefinitionQuery": {"assetKey": key},
        "AssetGraphLiveQuery": {"assetKeys": [key]},
        "PartitionHealthQuery": {"assetKey": key},
        "AssetPartitionDetailQuery": {"assetKey": key, "partitionKey": partition},
        "AssetPartitionStaleQuery": {"assetKey": key, "partitionKey": partition},
    }
    results: dict[str, dict[str, Any]] = {}
    for _ in range(runs):
        for name, text in queries.items():
            r = graphql(port, name, text, variables[name])
            if verbose and name not in results:
                print(f"    {name}: {r['head']}")
            slot = results.setdefault(name, {"first": [], "total": [], "bytes": 0, "errors": []})
            slot["first"].append(r["first"])
            slot["total"].append(r["total"])
            slot["bytes"] = r["bytes"]
            slot["errors"] += r["errors"]
        first, total, data, status = http_timed(port, "GET", f"/assets/{asset}?view=partitions")
        slot = results.setdefault("GET page route", {"first": [], "total": [], "bytes": 0,
                                                      "errors": []})
        slot["first"].append(first)
        slot["total"].append(total)
        slot["bytes"] = len(data)
        if status != 200:
            slot["errors"].append(f"HTTP {status}")
    for slot in results.values():
        slot["first_median"] = statistics.median(slot["first"])
        slot["total_median"] = statistics.median(slot["total"])
    return results


# ---------------------------------------------------------------------------------- main


def instance_yaml(home: Path, dagster_url: str) -> None:
    """The project's dagster.yaml (concurrency, monitoring, retention) on PostgreSQL storage."""
    config = yaml.safe_load((PROJECT / "dagster.yaml").read_text()) or {}
    config["storage"] = {"postgres": {"postgres_url": dagster_url}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@dataclass
class Bench:
    """What the phases share: the sizes, the instance, the catalog and the findings so far."""

    args: argparse.Namespace
    instance: dg.DagsterInstance
    catalog: Catalog
    resources: dict[str, Any]
    watch: Path
    keys: list[str]
    findings: list[str] = field(default_factory=list)
    next_index: int = 0
    figures: dict[str, Any] = field(default_factory=dict)

    def tick(self) -> Any:
        return run_tick(self.instance, self.resources)

    def due_ticks(self) -> tuple[float, list[float], Any]:
        return median_of(self.tick, self.args.runs, before=lambda: rewind(self.catalog))

    def new_files_ticks(self, tag: str) -> dict[str, Any]:
        """Ticks that each find ``--new-files`` new files; their requests applied as the daemon."""
        ticks, applied, runs_asked, keys_asked = [], [], [], []
        for run in range(self.args.runs):
            drop_new_files(self.watch, self.next_index, self.args.new_files, f"{tag}{run}")
            self.next_index += self.args.new_files
            rewind(self.catalog)
            elapsed, result = timed(self.tick)
            ticks.append(elapsed)
            if not isinstance(result, dg.SensorResult):
                raise SystemExit(f"expected run requests, got {result}")
            runs_asked.append(len(result.run_requests))
            keys_asked.append(sum(len(r.partition_keys)
                                  for r in result.dynamic_partitions_requests))
            handled, written, _ = apply_like_daemon(
                self.instance, list(result.dynamic_partitions_requests))
            applied.append(handled + written)
            mark_imported(self.catalog)
        return dict(median=statistics.median(ticks), all=ticks,
                    applied=statistics.median(applied), runs=runs_asked, keys=keys_asked)


def first_tick(pg: Any, instance: dg.DagsterInstance, files: int, findings: list[str]) -> None:
    """One real tick on an empty catalog (a scratch database, dropped afterwards)."""
    scratch_url = pg.create_database("watch_catalog_first")
    scratch = CatalogResource(url=scratch_url).get()
    add_source(scratch)
    elapsed, result = timed(lambda: run_tick(instance, resources_for(scratch_url)))
    with scratch.session() as session:
        statuses = Counter(session.scalars(sa.select(WatchSourceFile.status)))
        fingerprinted = session.scalar(sa.select(sa.func.count()).where(
            WatchSourceFile.imohash.is_not(None)))
        done = session.scalar(sa.select(WatchSource.last_scan_at)) is not None
    scratch.dispose()
    pg.drop_database("watch_catalog_first")
    asked = len(result.run_requests) if isinstance(result, dg.SensorResult) else 0
    print(f"first tick on an empty catalog: {elapsed:.1f}s, recorded "
          f"{sum(statuses.values()):,} file rows, {fingerprinted:,} fingerprinted "
          f"({dict(statuses)}), scan {'finished' if done else 'unfinished (tick budget)'}, "
          f"{asked} run request(s)")
    if not done and fingerprinted:
        ticks = -(-files // fingerprinted)
        print(f"  -> {fingerprinted / TICK_BUDGET_SECONDS:,.0f} files fingerprinted per budget "
              f"second; a first scan of {files:,} files takes ~{ticks} ticks "
              f"(~{ticks * 30 / 60:.0f} min at the 30 s sensor interval)")
        findings.append(
            f"first scan of {files:,} old files: {fingerprinted:,} per tick "
            f"({TICK_BUDGET_SECONDS:.0f} s budget), so ~{ticks} ticks; by design "
            "(bounded work per tick), imports start from the first tick")


def sensor_ticks(b: Bench) -> None:
    """Part 1: ticks with every file known, then with a few new ones."""
    args = b.args
    walk, walk_all, walked = median_of(lambda: scandir_walk(str(b.watch)), args.runs)
    due, due_all, due_result = b.due_ticks()
    idle, idle_all, idle_result = median_of(b.tick, args.runs)
    print(f"baseline os.scandir walk + stat ({walked:,} files), median of {args.runs}: "
          f"{walk:6.2f}s  ({fmt_times(walk_all)})")
    print(f"tick, source not due (most ticks), median:       {idle:6.2f}s  "
          f"({fmt_times(idle_all)}): {getattr(idle_result, 'skip_message', idle_result)}")
    print(f"tick, source due, nothing changed, median:       {due:6.2f}s  "
          f"({fmt_times(due_all)}): {getattr(due_result, 'skip_message', due_result)}")
    print(f"ratio due tick / scandir walk: {due / walk:.1f}x; headroom: "
          f"{TICK_BUDGET_SECONDS:.0f} s tick budget, {SENSOR_TIMEOUT_SECONDS} s daemon timeout")
    b.findings.append(f"a due tick over {args.files:,} unchanged files: {due:.1f}s of the "
                      f"{TICK_BUDGET_SECONDS:.0f} s tick budget"
                      + (" (over half: LIMIT)" if due > TICK_BUDGET_SECONDS / 2 else ""))
    new = b.new_files_ticks("a")
    print(f"tick, source due, {args.new_files} new files, "
          f"{args.baseline_partitions:,} partitions, median: {new['median']:6.2f}s  "
          f"({fmt_times(new['all'])}); run requests {new['runs']}, "
          f"new keys {new['keys']}; partition request applied as the daemon does "
          f"in {new['applied']:.2f}s")
    b.figures.update(due=due, new_small=new["median"])
    print("catalog size after seeding and these ticks:")
    for line in catalog_size(b.catalog):
        print(line)


def one_tick_partitions(b: Bench, bound: int) -> None:
    """Part 2: one tick's request of ``--tick-partitions`` keys, applied as the daemon does."""
    args, instance = b.args, b.instance
    print(f"\n== 2. {args.tick_partitions:,} new media partitions in one tick")
    tick_keys = b.keys[args.baseline_partitions:args.baseline_partitions + args.tick_partitions]
    handled, written, body = apply_like_daemon(instance, [media.build_add_request(tick_keys)])
    print(f"daemon path (one has_dynamic_partition query per key, then one INSERT): "
          f"{handled:.2f}s; tick row written in {written:.2f}s "
          f"(tick body {body / 1024:,.0f} KiB: every added key is kept on the tick)")
    per_key, _, _ = median_of(
        lambda: instance.has_dynamic_partition(media.name, tick_keys[-1]), 20)
    get_mid, get_mid_all, got = median_of(
        lambda: instance.get_dynamic_partitions(media.name), args.runs)
    print(f"has_dynamic_partition median of 20: {per_key * 1000:.1f} ms (two new "
          f"connections each, NullPool: a table check, then the lookup) -> "
          f"{per_key * args.tick_partitions:.1f}s for {args.tick_partitions:,} keys")
    print(f"get_dynamic_partitions(media) with {len(got):,} keys, median: "
          f"{get_mid:.3f}s ({fmt_times(get_mid_all)})")
    b.figures.update(handled=handled, get_mid=get_mid, mid_count=len(got))
    b.findings.append(
        ("LIMIT: " if handled > SENSOR_TIMEOUT_SECONDS else "")
        + f"{args.tick_partitions:,} keys in one tick cost the sensor daemon "
        f"{handled:.0f}s: one has_dynamic_partition per key "
        f"({per_key * 1000:.0f} ms, two fresh connections) before one INSERT; the "
        f"tick row keeps every key ({body / 1024:,.0f} KiB). Mitigation (in place): "
        f"our sensor requests <= {bound} keys per tick (max_concurrent_imports x "
        f"BATCH_MAX), ~{bound * per_key:.0f}s of checks, so a burst is batched "
        "over ticks; do not raise that bound far")


def fill_partitions(b: Bench) -> int:
    """Add the remaining keys in batches, timing each; return the partition count."""
    args, instance = b.args, b.instance
    print(f"\n== 3b. filling media to {args.partitions:,} partitions with "
          f"add_dynamic_partitions in batches of {args.batch:,}")
    count, plain = b.figures["mid_count"], None
    for batch in chunks(b.keys[args.baseline_partitions + args.tick_partitions:], args.batch):
        elapsed, _ = timed(lambda b=batch: instance.add_dynamic_partitions(media.name, b))
        count += len(batch)
        print(f"  add_dynamic_partitions({len(batch):,} keys) -> {count:,}: {elapsed:.2f}s")
        if plain is None:
            plain = elapsed * args.tick_partitions / len(batch)
    if plain:
        print(f"baseline for 2 (first batch, one INSERT ... ON CONFLICT DO NOTHING, "
              f"scaled to {args.tick_partitions:,} keys): {plain:.2f}s; ratio daemon "
              f"path / plain add: {b.figures['handled'] / plain:.0f}x")
    get_mid = b.figures["get_mid"]
    get_big, get_big_all, got = median_of(
        lambda: instance.get_dynamic_partitions(media.name), args.runs)
    has_big, _, _ = median_of(lambda: instance.has_dynamic_partition(media.name, got[-1]), 20)
    print(f"get_dynamic_partitions(media) with {len(got):,} keys, median: "
          f"{get_big:.3f}s ({fmt_times(get_big_all)}; "
          f"{get_big / max(get_mid, 1e-9):.1f}x the {b.figures['mid_count']:,}-key figure)"
          f"; has_dynamic_partition median {has_big * 1000:.1f} ms")
    b.figures["get_big"] = get_big
    return len(got)


def ui_growth(b: Bench, small: dict[str, dict[str, Any]], big: dict[str, dict[str, Any]],
              total: int) -> None:
    slowest = max((n for n in big if n in UI_QUERIES), key=lambda n: big[n]["total_median"])
    worst = big[slowest]
    growth = worst["total_median"] / small[slowest]["total_median"]
    timeout = WEBSERVER_STATEMENT_TIMEOUT_MS / 1000
    b.findings.append(
        f"partitions page at {total:,} partitions: slowest query {slowest} "
        f"{worst['total_median']:.1f}s ({growth:.0f}x the "
        f"{b.args.baseline_partitions:,}-partition figure), PartitionHealthQuery body "
        f"{mib(big['PartitionHealthQuery']['bytes'])} (every key); "
        f"{'over' if worst['total_median'] > timeout else 'well under'} the webserver's "
        f"{timeout:.0f} s statement timeout. Mitigation if it grows: retention (delete the "
        "partitions of purged media)")
    for name, slot in big.items():
        if slot["errors"]:
            b.findings.append(f"LIMIT: {name} with {total:,} partitions failed: "
                              f"{sorted(set(slot['errors']))[:3]}")


def ticks_again(b: Bench, total: int) -> None:
    """Part 1 again with every partition in place (the sensor reads them all)."""
    args, f = b.args, b.figures
    print(f"\n== 1b. the ticks again with {total:,} media partitions")
    due_big, due_big_all, _ = b.due_ticks()
    new = b.new_files_ticks("b")
    print(f"tick, source due, nothing changed, median: {due_big:6.2f}s  "
          f"({fmt_times(due_big_all)}); {due_big / f['due']:.2f}x the figure in 1 (reads no "
          f"partition: this ratio is the machine's drift)")
    print(f"tick, source due, {args.new_files} new files, median: "
          f"{new['median']:6.2f}s  ({fmt_times(new['all'])}); "
          f"{new['median'] / f['new_small']:.2f}x the figure with "
          f"{args.baseline_partitions:,} partitions; over the no-change tick: "
          f"{new['median'] - due_big:+.2f}s (was {f['new_small'] - f['due']:+.2f}s); "
          f"get_dynamic_partitions alone {f['get_big']:.2f}s")
    b.findings.append(
        f"each tick that requests runs reads all {total:,} media keys "
        f"(get_dynamic_partitions {f['get_big']:.2f}s, "
        f"{f['get_big'] / max(f['get_mid'], 1e-9):.0f}x at {total / f['mid_count']:.0f}x the "
        f"keys); a {args.new_files}-new-file tick costs {new['median'] - due_big:+.2f}s over a "
        "no-change tick. Mitigation: check only the claimed keys (has_dynamic_partition, "
        "<= 125 per tick)")


def dagster_db_size(instance: dg.DagsterInstance) -> str:
    with instance.event_log_storage.index_connection() as conn:
        sizes = conn.execute(sa.text(
            "SELECT pg_total_relation_size('dynamic_partitions'), "
            "pg_total_relation_size('job_ticks'), pg_database_size(current_database())")).one()
    return (f"Dagster database: dynamic_partitions {mib(sizes[0])}, job_ticks {mib(sizes[1])}, "
            f"pg_database_size {mib(sizes[2])}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000, help="known files in the source")
    parser.add_argument("--dirs", type=int, default=100, help="folders they are spread over")
    parser.add_argument("--new-files", type=int, default=10, help="files new in the change tick")
    parser.add_argument("--tick-partitions", type=int, default=10_000,
                        help="partitions added by one tick's request")
    parser.add_argument("--partitions", type=int, default=100_000,
                        help="media partitions for the UI measurement")
    parser.add_argument("--baseline-partitions", type=int, default=1_000,
                        help="media partitions for the UI baseline")
    parser.add_argument("--batch", type=int, default=10_000,
                        help="keys per add_dynamic_partitions call when filling")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--asset", default="raw_file", help="asset whose partitions page is read")
    parser.add_argument("--no-first-tick", action="store_true",
                        help="skip the first-scan tick on an empty catalog")
    parser.add_argument("--verbose", action="store_true",
                        help="show the start of each GraphQL response")
    parser.add_argument("--dir", default=None, help="parent of the temp dir (default: $TMPDIR)")
    args = parser.parse_args()
    if args.baseline_partitions + args.tick_partitions > args.partitions:
        parser.error("--baseline-partitions + --tick-partitions must not exceed --partitions")
    return args


def main() -> None:
    args = parse_args()
    began = time.perf_counter()
    print(f"{load_note()}; figures are wall time on a machine that may be shared")
    queries = {name: ui_query(name, ui_documents()) for name in UI_QUERIES}

    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=args.dir))
    home, watch = tmp / "dagster_home", tmp / "watch"
    home.mkdir()
    watch.mkdir()
    instance = None
    try:
        with postgres_server() as pg:
            print(f"\n== set-up\nPostgreSQL: {pg.bin_dir.parent.name} on "
                  f"{pg.host}:{pg.port} (throwaway cluster, fsync off)")
            dagster_url = pg.create_database("dagster").replace("+psycopg2", "")
            catalog_url = pg.create_database("watch_catalog")
            instance_yaml(home, dagster_url)
            env_vars = dict(DAGSTER_HOME=str(home), WATCH_CATALOG_URL=catalog_url,
                            WATCH_FOLDER_PATH=str(watch), WATCH_TEMP_DIR=str(tmp / "scratch"))
            os.environ.update(env_vars)
            os.environ.pop("WATCH_SECRET_KEY", None)
            instance = dg.DagsterInstance.get()
            print(f"Dagster instance: {type(instance.event_log_storage).__name__}, "
                  f"{type(instance.run_storage).__name__}, "
                  f"{type(instance.schedule_storage).__name__} (DAGSTER_HOME={home})")

            elapsed, fingerprints = timed(lambda: make_tree(watch, args.files, args.dirs))
            age_tree(watch)
            print(f"created {args.files:,} files ({len(wav_bytes(0))} B each) in {args.dirs} "
                  f"folders in {elapsed:.1f}s, mtime one hour ago")
            keys = list(dict.fromkeys(fingerprints.values()))
            while len(keys) < args.partitions:  # more partitions than files: synthetic keys
                keys.append(hashlib.md5(f"extra-{len(keys)}".encode()).hexdigest())

            print(f"\n== 1. watch sensor ticks, {args.files:,} known files in one local source")
            findings: list[str] = []
            if not args.no_first_tick:
                first_tick(pg, instance, args.files, findings)
            catalog = CatalogResource(url=catalog_url).get()
            source_id = add_source(catalog)
            start = time.perf_counter()
            rows = seed_imported(catalog, source_id, LocalSourceClient(watch), fingerprints)
            elapsed = time.perf_counter() - start
            del fingerprints  # the keys list is all that is needed from here on
            print(f"seeded {rows:,} imported file rows + {rows:,} completed media rows by bulk "
                  f"insert in {elapsed:.1f}s")
            with catalog.session() as session:
                settings = WatchSettings.load(session)
            bound = settings.max_concurrent_imports * BATCH_MAX
            print(f"settings: file_stability_seconds={settings.file_stability_seconds}, "
                  f"max_concurrent_imports={settings.max_concurrent_imports} (defaults); "
                  f"a tick claims at most {bound} partitions (slots x BATCH_MAX={BATCH_MAX})")
            elapsed, _ = timed(lambda: instance.add_dynamic_partitions(
                media.name, keys[:args.baseline_partitions]))
            print(f"added the first {args.baseline_partitions:,} media partitions "
                  f"in {elapsed:.2f}s")

            b = Bench(args=args, instance=instance, catalog=catalog,
                      resources=resources_for(catalog_url), watch=watch,
                      keys=keys[:args.partitions], findings=findings, next_index=args.files)
            sensor_ticks(b)

            with webserver({**os.environ, **env_vars}, tmp / "webserver.log") as (port, up):
                partitions = instance.get_dynamic_partitions(media.name)
                print(f"\n== 3a. UI baseline: dagster-webserver up in {up:.1f}s; "
                      f"{len(partitions):,} media partitions")
                ui_small = measure_ui(port, queries, args.asset, partitions[-1], args.runs,
                                      args.verbose)
                print_ui(ui_small, None, len(partitions))

                one_tick_partitions(b, bound)
                total = fill_partitions(b)
                newest = instance.get_dynamic_partitions(media.name)[-1]
                ui_big = measure_ui(port, queries, args.asset, newest, args.runs, args.verbose)
                print(f"UI with {total:,} media partitions (ratios against the "
                      f"{args.baseline_partitions:,}-partition figures of 3a):")
                print_ui(ui_big, ui_small, total)
                ui_growth(b, ui_small, ui_big, total)

            ticks_again(b, total)
            print("\ncatalog size at the end:")
            for line in catalog_size(catalog):
                print(line)
            print(dagster_db_size(instance))
            print("\n== limits reached (LIMIT) and findings")
            for line in b.findings:
                print(f"  - {line}")
            catalog.dispose()
    finally:
        if instance is not None:
            instance.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntotal benchmark wall time: {time.perf_counter() - began:.0f}s")


def print_ui(results: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]] | None,
             partitions: int) -> None:
    header = f"  {'request':<27} {'first byte':>10} {'total':>8} {'body':>10}"
    print(header + ("   ratio vs baseline (total)" if baseline else ""))
    for name, slot in results.items():
        line = (f"  {name:<27} {slot['first_median']:9.3f}s {slot['total_median']:7.3f}s "
                f"{slot['bytes'] / 1024:8,.0f}KiB")
        if baseline:
            line += f"   {slot['total_median'] / baseline[name]['total_median']:6.1f}x"
        line += f"   (totals {fmt_times(slot['total'])})"
        if slot["errors"]:
            line += f"  ERRORS: {sorted(set(slot['errors']))[:2]}"
        print(line)
    print(f"  (medians of {len(next(iter(results.values()))['total'])} runs at "
          f"{partitions:,} partitions)")


if __name__ == "__main__":
    main()
