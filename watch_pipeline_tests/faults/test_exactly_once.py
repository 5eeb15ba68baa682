"""Two runs of one partition at once import it once: the database enforces it.

``media_file.partition_key`` is unique and ``begin_import`` locks the partition's rows
(``BEGIN IMMEDIATE`` on SQLite, ``SELECT … FOR UPDATE`` on PostgreSQL), so of two runs starting
together one takes the partition and the other, seeing it held by a live run, fails clearly
without touching it. Shown with threads on SQLite and PostgreSQL, and with two ``dagster asset
materialize`` processes against PostgreSQL. Overlap is forced with gates (the holder's download
waits until the other run has given up), never with sleeps.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import (
    FileStatus,
    MediaFile,
    MediaStatus,
    WatchSource,
    WatchSourceFile,
)
from watch_pipeline.pipeline import claims, steps
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION, imohash_fileobj
from watch_pipeline_tests.fakes import FakeObjectStore, FakeSource, tone_wav

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOG = logging.getLogger("test_exactly_once")
WAIT_SECONDS = 300  # a safety net against a hang, not an assertion on speed


def _seed(catalog: Catalog, data: bytes, *, source_type: str = "s3",
          local_path: str | None = None) -> str:
    """One source and one pending, fingerprinted file ``both.wav``; returns the partition."""
    key = imohash_fileobj(io.BytesIO(data))
    with catalog.session() as s:
        source = WatchSource(name="drop", source_type=source_type, s3_bucket_name="b",
                             local_path=local_path, auto_transcribe=False)
        s.add(source)
        s.flush()
        s.add(WatchSourceFile(watch_source_id=source.id, remote_path="both.wav",
                              filename="both.wav", file_size=len(data), imohash=key,
                              imohash_version=ALGORITHM_VERSION, partition_key=key,
                              status=FileStatus.PENDING))
    return key


def _outcome(catalog: Catalog) -> tuple[list[MediaFile], WatchSourceFile, WatchSource]:
    with catalog.session() as s:
        return (list(s.scalars(sa.select(MediaFile))), s.scalar(sa.select(WatchSourceFile)),
                s.scalar(sa.select(WatchSource)))


class GatedSource(FakeSource):
    """A fake source whose downloads wait for :attr:`go` after announcing :attr:`holding`."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self.holding = threading.Event()
        self.go = threading.Event()

    def download(self, remote_path: str, dest: Path, *, expected_size: int | None = None) -> Path:
        self.holding.set()
        assert self.go.wait(WAIT_SECONDS), "the test never opened the gate"
        return super().download(remote_path, dest, expected_size=expected_size)


def test_two_threads_importing_one_partition_import_it_once(any_catalog, tmp_path):
    data = tone_wav(523)
    key = _seed(any_catalog, data)
    source, store = GatedSource({"both.wav": data}), FakeObjectStore()
    access = steps.SourceAccess(client_for=lambda _row: source, scratch=tmp_path / "scratch")
    running: set[str] = set()
    outcomes: dict[str, object] = {}
    start = threading.Barrier(2)

    def run(run_id: str) -> None:
        def ctx(step: str) -> steps.StepContext:
            return steps.StepContext(key, step, LOG, run_id=run_id,
                                     is_live=lambda other: other in running)

        start.wait()
        try:
            steps.fetch_raw_file(ctx(steps.RAW_FILE), any_catalog, access)
            steps.stitch_media(ctx(steps.STITCHED_MEDIA), any_catalog, access)
            outcomes[run_id] = steps.store_media(ctx(steps.MEDIA_OBJECT), any_catalog, access,
                                                 store)
        except steps.StepFailed as exc:
            outcomes[run_id] = exc
        finally:
            running.discard(run_id)

    running.update({"run-1", "run-2"})
    threads = {r: threading.Thread(target=run, args=(r,)) for r in ("run-1", "run-2")}
    for thread in threads.values():
        thread.start()
    try:
        assert source.holding.wait(WAIT_SECONDS)  # one run is importing, holding the partition
        deadline = time.monotonic() + 60  # a safety net: the other one gives up at once
        while len(outcomes) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(outcomes) == 1, "the second run did not give up while the first held it"
        # The failure path of the refused run (import_failure_sensor) leaves the holder's rows.
        (loser,) = outcomes
        assert claims.fail(any_catalog, key, f"run {loser} failed", run_id=loser) == 0
        row = _outcome(any_catalog)[1]
        assert row.status in (FileStatus.IMPORTING, FileStatus.DOWNLOADING)
        assert row.import_run_id != loser and row.error_message is None
    finally:
        source.go.set()
        for thread in threads.values():
            thread.join(WAIT_SECONDS)

    failed = {r: o for r, o in outcomes.items() if isinstance(o, steps.StepFailed)}
    stored = {r: o for r, o in outcomes.items() if isinstance(o, steps.MediaObject)}
    assert len(failed) == 1 and len(stored) == 1, outcomes
    (winner,), (loser,) = stored, failed
    assert f"being imported by run {winner}" in str(failed[loser])
    media, row, src = _outcome(any_catalog)
    assert [(m.partition_key, m.status) for m in media] == [(key, MediaStatus.COMPLETED)]
    assert list(store.objects) == [stored[winner].object_key]
    assert store.objects[stored[winner].object_key] == data
    assert (row.status, row.import_run_id, row.error_message) == (
        FileStatus.IMPORTED, winner, None)
    assert src.total_files_imported == 1 and source.downloads == ["both.wav"]


def test_runs_taking_a_partition_at_once_let_exactly_one_in(any_catalog):
    key = _seed(any_catalog, tone_wav(587))
    start = threading.Barrier(4)
    results: dict[str, object] = {}

    def take(holder: str) -> None:
        start.wait()
        try:
            results[holder] = queries.begin_import(any_catalog, key, holder=holder)
        except queries.PartitionBusy as exc:
            results[holder] = exc

    threads = [threading.Thread(target=take, args=(f"run-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    taken = [h for h, r in results.items() if isinstance(r, queries.ImportItem)]
    assert len(results) == 4 and len(taken) == 1, results
    assert _outcome(any_catalog)[1].import_run_id == taken[0]


def test_media_rows_created_at_once_are_one_row(any_catalog):
    key = _seed(any_catalog, tone_wav(659))
    item = queries.begin_import(any_catalog, key, holder="run-1")
    start = threading.Barrier(4)
    ids: list[int] = []

    def create() -> None:
        start.wait()
        ids.append(queries.ensure_media(any_catalog, item, content_type="audio/wav",
                                        duration=1.0, file_size=10,
                                        imohash_version=ALGORITHM_VERSION).id)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    media = _outcome(any_catalog)[0]
    assert len(ids) == 4 and set(ids) == {media[0].id} and len(media) == 1


@pytest.mark.slow
def test_two_dagster_processes_import_one_partition_once(postgres_url, dagster_home, tmp_path):
    watch, gate, objects = tmp_path / "watch", tmp_path / "gate", tmp_path / "objects"
    (watch / "in").mkdir(parents=True)
    gate.mkdir()
    data = tone_wav(698, seconds=2.0)
    (watch / "in" / "both.wav").write_bytes(data)
    catalog = Catalog(postgres_url)
    key = _seed(catalog, data, source_type="local", local_path="in")
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("media", [key])
    env = {**os.environ, "WATCH_CATALOG_URL": postgres_url, "WATCH_FOLDER_PATH": str(watch),
           "WATCH_TEMP_DIR": str(tmp_path / "scratch"), "EXACTLY_ONCE_GATE": str(gate),
           "EXACTLY_ONCE_OBJECTS": str(objects), "DAGSTER_HOME": dagster_home}
    command = [str(BIN / "dagster"), "asset", "materialize", "-m",
               "watch_pipeline_tests.faults.exactly_once_location",
               "--select", "raw_file,stitched_media,media_object", "--partition", key]
    logs = [tmp_path / f"run-{i}.log" for i in range(2)]
    procs = []
    for log in logs:
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True))
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        # The holder waits at the gate, so the first process to end is the one that gave up.
        while all(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                pytest.fail("neither process ended:\n" + "\n".join(
                    log.read_text()[-3000:] for log in logs))
            time.sleep(0.2)
        (loser,) = [i for i, p in enumerate(procs) if p.poll() is not None]
        assert len(list(gate.glob("holding-*"))) == 1  # the other one is mid-import
        (gate / "go").write_text("")
        codes = [p.wait(WAIT_SECONDS) for p in procs]
    finally:
        (gate / "go").write_text("")
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    output = [log.read_text() for log in logs]
    assert codes[loser] != 0 and codes[1 - loser] == 0, output
    assert "is being imported by run" in output[loser]
    media, row, source = _outcome(catalog)
    assert [(m.partition_key, m.status, m.object_key) for m in media] == [
        (key, MediaStatus.COMPLETED, "user_1/file_1/both.wav")]
    stored = [p.relative_to(objects).as_posix() for p in objects.rglob("*") if p.is_file()]
    assert stored == ["user_1/file_1/both.wav"]
    assert (objects / stored[0]).read_bytes() == data
    assert row.status == FileStatus.IMPORTED and source.total_files_imported == 1
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert sorted(r.status.value for r in runs) == ["FAILURE", "SUCCESS"]
        assert row.import_run_id == next(r.run_id for r in runs
                                         if r.status == dg.DagsterRunStatus.SUCCESS)
    catalog.dispose()
