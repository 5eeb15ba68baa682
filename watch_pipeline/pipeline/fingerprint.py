"""Content fingerprints: imohash over any seekable binary file object.

imohash hashes a file by sampling instead of reading it whole. With ``size`` the file's length in
bytes, ``SAMPLE_SIZE`` = 16 KiB and ``SAMPLE_THRESHOLD`` = 128 KiB:

1. If ``size < SAMPLE_THRESHOLD``, the data hashed is the whole file.
2. Otherwise it is three windows of ``SAMPLE_SIZE`` bytes concatenated: at offset 0, at offset
   ``size // 2`` and at offset ``size - SAMPLE_SIZE``.
3. The data is hashed with 128-bit MurmurHash3 (x64 variant); the first bytes of the digest are
   then overwritten with the file size encoded as an unsigned LEB128 varint, so files of different
   sizes never collide.

The 16-byte digest is returned as 32 lowercase hex characters. Because at most 48 KiB are read
whatever the size, a fingerprint costs three small ranged reads on S3 or SMB, and the same bytes
give the same fingerprint wherever they are read from.

This is the only module that imports the ``imohash`` package; its quirks are wrapped here.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import imohash

from watch_pipeline.store.base import SizedReader

SAMPLE_SIZE = 16 * 1024
"""Bytes in each of the three sampled windows."""

SAMPLE_THRESHOLD = 128 * 1024
"""Files smaller than this are hashed whole."""

ALGORITHM_VERSION = "imohash-1.1.0-16k-128k"
"""Stored beside each fingerprint so a recompute job can find rows made by another algorithm."""

_READ_CHUNK = 1024 * 1024


class _AbsoluteSeeks(SizedReader):
    """Read-only view of a file object that only ever receives absolute seeks.

    imohash seeks relative to the end (``seek(-n, SEEK_END)``), which some ranged-read file
    objects do not support, and reads small files with a bare ``read()``, which a raw file
    object may answer short. This view learns the size once and forwards absolute seeks and
    complete reads only.
    """

    def __init__(self, fh: BinaryIO) -> None:
        super().__init__()
        self._fh = fh
        self._size = fh.seek(0, os.SEEK_END)
        if self._size is None:  # Some raw file objects return None from seek().
            self._size = fh.tell()
        self._pos = 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        pos = super().seek(offset, whence)
        self._fh.seek(pos, os.SEEK_SET)
        return pos

    def read(self, size: int | None = -1) -> bytes:
        whole = size is None or size < 0
        if whole:
            size = max(self._size - self._pos, 0)
        parts: list[bytes] = []
        remaining = size
        while remaining > 0:
            chunk = self._fh.read(min(remaining, _READ_CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            remaining -= len(chunk)
        data = b"".join(parts)
        self._pos += len(data)
        if whole and remaining > 0:
            # A short "read everything" would hash other bytes than the size claims.
            raise EOFError(f"file ended {remaining} bytes before its size of {self._size}")
        return data


def imohash_fileobj(fh: BinaryIO) -> str:
    """Fingerprint an open, seekable, binary file object with imohash.

    Reads the whole file only when it is smaller than ``SAMPLE_THRESHOLD``; otherwise reads three
    ``SAMPLE_SIZE`` windows (start, middle, end). Works with local files, S3 ranged-read objects
    and SMB files alike: only absolute seeks and reads are issued to ``fh``.

    Args:
        fh: A binary file object supporting ``seek``/``tell``/``read``. Its position is left
            unspecified afterwards.

    Returns:
        The 128-bit fingerprint as 32 lowercase hex characters, equal to
        ``imohash.hashfile(path, hexdigest=True)`` for the same bytes.

    Raises:
        EOFError: If the file object yields fewer bytes than its size promised.
        OSError: If reading or seeking fails.

    """
    # imohash 1.1.0 spells the keyword "threshhold"; keep that spelling confined to this line.
    return imohash.hashfileobject(
        _AbsoluteSeeks(fh),
        sample_threshhold=SAMPLE_THRESHOLD,
        sample_size=SAMPLE_SIZE,
        hexdigest=True,
    )


def imohash_path(path: str | os.PathLike[str]) -> str:
    """Fingerprint a local file with imohash.

    Args:
        path: Path of a regular file.

    Returns:
        The 128-bit fingerprint as 32 lowercase hex characters.

    Raises:
        OSError: If the file cannot be opened or read.

    """
    with open(path, "rb") as fh:
        return imohash_fileobj(fh)
