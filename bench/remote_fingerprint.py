"""Benchmark: fingerprinting a remote object with our source clients vs downloading it whole.

One ``--size-mib`` MiB file of random bytes is put on a loopback moto S3 server (a subprocess)
and on a real Samba share (``SambaServer`` from the tests' fixtures). Then, run after run and
alternating, per protocol:

* ours: ``imohash_fileobj(client.open(path))`` with :class:`S3SourceClient` /
  :class:`SMBSourceClient`; the bytes are counted by wrapping the opened file object's
  ``read``/``readinto`` (payload bytes; for S3 the HEAD and GET requests are counted too);
* baseline: the whole object downloaded (S3: boto3 ``download_file`` with default settings;
  SMB: our client's ``download``), bytes = the size of the file written.

Both clients are warmed up (connected, logged in) by one untimed call before timing. Each
fingerprint is checked against ``imohash`` of the local file. Note that moto answers every
ranged GET by reading the whole object and slicing it, so on moto the fingerprint *time* is
inflated (three full server-side reads); the byte count is what a real S3 sends.

Needs root (Samba's OS user). Usage:
    python bench/remote_fingerprint.py [--size-mib 200] [--runs 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _remote_servers import (
    ACCESS_KEY,
    BUCKET,
    REGION,
    SECRET_KEY,
    load_note,
    moto_server,
    plain_s3_client,
    samba_server,
    write_random_file,
)

from watch_pipeline.pipeline.fingerprint import imohash_fileobj, imohash_path
from watch_pipeline.sources.s3 import S3SourceClient
from watch_pipeline.sources.smb import SMBSourceClient

BYTES_TARGET = 100
NAME = "bench.bin"


class CountingReader(io.RawIOBase):
    """Passes reads and seeks through to ``raw`` and counts the bytes handed out."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self.bytes_read = 0
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(size)
        self.reads += 1
        self.bytes_read += len(data or b"")
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer) or 0
        self.reads += 1
        self.bytes_read += n
        return n


def fingerprint_once(open_file: Callable[[], Any]) -> tuple[float, str, CountingReader, Any]:
    start = time.perf_counter()
    raw = open_file()
    counted = CountingReader(raw)
    try:
        fingerprint = imohash_fileobj(counted)
    finally:
        raw.close()
    return time.perf_counter() - start, fingerprint, counted, raw


def download_once(download: Callable[[Path], Any], dest: Path) -> tuple[float, int]:
    start = time.perf_counter()
    download(dest)
    elapsed = time.perf_counter() - start
    size = dest.stat().st_size
    dest.unlink()
    return elapsed, size


def compare(
    label: str,
    *,
    runs: int,
    expected: str,
    size: int,
    open_file: Callable[[], Any],
    download: Callable[[Path], Any],
    download_label: str,
    warm_download: Callable[[], Any],
    tmp: Path,
) -> None:
    # Untimed warm-up: client creation, connection and login are paid once per source, not
    # per file.
    fingerprint_once(open_file)
    warm_download()
    fp_times: list[float] = []
    dl_times: list[float] = []
    counted: CountingReader | None = None
    extra = ""
    for i in range(runs):
        # Alternate which goes first, so neither always meets a warmer server.
        for step in ("fp", "dl") if i % 2 == 0 else ("dl", "fp"):
            if step == "fp":
                elapsed, fingerprint, counted, raw = fingerprint_once(open_file)
                if fingerprint != expected:
                    raise SystemExit(f"{label}: fingerprint {fingerprint} != local {expected}")
                fp_times.append(elapsed)
                if hasattr(raw, "requests"):
                    extra = f", 1 HEAD + {raw.requests} ranged GETs"
            else:
                elapsed, got = download_once(download, tmp / "download.bin")
                if got != size:
                    raise SystemExit(f"{label}: downloaded {got} bytes of {size}")
                dl_times.append(elapsed)
    assert counted is not None
    fp, dl = statistics.median(fp_times), statistics.median(dl_times)
    ratio = size / counted.bytes_read
    print(f"{label}  (median of {runs})")
    print(
        f"  ours  fingerprint   : {counted.bytes_read:>11,} bytes in {counted.reads} reads"
        f"{extra}   {fp * 1e3:9.1f} ms"
    )
    print(f"  base  {download_label:<14}: {size:>11,} bytes   {dl * 1e3:9.1f} ms")
    verdict = "ok" if ratio >= BYTES_TARGET else "MISSED"
    print(f"  bytes ratio download/fingerprint: {ratio:,.0f}x (want >= {BYTES_TARGET}x: {verdict})")
    print(f"  time  ratio download/fingerprint: {dl / fp:,.1f}x")


def bench_s3(args: argparse.Namespace, tmp: Path, src: Path, expected: str) -> None:
    with moto_server(tmp) as endpoint_url:
        boto = plain_s3_client(endpoint_url)
        boto.upload_file(str(src), BUCKET, NAME)
        ours = S3SourceClient(
            bucket=BUCKET,
            endpoint_url=endpoint_url,
            region=REGION,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )
        try:
            compare(
                f"S3  (moto server, {endpoint_url})",
                runs=args.runs,
                expected=expected,
                size=src.stat().st_size,
                open_file=lambda: ours.open(NAME),
                download=lambda dest: boto.download_file(BUCKET, NAME, str(dest)),
                download_label="download_file",
                warm_download=lambda: boto.head_object(Bucket=BUCKET, Key=NAME),
                tmp=tmp,
            )
        finally:
            ours.close()


def bench_smb(args: argparse.Namespace, tmp: Path, src: Path, expected: str) -> None:
    with samba_server() as server:
        share_copy(src, server.share_path / NAME)
        ours = SMBSourceClient(
            server=server.host,
            share=server.share,
            username=server.username,
            password=server.password,
            domain=server.domain,
            port=server.port,
        )
        try:
            compare(
                f"SMB (Samba smbd, 127.0.0.1:{server.port})",
                runs=args.runs,
                expected=expected,
                size=src.stat().st_size,
                open_file=lambda: ours.open(NAME),
                download=lambda dest: ours.download(NAME, dest),
                download_label="our download",
                warm_download=lambda: None,  # the same client, warmed by the fingerprint
                tmp=tmp,
            )
        finally:
            ours.close()


def share_copy(src: Path, dest: Path) -> None:
    """Put ``src`` on the share: a hard link when on the same file system, else a copy."""
    try:
        dest.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dest)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=200, help="object size (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each; medians are shown")
    parser.add_argument("--dir", default=None, help="where temp files go (default: system temp)")
    parser.add_argument("--skip-s3", action="store_true", help="leave out the S3 half")
    parser.add_argument("--skip-smb", action="store_true", help="leave out the SMB half")
    args = parser.parse_args()

    print(f"start: {load_note()}")
    with tempfile.TemporaryDirectory(prefix="bench_remote_fp_", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / NAME
        write_random_file(src, args.size_mib)
        expected = imohash_path(src)
        print(f"object: {args.size_mib} MiB ({src.stat().st_size:,} bytes), imohash {expected}")
        if not args.skip_s3:
            bench_s3(args, tmp, src, expected)
        if not args.skip_smb:
            bench_smb(args, tmp, src, expected)
    print(f"end:   {load_note()}")


if __name__ == "__main__":
    main()
