"""The contract every watch source client fulfils (local folder, S3 bucket, SMB share).

A client is created by :func:`watch_pipeline.sources.factory.create_client` from one catalog
``watch_source`` row. Callers use it in this order::

    client.test_connection()            # optional; raises SourceError subclasses
    for entry in client.list_files():   # streaming, never materialises the whole listing
        with client.open(entry.remote_path) as fh:   # seekable, read-only
            ...
    client.download(entry.remote_path, dest)          # remote sources only
    client.close()

Every error a client raises is a :class:`SourceError` subclass whose message is safe to store
in the catalog and show in Dagster: it never contains a secret.
"""

from __future__ import annotations

import abc
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from watch_pipeline.catalog.models import SkipReason


@dataclass(frozen=True)
class SourceEntry:
    """One file as a listing saw it.

    Attributes:
        remote_path: Path relative to the source root, ``/``-separated, never starting with ``/``
            and never containing a ``..`` segment.
        size: Size in bytes.
        mtime: Last modification time (timezone-aware UTC).
        etag: The server's change token (S3 ETag); ``None`` where the source has none.
    """

    remote_path: str
    size: int
    mtime: datetime
    etag: str | None = None

    @property
    def filename(self) -> str:
        """The last path segment."""
        return self.remote_path.rsplit("/", 1)[-1]


MAX_REMOTE_PATH = 2048
"""The longest ``remote_path`` the catalog stores (``watch_source_file.remote_path``)."""


@dataclass(frozen=True)
class RejectedEntry:
    """A listing entry the client refused to expose (unsafe path, symlink out of the root).

    The scan records it as ``skipped_invalid`` with ``skip_reason`` and ``reason``.

    Attributes:
        remote_path: As for :class:`SourceEntry`, but made storable: a name that is not valid
            UTF-8 is escaped (see :func:`escape_path`) and a path longer than
            :data:`MAX_REMOTE_PATH` is shortened to a stable form (see :func:`storable_path`).
        reason: A sentence for the operator.
        skip_reason: Why, as the catalog stores it.
    """

    remote_path: str
    reason: str
    skip_reason: SkipReason = SkipReason.VALIDATION_FAILED


def escape_path(path: str) -> str:
    r"""Make a path decoded with ``surrogateescape`` storable and printable.

    Each byte that is not valid UTF-8 becomes ``\xNN``, each ASCII control character
    ``\xNN`` and each backslash ``\\``; everything else is kept. The result is valid UTF-8
    (it fits a VARCHAR) and :func:`path_bytes` turns it back into the original bytes. A path
    that is valid UTF-8 is returned unchanged: only names the scan rejects as
    ``unreadable_name`` are escaped, so :func:`path_bytes` applies to those.
    """
    if is_decodable(path):
        return path
    out: list[str] = []
    for ch in path:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch)
    return "".join(out)


def path_bytes(escaped: str) -> bytes:
    r"""The original bytes of a path produced by :func:`escape_path` (``\xNN``, ``\\``)."""
    return _ESCAPE.sub(_unescape, escaped).encode("utf-8", "surrogateescape")


def is_decodable(name: str) -> bool:
    """Whether ``name`` (as ``os.scandir`` returns it) is valid UTF-8, with no escaped bytes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_path(path: str) -> str:
    """``path`` itself, or a stable shortened form when it is longer than :data:`MAX_REMOTE_PATH`.

    The short form keeps the start of the path and ends with a digest of the whole, so two
    long paths never share one catalog row.
    """
    if len(path) <= MAX_REMOTE_PATH:
        return path
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{path[: MAX_REMOTE_PATH - 48]}...[{len(path)} chars, sha256 {digest}]"


def extension_suffixes(extensions: tuple[str, ...]) -> tuple[str, ...]:
    """Lower-case, dot-prefixed ``extensions`` (``"MP4"`` -> ``".mp4"``); empty ones dropped."""
    return tuple(
        ext.lower() if ext.startswith(".") else "." + ext.lower() for ext in extensions if ext
    )


def matches(name: str, suffixes: tuple[str, ...]) -> bool:
    """Whether ``name`` ends with one of ``suffixes`` (from :func:`extension_suffixes`).

    ``endswith``, not ``splitext``, so multi-dot extensions such as ``.tar.gz`` work too; no
    suffixes keeps every name.
    """
    return not suffixes or name.lower().endswith(suffixes)


_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|\\)")


def _unescape(match: re.Match[str]) -> str:
    token = match.group(1)
    if token == "\\":
        return "\\"
    code = int(token[1:], 16)
    return chr(code) if code < 0x80 else chr(0xDC00 + code)


class BrowseEntry(NamedTuple):
    """One item of a folder listing for ``watch-pipeline source browse``."""

    kind: str  # "folder" or "file"
    name: str
    size: int | None = None


class SourceError(Exception):
    """Base class: the source cannot be used right now. The message is catalog-safe."""


class SourceUnreachableError(SourceError):
    """The server, share or root folder cannot be reached."""


class SourceAuthError(SourceError):
    """The credentials were refused."""


class SourcePermissionError(SourceError):
    """The root or a file exists but may not be read."""


class SourceNotFoundError(SourceError):
    """The bucket, share, folder or file does not exist."""


class SourceChangedError(SourceError):
    """The file changed (new ETag, size or mtime) while it was being read or downloaded."""


class UnsafePathError(SourceError):
    """A path escapes the source root (``..``, absolute path, symlink pointing outside)."""


class SourceClient(abc.ABC):
    """A file-system-shaped view of one watch source root.

    Implementations must be safe to use from one thread at a time; a scan creates one client,
    uses it, and closes it.
    """

    @abc.abstractmethod
    def test_connection(self) -> None:
        """Connect and list the root; raise a :class:`SourceError` subclass on any failure."""

    @abc.abstractmethod
    def list_files(self, *, recursive: bool = True,
                   extensions: tuple[str, ...] = ()) -> Iterator[SourceEntry | RejectedEntry]:
        """Yield every regular file under the root, streaming.

        Args:
            recursive: Descend into sub-folders.
            extensions: Lower-case dot-prefixed extensions to keep; empty keeps every file.

        Raises:
            SourceError: The root cannot be listed (raised before or during iteration).
        """

    @abc.abstractmethod
    def open(self, remote_path: str) -> io.RawIOBase | io.BufferedIOBase:
        """Open ``remote_path`` as a seekable, read-only binary file object."""

    @abc.abstractmethod
    def local_path(self, remote_path: str) -> Path | None:
        """Return the file's path on this machine when it can be read in place, else ``None``."""

    @abc.abstractmethod
    def download(self, remote_path: str, dest: Path, *, expected_size: int | None = None) -> Path:
        """Copy the file to ``dest`` (streamed; resumable where the protocol allows)."""

    @abc.abstractmethod
    def upload(self, src: Path, remote_path: str) -> None:
        """Write ``src`` to ``remote_path`` under the root."""

    @abc.abstractmethod
    def delete(self, remote_path: str) -> None:
        """Remove ``remote_path`` (used by ``delete_after_import``)."""

    def stat(self, remote_path: str) -> SourceEntry | None:
        """The file's current entry, as a listing gives it; ``None`` when it is gone.

        Compared with what a scan recorded (size, mtime, ETag), so it must describe a file the
        way :meth:`list_files` does, to the same precision. This default walks the listing;
        clients override it with one request.

        Raises:
            SourceError: The source cannot be read.
        """
        listing = self.list_files(recursive="/" in remote_path)
        try:
            for entry in listing:
                if isinstance(entry, SourceEntry) and entry.remote_path == remote_path:
                    return entry
        finally:
            close = getattr(listing, "close", None)
            if close is not None:
                close()
        return None

    def browse(self, path: str = "") -> list[BrowseEntry]:
        """The folders and files directly inside ``path`` (relative to the root), sorted."""
        raise NotImplementedError(f"{type(self).__name__} cannot browse")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""

    def __enter__(self) -> SourceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
