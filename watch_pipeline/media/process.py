"""Run ffmpeg/ffprobe with a deadline that kills their whole tree, keeping only stderr's tail.

Every media subprocess of the package goes through :class:`ToolProcess` (or :func:`run_tool`):

* a timeout kills the process *and its descendants*: each is stopped as it is found (through
  ``/proc``, so none can fork while the tree is walked), then all are killed. The process stays
  in our process group, so a supervisor that kills the group (a crashed run worker's) ends it too;
* stderr is drained by a thread as it comes and only its last ``STDERR_TAIL_BYTES`` are kept,
  so a corrupt input that makes ffmpeg log an error per packet costs no memory and can never
  block ffmpeg on a full pipe;
* stdout is discarded, or drained the same way into a bounded buffer (ffprobe's JSON, ffmpeg's
  ``-progress`` lines), with a flag when more arrived than was kept, or handed chunk by chunk to
  a ``stdout_sink`` (decoded PCM streamed into the waveform peaks, ``previews.py``).

An input may be a URL that carries credentials (a presigned S3 GET URL: a signature and the
access key id), and ffmpeg prints its input in its errors. :class:`ToolInput` names such an
input twice: ``location`` for the command line only, ``shown`` (``s3://bucket/key``) for every
message; a run given its :meth:`ToolInput.scrub` returns stderr with the URL replaced by
``shown`` and any stray piece of its query removed.

The deadlines themselves are chosen by the callers from ``limits.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from watch_pipeline.media.errors import ToolTimeout
from watch_pipeline.media.limits import STDERR_TAIL_BYTES

STDOUT_LIMIT_BYTES = 8 * 1024 * 1024
"""The most of stdout kept when it is captured (ffprobe's JSON of any real file is far less)."""

_READ_SIZE = 64 * 1024
_JOIN_SECONDS = 5.0

# Pieces of a presigned URL's query that may survive a cut line: signing parameters, and the
# credential scope (``<access key id>/<date>/<region>/s3/aws4_request``, plain or escaped).
_SIGNING_PARAMETER = re.compile(r"[?&]?X-Amz-[A-Za-z-]+=[^&\s'\"]*", re.IGNORECASE)
_CREDENTIAL_SCOPE = re.compile(r"[^\s'\"?&=]*aws4_request", re.IGNORECASE)
_HEX_RUN = re.compile(r"[0-9a-fA-F]{8,}")
_SECRET_PARAMETERS = ("x-amz-signature", "x-amz-credential", "x-amz-security-token",
                      "signature", "awsaccesskeyid")


@dataclass(frozen=True)
class ToolInput:
    """What ffmpeg or ffprobe opens, and the name every message uses for it.

    Attributes:
        location: A local path, or a URL ffmpeg reads over http(s) (a presigned S3 GET URL,
            which must not appear in any message, log or metadata).
        shown: How messages name the input: ``s3://bucket/key`` for a URL, the file name for a
            path.
    """

    location: str
    shown: str

    @classmethod
    def of(cls, src: str | os.PathLike[str] | ToolInput) -> ToolInput:
        """``src`` as it is, or a local path shown by its file name."""
        if isinstance(src, ToolInput):
            return src
        location = os.fspath(src)
        return cls(location=location, shown=PurePath(location).name)

    @property
    def is_url(self) -> bool:
        """Whether ``location`` is an http(s) URL (read through ffmpeg's http protocol)."""
        return urlsplit(self.location).scheme.lower() in ("http", "https")

    def scrub(self, text: str) -> str:
        """``text`` with the URL (whole, or without its query) replaced by :attr:`shown`.

        Whatever else of the query is left (a line cut in the URL's middle, a parameter printed
        on its own) goes too: ``X-Amz-*`` parameters, the credential scope, the access key id,
        the signature and any run of 8 or more of its hex digits. A path is left as it is.
        """
        if not text or not self.is_url:
            return text
        parts = urlsplit(self.location)
        bare = urlunsplit(parts._replace(query="", fragment=""))
        for whole in (self.location, bare):
            text = text.replace(whole, self.shown)
        if parts.query:
            text = text.replace(parts.query, "")
        secrets: set[str] = set()
        for name, value in parse_qsl(parts.query):
            if name.lower() in _SECRET_PARAMETERS and value:
                secrets.update((value, quote(value, safe=""), value.split("/")[0]))
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        text = _SIGNING_PARAMETER.sub("", text)
        text = _CREDENTIAL_SCOPE.sub("***", text)
        signatures = [v for n, v in parse_qsl(parts.query) if "signature" in n.lower()]
        return _HEX_RUN.sub(
            lambda m: "***" if any(m.group() in s for s in signatures) else m.group(), text)


class _Tail:
    """The last ``limit`` bytes of a stream, filled by a thread; counts every byte seen."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0
        self._buffer = bytearray()
        self._lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self._lock:
            self.seen += len(chunk)
            self._buffer += chunk
            if len(self._buffer) > self.limit:
                del self._buffer[: len(self._buffer) - self.limit]

    def value(self) -> bytes:
        with self._lock:
            return bytes(self._buffer)


class _Sink:
    """Hands every chunk to a callable (the reader thread calls it); keeps nothing."""

    def __init__(self, consume: Callable[[bytes], None]) -> None:
        self.limit = 0
        self.seen = 0
        self._consume = consume

    def add(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        self._consume(chunk)

    def value(self) -> bytes:
        return b""


def _drain(pipe: IO[bytes], tail: _Tail | _Sink) -> None:
    with pipe:
        while chunk := pipe.read1(_READ_SIZE):  # type: ignore[attr-defined]
            tail.add(chunk)


@dataclass(frozen=True)
class ToolResult:
    """What a finished run left behind.

    Attributes:
        returncode: The exit status.
        stdout: The end of stdout (empty unless captured).
        stdout_truncated: More stdout arrived than ``stdout_limit`` kept.
        stderr: The end of stderr (at most ``STDERR_TAIL_BYTES``), decoded leniently.
        stderr_bytes: How many bytes of stderr the run wrote in all.
    """

    returncode: int
    stdout: bytes
    stdout_truncated: bool
    stderr: str
    stderr_bytes: int


class ToolProcess:
    """One running ffmpeg/ffprobe; :meth:`wait` enforces the deadline, :meth:`kill` ends it.

    Usable as a context manager: leaving the block kills the process if it still runs.

    Args:
        command: The argument vector; ``command[0]`` is looked up on PATH.
        capture_stdout: Keep the end of stdout (up to ``stdout_limit``); else it is discarded.
        stdout_limit: Bytes of stdout kept when captured.
        stderr_limit: Bytes of stderr kept.
        stdout_sink: Called by the reader thread with each chunk of stdout as it comes (nothing
            is kept); it must not raise. Implies capturing.
        scrub: Applied to stderr before anyone sees it (:meth:`ToolInput.scrub` of an input
            that is a URL with credentials); when the kept tail starts mid-line, that partial
            line is dropped first, as a cut URL could not be recognised.

    Raises:
        FileNotFoundError: The executable does not exist.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        capture_stdout: bool = False,
        stdout_limit: int = STDOUT_LIMIT_BYTES,
        stderr_limit: int = STDERR_TAIL_BYTES,
        stdout_sink: Callable[[bytes], None] | None = None,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        self.name = PurePath(command[0]).name
        self._scrub = scrub
        self._stdout = _Tail(stdout_limit) if stdout_sink is None else _Sink(stdout_sink)
        capture_stdout = capture_stdout or stdout_sink is not None
        self._stderr = _Tail(stderr_limit)
        self._proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._readers = [
            threading.Thread(target=_drain, args=(pipe, tail), daemon=True)
            for pipe, tail in ((self._proc.stdout, self._stdout), (self._proc.stderr, self._stderr))
            if pipe is not None
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        """The process id."""
        return self._proc.pid

    def wait(self, timeout: float | None) -> ToolResult:
        """Wait for the run to end; kill it and its children when ``timeout`` passes first.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Returns:
            The exit status and the kept ends of its output.

        Raises:
            ToolTimeout: The deadline passed; the process and its descendants have been killed
                and it has been reaped.
        """
        if not _exited_within(self._proc, timeout):
            self.kill()
            raise ToolTimeout(
                f"{self.name} did not finish within {timeout:g} s and was killed"
            ) from None
        self._join()
        return self.result()

    def kill(self) -> None:
        """Kill the process and its descendants unless it has ended, and reap it."""
        if self._proc.poll() is None:
            _kill_tree(self._proc.pid)
        self._proc.wait()
        self._join()

    def result(self) -> ToolResult:
        """The exit status (``-1`` while running) and the ends of stdout and stderr so far."""
        return ToolResult(
            returncode=-1 if self._proc.returncode is None else self._proc.returncode,
            stdout=self._stdout.value(),
            stdout_truncated=self._stdout.seen > self._stdout.limit,
            stderr=self._stderr_text(),
            stderr_bytes=self._stderr.seen,
        )

    def _stderr_text(self) -> str:
        text = self._stderr.value().decode("utf-8", errors="replace")
        if self._scrub is None:
            return text
        if self._stderr.seen > self._stderr.limit:
            text = text.partition("\n")[2]
        return self._scrub(text)

    def _join(self) -> None:
        # The pipes close when the last process holding them exits; a descendant that escaped
        # the kill (reparented before the walk) could hold one open, so the wait is bounded.
        for reader in self._readers:
            reader.join(_JOIN_SECONDS)

    def __enter__(self) -> ToolProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def _exited_within(proc: subprocess.Popen[bytes], timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds for ``proc`` to exit; whether it did (it is then reaped).

    ``Popen.wait(timeout)`` polls with sleeps of up to 50 ms, which added ~40 ms to every
    ffprobe; a pidfd becomes readable the moment the process exits.
    """
    if timeout is not None and proc.poll() is None:
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:  # no pidfd in this kernel: Popen's polling below
            pass
        else:
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                if not poller.poll(max(timeout, 0.0) * 1000):
                    return False
            finally:
                os.close(pidfd)
            timeout = None  # it has exited: the wait below only reaps it
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant, stopping each as it is found so none forks anew."""
    tree = [pid]
    for parent in tree:  # grows while it is walked: breadth first
        _signal(parent, signal.SIGSTOP)
        tree.extend(_children(parent))
    for member in tree:
        _signal(member, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    """The child process ids of ``pid`` (Linux); none where ``/proc`` cannot tell."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children.extend(int(c) for c in (task / "children").read_text().split())
    return children


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def run_tool(
    command: Sequence[str],
    *,
    timeout: float | None,
    capture_stdout: bool = False,
    stdout_limit: int = STDOUT_LIMIT_BYTES,
    scrub: Callable[[str], str] | None = None,
) -> ToolResult:
    """Run ``command`` to its end or its deadline; see :class:`ToolProcess`.

    Args:
        command: The argument vector.
        timeout: Seconds before the process tree is killed; ``None`` waits as long as it takes.
        capture_stdout: Keep the end of stdout.
        stdout_limit: Bytes of stdout kept when captured.
        scrub: Applied to stderr (see :class:`ToolProcess`).

    Returns:
        The exit status and the kept ends of its output.

    Raises:
        FileNotFoundError: The executable does not exist.
        ToolTimeout: The deadline passed (the process and its descendants were killed).
    """
    with ToolProcess(command, capture_stdout=capture_stdout, stdout_limit=stdout_limit,
                     scrub=scrub) as proc:
        return proc.wait(timeout)


def one_line(stderr: str, limit: int) -> str:
    """The last ``limit`` characters of ``stderr`` on one line: enough to say why a run failed."""
    text = " | ".join(line.strip() for line in stderr.splitlines() if line.strip())
    return text if len(text) <= limit else "…" + text[-limit:]
