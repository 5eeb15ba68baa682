"""Remote servers that go away: moto's S3 server killed mid-download, ``smbd`` stopped mid-scan
and mid-download, each started again on the same port.

Through the real watch sensors and import steps in-process, beside a local source and a healthy
remote source of the same kind: the source whose server died records the error (on its row for
a scan, on the file's row for a download), the other sources keep importing in the same ticks,
and once the server is back the interrupted download continues from its ``.part`` file instead
of starting over, and the stored object is byte for byte the original.

Evidence that a download resumed: an open descriptor on the ``.part`` file left by the failed
attempt. A resumed download writes on into that very file and renames it, so the descriptor ends up
on the whole recording; a download that starts over unlinks it and the descriptor keeps only the
bytes of the first attempt. For S3, moto's recorder also shows the ``Range`` of the GETs after
the restart.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.keys import active_box
from watch_pipeline.catalog.models import WatchSource, WatchSourceFile
from watch_pipeline.catalog.secrets import KeyConfig
from watch_pipeline.catalog.settings import set_setting
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.defs.sensors import build_watch_sensor
from watch_pipeline.sources import s3
from watch_pipeline_tests.defs.harness import (
    add_source,
    age,
    media_rows,
    rewind_scans,
    run_request,
)
from watch_pipeline_tests.fixtures.s3_server import S3Server

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
BIG_MIB = 96  # big enough that a kill after a few MiB lands mid-download on any machine
KILL_AFTER = 6 * MIB  # the .part size at which the server is taken away
WAIT_S = 120.0  # generous: a loaded 2-core machine
log = logging.getLogger(__name__)
SENSORS = {kind: build_watch_sensor(kind) for kind in ("local", "s3", "smb")}


# -- drivers ---------------------------------------------------------------------------------


def tick(env, kind: str) -> list[dg.RunRequest]:
    """One tick of the ``kind`` watch sensor; its partitions are added as the daemon would."""
    ctx = dg.build_sensor_context(instance=env["instance"], resources=env["resources"])
    result = SENSORS[kind](ctx)
    if isinstance(result, dg.SkipReason):
        return []
    for req in result.dynamic_partitions_requests:
        env["instance"].add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return list(result.run_requests)


def ticks_until_requested(env, kind: str, tries: int = 3) -> list[dg.RunRequest]:
    """Tick (each time as if the polling interval had passed) until imports are requested."""
    for _ in range(tries):
        rewind_scans(env)
        requests = tick(env, kind)
        if requests:
            return requests
    return []


def run_all(env, requests: list[dg.RunRequest]) -> list[bool]:
    return [run_request(env, r).success for r in requests]


def add(env, secret: str, **fields) -> int:
    box = active_box(KeyConfig.from_environ(os.environ))[0]
    with env["catalog"].session() as s:
        return create_source(s, box, fields=fields, secret=secret).id


def s3_source(env, name: str, endpoint_url: str, bucket: str) -> int:
    return add(env, "testing", name=name, source_type="s3", s3_bucket_name=bucket,
               s3_endpoint_url=endpoint_url, s3_region="us-east-1", s3_access_key_id="testing",
               s3_use_ssl=False, auto_transcribe=False)


def smb_source(env, name: str, smb, path: str) -> int:
    return add(env, smb.password, name=name, source_type="smb", smb_server=smb.host,
               smb_share=smb.share, smb_port=smb.port, smb_username=smb.username,
               smb_domain=smb.domain, smb_path=path, auto_transcribe=False)


def source_row(env, name: str) -> WatchSource:
    with env["catalog"].session() as s:
        return s.scalar(sa.select(WatchSource).where(WatchSource.name == name))


def file_row(env, source: str, path: str) -> WatchSourceFile:
    with env["catalog"].session() as s:
        return s.scalar(sa.select(WatchSourceFile).join(WatchSource).where(
            WatchSource.name == source, WatchSourceFile.remote_path == path))


def file_rows(env, source: str) -> list[WatchSourceFile]:
    with env["catalog"].session() as s:
        return list(s.scalars(sa.select(WatchSourceFile).join(WatchSource).where(
            WatchSource.name == source)))


def skip_backoff(env) -> None:
    """Let every ``error`` row be retried now instead of after its backoff."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    with env["catalog"].session() as s:
        s.execute(sa.update(WatchSourceFile).where(WatchSourceFile.status == "error")
                  .values(next_retry_at=past))


def imported(env, source: str) -> set[str]:
    return {r.remote_path for r in file_rows(env, source) if r.status == "imported"}


def stored_object(env, filename: str) -> Path:
    (media,) = [m for m in media_rows(env) if m.filename == filename]
    assert media.status == "completed", media.error_message
    return env["home"] / "object_store" / media.object_key


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def fd_sha256(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, MIB, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


# -- media -----------------------------------------------------------------------------------


def wav_header(data_bytes: int, rate: int = 48_000) -> bytes:
    """A 16-bit mono PCM WAV header announcing ``data_bytes`` of samples."""
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


def big_wav(path: Path, mib: int = BIG_MIB) -> Path:
    """``mib`` MiB of random samples behind a valid header (noise, but a real recording)."""
    data = mib * MIB - 44
    with open(path, "wb") as fh:
        fh.write(wav_header(data))
        for _ in range(mib):
            fh.write(os.urandom(MIB))
        fh.truncate(mib * MIB)
    return path


def small_wav(path: Path, samples: int = 800) -> Path:
    """A short WAV of random samples: every call makes new content."""
    path.write_bytes(wav_header(samples * 2) + os.urandom(samples * 2))
    return path


def tone(path: Path, freq: int) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration=1", str(path)], check=True)
    return path


def drop_local(env, name: str, freq: int) -> None:
    """A new recording in the local source's folder, old enough to be stable."""
    path = tone(env["watch"] / "local" / name, freq)
    age(path)


# -- taking a server away at the right moment ------------------------------------------------


@dataclass
class Trigger:
    """What the watcher saw when it acted."""

    fired: bool = False
    observed: int = 0
    error: BaseException | None = None


@contextmanager
def when(probe: Callable[[], int], threshold: int, action: Callable[[], None]
         ) -> Iterator[Trigger]:
    """Run ``action`` from a thread as soon as ``probe()`` reaches ``threshold``.

    The caller's block runs meanwhile (the import or the scan the action interrupts); on leaving
    it the watcher is stopped and joined.
    """
    trigger = Trigger()
    stop = threading.Event()

    def watch() -> None:
        try:
            deadline = time.monotonic() + WAIT_S
            while not stop.is_set() and time.monotonic() < deadline:
                seen = probe()
                if seen >= threshold:
                    trigger.observed = seen
                    action()
                    trigger.fired = True
                    return
                time.sleep(0.002)
        except BaseException as exc:  # reported by the test, not lost in the thread
            trigger.error = exc

    thread = threading.Thread(target=watch, name="take-server-away", daemon=True)
    thread.start()
    try:
        yield trigger
    finally:
        stop.set()
        thread.join(WAIT_S)
    if trigger.error is not None:
        raise trigger.error


def part_size(scratch: Path, filename: str) -> Callable[[], int]:
    """The size of the download's ``.part`` file below ``scratch`` (0 while there is none)."""

    def size() -> int:
        for part in scratch.rglob(filename + ".part"):
            try:
                return part.stat().st_size
            except FileNotFoundError:
                return 0
        return 0

    return size


def range_bytes(header: str, size: int) -> int:
    """How many bytes a ``Range: bytes=a-b`` (or ``a-``, or none) asks for."""
    if not header:
        return size
    first, _, last = header.removeprefix("bytes=").partition("-")
    return (int(last) if last else size - 1) - int(first) + 1


def s3_kept(scratch: Path, filename: str) -> Callable[[], int]:
    """Bytes of the S3 download below ``scratch`` known complete (its ``.part`` is preallocated)."""

    def kept() -> int:
        for part in scratch.rglob(filename + ".part"):
            return s3.kept_bytes(part.with_name(filename))
        return 0

    return kept


def range_span(header: str, size: int) -> tuple[int, int]:
    """The bytes ``[first, end)`` a ``Range: bytes=a-b`` (or ``a-``) asks for."""
    first, _, last = header.removeprefix("bytes=").partition("-")
    return int(first), int(last) + 1 if last else size


def the_part(scratch: Path, filename: str) -> Path:
    (part,) = scratch.rglob(filename + ".part")
    return part


# -- S3 --------------------------------------------------------------------------------------


def test_s3_server_killed_mid_download_resumes_after_restart(env, s3_server, s3_bucket,
                                                              moto_server, tmp_path,
                                                              record_property, monkeypatch):
    # Loopback moto serves one stream at GB/s: the download could end before the kill lands.
    # A short pause per 256 KiB chunk (~50 MB/s) keeps it mid-way when the server goes away.
    read_into = s3._read_into
    monkeypatch.setattr(s3, "_read_into", lambda *a: time.sleep(0.005) or read_into(*a))
    with env["catalog"].session() as s:
        set_setting(s, "watch.file_stability_seconds", 0)
    scratch = tmp_path / "scratch"
    big = big_wav(tmp_path / "big.wav")
    big_sha = sha256(big)
    flaky = moto_server.endpoint_url
    client = s3_server.client()
    own = S3Server(endpoint_url=flaky).client()
    own.create_bucket(Bucket="flaky")
    etag = own.put_object(Bucket="flaky", Key="big.wav", Body=big.read_bytes())["ETag"]
    client.upload_file(str(tone(tmp_path / "h1.wav", 310)), s3_bucket, "h1.wav")
    add_source(env, name="local", path="local", auto_transcribe=False)
    drop_local(env, "l1.wav", 410)
    s3_source(env, "flaky", flaky, "flaky")
    s3_source(env, "healthy", s3_server.endpoint_url, s3_bucket)

    requests = tick(env, "s3")
    assert sorted(r.tags["watch_pipeline/source"] for r in requests) == ["flaky", "healthy"]
    (big_request,) = [r for r in requests if r.tags["watch_pipeline/source"] == "flaky"]
    with when(s3_kept(scratch, "big.wav"), KILL_AFTER, moto_server.kill) as killed:
        assert not run_request(env, big_request).success
    assert killed.fired, "the download finished before the server could be killed"
    monkeypatch.setattr(s3, "_read_into", read_into)  # the resume runs at full speed

    # The failed download is recorded on the file's row; its partial file stays for the retry.
    row = file_row(env, "flaky", "big.wav")
    assert row.status == "error" and row.retry_count == 1
    assert row.error_message.startswith("raw_file: cannot reach S3 endpoint " + flaky)
    part = the_part(scratch, "big.wav")
    kept = part.stat().st_size
    assert KILL_AFTER <= kept < big.stat().st_size
    part_fd = os.open(part, os.O_RDONLY)
    try:
        # While the server is down: the other S3 source and the local source import, in the
        # same ticks in which the dead server's source records its error.
        assert run_all(env, [r for r in requests if r is not big_request]) == [True]
        assert run_all(env, tick(env, "local")) == [True]
        client.upload_file(str(tone(tmp_path / "h2.wav", 320)), s3_bucket, "h2.wav")
        drop_local(env, "l2.wav", 420)
        rewind_scans(env)
        during = tick(env, "s3")
        flaky_row = source_row(env, "flaky")
        assert flaky_row.last_scan_status == "error"
        assert "cannot reach" in flaky_row.last_scan_message
        assert flaky_row.consecutive_scan_failures == 1
        assert source_row(env, "healthy").last_scan_status == "success"
        assert [r.tags["watch_pipeline/source"] for r in during] == ["healthy"]
        assert run_all(env, during + tick(env, "local")) == [True, True]
        assert imported(env, "healthy") == {"h1.wav", "h2.wav"}
        assert imported(env, "local") == {"l1.wav", "l2.wav"}

        # The server comes back on the same port, empty: the same bytes are uploaded again.
        moto_server.start()
        own.create_bucket(Bucket="flaky")
        assert own.put_object(Bucket="flaky", Key="big.wav", Body=big.read_bytes())["ETag"] \
            == etag
        moto_server.start_recording()
        skip_backoff(env)
        rewind_scans(env)
        # moto lost the object's LastModified: the listing shows a new version, which waits
        # for a second listing to agree before it is fingerprinted again (same content).
        after = ticks_until_requested(env, "s3")
        assert [r.tags["watch_pipeline/source"] for r in after] == ["flaky"]
        assert run_all(env, after) == [True]
        resumed_size = os.fstat(part_fd).st_size
        resumed_sha = fd_sha256(part_fd)
    finally:
        os.close(part_fd)

    flaky_row = source_row(env, "flaky")
    assert (flaky_row.last_scan_status, flaky_row.consecutive_scan_failures) == ("success", 0)
    assert file_row(env, "flaky", "big.wav").status == "imported"
    assert sha256(stored_object(env, "big.wav")) == big_sha
    # The kept partial file was continued, not replaced: it grew into the whole recording ...
    assert (resumed_size, resumed_sha) == (big.stat().st_size, big_sha)
    # ... and after the restart the download asked only for the missing bytes (the other GETs
    # are the scan's small fingerprint windows).
    gets = [r["headers"] for r in moto_server.recorded_requests()
            if r["method"] == "GET" and "/flaky/big.wav" in r["url"]]
    ranges = [h.get("Range", "") for h in gets]
    size = big.stat().st_size
    # The download's ranged GETs (the rest are 16 KiB fingerprint windows) ask for each byte
    # after the kept ones exactly once.
    download = [h for h in gets if range_bytes(h.get("Range", ""), size) > 64 * 1024]
    spans = sorted(range_span(h["Range"], size) for h in download)
    assert spans[0][0] == kept and spans[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    # bytes of one version only: every continued GET names the ETag the partial file came from
    assert {h.get("If-Match") for h in download} == {etag}
    fetched = sum(range_bytes(r, big.stat().st_size) for r in ranges)
    assert fetched < big.stat().st_size - kept + MIB
    record_property("bytes_kept_at_kill", kept)
    record_property("bytes_fetched_after_restart", fetched)
    log.info("S3: %d of %d bytes kept at the kill, %d fetched after the restart", kept,
             big.stat().st_size, fetched)


# -- SMB -------------------------------------------------------------------------------------


def share_file(smb, rel: str, make: Callable[[Path], Path]) -> Path:
    """Create ``rel`` on ``smb``'s share (folders included), owned by the share's user."""
    path = smb.share_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)
    rel_path = Path(rel)
    for item in (rel_path, *rel_path.parents[:-1]):  # not the share itself
        shutil.chown(smb.share_path / item, smb.username)
    return path


def test_smbd_stopped_mid_download_resumes_after_restart(env, smb_server, samba_server,
                                                         tmp_path, record_property):
    with env["catalog"].session() as s:
        set_setting(s, "watch.file_stability_seconds", 0)
    scratch = tmp_path / "scratch"
    big = share_file(samba_server, "rec/big.wav", big_wav)
    size, big_sha = big.stat().st_size, sha256(big)
    share_file(smb_server, "healthy-dl/h1.wav", lambda p: tone(p, 330))
    add_source(env, name="local", path="local", auto_transcribe=False)
    drop_local(env, "l1.wav", 430)
    smb_source(env, "flaky", samba_server, "/rec")
    smb_source(env, "healthy", smb_server, "/healthy-dl")

    requests = tick(env, "smb")
    assert sorted(r.tags["watch_pipeline/source"] for r in requests) == ["flaky", "healthy"]
    (big_request,) = [r for r in requests if r.tags["watch_pipeline/source"] == "flaky"]
    with when(part_size(scratch, "big.wav"), KILL_AFTER, samba_server.stop) as stopped:
        assert not run_request(env, big_request).success
    assert stopped.fired, "the download finished before smbd could be stopped"

    # The download retried while smbd was down, then gave up: recorded on the file's row, with
    # the partial file kept for the next attempt.
    part = the_part(scratch, "big.wav")
    kept = part.stat().st_size
    assert KILL_AFTER <= kept < size
    row = file_row(env, "flaky", "big.wav")
    assert row.status == "error" and row.retry_count == 1
    assert row.error_message.startswith("raw_file: ")
    assert f"{kept} bytes kept in big.wav.part" in row.error_message
    assert samba_server.password not in row.error_message
    part_fd = os.open(part, os.O_RDONLY)
    try:
        # While smbd is down: the healthy share and the local source import, in the same ticks
        # in which the dead server's source records its error.
        assert run_all(env, [r for r in requests if r is not big_request]) == [True]
        assert run_all(env, tick(env, "local")) == [True]
        share_file(smb_server, "healthy-dl/h2.wav", lambda p: tone(p, 340))
        drop_local(env, "l2.wav", 440)
        rewind_scans(env)
        during = tick(env, "smb")
        flaky_row = source_row(env, "flaky")
        assert flaky_row.last_scan_status == "error"
        assert f"{samba_server.host}:{samba_server.port}" in flaky_row.last_scan_message
        assert flaky_row.consecutive_scan_failures == 1
        assert source_row(env, "healthy").last_scan_status == "success"
        assert [r.tags["watch_pipeline/source"] for r in during] == ["healthy"]
        assert run_all(env, during + tick(env, "local")) == [True, True]
        assert imported(env, "healthy") == {"h1.wav", "h2.wav"}
        assert imported(env, "local") == {"l1.wav", "l2.wav"}

        # smbd comes back on the same port with the same share; the retry continues the file.
        samba_server.start()
        skip_backoff(env)
        after = ticks_until_requested(env, "smb")
        assert [r.tags["watch_pipeline/source"] for r in after] == ["flaky"]
        assert run_all(env, after) == [True]
        resumed_size = os.fstat(part_fd).st_size
        resumed_sha = fd_sha256(part_fd)
    finally:
        os.close(part_fd)

    flaky_row = source_row(env, "flaky")
    assert (flaky_row.last_scan_status, flaky_row.consecutive_scan_failures) == ("success", 0)
    assert file_row(env, "flaky", "big.wav").status == "imported"
    assert sha256(stored_object(env, "big.wav")) == big_sha
    # The kept partial file was continued, not replaced: it grew into the whole recording.
    assert (resumed_size, resumed_sha) == (size, big_sha)
    record_property("smb_bytes_kept_at_stop", kept)
    record_property("smb_bytes_fetched_after_restart", size - kept)
    log.info("SMB: %d of %d bytes kept at the stop, %d fetched after the restart", kept, size,
             size - kept)


FOLDERS, PER_FOLDER = 7, 100  # the scan writes its first 500 decisions, then smbd goes


def test_smbd_stopped_mid_scan_is_the_sources_error(env, smb_server, samba_server, tmp_path):
    with env["catalog"].session() as s:
        set_setting(s, "watch.file_stability_seconds", 0)
    # Copies of a recording already imported from the local source: the scan reads every one
    # (a long scan to interrupt) and none is new content (which would end the scan early so
    # that its import can start).
    one = small_wav(tmp_path / "one.wav")
    add_source(env, name="local", path="local", auto_transcribe=False)
    shutil.copyfile(one, env["watch"] / "local" / "one.wav")
    age(env["watch"] / "local" / "one.wav")
    assert run_all(env, tick(env, "local")) == [True]
    for folder in range(FOLDERS):
        for n in range(PER_FOLDER):
            share_file(samba_server, f"many/f{folder}/r{n:03}.wav",
                       lambda p: shutil.copyfile(one, p))
    share_file(smb_server, "healthy-scan/h1.wav", lambda p: tone(p, 350))
    drop_local(env, "l1.wav", 450)
    flaky_id = smb_source(env, "flaky", samba_server, "/many")
    smb_source(env, "healthy", smb_server, "/healthy-scan")

    def rows_written() -> int:
        with env["catalog"].session() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(WatchSourceFile)
                            .where(WatchSourceFile.watch_source_id == flaky_id))

    with when(rows_written, 1, samba_server.stop) as stopped:
        requests = tick(env, "smb")
    assert stopped.fired, "the scan ended before smbd could be stopped"
    where = f"SMB server {samba_server.host}:{samba_server.port} unreachable"
    flaky = source_row(env, "flaky")
    assert flaky.last_scan_status == "error", flaky.last_scan_message
    assert flaky.last_scan_message.startswith(f"scan failed: {where}")
    assert flaky.consecutive_scan_failures == 1
    assert samba_server.password not in flaky.last_scan_message
    written = len(file_rows(env, "flaky"))
    assert 0 < written < FOLDERS * PER_FOLDER  # what the scan saw before smbd went is kept
    # In the same tick the healthy share was scanned and its file claimed; the local source
    # imports beside it.
    assert source_row(env, "healthy").last_scan_status == "success"
    assert [r.tags["watch_pipeline/source"] for r in requests] == ["healthy"]
    assert run_all(env, requests) == [True]
    rewind_scans(env)
    assert run_all(env, tick(env, "local")) == [True]

    # Still down on the next tick: the streak grows, the others go on importing.
    share_file(smb_server, "healthy-scan/h2.wav", lambda p: tone(p, 360))
    drop_local(env, "l2.wav", 460)
    rewind_scans(env)
    during = tick(env, "smb")
    flaky = source_row(env, "flaky")
    assert (flaky.last_scan_status, flaky.consecutive_scan_failures) == ("error", 2)
    assert flaky.last_scan_message.startswith(f"scan failed: {where}")
    assert [r.tags["watch_pipeline/source"] for r in during] == ["healthy"]
    assert run_all(env, during + tick(env, "local")) == [True, True]
    assert imported(env, "healthy") == {"h1.wav", "h2.wav"}
    assert imported(env, "local") == {"one.wav", "l1.wav", "l2.wav"}

    # smbd is back on the same port: the next scan sees every file, each a known recording.
    samba_server.start()
    rewind_scans(env)
    assert tick(env, "smb") == []
    flaky = source_row(env, "flaky")
    assert (flaky.last_scan_status, flaky.consecutive_scan_failures) == ("success", 0)
    assert flaky.last_scan_message.startswith(f"{FOLDERS * PER_FOLDER} files seen")
    statuses = [(r.status, r.skip_reason) for r in file_rows(env, "flaky")]
    assert statuses == [("skipped_duplicate", "duplicate_other_source")] * (FOLDERS * PER_FOLDER)


def test_smb_file_is_imported_after_an_outage_longer_than_the_retries(env, samba_server):
    with env["catalog"].session() as s:
        set_setting(s, "watch.file_stability_seconds", 0)
    share_file(samba_server, "out/rec.wav", lambda p: tone(p, 370))
    smb_source(env, "flaky", samba_server, "/out")
    (request,) = tick(env, "smb")
    samba_server.stop()
    # The outage outlasts every automatic retry (their backoff skipped, so no waiting here).
    attempts = 0
    while request is not None and attempts < 6:
        assert not run_request(env, request).success
        attempts += 1
        skip_backoff(env)
        request = next(iter(ticks_until_requested(env, "smb", tries=1)), None)
    row = file_row(env, "flaky", "rec.wav")
    assert row.status == "error" and "unreachable" in row.error_message
    assert source_row(env, "flaky").last_scan_status == "error"
    log.info("SMB outage: %d failed attempts before the file was held", attempts)

    samba_server.start()
    skip_backoff(env)
    assert run_all(env, ticks_until_requested(env, "smb")) == [True]
    assert file_row(env, "flaky", "rec.wav").status == "imported"
