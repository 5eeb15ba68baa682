"""Loopback servers shared by the remote benchmarks (``remote_fingerprint``, ``remote_download``).

* :func:`moto_server`: ``python -m moto.server`` as a subprocess on a free 127.0.0.1 port, as
  ``watch_pipeline_tests/fixtures/s3_server.py`` starts it, with one bucket.
* :func:`samba_server`: a real ``smbd`` through the tests' own
  :class:`~watch_pipeline_tests.fixtures.smb_server.SambaServer` (generated ``smb.conf``, an OS
  user made for the run and removed afterwards). Needs root, ``smbd`` and ``smbpasswd``.
* :func:`throttled`: the tests' throttling TCP proxy
  (:mod:`watch_pipeline_tests.fixtures.throttle_proxy`) in front of a loopback server, as a
  subprocess (its CPU is not charged to the benchmark), each connection's replies limited to
  N MiB/s: a slow link such as one S3 connection.
* :func:`postgres_server`: a throwaway PostgreSQL cluster on loopback, started as the tests'
  ``postgres_server`` fixture starts it (``initdb`` + ``pg_ctl``, durability off).

Everything they create lives in temp dirs removed on exit. Not a benchmark itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

MIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]
ACCESS_KEY = SECRET_KEY = "testing"
REGION = "us-east-1"
BUCKET = "bench"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def write_random_file(path: Path, size_mib: int) -> None:
    """Write ``size_mib`` MiB of incompressible bytes (each MiB made unique by a counter)."""
    block = bytearray(os.urandom(MIB))
    with open(path, "wb") as out:
        for i in range(size_mib):
            block[:8] = i.to_bytes(8, "little")
            out.write(block)


def plain_s3_client(endpoint_url: str) -> Any:
    """A boto3 client as a user would make one: defaults, path-style addressing."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}),
    )


def _fixture_path() -> None:
    # The fixture modules belong to the tests, which are not an installed package.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def _fixtures():  # type: ignore[no-untyped-def]
    # The fixture modules belong to the tests, which are not an installed package.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from watch_pipeline_tests.fixtures import s3_server, smb_server

    return s3_server, smb_server


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """Run moto's S3 server (as the tests start it) with bucket :data:`BUCKET`."""
    with moto_server_process(log_dir) as server:
        yield server.endpoint_url


@contextlib.contextmanager
def moto_server_process(log_dir: Path) -> Iterator[Any]:
    """As :func:`moto_server`, but yield the fixture's ``MotoProcess`` (``endpoint_url``, pid)."""
    s3_fixture, _ = _fixtures()
    with s3_fixture.moto_process(log_dir) as server:
        plain_s3_client(server.endpoint_url).create_bucket(Bucket=BUCKET)
        yield server


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def throttled(endpoint_url: str, mibps: float) -> Iterator[str]:
    """Yield the URL of a proxy to ``endpoint_url`` replying at ``mibps`` MiB/s per connection."""
    upstream = urlsplit(endpoint_url).port
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "watch_pipeline_tests.fixtures.throttle_proxy",
         "--upstream-port", str(upstream), "--mibps", str(mibps)],
        stdout=subprocess.PIPE, env=env, cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass(frozen=True)
class SmbLogin:
    """What a client needs to reach the benchmark share (picklable for a child process)."""

    host: str
    port: int
    share: str
    username: str
    password: str
    domain: str


@contextlib.contextmanager
def samba_server() -> Iterator[Any]:
    """Run ``smbd`` as the ``smb_server`` test fixture does; yield the SambaServer."""
    missing = [t for t in ("smbd", "smbpasswd", "useradd", "userdel") if not shutil.which(t)]
    if missing or os.geteuid() != 0:
        raise SystemExit(f"the SMB benchmark needs root and {', '.join(missing) or 'Samba'}")
    _, smb_fixture = _fixtures()
    with smb_fixture.running_samba(prefix="watch_pipeline_bench_smb_") as server:
        yield server


def smb_login(server: Any) -> SmbLogin:
    return SmbLogin(
        host=server.host,
        port=server.port,
        share=server.share,
        username=server.username,
        password=server.password,
        domain=server.domain,
    )


@contextlib.contextmanager
def postgres_server() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster, started as the ``postgres_server`` test fixture starts it.

    Yields :class:`~watch_pipeline_tests.fixtures.postgres.PostgresServer`, whose
    ``create_database(name)`` returns a SQLAlchemy URL.
    """
    _fixture_path()
    from watch_pipeline_tests.fixtures import postgres as pg_fixture

    bin_dir = pg_fixture.find_postgres_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found")
    with pg_fixture.running_postgres(bin_dir) as server:
        yield server
