"""Benchmark: our resumable ``download()`` vs plain copies of the same remote object.

One ``--size-mib`` MiB file of random bytes is put on a loopback moto S3 server (a subprocess)
and on a real Samba share (``SambaServer`` from the tests' fixtures). Then ``--runs`` rounds,
each method once per round, the order rotated every round:

* S3: ours (:meth:`S3SourceClient.download`: one GET ``pwrite`` into a preallocated
  ``<dest>.part``, its rate probed over the first ``PROBE_BYTES`` or ``PROBE_SECONDS``; kept to
  the end at ``FAST_STREAM_MIBPS`` or more, else split into ``DOWNLOAD_WORKERS`` streams of
  ranged GETs; then a rename; the mode it chose is printed) vs boto3
  ``download_file`` as one GET (``multipart_threshold`` above the size) and vs ``download_file``
  with a tuned ``TransferConfig`` (``--tuned-chunk-mib``, ``--tuned-concurrency``, by default
  128 MiB x 2: the fastest of 16, 32, 64 MiB x 4 and 128 MiB x 2 against moto, where fewer GETs
  win; boto3's defaults, 8 MiB parts on 10 threads, took 4.4 s). The ratio against the faster
  baseline is the verdict. With ``--throttle-mibps N`` the S3 case runs twice: directly against
  moto, then through a loopback proxy that sends each connection's replies at N MiB/s (a slow
  link such as one S3 connection, ~100 MB/s; ``bench/_remote_servers.throttled``). Beside each
  time: the CPU seconds moto's server process and
  this process spent on it. Then the limits of the setup, measured in the same run: one GET read
  and discarded (the server and loopback alone), writing the size into the page cache from
  memory (the disk side alone), and one 1-byte ranged GET (moto's fixed cost per GET).
* SMB: ours (:meth:`SMBSourceClient.download`) vs the ``smbclient`` CLI (``get``, credentials in
  an ``-A`` file so no password shows in ``ps``; its time includes the tool's start-up) and vs
  smbprotocol's ``smbclient.open_file`` + ``shutil.copyfileobj`` (4 MiB reads, as ours).

Every copy is checked for size, the first of each method byte for byte. Clients are created and
connected once, before timing. Medians are shown; the page cache is warm for every method.

Peak RSS: this script runs itself as a child (``--child``) that builds our client and downloads
the object once, then reports its ``VmHWM`` (peak RSS since its exec) from ``/proc/self/status``.
``ru_maxrss`` (``getrusage(RUSAGE_CHILDREN)``, or ``os.wait4`` for that one child) is printed
beside it but is not the figure: at ``exec`` Linux carries the high-water RSS of the forked copy
of the parent into the child's ``ru_maxrss``, so it reads at least this (large) process's own
peak. A child that only imports and connects is measured as the floor.

Note: moto answers every GET, ranged or not, by reading the whole object into memory and
slicing it, so every extra part costs moto the time of reading the whole object (the 1-byte GET
line); S3 and MinIO read only the range. A many-part download pays that once per part here:
on 2 busy cores ours took 0.89 s with 0.66 s of moto CPU (4 GETs) against 0.38 s and 0.15 s for
one GET, while ours forced to one GET (``--part-mib 512``) ran at 1.03x of ``download_file``'s
one GET. So against moto parallel parts cannot win; they are for servers whose single stream is
slower than the disk (S3's per-connection throughput, a WAN link). Hence the adaptive download:
directly against moto the probe sees a fast stream and keeps one GET; through the throttling
proxy it splits.

Needs root (Samba's OS user). Usage:
    python bench/remote_download.py [--size-mib 512] [--runs 3] [--dir /tmp] [--skip-smb]
        [--throttle-mibps 50]  (the S3 case again through a proxy at 50 MiB/s per connection)
        [--part-mib N --workers N --fast-mibps X]  (ours with other settings, to tune them;
        --fast-mibps inf always splits, 0 never)
"""

from __future__ import annotations

import argparse
import filecmp
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import smbclient
from _remote_servers import (
    ACCESS_KEY,
    BUCKET,
    MIB,
    REGION,
    SECRET_KEY,
    SmbLogin,
    cpu_seconds,
    load_note,
    moto_server_process,
    plain_s3_client,
    samba_server,
    smb_login,
    throttled,
    write_random_file,
)
from boto3.s3.transfer import TransferConfig

from watch_pipeline.sources import s3 as s3_module
from watch_pipeline.sources.s3 import S3SourceClient
from watch_pipeline.sources.smb import SMBSourceClient

RATIO_TARGET = 0.9
RSS_TARGET_MIB = 300
S3_ADDED_RSS_TARGET_MIB = 16
"""What our S3 download may add to the peak RSS of a process that only imports and connects."""
NAME = "bench.bin"
COPY_CHUNK = 4 * MIB


def our_s3_client(endpoint_url: str) -> S3SourceClient:
    return S3SourceClient(
        bucket=BUCKET,
        endpoint_url=endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )


def our_smb_client(login: SmbLogin) -> SMBSourceClient:
    return SMBSourceClient(
        server=login.host,
        share=login.share,
        username=login.username,
        password=login.password,
        domain=login.domain,
        port=login.port,
    )


def tune_ours(part_mib: int | None, workers: int | None, fast_mibps: float | None = None
              ) -> None:
    """Override our S3 download's part size, workers and split threshold (for tuning runs)."""
    if part_mib:
        s3_module.PART_SIZE = part_mib * MIB
    if workers:
        s3_module.DOWNLOAD_WORKERS = workers
    if fast_mibps is not None:
        s3_module.FAST_STREAM_MIBPS = fast_mibps


class ModeLog(logging.Handler):
    """Keeps the INFO lines in which our S3 download says which mode it chose."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> ModeLog:
        logger = logging.getLogger(s3_module.__name__)
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *_exc: object) -> None:
        logging.getLogger(s3_module.__name__).removeHandler(self)


# -- child: one download of ours, for peak RSS ----------------------------------------------


def child(mode: str) -> None:
    """Run in the child: read the job from stdin, download (or only connect), print seconds."""
    job = json.load(sys.stdin)
    dest = Path(job["dest"])
    client: Any
    if mode.startswith("s3"):
        tune_ours(job.get("part_mib"), job.get("workers"), job.get("fast_mibps"))
        client = our_s3_client(job["endpoint_url"])
        client.test_connection()
    else:
        client = our_smb_client(SmbLogin(**job["login"]))
        client.test_connection()
    start = time.perf_counter()
    if mode.endswith("-download"):
        client.download(NAME, dest)
    seconds = time.perf_counter() - start
    client.close()
    print(json.dumps({"seconds": seconds, "vm_hwm_kib": _vm_hwm_kib()}))


def _vm_hwm_kib() -> int:
    """This process's peak RSS since its exec (``VmHWM``), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_peak_rss(mode: str, job: dict[str, Any]) -> tuple[float, float]:
    """Run ``--child mode`` on ``job``; return its ``VmHWM`` and its ``ru_maxrss``, in MiB."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(job).encode())  # the password travels here, never in argv
    proc.stdin.close()
    out = proc.stdout.read()
    proc.stdout.close()
    # wait4, not proc.wait(): it hands back this child's own rusage.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child {mode} failed ({proc.returncode})")
    # Both are in KiB on Linux.
    return json.loads(out)["vm_hwm_kib"] / 1024, usage.ru_maxrss / 1024


def measure_rss(kind: str, job: dict[str, Any], dest: Path) -> tuple[float, float, float]:
    """Peak RSS of a child downloading (VmHWM, ru_maxrss) and of one only connecting (VmHWM)."""
    peak, maxrss = child_peak_rss(f"{kind}-download", job)
    if dest.stat().st_size == 0:
        raise SystemExit(f"the {kind} child downloaded nothing")
    dest.unlink()
    floor, _ = child_peak_rss(f"{kind}-connect", job)
    return peak, maxrss, floor


# -- timing ---------------------------------------------------------------------------------


def run_rounds(
    methods: dict[str, Callable[[Path], Any]],
    *,
    runs: int,
    src: Path,
    tmp: Path,
    server_pid: int | None = None,
    cpu: dict[str, tuple[float, float]] | None = None,
) -> dict[str, float]:
    """Time each method ``runs`` times, rotating the order; return the median seconds.

    With ``server_pid`` and ``cpu``, ``cpu[name]`` receives the median CPU seconds of the
    server process and of this process during the method.
    """
    size = src.stat().st_size
    times: dict[str, list[float]] = {name: [] for name in methods}
    server_cpu: dict[str, list[float]] = {name: [] for name in methods}
    own_cpu: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for i in range(runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            dest = tmp / "download.bin"
            server_before = cpu_seconds(server_pid) if server_pid else 0.0
            own_before = time.process_time()
            start = time.perf_counter()
            methods[name](dest)
            times[name].append(time.perf_counter() - start)
            own_cpu[name].append(time.process_time() - own_before)
            if server_pid:
                server_cpu[name].append(cpu_seconds(server_pid) - server_before)
            got = dest.stat().st_size
            if got != size or (i == 0 and not filecmp.cmp(src, dest, shallow=False)):
                raise SystemExit(f"{name}: the copy differs from the source ({got} bytes)")
            dest.unlink()
    if server_pid and cpu is not None:
        for name in methods:
            cpu[name] = (statistics.median(server_cpu[name]), statistics.median(own_cpu[name]))
    return {name: statistics.median(values) for name, values in times.items()}


def report(
    label: str,
    medians: dict[str, float],
    *,
    size: int,
    runs: int,
    rss: tuple[float, float, float] | None,
    cpu: dict[str, tuple[float, float]] | None = None,
    added_rss_target: float | None = None,
) -> None:
    ours_name = next(iter(medians))
    print(f"{label}: {size / MIB:.0f} MiB, median of {runs}, order rotated per round")
    for name, seconds in medians.items():
        role = "ours" if name == ours_name else "base"
        extra = ""
        if cpu:
            server, own = cpu[name]
            extra = f"  CPU s: server {server:5.2f}, this process {own:5.2f}"
        print(f"  {role}  {name:<34}: {seconds:7.2f} s  {size / MIB / seconds:7.1f} MiB/s{extra}")
    for name, seconds in medians.items():
        if name == ours_name:
            continue
        ratio = seconds / medians[ours_name]  # our throughput / theirs
        verdict = "ok" if ratio >= RATIO_TARGET else "MISSED"
        print(f"  ratio ours/{name:<34}: {ratio:5.2f}x  (want >= {RATIO_TARGET}x: {verdict})")
    best = min((s for n, s in medians.items() if n != ours_name), default=None)
    if best is not None:
        ratio = best / medians[ours_name]
        verdict = "ok" if ratio >= RATIO_TARGET else "MISSED"
        print(f"  ratio ours/best baseline{'':<25}: {ratio:5.2f}x  "
              f"(want >= {RATIO_TARGET}x: {verdict})")
    if rss is None:
        return
    peak, maxrss, floor = rss
    if added_rss_target is None:
        verdict = "ok" if peak < RSS_TARGET_MIB else "MISSED"
        want = f"want < {RSS_TARGET_MIB} MiB"
    else:
        verdict = "ok" if peak - floor <= added_rss_target else "MISSED"
        want = f"adds {peak - floor:.1f} MiB, want <= {added_rss_target:.0f} MiB"
    print(
        f"  peak RSS, child running our download     : {peak:6.1f} MiB VmHWM "
        f"({want}: {verdict})"
    )
    print(f"  peak RSS, child only importing+connecting: {floor:6.1f} MiB VmHWM")
    print(
        f"  (the download child's ru_maxrss via wait4: {maxrss:6.1f} MiB; it includes this "
        "process's own peak at exec)"
    )


def s3_limits(boto: Any, src: Path, tmp: Path, runs: int) -> None:
    """Print what the setup itself allows: server + loopback, page cache, moto's cost per GET."""
    size = src.stat().st_size

    def get_discard() -> None:
        body = boto.get_object(Bucket=BUCKET, Key=NAME)["Body"]
        view = memoryview(bytearray(MIB))
        while body.readinto(view):
            pass

    def page_cache_write() -> None:
        block = os.urandom(MIB)
        fd = os.open(tmp / "write.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(size // MIB):
                os.write(fd, block)
        finally:
            os.close(fd)
            (tmp / "write.bin").unlink()

    def one_byte_get() -> None:
        boto.get_object(Bucket=BUCKET, Key=NAME, Range="bytes=0-0")["Body"].read()

    print("  limits of this setup (median of the runs):")
    for label, action in (
        ("one GET read and discarded (moto + loopback)", get_discard),
        ("the size written into the page cache (disk side)", page_cache_write),
        ("a 1-byte ranged GET (moto's fixed cost per GET)", one_byte_get),
    ):
        seconds = []
        for _ in range(max(runs, 3)):
            start = time.perf_counter()
            action()
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        rate = "" if "1-byte" in label else f"  {size / MIB / median:7.1f} MiB/s"
        print(f"    {label:<50}: {median:6.3f} s{rate}")
    if size <= s3_module.PART_SIZE:
        print("    ours: one GET (the object is not larger than PART_SIZE)")


def bench_s3(args: argparse.Namespace, tmp: Path, src: Path) -> None:
    """The S3 case directly against moto and, with ``--throttle-mibps``, through the proxy."""
    tune_ours(args.part_mib, args.workers, args.fast_mibps)
    with moto_server_process(tmp) as server:
        plain_s3_client(server.endpoint_url).upload_file(str(src), BUCKET, NAME)
        s3_case(args, tmp, src, server.pid, server.endpoint_url,
                f"S3 (moto, {server.endpoint_url})")
        if args.throttle_mibps:
            print(f"       {load_note()}")
            with throttled(server.endpoint_url, args.throttle_mibps) as url:
                s3_case(args, tmp, src, server.pid, url,
                        f"S3 (moto behind a {args.throttle_mibps:g} MiB/s-per-connection "
                        f"proxy, {url})")


def s3_case(args: argparse.Namespace, tmp: Path, src: Path, server_pid: int, endpoint_url: str,
            label: str) -> None:
    size = src.stat().st_size
    boto = plain_s3_client(endpoint_url)
    ours = our_s3_client(endpoint_url)
    ours.test_connection()
    boto.head_object(Bucket=BUCKET, Key=NAME)
    one_get = TransferConfig(multipart_threshold=size + 1)
    tuned_chunk = args.tuned_chunk_mib * MIB
    tuned = TransferConfig(
        multipart_threshold=tuned_chunk,
        multipart_chunksize=tuned_chunk,
        max_concurrency=args.tuned_concurrency,
    )
    tuned_name = f"download_file ({args.tuned_chunk_mib} MiB x{args.tuned_concurrency})"
    methods: dict[str, Callable[[Path], Any]] = {
        "S3SourceClient.download": lambda dest: ours.download(NAME, dest),
        "download_file (one GET)": (
            lambda dest: boto.download_file(BUCKET, NAME, str(dest), Config=one_get)
        ),
        tuned_name: lambda dest: boto.download_file(BUCKET, NAME, str(dest), Config=tuned),
    }
    cpu: dict[str, tuple[float, float]] = {}
    try:
        with ModeLog() as modes:
            medians = run_rounds(
                methods, runs=args.runs, src=src, tmp=tmp, server_pid=server_pid, cpu=cpu
            )
    finally:
        ours.close()
    rss = None
    if not args.skip_rss:
        job = {
            "endpoint_url": endpoint_url,
            "dest": str(tmp / "child.bin"),
            "part_mib": args.part_mib,
            "workers": args.workers,
            "fast_mibps": args.fast_mibps,
        }
        rss = measure_rss("s3", job, tmp / "child.bin")
    report(
        label,
        medians,
        size=size,
        runs=args.runs,
        rss=rss,
        cpu=cpu,
        added_rss_target=S3_ADDED_RSS_TARGET_MIB,
    )
    s3_limits(boto, src, tmp, args.runs)
    for line in modes.lines:
        print(f"    ours chose: {line.partition(': ')[2]}")


def bench_smb(args: argparse.Namespace, tmp: Path, src: Path) -> None:
    size = src.stat().st_size
    with samba_server() as server:
        try:
            (server.share_path / NAME).hardlink_to(src)
        except OSError:
            shutil.copyfile(src, server.share_path / NAME)
        login = smb_login(server)
        auth = tmp / "smb-auth"
        auth.touch(mode=0o600)
        auth.write_text(
            f"username = {login.username}\npassword = {login.password}\ndomain = {login.domain}\n"
        )
        ours = our_smb_client(login)
        ours.test_connection()
        cache: dict[str, Any] = {}
        smb_kwargs: dict[str, Any] = {
            "port": login.port,
            "username": f"{login.domain}\\{login.username}",
            "password": login.password,
            "connection_cache": cache,
        }
        smbclient.register_session(login.host, **smb_kwargs)
        unc = f"\\\\{login.host}\\{login.share}\\{NAME}"

        def cli_get(dest: Path) -> None:
            subprocess.run(
                [
                    "smbclient",
                    f"//{login.host}/{login.share}",
                    "-p",
                    str(login.port),
                    "-A",
                    str(auth),
                    "-c",
                    f"get {NAME} {dest}",
                ],
                check=True,
                capture_output=True,
            )

        def smbprotocol_copy(dest: Path) -> None:
            with smbclient.open_file(unc, mode="rb", **smb_kwargs) as fh, open(dest, "wb") as out:
                shutil.copyfileobj(fh, out, COPY_CHUNK)

        methods: dict[str, Callable[[Path], Any]] = {
            "SMBSourceClient.download": lambda dest: ours.download(NAME, dest),
            "smbclient CLI get": cli_get,
            "smbprotocol open_file+copyfileobj": smbprotocol_copy,
        }
        try:
            medians = run_rounds(methods, runs=args.runs, src=src, tmp=tmp)
        finally:
            ours.close()
            smbclient.reset_connection_cache(fail_on_error=False, connection_cache=cache)
        job = {"login": login.__dict__, "dest": str(tmp / "child.bin")}
        rss = measure_rss("smb", job, tmp / "child.bin")
        port = server.port
    report(f"SMB (Samba, 127.0.0.1:{port})", medians, size=size, runs=args.runs, rss=rss)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=512, help="object size (default 512)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each; medians are shown")
    parser.add_argument("--dir", default=None, help="where temp files go (default: system temp)")
    parser.add_argument("--skip-s3", action="store_true", help="leave out the S3 half")
    parser.add_argument("--skip-smb", action="store_true", help="leave out the SMB half")
    parser.add_argument("--part-mib", type=int, default=None, help="ours: S3 part size")
    parser.add_argument("--workers", type=int, default=None, help="ours: S3 GETs in flight")
    parser.add_argument("--fast-mibps", type=float, default=None,
                        help="ours: the single-stream rate kept without splitting (inf: always "
                             "split)")
    parser.add_argument("--throttle-mibps", type=float, default=None,
                        help="also run the S3 case through a proxy at this MiB/s per connection")
    parser.add_argument("--skip-rss", action="store_true", help="leave out the peak-RSS children")
    parser.add_argument(
        "--tuned-chunk-mib", type=int, default=128, help="tuned download_file: part size"
    )
    parser.add_argument(
        "--tuned-concurrency", type=int, default=2, help="tuned download_file: threads"
    )
    parser.add_argument(
        "--child",
        choices=("s3-download", "s3-connect", "smb-download", "smb-connect"),
        help=argparse.SUPPRESS,  # internal: the peak-RSS child, job as JSON on stdin
    )
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    print(f"start: {load_note()}")
    with tempfile.TemporaryDirectory(prefix="bench_remote_dl_", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / NAME
        write_random_file(src, args.size_mib)
        if not args.skip_s3:
            bench_s3(args, tmp, src)
            print(f"       {load_note()}")
        if not args.skip_smb:
            bench_smb(args, tmp, src)
    print(f"end:   {load_note()}")


if __name__ == "__main__":
    main()
