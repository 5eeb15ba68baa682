"""Benchmark: imohash fingerprint vs a full-file sha256 on a large, fully written file.

Usage: python bench/fingerprint.py [--size-mib 1024] [--runs 7] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from watch_pipeline.pipeline.fingerprint import imohash_path

MIB = 1024 * 1024


def write_file(path: Path, size_mib: int) -> None:
    # Real bytes on disk (no sparse holes): one random MiB, made unique per MiB by a counter.
    block = bytearray(os.urandom(MIB))
    with open(path, "wb") as out:
        for i in range(size_mib):
            block[:8] = i.to_bytes(8, "little")
            out.write(block)
        out.flush()
        os.fsync(out.fileno())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=7, help="imohash runs; the median is shown")
    parser.add_argument("--dir", default=None, help="where to write the file (default: temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.bin"
        start = time.perf_counter()
        write_file(path, args.size_mib)
        print(f"wrote {args.size_mib} MiB in {time.perf_counter() - start:.2f}s to {path}")

        imo_times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            fingerprint = imohash_path(path)
            imo_times.append(time.perf_counter() - start)
        imo = statistics.median(imo_times)

        start = time.perf_counter()
        sha = sha256_file(path)
        sha_time = time.perf_counter() - start

        # Baseline and our figure, measured in the same run on the same file.
        print(f"imohash  median of {args.runs}: {imo * 1e3:9.3f} ms  {fingerprint}")
        print(f"sha256   one full read:  {sha_time * 1e3:9.1f} ms  {sha[:32]}...")
        print(f"ratio sha256 / imohash: {sha_time / imo:,.0f}x")
        print(
            "note: sha256 may read from the page cache right after the write; cold reads are slower"
        )
    # TemporaryDirectory removed the file.


if __name__ == "__main__":
    main()
