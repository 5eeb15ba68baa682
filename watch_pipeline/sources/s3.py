"""A watch source that is an S3 bucket (AWS, MinIO or any S3 API), optionally below a prefix.

Listing streams ``list_objects_v2`` page by page, so a bucket of a million keys never sits in
memory. ``remote_path`` is the key relative to the prefix. Keys that could not be written safely
as one file below a temp folder (a ``..``, ``.`` or empty segment, a leading ``/``, a backslash,
a NUL, a segment longer than a file name may be) are yielded as :class:`RejectedEntry` with a
skip code and never opened; empty "folder marker" keys ending in ``/`` are skipped.

Reads for fingerprints go through :class:`~watch_pipeline.store.s3.S3RangeReader`: imohash reads
three 16 KiB windows, so fingerprinting an object costs one HEAD and at most three small GETs.

Downloads land in ``<dest>.part``, renamed to ``dest`` once complete (the steps shared with SMB
are in :mod:`watch_pipeline.sources._transfer`). ``<dest>.part.etag`` records the ETag of the
version being fetched and, while a download into a preallocated file runs (one stream or
parallel parts), how many bytes from the start are complete:

* An object of at most :data:`PART_SIZE` bytes (or a rest that small) is one streamed GET
  (``Range: bytes=<done>-``) appended to ``<dest>.part``, whose size is then the resume point.
* A larger one adapts to the server. ``<dest>.part`` is preallocated to the full size and one
  GET of the whole rest is written into it with ``os.pwrite`` through one
  :data:`DOWNLOAD_CHUNK` buffer. After a probe (:data:`PROBE_BYTES` or :data:`PROBE_SECONDS`,
  whichever comes first) its rate is measured:

  - at least :data:`FAST_STREAM_MIBPS`: the one stream is kept to the end (a local MinIO or
    moto, where more GETs only cost: moto reads the whole object for every GET, ranged or not);
  - slower: the download splits. The rest is cut into parts as if it were fetched in parallel
    from the start; the open stream goes on to the end of the part the probe ended in and is
    then closed, and the other parts are ranged GETs, :data:`DOWNLOAD_WORKERS` streams in
    flight in all. Parts are as few as keep every worker busy (an even split of the rest) but
    between :data:`PART_SIZE` and :data:`MAX_PART_SIZE`: every GET has a fixed cost (a round
    trip and time to first byte on S3), so 16 ranged GETs of a 256 MiB object are slower
    than 4.

  The log says at INFO which way was taken and the rate measured.

  What is complete is tracked as one contiguous prefix, not as a set of ranges: the one stream
  records each write; parts are
  handed out in order with a bounded lookahead (:func:`_transfer.fetch_in_parts`), and whenever
  the bytes written from the start without a gap grow (completed parts, then what the first
  incomplete part has written), their end is written to the ETag file. A failed attempt cuts
  ``<dest>.part`` back to that prefix (so its size is the resume point again); after a crash the
  next attempt cuts it. What the other parts in flight had fetched is fetched again, and the
  partial file always means "the first N bytes", as for a sequential download.
  The prefix is recorded without an fsync (that would hold every download to the disk's write
  rate), so it is trusted only within the boot that wrote it: after a reboot the page cache that
  held the bytes may be gone, and such a partial file is discarded.

Downloads resume from the bytes already complete:

* within one :meth:`S3SourceClient.download` call, after a connection dropped mid-stream (each
  part, or the single GET, is re-requested from the byte it reached, up to
  :data:`DOWNLOAD_RETRIES` times in a row without progress, with exponential backoff);
* across calls (a later run after a crash or a server outage), when the object still has the
  ETag the partial file was fetched under; otherwise the partial file is discarded.

Every GET carries ``If-Match`` with the ETag, so bytes of two versions are never mixed: an
object replaced meanwhile raises :class:`SourceChangedError` and the stale partial file is
removed. Other failures keep it for the next attempt; a caller that gives up removes both files
named by :func:`partial_files`.

boto3 transfer and retry settings come from :mod:`watch_pipeline.store.s3`, the one place they
are tuned.
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import urllib3.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient

from watch_pipeline.catalog.models import SkipReason
from watch_pipeline.catalog.secrets import public_repr
from watch_pipeline.sources import _transfer, base
from watch_pipeline.store.s3 import (
    MAX_CONCURRENCY,
    MULTIPART_CHUNKSIZE,
    MULTIPART_THRESHOLD,
    S3Connection,
    S3RangeReader,
    describe_error,
)

log = logging.getLogger(__name__)

MIB = _transfer.MIB

FAST_STREAM_MIBPS = 200.0
"""A single stream at least this fast (MiB/s) is kept to the end instead of splitting.

One S3 connection delivers ~100 MB/s, slower than a local disk takes bytes, so parallel parts
win there; a loopback MinIO or moto stream runs at 400-700 MiB/s on 2 cores, close to what one
Python process can write, and more GETs only add their fixed cost (moto reads the whole object
for each: 4 parts took 0.89 s of a 256 MiB download that one GET did in 0.38 s). 200 MiB/s is
well between the two."""
PROBE_BYTES = 16 * MIB
"""The single stream's rate is measured over its first this many bytes ..."""
PROBE_SECONDS = 0.25
"""... or over this long, whichever comes first (a slow link need not deliver 16 MiB first)."""

PART_SIZE = 16 * MIB
"""The smallest part of a parallel download; an object this size or smaller is one GET
appended to the partial file (no probe, no preallocation)."""
MAX_PART_SIZE = 64 * MIB
"""The largest part: bounds what a crash can waste (the parts in flight beyond the prefix)."""
DOWNLOAD_WORKERS = 4
"""Ranged GETs in flight in one download; each worker holds one :data:`DOWNLOAD_CHUNK` buffer."""
DOWNLOAD_CHUNK = 256 * 1024
"""Bytes read from a response stream and written to disk at a time (the memory bound).

urllib3 reads each chunk into a new bytes object before copying it into the buffer, so a GET
in flight holds about twice this: 4 GETs of 1 MiB chunks added 8.3 MiB to the peak RSS of a
256 MiB download, of 256 KiB chunks 2.3 MiB, for 0.03 s more CPU."""
DOWNLOAD_RETRIES = 5
"""Re-requests after a connection dropped mid-stream, counted per GET since its last progress."""
LIST_PAGE_SIZE = 1000
"""Keys per ``list_objects_v2`` page (S3's maximum)."""
NAME_MAX = 255
"""The longest key segment, in UTF-8 bytes, that can become a file name on a local disk."""
ETAG_SUFFIX = ".part.etag"
"""``<dest>.part.etag`` holds the ETag of the object version ``<dest>.part`` was fetched from; a
download into a preallocated file adds a second line: the complete prefix in bytes and the boot
id."""

_AUTH_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                         "ExpiredToken", "TokenRefreshRequired"})
_PERMISSION_CODES = frozenset({"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_CHANGED_CODES = frozenset({"PreconditionFailed", "412"})

_CREDENTIAL_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
)
_BOTO_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
# Raised while reading a response body when the connection drops or stalls mid-stream.
_STREAM_ERRORS = (
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.IncompleteReadError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    http.client.IncompleteRead,
    ConnectionError,
    TimeoutError,
)


class S3SourceClient(base.SourceClient):
    """A :class:`SourceClient` over one S3 bucket, below an optional key prefix.

    No network traffic happens until the first method call. Errors are raised as
    :class:`SourceError` subclasses whose message names the bucket, key or endpoint and the cause,
    never a secret.

    Args:
        bucket: The bucket name.
        prefix: A key prefix acting as the root folder; ``"incoming"`` and ``"incoming/"`` are the
            same; ``""`` watches the whole bucket.
        endpoint_url: The S3 endpoint (``http://minio:9000``); ``None`` for AWS. A URL without a
            scheme gets ``https://`` or ``http://`` according to ``use_ssl``.
        region: The region name (``None``: boto3's default).
        access_key_id: The access key id (``None``: boto3's default credential chain).
        secret_access_key: The secret key; never logged, shown in ``repr`` or put in a message.
        use_ssl: Use TLS when ``endpoint_url`` has no scheme (and for AWS).
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for a response or the next bytes of one.
        client: A ready boto3 S3 client to use instead of building one (not closed here).
        page_size: Keys per listing page (tests use small pages to exercise pagination).

    Raises:
        SourceError: No bucket name was given.
        SourceAuthError: Only one of access key id and secret was given.
        UnsafePathError: The prefix starts with ``/`` or contains ``..`` or NUL.
    """

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        use_ssl: bool = True,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        client: BaseClient | None = None,
        page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        if not bucket:
            raise base.SourceError("an S3 source needs a bucket name")
        self._s3 = S3Connection(endpoint_url, region, access_key_id, secret_access_key, use_ssl,
                                connect_timeout, read_timeout)
        self._s3.check_credentials(base.SourceAuthError)
        self._bucket = bucket
        self._prefix = _normalise_prefix(prefix)
        self._page_size = page_size
        self._client = client
        self._owns_client = client is None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return public_repr(self, bucket=self._bucket, prefix=self._prefix,
                           endpoint_url=self._s3.endpoint_url)

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self._bucket

    @property
    def prefix(self) -> str:
        """The normalised key prefix: ``""`` or ending in ``/``."""
        return self._prefix

    @property
    def client(self) -> BaseClient:
        """The boto3 S3 client, created on first use.

        Raises:
            SourceError: The endpoint URL or region is invalid.
        """
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def close(self) -> None:
        """Close the HTTP connections of a client this object created."""
        with self._client_lock:
            if self._client is not None and self._owns_client:
                self._client.close()
                self._client = None

    # -- connection -------------------------------------------------------------------------

    def test_connection(self) -> None:
        """List one key below the prefix, then ``HeadBucket``.

        The listing goes first because its error answers carry a code (``NoSuchBucket``,
        ``SignatureDoesNotMatch``), while a HEAD answer has no body and only says 403 or 404.

        Raises:
            SourceNotFoundError: The bucket does not exist.
            SourceAuthError: The credentials were refused.
            SourcePermissionError: The credentials may not list the bucket.
            SourceUnreachableError: The endpoint cannot be reached or does not answer.
        """
        try:
            self.client.list_objects_v2(Bucket=self._bucket, Prefix=self._prefix, MaxKeys=1)
            self.client.head_bucket(Bucket=self._bucket)
        except _BOTO_ERRORS as exc:
            raise self._map_error(exc, "list", None) from exc

    # -- listing ----------------------------------------------------------------------------

    def list_files(
        self, *, recursive: bool = True, extensions: tuple[str, ...] = ()
    ) -> Iterator[base.SourceEntry | base.RejectedEntry]:
        """Yield every object below the prefix, one listing page in memory at a time.

        The first page is requested before the iterator is returned, so a missing bucket or
        refused credentials raise at call time; later pages raise during iteration.

        Args:
            recursive: Include keys in "sub-folders"; ``False`` lists only the objects directly
                below the prefix (``Delimiter="/"``).
            extensions: Dot-prefixed extensions to keep, matched case-insensitively; empty keeps
                every key. Filtered before the safety check, so an unsafe key of another type
                is ignored rather than rejected.

        Returns:
            A generator of :class:`SourceEntry` and :class:`RejectedEntry`.

        Raises:
            SourceError: A subclass naming why the bucket cannot be listed.
        """
        suffixes = base.extension_suffixes(extensions)
        pages = self._pages(self._prefix, delimiter=not recursive)
        first = self._next_page(pages)
        return self._entries(first, pages, suffixes)

    def _entries(
        self,
        first: dict[str, Any] | None,
        pages: Iterator[dict[str, Any]],
        suffixes: tuple[str, ...],
    ) -> Iterator[base.SourceEntry | base.RejectedEntry]:
        page = first
        while page is not None:
            for obj in page.get("Contents", ()):
                item = self._classify(obj, suffixes)
                if item is not None:
                    yield item
            page = self._next_page(pages)

    def _classify(
        self, obj: dict[str, Any], suffixes: tuple[str, ...]
    ) -> base.SourceEntry | base.RejectedEntry | None:
        key: str = obj["Key"]
        rel = key[len(self._prefix):]
        if not rel or (rel.endswith("/") and not obj.get("Size")):
            return None  # an empty "folder marker" written by consoles and sync tools
        if not base.matches(rel.rstrip("/"), suffixes):
            return None
        problem = _unsafe_reason(rel)
        if problem is not None:
            reason, code = problem
            # NUL cannot be stored in a PostgreSQL text column: record it escaped.
            return base.RejectedEntry(rel.replace("\x00", "\\x00"), f"unsafe key: {reason}", code)
        etag = obj.get("ETag")
        return base.SourceEntry(
            remote_path=rel,
            size=int(obj["Size"]),
            mtime=obj["LastModified"].astimezone(UTC),
            etag=etag.strip('"') if etag else None,
        )

    def browse(self, path: str = "") -> list[base.BrowseEntry]:
        """List one level below ``path`` (relative to the prefix), for choosing a prefix.

        Args:
            path: A folder below the prefix; ``""`` is the prefix itself.

        Returns:
            ``(kind, name, size)`` tuples, folders (``"folder"``, name, ``None``) first, then
            files (``"file"``, name, size), each group in key order. Every file is returned;
            callers filter by extension. Names with unsafe characters are left out.

        Raises:
            UnsafePathError: ``path`` starts with ``/`` or contains ``..`` or NUL.
            SourceError: A subclass naming why the bucket cannot be listed.
        """
        listed = self._prefix + _normalise_prefix(path)
        folders: list[base.BrowseEntry] = []
        files: list[base.BrowseEntry] = []
        pages = self._pages(listed, delimiter=True)
        page = self._next_page(pages)
        while page is not None:
            for common in page.get("CommonPrefixes", ()):
                name = common["Prefix"][len(listed):].rstrip("/")
                if name and _escapes(name) is None:
                    folders.append(base.BrowseEntry("folder", name, None))
            for obj in page.get("Contents", ()):
                name = obj["Key"][len(listed):]
                if name and not name.endswith("/") and _unsafe_reason(name) is None:
                    files.append(base.BrowseEntry("file", name, int(obj["Size"])))
            page = self._next_page(pages)
        return folders + files

    def _pages(self, prefix: str, *, delimiter: bool) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Prefix": prefix,
            "PaginationConfig": {"PageSize": self._page_size},
        }
        if delimiter:
            params["Delimiter"] = "/"
        # A botocore PageIterator requests the next page only when asked: one page in memory.
        return iter(self.client.get_paginator("list_objects_v2").paginate(**params))

    def _next_page(self, pages: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
        try:
            return next(pages, None)
        except _BOTO_ERRORS as exc:
            raise self._map_error(exc, "list", None) from exc

    def stat(self, remote_path: str) -> base.SourceEntry | None:
        """The object's entry, from a listing of that one key.

        A HEAD's Last-Modified has whole seconds where a listing has milliseconds: the listing
        is what scans recorded, so it is what a comparison needs.

        Raises:
            UnsafePathError: The path is unsafe.
            SourceError: A subclass naming why S3 refused the request.
        """
        key = self._key(remote_path)
        try:
            page = self.client.list_objects_v2(Bucket=self._bucket, Prefix=key, MaxKeys=1)
        except _BOTO_ERRORS as exc:
            raise self._map_error(exc, "list", remote_path) from exc
        for obj in page.get("Contents", ()):
            if obj["Key"] == key:
                item = self._classify(obj, ())
                return item if isinstance(item, base.SourceEntry) else None
        return None

    # -- file access ------------------------------------------------------------------------

    def open(
        self, remote_path: str, *, size: int | None = None, etag: str | None = None
    ) -> S3RangeReader:
        """Open ``remote_path`` as a seekable reader over ranged GETs (one GET per read).

        Args:
            remote_path: The key relative to the prefix.
            size: The listed size; with ``etag`` it saves the ``HeadObject``.
            etag: The listed ETag; every GET then carries ``If-Match``, so reading fails
                instead of mixing two versions if the object is replaced.

        Raises:
            UnsafePathError: The path is unsafe.
            SourceNotFoundError: No such object (or bucket).
            SourceError: Another subclass naming why the object cannot be read.
        """
        key = self._key(remote_path)
        if size is None or etag is None:
            head = self._head(remote_path, key, etag)
            size, etag = int(head["ContentLength"]), head.get("ETag")
        return S3RangeReader(
            self.client, self._bucket, key, size, etag=_quoted(etag), error_type=base.SourceError
        )

    def local_path(self, remote_path: str) -> None:
        """Return ``None``: objects are never readable in place."""
        return None

    def download(
        self,
        remote_path: str,
        dest: Path,
        *,
        expected_size: int | None = None,
        etag: str | None = None,
    ) -> Path:
        """Fetch the object into ``dest``, resuming from ``<dest>.part`` when possible.

        Above :data:`PART_SIZE` bytes, one stream that splits into parallel ranged GETs if it
        is slower than :data:`FAST_STREAM_MIBPS` (see the module docstring).
        Bytes arrive in ``<dest>.part``; ``<dest>.part.etag`` records the ETag they belong to
        (and how many are complete), so a later call resumes only a partial file of the same
        version of the object. Both are removed once ``dest`` is complete (see
        :func:`partial_files`). Memory: one :data:`DOWNLOAD_CHUNK` buffer per GET in flight.

        Args:
            remote_path: The key relative to the prefix.
            dest: The final file; parents are created.
            expected_size: The listed size; the download must end with exactly this many bytes.
            etag: The listed ETag; the object must still have it (``If-Match``). With both
                ``etag`` and ``expected_size`` no ``HeadObject`` is needed.

        Returns:
            ``dest``.

        Raises:
            UnsafePathError: The path is unsafe, or ``dest`` names a folder.
            SourceChangedError: The object no longer matches the listing (ETag or size) or was
                replaced mid-download; the partial file is removed.
            SourceUnreachableError: A connection dropped :data:`DOWNLOAD_RETRIES` times in a row
                without progress, or the endpoint stopped answering; the complete prefix of the
                partial file is kept for the next attempt.
            SourceError: Not enough free space near ``dest``; the bytes received differ from the
                expected size (the partial file is removed); or a subclass for S3 refusing the
                request.
        """
        key = self._key(remote_path)
        dest = _transfer.destination(dest)
        part, tag = partial_files(dest)
        version = self._version(remote_path, key, expected_size, etag, stale=(part, tag))
        done = _kept_prefix(version, part, tag)
        _transfer.check_free_space(dest.parent, version.size - done)
        try:
            if version.if_match and version.size - done > PART_SIZE:
                self._fetch_adaptive(remote_path, key, version, part, tag, done)
            elif done < version.size:
                _write_tag(tag, version.if_match)  # appended in order: the size is the prefix
                part.touch()
                self._fetch_into(remote_path, key, part, version.if_match)
            else:  # an empty object, or a partial file that is already whole
                if not version.confirmed:
                    self._head(remote_path, key, version.if_match)  # still there, same ETag?
                part.touch()
        except base.SourceChangedError:
            _transfer.remove(part, tag)
            raise
        return _transfer.finish(part, dest, version.size, self._url(remote_path), sidecars=(tag,))

    def _version(self, remote_path: str, key: str, expected_size: int | None, etag: str | None,
                 *, stale: tuple[Path, ...]) -> _Version:
        """The object version to fetch: the listed one, confirmed by a HEAD unless fully known.

        Raises:
            SourceChangedError: The object's size is no longer the listed one; ``stale`` (the
                partial files) are removed.
        """
        if expected_size is not None and etag is not None:
            return _Version(expected_size, _quoted(etag) or "", confirmed=False)
        head = self._head(remote_path, key, etag)
        size = int(head["ContentLength"])
        if expected_size is not None and size != expected_size:
            _transfer.remove(*stale)
            raise base.SourceChangedError(
                f"{self._url(remote_path)} changed on the server since it was listed "
                f"({size} bytes, listed {expected_size})"
            )
        return _Version(size, _quoted(etag or head.get("ETag")) or "", confirmed=True)

    def _fetch_adaptive(self, remote_path: str, key: str, version: _Version, part: Path,
                        tag: Path, done: int) -> None:
        """Fetch bytes ``done`` to the end into ``part``: one stream, split if it is slow.

        ``part`` is preallocated to the full size; the ETag file records the complete prefix
        as it grows, and a failure cuts ``part`` back to it before the error propagates.
        """
        record = _PrefixRecord(tag, version.if_match, done)  # before the file grows past it
        url = self._url(remote_path)
        opened: list[Any] = []  # the probed stream until a part takes it over

        def fetch(first: int, end: int, stop: threading.Event,
                  progress: Callable[[int], None]) -> None:
            body = opened.pop() if opened and first == pos else None
            self._fetch_range(remote_path, key, version, (fd, part), (first, end), stop,
                              progress, body=body)

        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o666)
            try:
                _transfer.preallocate(fd, version.size, part)
                body = self._get_range(remote_path, key, version, done, version.size)
                opened.append(body)
                pos, rate = self._probe(body, (fd, part), done, version.size, record.write)
                size = part_size(version.size - done)
                if pos >= version.size:
                    return
                if rate is not None and rate >= FAST_STREAM_MIBPS:
                    log.info("S3 download of %s: one stream at %.0f MiB/s (at least %.0f), "
                             "kept to the end", url, rate, FAST_STREAM_MIBPS)
                    opened.clear()
                    self._fetch_range(remote_path, key, version, (fd, part),
                                      (pos, version.size), threading.Event(), record.write,
                                      body=body)
                    return
                if rate is None:  # the stream dropped during the probe
                    opened.clear()
                    body.close()
                cut = min(done + (pos - done) // size * size + size, version.size)
                log.info("S3 download of %s: one stream at %s MiB/s (below %.0f): split, the "
                         "first stream to byte %d, the rest as ranged GETs of %.1f MiB, %d in "
                         "flight", url, "?" if rate is None else f"{rate:.0f}",
                         FAST_STREAM_MIBPS, cut, size / MIB, DOWNLOAD_WORKERS)
                _transfer.fetch_in_parts(
                    pos, version.size, part_size=size, workers=DOWNLOAD_WORKERS, fetch=fetch,
                    on_prefix=record.write, first_end=cut,
                )
            except BaseException:
                _transfer.truncate(part, record.done)
                raise
            finally:
                for unused in opened:  # not handed on (done in the probe, or a failure)
                    unused.close()
                os.close(fd)
        finally:
            record.close()

    def _probe(self, body: Any, out: tuple[int, Path], first: int, end: int,
               progress: Callable[[int], None]) -> tuple[int, float | None]:
        """Write ``body`` from ``first`` on into ``out`` until the probe ends, timing it.

        The probe ends after :data:`PROBE_BYTES`, after :data:`PROBE_SECONDS` or at ``end``.

        Returns:
            The offset reached and the stream's rate in MiB/s since its headers arrived;
            ``None`` for the rate when the stream dropped (the caller closes ``body``).
        """
        view = memoryview(bytearray(DOWNLOAD_CHUNK))
        pos, stop_at = first, min(end, first + PROBE_BYTES)
        start = time.perf_counter()
        deadline = start + PROBE_SECONDS
        try:
            while pos < stop_at:
                pos = _read_into(body, view, out, pos, stop_at, end)
                progress(pos)
                if time.perf_counter() >= deadline:
                    break
        except _STREAM_ERRORS as exc:
            log.warning("S3 download dropped at byte %d during the rate probe (%s)", pos,
                        describe_error(exc, endpoint=self._s3.endpoint_url))
            return pos, None
        seconds = max(time.perf_counter() - start, 1e-6)
        return pos, (pos - first) / MIB / seconds

    def _fetch_range(self, remote_path: str, key: str, version: _Version, out: tuple[int, Path],
                     span: tuple[int, int], stop: threading.Event,
                     progress: Callable[[int], None], *, body: Any = None) -> None:
        """Write the object's bytes ``[first, end)`` at the same offsets of ``out`` (fd, path).

        ``progress(offset)`` follows each write. ``body`` is a stream already open at ``first``
        (it may go on past ``end``: it is read up to ``end`` and closed); without one, a ranged
        GET. A stream that drops is re-requested from the byte it reached; returns early,
        leaving the part incomplete, once ``stop`` is set.
        """
        first, end = span
        view = memoryview(bytearray(DOWNLOAD_CHUNK))
        pos, failures = first, 0
        while pos < end and not stop.is_set():
            reached = pos
            if body is None:
                body = self._get_range(remote_path, key, version, pos, end)
            try:
                while pos < end and not stop.is_set():
                    pos = _read_into(body, view, out, pos, end, end)
                    progress(pos)
            except _STREAM_ERRORS as exc:
                failures = 1 if pos > reached else failures + 1
                wait = self._retry_wait(remote_path, exc, failures, pos)
                stop.wait(wait)
            finally:
                body.close()
                body = None

    def _retry_wait(self, remote_path: str, exc: BaseException, failures: int, at: int) -> float:
        """Seconds to wait before re-requesting a dropped stream, or raise when it is enough.

        Raises:
            SourceUnreachableError: ``failures`` (in a row) is above :data:`DOWNLOAD_RETRIES`.
        """
        detail = describe_error(exc, endpoint=self._s3.endpoint_url)
        if failures > DOWNLOAD_RETRIES:
            raise base.SourceUnreachableError(
                f"S3 download of {self._url(remote_path)} failed: the connection "
                f"dropped {failures} times in a row ({detail})"
            ) from exc
        wait = _transfer.backoff(failures)
        log.warning("S3 download of %s dropped at byte %d (%s); re-requesting in %.2fs",
                    self._url(remote_path), at, detail, wait)
        return wait

    def _get_range(self, remote_path: str, key: str, version: _Version, first: int, end: int
                   ) -> Any:
        """The body of a GET of the object's bytes ``[first, end)`` carrying ``If-Match``.

        Raises:
            SourceChangedError: The object no longer has the ETag, or has another size than
                ``version`` says.
            SourceError: Another subclass for S3 refusing the request, or the server ignored
                the ``Range`` header.
        """
        try:
            response = self.client.get_object(Bucket=self._bucket, Key=key,
                                              Range=f"bytes={first}-{end - 1}",
                                              IfMatch=version.if_match)
        except _BOTO_ERRORS as exc:
            if _error_code(exc) in ("InvalidRange", "416"):  # starts past the object's end
                raise self._size_changed(remote_path, "fewer", version.size) from exc
            raise self._map_error(exc, "download", remote_path) from exc
        body = response["Body"]
        # "bytes 0-99/1000": the object's size must be the one whose parts are being fetched.
        total = str(response.get("ContentRange", "")).rpartition("/")[2]
        if response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 206:
            body.close()
            raise base.SourceError(
                f"S3 download of {self._url(remote_path)} failed: "
                "the server ignored the Range header"
            )
        if total != str(version.size) or int(response.get("ContentLength", -1)) != end - first:
            body.close()
            raise self._size_changed(remote_path, total or "another number of", version.size)
        return body

    def _size_changed(self, remote_path: str, size: str, listed: int) -> base.SourceError:
        return base.SourceChangedError(
            f"{self._url(remote_path)} changed on the server since it was listed "
            f"({size} bytes, listed {listed})"
        )

    def _fetch_into(self, remote_path: str, key: str, part: Path, if_match: str) -> None:
        """Append the object's bytes after those already in ``part`` until its stream ends.

        A stream that drops (connection reset, read timeout, fewer bytes than announced) is
        re-requested from the new end of ``part``; the failure count restarts after progress.
        """
        failures = 0
        while True:
            done = _transfer.file_size(part)
            body = self._get_from(remote_path, key, done, if_match)
            try:
                # botocore checks that the stream delivers its whole Content-Length.
                _transfer.append_stream(body.readinto, part, DOWNLOAD_CHUNK)
                return
            except _STREAM_ERRORS as exc:
                failures = _transfer.failures_in_a_row(part, done, failures)
                wait = self._retry_wait(remote_path, exc, failures, _transfer.file_size(part))
            finally:
                body.close()
            time.sleep(wait)

    def _get_from(self, remote_path: str, key: str, offset: int, if_match: str) -> Any:
        """The body of a GET of the object from ``offset`` on (``If-Match`` when known)."""
        extra: dict[str, str] = {"IfMatch": if_match} if if_match else {}
        try:
            response = self.client.get_object(
                Bucket=self._bucket, Key=key, Range=f"bytes={offset}-", **extra
            )
        except _BOTO_ERRORS as exc:
            # botocore has already retried connection errors and 5xx answers.
            raise self._map_error(exc, "download", remote_path) from exc
        body = response["Body"]
        if offset and response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 206:
            body.close()
            raise base.SourceError(
                f"S3 download of {self._url(remote_path)} failed: "
                "the server ignored the Range header"
            )
        return body

    def upload(self, src: Path, remote_path: str) -> None:
        """Upload ``src`` to ``remote_path`` below the prefix (multipart for large files).

        Raises:
            UnsafePathError: The path is unsafe.
            SourceError: A subclass naming why S3 refused or failed the upload.
        """
        key = self._key(remote_path)
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNKSIZE,
            max_concurrency=MAX_CONCURRENCY,
            preferred_transfer_client="classic",
        )
        try:
            self.client.upload_file(str(src), self._bucket, key, Config=config)
        except boto3.exceptions.S3UploadFailedError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _BOTO_ERRORS):
                raise self._map_error(cause, "upload", remote_path) from exc
            raise base.SourceError(f"S3 upload of {self._url(remote_path)} failed") from exc
        except _BOTO_ERRORS as exc:
            raise self._map_error(exc, "upload", remote_path) from exc

    def delete(self, remote_path: str) -> None:
        """Remove ``remote_path``; an object that is already gone is not an error.

        Raises:
            UnsafePathError: The path is unsafe.
            SourceError: A subclass naming why S3 refused the request.
        """
        key = self._key(remote_path)
        try:
            self.client.delete_object(Bucket=self._bucket, Key=key)
        except _BOTO_ERRORS as exc:
            if _error_code(exc) == "NoSuchKey":
                return
            raise self._map_error(exc, "delete", remote_path) from exc

    # -- helpers ----------------------------------------------------------------------------

    def _key(self, remote_path: str) -> str:
        problem = _unsafe_reason(remote_path) if remote_path else ("empty path", "")
        if problem is not None:
            raise base.UnsafePathError(f"{remote_path!r} is not a safe object key: {problem[0]}")
        return self._prefix + remote_path

    def _head(self, remote_path: str, key: str, etag: str | None) -> dict[str, Any]:
        extra = {"IfMatch": _quoted(etag)} if etag else {}
        try:
            return self.client.head_object(Bucket=self._bucket, Key=key, **extra)
        except _BOTO_ERRORS as exc:
            raise self._map_error(exc, "read", remote_path) from exc

    def _url(self, remote_path: str | None) -> str:
        return f"s3://{self._bucket}/{self._prefix}{remote_path or ''}"

    def _map_error(
        self, exc: BaseException, action: str, remote_path: str | None
    ) -> base.SourceError:
        """Turn a boto3 failure into the matching :class:`SourceError` subclass.

        ``remote_path`` is ``None`` for bucket-level calls, where a bare 404 means the bucket.
        """
        where = self._s3.endpoint_url or "AWS S3"
        detail = describe_error(exc, endpoint=self._s3.endpoint_url)
        code = _error_code(exc)
        error: base.SourceError
        if code == "NoSuchBucket" or (remote_path is None and code in _MISSING_CODES):
            error = base.SourceNotFoundError(f"bucket {self._bucket} does not exist at {where}")
        elif code in _MISSING_CODES:
            error = base.SourceNotFoundError(f"{self._url(remote_path)} does not exist ({detail})")
        elif code in _CHANGED_CODES:
            error = base.SourceChangedError(
                f"{self._url(remote_path)} changed on the server since it was listed ({detail})"
            )
        elif code in _AUTH_CODES or isinstance(exc, _CREDENTIAL_ERRORS):
            error = base.SourceAuthError(f"S3 credentials were refused by {where} ({detail})")
        elif code in _PERMISSION_CODES:
            error = base.SourcePermissionError(
                f"S3 {action} of {self._url(remote_path)} was refused ({detail})"
            )
        elif isinstance(
            exc, botocore.exceptions.ConnectionError | botocore.exceptions.ReadTimeoutError
        ):
            error = base.SourceUnreachableError(f"cannot reach S3 endpoint {where} ({detail})")
        else:
            error = base.SourceError(f"S3 {action} of {self._url(remote_path)} failed: {detail}")
        return self._scrubbed(error)

    def _scrubbed(self, error: base.SourceError) -> base.SourceError:
        # SigV4 never sends the secret, so no server or botocore text should contain it; this is
        # the belt to that braces.
        if self._s3.secret_access_key and self._s3.secret_access_key in str(error):
            return type(error)(str(error).replace(self._s3.secret_access_key, "***"))
        return error

    def _make_client(self) -> BaseClient:
        try:
            return self._s3.client()
        except (botocore.exceptions.BotoCoreError, ValueError) as exc:
            raise base.SourceError(
                f"cannot set up the S3 client for bucket {self._bucket}: "
                f"{describe_error(exc, endpoint=self._s3.endpoint_url)}"
            ) from exc


def _read_into(body: Any, view: memoryview, out: tuple[int, Path], pos: int, limit: int,
               end: int) -> int:
    """Read one chunk (up to ``limit``) of ``body`` and write it at ``pos`` of ``out`` (fd, path).

    Returns:
        The offset after the bytes written.

    Raises:
        http.client.IncompleteRead: The stream ended before ``end``.
    """
    n = body.readinto(view[: limit - pos])
    if not n:  # botocore normally raises first: fewer bytes than announced
        raise http.client.IncompleteRead(b"", end - pos)
    _transfer.pwrite_all(out[0], view[:n], pos, out[1])
    return pos + n


def _normalise_prefix(prefix: str | None) -> str:
    """Return ``""`` or ``"a/b/"`` for a folder-like prefix.

    Raises:
        UnsafePathError: The prefix starts with ``/`` or contains ``..`` or NUL.
    """
    text = (prefix or "").strip()
    if not text:
        return ""
    problem = _escapes(text.rstrip("/"))
    if problem is not None:
        raise base.UnsafePathError(f"S3 prefix {text!r} is not safe: {problem}")
    return text.rstrip("/") + "/"


@dataclass(frozen=True)
class _Version:
    """The object version a download fetches."""

    size: int
    if_match: str  # the quoted ETag every GET must match; "" when unknown
    confirmed: bool  # a HEAD during this call saw it


def _escapes(rel: str) -> str | None:
    """Say how ``rel`` would leave (or break) a folder it is written below, or return ``None``."""
    if "\x00" in rel:
        return "contains NUL"
    if rel.startswith("/"):
        return "starts with '/'"
    if "\\" in rel:
        return "contains a backslash"
    if ".." in rel.split("/"):
        return "contains a '..' segment"
    return None


def _unsafe_reason(rel: str) -> tuple[str, str] | None:
    """Say why key ``rel`` cannot become one file below a local folder, with its skip code.

    Besides the escapes of :func:`_escapes`, a ``.`` or empty segment is refused (``a/./b``,
    ``a//b`` and ``a/.`` would land on another key's file, or on the folder itself), and so is a
    segment too long to be a file name.
    """
    problem = _escapes(rel)
    if problem is not None:
        escapes = problem.startswith("starts") or "'..'" in problem
        return problem, SkipReason.OUTSIDE_ROOT if escapes else SkipReason.VALIDATION_FAILED
    segments = rel.split("/")
    if "." in segments:
        return "contains a '.' segment", SkipReason.VALIDATION_FAILED
    if "" in segments:
        return "contains an empty segment ('//' or a trailing '/')", SkipReason.VALIDATION_FAILED
    if any(len(segment.encode("utf-8", "surrogatepass")) > NAME_MAX for segment in segments):
        return f"has a segment longer than {NAME_MAX} bytes", SkipReason.PATH_TOO_LONG
    return None


def _quoted(etag: str | None) -> str | None:
    """Return ``etag`` in the quoted form S3 sends, as ``If-Match`` expects."""
    if not etag:
        return None
    return etag if etag.startswith('"') else f'"{etag}"'


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return str(
            error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        )
    return ""


def partial_files(dest: Path) -> tuple[Path, Path]:
    """Return the partial download of ``dest`` and the file naming the ETag it belongs to.

    A caller that gives up on a download removes both; :meth:`S3SourceClient.download` removes
    them itself on success, on a changed object and on a size mismatch.
    """
    dest = Path(dest)
    return _transfer.partial_file(dest), dest.with_name(dest.name + ETAG_SUFFIX)


def part_size(rest: int) -> int:
    """The part size for fetching ``rest`` bytes in parallel.

    An even split over the workers, but within :data:`PART_SIZE` and :data:`MAX_PART_SIZE`.
    """
    return min(max(-(-rest // DOWNLOAD_WORKERS), PART_SIZE), MAX_PART_SIZE)


def kept_bytes(dest: Path) -> int:
    """How many bytes of ``dest``'s partial download are complete (0 without one).

    What the next :meth:`S3SourceClient.download` resumes from if the object still has the ETag
    recorded beside the partial file (not checked here): for progress displays and tests, since
    during a download into a preallocated file its size is the full size.
    """
    part, tag = partial_files(dest)
    recorded = _read_tag(tag)
    if recorded is None:
        return 0
    size = _transfer.file_size(part)
    return size if recorded.done is None else min(size, recorded.done)


@dataclass(frozen=True)
class _Tag:
    """What ``<dest>.part.etag`` says about ``<dest>.part``."""

    if_match: str  # the quoted ETag of the version it holds bytes of
    done: int | None  # bytes complete from the start; None: all of the file (appended in order)
    boot: str  # the boot id when ``done`` was written


def _kept_prefix(version: _Version, part: Path, tag: Path) -> int:
    """The bytes of ``part`` to resume from; the partial files are removed or cut to match.

    A partial file of another version (or longer than the object) is removed; one whose prefix
    was recorded in an earlier boot is removed too, since its bytes may not have reached the
    disk; a preallocated one left by a crash is cut to its recorded prefix.
    """
    recorded = _read_tag(tag)
    size = _transfer.file_size(part)
    if (recorded is None or not part.exists() or recorded.if_match != version.if_match
            or size > version.size):
        _transfer.remove(part, tag)
        return 0
    if recorded.done is None:
        return size
    if recorded.boot != _transfer.boot_id():
        _transfer.remove(part, tag)
        return 0
    kept = min(size, recorded.done)
    _transfer.truncate(part, kept)
    return kept


class _PrefixRecord:
    """``<dest>.part.etag`` of a preallocated download, its prefix rewritten in place as it grows.

    The record is created whole by :func:`_write_tag` (a rename); after that only its
    fixed-width number is overwritten, one small ``pwrite`` per advance (a rename each time
    costs ~2 ms on ext4, which flushes a file renamed over another). A process dying cannot tear
    a write that small; a power loss could, but then the boot id no longer matches and the
    partial file is discarded whatever the number says.
    """

    def __init__(self, tag: Path, if_match: str, done: int) -> None:
        _write_tag(tag, if_match, done)
        self.done = done
        self._offset = len(if_match.encode("utf-8")) + 1
        self._fd = os.open(tag, os.O_WRONLY)

    def write(self, done: int) -> None:
        """Record that the first ``done`` bytes are complete."""
        os.pwrite(self._fd, f"{done:0{_PREFIX_DIGITS}d}".encode("ascii"), self._offset)
        self.done = done

    def close(self) -> None:
        os.close(self._fd)


_PREFIX_DIGITS = 20  # any file size in bytes fits


def _write_tag(path: Path, if_match: str, done: int | None = None) -> None:
    """Record the ETag of ``<dest>.part`` and, for a preallocated download, its complete prefix.

    Written beside it and renamed over it, so a crash never leaves half a record (which could
    read as the first form, declaring a preallocated file complete).
    """
    text = if_match if done is None else (
        f"{if_match}\n{done:0{_PREFIX_DIGITS}d} {_transfer.boot_id()}\n")
    new = path.with_name(path.name + ".new")
    new.write_text(text, encoding="utf-8")
    os.replace(new, path)


def _read_tag(path: Path) -> _Tag | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    if_match, _, rest = text.partition("\n")
    if not rest.strip():
        return _Tag(if_match, None, "")
    done, _, boot = rest.strip().partition(" ")
    if not done.isdigit():
        return None
    return _Tag(if_match, int(done), boot)
