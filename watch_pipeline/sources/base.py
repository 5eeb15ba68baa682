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
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple


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


@dataclass(frozen=True)
class RejectedEntry:
    """A listing entry the client refused to expose (unsafe path, symlink out of the root).

    The scan records it as ``skipped_invalid`` with ``validation_failed`` and ``reason``.
    """

    remote_path: str
    reason: str


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

    def browse(self, path: str = "") -> list[BrowseEntry]:
        """The folders and files directly inside ``path`` (relative to the root), sorted."""
        raise NotImplementedError(f"{type(self).__name__} cannot browse")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""

    def __enter__(self) -> SourceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
