"""Loopback servers shared by the remote benchmarks (``remote_fingerprint``, ``remote_download``).

* :func:`moto_server`: ``python -m moto.server`` as a subprocess on a free 127.0.0.1 port, as
  ``watch_pipeline_tests/fixtures/s3_server.py`` starts it, with one bucket.
* :func:`samba_server`: a real ``smbd`` through the tests' own
  :class:`~watch_pipeline_tests.fixtures.smb_server.SambaServer` (generated ``smb.conf``, an OS
  user made for the run and removed afterwards). Needs root, ``smbd`` and ``smbpasswd``.

Everything they create lives in temp dirs removed on exit. Not a benchmark itself.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

MIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]
ACCESS_KEY = SECRET_KEY = "testing"
REGION = "us-east-1"
BUCKET = "bench"
_START_TIMEOUT_S = 30.0


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


def _moto_ready(process: subprocess.Popen[bytes], endpoint_url: str) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{endpoint_url}/moto-api/data.json", timeout=2):
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """Run moto's S3 server with bucket :data:`BUCKET`; yield its endpoint URL."""
    env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
    log_path = log_dir / "moto.log"
    for _attempt in range(3):  # the free port may be taken before moto binds it
        endpoint_url = f"http://127.0.0.1:{free_port()}"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    endpoint_url.rsplit(":", 1)[1],
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if _moto_ready(process, endpoint_url):
            break
        _stop(process)
    else:
        raise RuntimeError(f"moto server did not start:\n{log_path.read_text()[-4000:]}")
    try:
        plain_s3_client(endpoint_url).create_bucket(Bucket=BUCKET)
        yield endpoint_url
    finally:
        _stop(process)


@dataclass(frozen=True)
class SmbLogin:
    """What a client needs to reach the benchmark share (picklable for a child process)."""

    host: str
    port: int
    share: str
    username: str
    password: str
    domain: str


def _run(cmd: list[str], *, stdin: str | None = None) -> None:
    result = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}):\n{result.stderr}")


@contextlib.contextmanager
def samba_server() -> Iterator[Any]:
    """Run ``smbd`` serving share ``media`` as a throwaway OS user; yield the SambaServer.

    Set up as the ``smb_server`` test fixture does; files go in ``server.share_path``.
    """
    missing = [t for t in ("smbd", "smbpasswd", "useradd", "userdel") if not shutil.which(t)]
    if missing or os.geteuid() != 0:
        raise SystemExit(f"the SMB benchmark needs root and {', '.join(missing) or 'Samba'}")
    # The fixture module belongs to the tests, which are not an installed package.
    sys.path.insert(0, str(REPO_ROOT))
    from watch_pipeline_tests.fixtures.smb_server import SambaServer

    username = f"wp_bench_{secrets.token_hex(4)}"
    password = f"Pw-{secrets.token_urlsafe(12)}"
    # Not below a 0700 dir: smbd, acting as the share's user, must traverse to the share.
    base = Path(tempfile.mkdtemp(prefix="watch_pipeline_bench_smb_"))
    base.chmod(0o755)
    for name in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log", "share"):
        (base / name).mkdir()
    (base / "share").chmod(0o777)
    server = SambaServer(base, username=username, password=password)
    user_created = False
    try:
        _run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", username])
        user_created = True
        server.write_config(free_port())
        _run(
            ["smbpasswd", "-c", str(server.config_path), "-s", "-a", username],
            stdin=f"{password}\n{password}\n",
        )
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.write_config(free_port())
        yield server
    finally:
        server.stop()
        if user_created:
            subprocess.run(["userdel", "-f", username], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def smb_login(server: Any) -> SmbLogin:
    return SmbLogin(
        host=server.host,
        port=server.port,
        share=server.share,
        username=server.username,
        password=server.password,
        domain=server.domain,
    )
