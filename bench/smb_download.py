"""Benchmark: :meth:`SMBSourceClient.download` with several read settings vs the ``smbclient`` CLI.

One ``--size-mib`` MiB file of random bytes is put on a real Samba share (``SambaServer`` from
the tests' fixtures). Then ``--runs`` rounds, each method once per round, the order rotated every
round: the ``smbclient`` CLI (``get``, credentials in an ``-A`` file; its time includes the
tool's start-up and login) and our download once per ``--settings`` entry, ``READxWINDOW``
(``chunk_size`` in KiB x ``reads_in_flight``; the first entry is the client's default unless
given). Every copy is checked for size, the first of each method byte for byte. Medians are
shown, with the CPU seconds each method cost, ours (this process) or the CLI's (its process),
beside ``smbd``'s (its process group, read from ``/proc``), and the client's minor page faults:
on a shared 2-core machine wall times swing two-fold from run to run, these do not. ``--cold``
evicts the file from the page cache before every copy, so the server reads it from disk
(where reads in flight can overlap the server's disk reads).

Peak RSS: for each setting a child process (``--child``) builds the client, downloads once and
reports its ``VmHWM`` (peak RSS since its exec); a child that only imports and connects is the
floor (see ``bench/remote_download.py`` for why ``ru_maxrss`` is not the figure).

``--profile`` adds one cProfile'd download with the first setting: the calling thread and
smbprotocol's receive worker thread separately (``Connection._process_message_thread`` and
its transport's ``recv`` are wrapped for a connection made for it; nothing else is changed).

What it showed (256 MiB, warm cache): our client spends about 0.2 s CPU per 256 MiB at
1 MiB x 2, the CLI about 0.15 s including its start-up; most of ours is smbprotocol's receive
path (about six user-space copies of every byte, per-message structure decoding, the AES-GMAC
signature check) and page faults when glibc returns its freed receive buffers to the kernel
(``MALLOC_TRIM_THRESHOLD_=67108864`` in the environment removes those). Reads of 2 to 8 MiB
cost more CPU than 1 MiB ones; 1 to 4 reads in flight were within the noise of each other.

Needs root (Samba's OS user). Usage:
    python bench/smb_download.py [--size-mib 256] [--runs 3] [--settings 1024x2,4096x1]
        [--cold] [--profile] [--no-rss] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import cProfile
import filecmp
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _remote_servers import (
    MIB,
    SmbLogin,
    load_note,
    samba_server,
    smb_login,
    write_random_file,
)
from smbprotocol.connection import Connection

from watch_pipeline.sources import smb as smb_source
from watch_pipeline.sources.smb import SMBSourceClient

RATIO_TARGET = 0.9
NAME = "bench.bin"
KIB = 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_SETTING = (
    f"{smb_source.DEFAULT_CHUNK_SIZE // KIB}x{smb_source.DEFAULT_READS_IN_FLIGHT}"
)


def parse_setting(text: str) -> tuple[int, int]:
    """``"1024x2"`` -> (chunk_size in bytes, reads_in_flight)."""
    kib, window = text.lower().split("x")
    return int(kib) * KIB, int(window)


def our_client(login: SmbLogin, chunk_size: int, window: int) -> SMBSourceClient:
    return SMBSourceClient(
        server=login.host,
        share=login.share,
        username=login.username,
        password=login.password,
        domain=login.domain,
        port=login.port,
        chunk_size=chunk_size,
        reads_in_flight=window,
    )


# -- child: one download, for peak RSS -------------------------------------------------------


def child(mode: str) -> None:
    """Run in the child: read the job from stdin, download (or only connect), print VmHWM."""
    job = json.load(sys.stdin)
    chunk_size, window = parse_setting(job["setting"])
    client = our_client(SmbLogin(**job["login"]), chunk_size, window)
    client.test_connection()
    if mode == "download":
        client.download(NAME, Path(job["dest"]))
    client.close()
    print(json.dumps({"vm_hwm_kib": _vm_hwm_kib()}))


def _vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_peak_mib(mode: str, job: dict[str, Any]) -> float:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode],
        input=json.dumps(job).encode(),  # the password travels here, never in argv
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{proc.stderr.decode()[-3000:]}")
    return json.loads(proc.stdout)["vm_hwm_kib"] / 1024


# -- CPU accounting ----------------------------------------------------------------------------


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "comm)": state ppid pgrp ...
            # utime stime cutime cstime: a connection's child that exited (the CLI's) was
            # waited for by the smbd parent, so its time is in the parent's cutime/cstime.
            total += sum(int(f) for f in fields[11:15])
    return total / CLOCK_TICKS


def own_usage() -> tuple[float, int]:
    """CPU seconds and minor page faults of this process and its waited-for children."""
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usages), sum(u.ru_minflt for u in usages)


# -- timing ------------------------------------------------------------------------------------


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (written back first), so the server reads disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run_rounds(
    methods: dict[str, Callable[[Path], Any]],
    *,
    runs: int,
    src: Path,
    tmp: Path,
    smbd_pgid: int,
    cold: bool,
) -> dict[str, tuple[float, ...]]:
    """Time each method ``runs`` times, rotating the order.

    Returns:
        Per method, medians of: seconds, client CPU seconds, smbd CPU seconds, client minor
        page faults.
    """
    size = src.stat().st_size
    samples: dict[str, list[tuple[float, ...]]] = {name: [] for name in methods}
    names = list(methods)
    for i in range(runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            dest = tmp / "download.bin"
            if cold:
                evict(src)
            (cpu, faults), smbd = own_usage(), group_cpu_seconds(smbd_pgid)
            start = time.perf_counter()
            methods[name](dest)
            seconds = time.perf_counter() - start
            cpu_after, faults_after = own_usage()
            smbd = group_cpu_seconds(smbd_pgid) - smbd
            samples[name].append((seconds, cpu_after - cpu, smbd, faults_after - faults))
            got = dest.stat().st_size
            if got != size or (i == 0 and not filecmp.cmp(src, dest, shallow=False)):
                raise SystemExit(f"{name}: the copy differs from the source ({got} bytes)")
            dest.unlink()
    if cold:
        evict(src)  # the byte-for-byte comparison read it back into the cache
    return {
        name: tuple(statistics.median(v[k] for v in values) for k in range(4))
        for name, values in samples.items()
    }


def profile_download(login: SmbLogin, setting: str, dest: Path, top: int = 14) -> None:
    """One download under cProfile: the calling thread and the receive worker, separately."""
    wrap_receive_worker()
    client = our_client(login, *parse_setting(setting))
    client.test_connection()  # a new connection: its receive thread is the last one wrapped
    worker = _WORKER_PROFILES[-1]
    worker.enable_next = True
    caller = cProfile.Profile()
    start = time.perf_counter()
    caller.enable()
    client.download(NAME, dest)
    caller.disable()
    seconds = time.perf_counter() - start
    worker.enable_next = False
    client.close()
    dest.unlink()
    print(f"profile of ours {setting}: one download, {seconds:.2f} s wall (cProfile slows it)")
    for label, prof in (("calling thread", caller), ("receive worker thread", worker.profile)):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
        body = out.getvalue()
        body = body[body.index("   ncalls") :] if "   ncalls" in body else body
        print(f"  -- {label}, by own time --")
        for line in body.rstrip().splitlines():
            print(f"  {line}")


class _WorkerProfile:
    """cProfile inside smbprotocol's receive thread, recording only while ``enable_next``."""

    def __init__(self) -> None:
        self.profile = cProfile.Profile()
        self.enable_next = False


_WORKER_PROFILES: list[_WorkerProfile] = []


def wrap_receive_worker() -> None:
    """Make every new connection's receive thread profile itself while asked to."""
    real = Connection._process_message_thread

    def process_message_thread(connection: Connection) -> None:
        state = _WorkerProfile()
        _WORKER_PROFILES.append(state)
        real_recv = connection.transport.recv

        def recv(timeout: Any) -> Any:
            # Toggled between messages: the thread is inside recv whenever the caller waits.
            if state.enable_next:
                state.profile.enable()
            else:
                state.profile.disable()
            return real_recv(timeout)

        connection.transport.recv = recv
        try:
            real(connection)
        finally:
            state.profile.disable()

    Connection._process_message_thread = process_message_thread  # type: ignore[method-assign]


def report(
    medians: dict[str, tuple[float, ...]],
    rss: dict[str, float],
    floor: float,
    *,
    size: int,
    runs: int,
) -> None:
    print(f"SMB {size / MIB:.0f} MiB, median of {runs}, order rotated per round")
    cli = medians["smbclient CLI get"][0]
    for name, (seconds, cpu, smbd, faults) in medians.items():
        ratio = cli / seconds
        verdict = "" if name.startswith("smbclient") else (
            f"ratio {ratio:4.2f}x ({'ok' if ratio >= RATIO_TARGET else 'MISSED'})"
        )
        peak = f"peak RSS {rss[name]:5.1f} MiB" if name in rss else ""
        print(
            f"  {name:<26}: {seconds:6.3f} s {size / MIB / seconds:6.0f} MiB/s  "
            f"cpu {cpu:4.2f} s + smbd {smbd:4.2f} s  {faults / 1000:5.1f}k faults  "
            f"{verdict}  {peak}"
        )
    if rss:
        print(f"  peak RSS of a child only importing+connecting: {floor:5.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=256, help="file size (default 256)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each; medians are shown")
    parser.add_argument(
        "--settings",
        default=DEFAULT_SETTING,
        help=f"comma-separated READ_KIBxWINDOW to compare (default {DEFAULT_SETTING})",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="evict the file from the page cache before every copy (the server reads disk)",
    )
    parser.add_argument("--profile", action="store_true", help="profile one download")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS children")
    parser.add_argument("--dir", default=None, help="where temp files go (default: system temp)")
    parser.add_argument("--child", choices=("download", "connect"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    print(f"start: {load_note()}")
    with tempfile.TemporaryDirectory(prefix="bench_smb_dl_", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / NAME
        write_random_file(src, args.size_mib)
        with samba_server() as server:
            try:
                (server.share_path / NAME).hardlink_to(src)
            except OSError:
                shutil.copyfile(src, server.share_path / NAME)
            login = smb_login(server)
            auth = tmp / "smb-auth"
            auth.touch(mode=0o600)
            auth.write_text(
                f"username = {login.username}\npassword = {login.password}\n"
                f"domain = {login.domain}\n"
            )
            clients = {s: our_client(login, *parse_setting(s)) for s in settings}
            for client in clients.values():
                client.test_connection()

            def cli_get(dest: Path) -> None:
                subprocess.run(
                    ["smbclient", f"//{login.host}/{login.share}", "-p", str(login.port),
                     "-A", str(auth), "-c", f"get {NAME} {dest}"],
                    check=True,
                    capture_output=True,
                )

            methods: dict[str, Callable[[Path], Any]] = {"smbclient CLI get": cli_get}
            for setting, client in clients.items():
                methods[f"ours {setting}"] = (
                    lambda dest, client=client: client.download(NAME, dest)
                )
            smbd_pgid = server._proc.pid  # smbd leads its own process group
            try:
                medians = run_rounds(
                    methods, runs=args.runs, src=src, tmp=tmp, smbd_pgid=smbd_pgid,
                    cold=args.cold,
                )
            finally:
                for client in clients.values():
                    client.close()
            if args.profile:
                profile_download(login, settings[0], tmp / "profiled.bin")
            rss: dict[str, float] = {}
            floor = 0.0
            if not args.no_rss:
                for setting in settings:
                    job = {"login": login.__dict__, "dest": str(tmp / "child.bin"),
                           "setting": setting}
                    rss[f"ours {setting}"] = child_peak_mib("download", job)
                    (tmp / "child.bin").unlink()
                floor = child_peak_mib("connect", job)
        report(medians, rss, floor, size=src.stat().st_size, runs=args.runs)
    print(f"end:   {load_note()}")


if __name__ == "__main__":
    main()
