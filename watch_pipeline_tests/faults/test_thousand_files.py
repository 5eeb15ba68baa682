"""A 1000-file drop into one source with the default settings: every file imported exactly
once, and each tick's work stays bounded (a tick claims at most a batch per import slot)."""

from __future__ import annotations

import os
import struct
import subprocess

import sqlalchemy as sa

from watch_pipeline.catalog.models import MediaFile, WatchSource, WatchSourceFile
from watch_pipeline.catalog.settings import set_setting
from watch_pipeline.pipeline.claims import BATCH_MAX
from watch_pipeline_tests.defs.harness import add_source, age, run_request, tick

N = int(os.environ.get("WATCH_TEST_DROP_FILES", "1000"))


def _distinct_wavs(folder, n):
    """``n`` tiny WAVs that differ in content (one sample each), written without ffmpeg."""
    template = folder / "template.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=0.1", "-ar", "8000", "-ac", "1",
                    str(template)], check=True)
    data = template.read_bytes()
    template.unlink()
    header, samples = data[:44], bytearray(data[44:])
    for i in range(n):
        samples[0:4] = struct.pack("<I", i)
        path = folder / f"clip_{i:04d}.wav"
        path.write_bytes(header + samples)
        age(path)


def test_a_thousand_files_are_imported_exactly_once(env):
    add_source(env, name="drop", auto_transcribe=False)
    with env["catalog"].session() as s:
        s.execute(sa.update(WatchSource).values(polling_interval_minutes=1))
        set_setting(s, "previews.enabled", False)  # exactly once is the point, not previews
    _distinct_wavs(env["watch"], N)

    claimed_per_tick = []
    for _ in range(N // BATCH_MAX + 5):
        requests, _skip = tick(env)
        partitions = sum(1 if r.partition_key else len(r.run_config["ops"]["import_batch"]
                                                         ["config"]["partition_keys"])
                         for r in requests)
        claimed_per_tick.append(partitions)
        for request in requests:
            assert run_request(env, request).success
        with env["catalog"].session() as s:
            s.execute(sa.update(WatchSource).values(last_scan_at=None))  # due again at once
        if not requests and sum(claimed_per_tick) >= N:
            break

    with env["catalog"].session() as s:
        statuses = s.execute(sa.select(WatchSourceFile.status, sa.func.count())
                             .group_by(WatchSourceFile.status)).tuples().all()
        media = s.execute(sa.select(MediaFile.imohash, MediaFile.status)).all()
    assert dict(statuses) == {"imported": N}
    assert len(media) == len({m.imohash for m in media}) == N
    # 5 import slots by default, each a batch of at most BATCH_MAX partitions
    assert max(claimed_per_tick) <= 5 * BATCH_MAX
    assert sum(claimed_per_tick) == N
