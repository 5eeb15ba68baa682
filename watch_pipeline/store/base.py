"""The object store contract: where imported media and transcripts live.

Keys are ``/``-separated relative paths such as ``user_1/file_42/talk.mp4``. Every method streams:
no implementation may hold a whole media file in memory.
"""

from __future__ import annotations

import abc
import errno
import io
from dataclasses import dataclass
from pathlib import Path

STREAM_URL_SECONDS = 3600
"""How long a :meth:`ObjectStore.stream_url` stays valid unless the caller asks otherwise."""


@dataclass(frozen=True)
class StoredObject:
    """What the store holds under one key.

    Attributes:
        key: The object key.
        size: Size in bytes.
        checksum: The content's checksum as hex (``None`` when unknown): the CRC32C the store
            verified the stored bytes with (``store/checksum.py``), or, for objects stored
            before CRC32C, their SHA-256.
        checksum_algorithm: ``"crc32c"`` or ``"sha256"``: how ``checksum`` was computed
            (``None`` with it).
    """

    key: str
    size: int
    checksum: str | None = None
    checksum_algorithm: str | None = None


class SizedReader(io.RawIOBase):
    """A read-only file object over ``_size`` bytes that keeps its own offset ``_pos``.

    Seeking only moves the offset, as for a local file (past the end is allowed; reads there
    return ``b""``). A subclass sets ``_size`` and reads from ``_pos``, advancing it.
    """

    _size: int
    _pos: int = 0

    def readable(self) -> bool:
        """Return ``True``: the bytes can be read."""
        return True

    def seekable(self) -> bool:
        """Return ``True``: any offset can be read directly."""
        return True

    def tell(self) -> int:
        """Return the current offset."""
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` relative to ``whence``; return the new offset.

        Raises:
            OSError: The resulting offset would be negative (``EINVAL``), as for a local file.
            ValueError: ``whence`` is invalid or the reader is closed.
        """
        self._check_open()
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if target < 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        self._pos = target
        return target

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file.")


class ObjectStoreError(Exception):
    """The store refused or failed an operation; the message never contains credentials."""


def check_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe relative object key, else raise.

    A safe key is non-empty, ``/``-separated, relative (no leading ``/``), and has no empty,
    ``.`` or ``..`` segment, no backslash and no NUL, so it maps to exactly one file below a
    local root and to the same object name on every S3 implementation.

    Raises:
        ObjectStoreError: The key is unsafe; the message names the reason.
    """
    if not isinstance(key, str) or not key:
        raise ObjectStoreError("object key must be a non-empty string")
    if "\\" in key or "\x00" in key:
        raise ObjectStoreError(f"object key {key!r} contains a backslash or NUL")
    if key.startswith("/"):
        raise ObjectStoreError(f"object key {key!r} is absolute")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ObjectStoreError(f"object key {key!r} has an empty, '.' or '..' segment")
    return key


class ObjectStore(abc.ABC):
    """A flat key → bytes store (a local directory or an S3/MinIO bucket)."""

    @abc.abstractmethod
    def put_file(self, key: str, src: Path, *, content_type: str | None = None) -> StoredObject:
        """Stream ``src`` to ``key`` (overwriting) and return its size and CRC32C.

        The store verifies the stored bytes against a CRC32C of the source before the object
        appears under ``key``; on a mismatch nothing is left under ``key`` (an earlier object
        there stays) and :class:`ObjectStoreError` says so.
        """

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> StoredObject:
        """Store a small payload (transcripts, metadata), overwriting."""

    @abc.abstractmethod
    def head(self, key: str) -> StoredObject | None:
        """Return what is stored under ``key``, or ``None`` when nothing is."""

    @abc.abstractmethod
    def open(self, key: str) -> io.RawIOBase | io.BufferedIOBase:
        """Open ``key`` as a seekable read-only binary file object (ranged reads for S3)."""

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole (transcripts only, never media)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    @abc.abstractmethod
    def url(self, key: str) -> str:
        """A human-readable location for ``key`` (a ``file://`` path or ``s3://bucket/key``)."""

    def local_path(self, key: str) -> Path | None:
        """The file on this machine holding ``key``, to read in place; ``None`` when there is none.

        Remote stores (S3) keep the default, ``None``: callers then copy the object through
        :meth:`open`. A store that keeps objects as local files returns the file's path (which
        may not exist yet), so a reader such as the transcriber needs no copy.

        Raises:
            ObjectStoreError: The key is unsafe.
        """
        check_key(key)
        return None

    def stream_url(self, key: str, *, expires: float = STREAM_URL_SECONDS) -> str | None:
        """A location ffmpeg can open and seek in to read ``key`` in place; ``None`` if none.

        A local store returns the file's path; an S3 store a presigned GET URL that ffmpeg reads
        with range requests (a seek is a new ranged GET), so a preview costs the bytes it reads,
        not a download of the object. The default, ``None``, makes callers copy through
        :meth:`open` (``pipeline/steps.readable_copy``).

        A URL may carry credentials (a presigned URL holds a signature and the access key id):
        callers must keep it out of logs, metadata and exception messages and name the object by
        :meth:`url` instead (``media/process.ToolInput`` scrubs ffmpeg's stderr).

        Args:
            key: The object key.
            expires: Seconds a URL must stay valid (a store may cap it); a path ignores it.

        Raises:
            ObjectStoreError: The key is unsafe, or the store cannot make the URL.
        """
        check_key(key)
        return None
