"""The object store as an S3 bucket (AWS, MinIO or any S3-compatible server), via boto3.

This module is the one place boto3 transfer settings live (multipart threshold, part size,
concurrency, retries, timeouts, checksum policy).

Uploads and the checksum: every upload carries the CRC32C of its bytes
(``x-amz-checksum-crc32c``, ``store/checksum.py``), so the server verifies each request body
and refuses one that arrived different (``BadDigest``); nothing needs reading back. S3
metadata is fixed when an object is created, so ``put_file`` first reads the local file once
to compute the whole file's CRC32C (from the page cache, several GB/s, far faster than any
upload) and stores it as ``x-amz-meta-crc32c`` for :meth:`S3ObjectStore.head`. Then:

* below ``multipart_threshold``, one ``PutObject`` streams the file with that CRC32C in its
  header, read through :class:`_Crc32cReader`, which checksums the bytes actually sent;
* above it, a multipart upload created with ``ChecksumAlgorithm=CRC32C`` (``COMPOSITE``, the
  type every S3 implementation with checksums supports): each part is read into memory
  (``max_concurrency`` parts at most), sent with its own CRC32C, and listed with it in
  ``CompleteMultipartUpload``. The server reports the composite checksum (the CRC32C of the
  part CRCs, ``-N``; asked with a HEAD when the completion does not carry it); it must equal
  ours, which also catches a server that did not verify the parts. A server that keeps no
  checksum at all cannot be checked this way; the upload then stands on the part CRCs it was
  sent with. The part CRCs, combined, must give the first pass's CRC32C.

If the source changed between the passes (sizes or checksums disagree) the object is deleted
and :class:`ObjectStoreError` raised; a refused part aborts the multipart upload. Objects
stored before CRC32C carry ``x-amz-meta-sha256`` instead, which ``head`` still reports.

Reads: :class:`S3RangeReader` is a seekable read-only file object over ranged GETs, so a
fingerprint of three small windows costs three small requests, never a download. ffmpeg reads
objects the same way through a presigned GET URL (:meth:`S3ObjectStore.stream_url`).
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from botocore.client import BaseClient
from botocore.config import Config

from watch_pipeline.catalog.secrets import public_repr
from watch_pipeline.store import checksum
from watch_pipeline.store.base import (
    STREAM_URL_SECONDS,
    ObjectStore,
    ObjectStoreError,
    SizedReader,
    StoredObject,
    check_key,
)

MIB = 1024 * 1024

MULTIPART_THRESHOLD = 64 * MIB
MULTIPART_CHUNKSIZE = 16 * MIB
MAX_CONCURRENCY = 4
"""Parallel part uploads per ``put_file``. Each part is read into memory to be sent with its
CRC32C, so one upload holds at most ``MAX_CONCURRENCY * MULTIPART_CHUNKSIZE`` of parts."""
MAX_ATTEMPTS = 3
"""Attempts per request (botocore "standard" retry mode: throttling, 5xx, connection errors)."""

MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""The longest a SigV4 presigned URL may be valid (S3's limit); longer requests are capped."""

CRC32C_METADATA = "crc32c"
"""User metadata name of the whole object's CRC32C (hex): the ``x-amz-meta-crc32c`` header."""
SHA256_METADATA = "sha256"
"""User metadata of objects stored before CRC32C (``x-amz-meta-sha256``); read, not written."""

_READ_CHUNK = 1 * MIB

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}

_EXPLANATIONS = {
    "NoSuchBucket": "the bucket does not exist",
    "NoSuchKey": "no such object",
    "404": "not found (missing object or bucket)",
    "NotFound": "not found (missing object or bucket)",
    "AccessDenied": "access denied: the credentials lack permission",
    "403": "access denied (HTTP 403): wrong credentials or missing permission",
    "InvalidAccessKeyId": "the access key id is not known to the server",
    "SignatureDoesNotMatch": "the secret access key is wrong for this access key id",
    "InvalidBucketName": "the bucket name is invalid",
    "PreconditionFailed": "the object changed while it was being read",
    "412": "the object changed while it was being read",
    "InvalidRange": "the requested range is outside the object",
    "RequestTimeTooSkewed": "the local clock differs too much from the server's",
    "BadDigest": "the server received bytes that do not match their CRC32C (corrupted in "
                 "transit, or the source changed while being sent)",
    "InvalidDigest": "the server refused the checksum sent with the request",
}


def make_s3_client(*, endpoint_url: str | None, region: str | None,
                   access_key_id: str | None, secret_access_key: str | None, use_ssl: bool,
                   connect_timeout: float, read_timeout: float) -> BaseClient:
    """A boto3 S3 client with the project's settings (the one place they are chosen).

    Path-style addressing for custom endpoints (MinIO and most S3-compatible servers need it),
    standard retries, and checksums only when required: boto3 >= 1.36 adds its own CRC to every
    upload (CRC32C needs the CRT), which several S3-compatible servers reject; our uploads send
    their CRC32C explicitly (see the module docstring).

    Raises:
        botocore.exceptions.BotoCoreError, ValueError: Invalid region or endpoint.
    """
    session = boto3.session.Session(aws_access_key_id=access_key_id,
                                    aws_secret_access_key=secret_access_key,
                                    region_name=region)
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.client("s3", endpoint_url=endpoint_url, use_ssl=use_ssl, config=config)


@dataclass(frozen=True)
class S3Connection:
    """Where S3 is and as whom to call it: what :meth:`client` builds a boto3 client from.

    The object store and the S3 watch source both hold one. Empty strings become ``None``, an
    endpoint without a scheme gets ``https://`` or ``http://`` according to ``use_ssl``, and the
    secret is left out of ``repr``.
    """

    endpoint_url: str | None
    region: str | None
    access_key_id: str | None
    secret_access_key: str | None = field(repr=False)
    use_ssl: bool
    connect_timeout: float
    read_timeout: float

    def __post_init__(self) -> None:
        endpoint_url = self.endpoint_url
        if endpoint_url and "://" not in endpoint_url:
            endpoint_url = f"{'https' if self.use_ssl else 'http'}://{endpoint_url}"
        object.__setattr__(self, "endpoint_url", endpoint_url or None)
        for name in ("region", "access_key_id", "secret_access_key"):
            object.__setattr__(self, name, getattr(self, name) or None)

    def check_credentials(self, error_type: type[Exception]) -> None:
        """Raise ``error_type`` when only one of access key id and secret was given."""
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise error_type(
                "S3 credentials are incomplete: give both access key id and secret, or neither")

    def client(self) -> BaseClient:
        """A new boto3 client (see :func:`make_s3_client`).

        Raises:
            botocore.exceptions.BotoCoreError, ValueError: Invalid region or endpoint.
        """
        return make_s3_client(
            endpoint_url=self.endpoint_url, region=self.region,
            access_key_id=self.access_key_id, secret_access_key=self.secret_access_key,
            use_ssl=self.use_ssl, connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout)


def describe_error(exc: BaseException, *, endpoint: str | None) -> str:
    """Return a short, credential-free explanation of a boto3/botocore failure.

    Args:
        exc: The exception boto3 raised.
        endpoint: The endpoint URL for the message (``None`` for AWS's default).
    """
    where = endpoint or "AWS S3"
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(
            error.get("Code")
            or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "unknown")
        )
        explanation = _EXPLANATIONS.get(code) or error.get("Message") or "request refused"
        return f"{explanation} ({code})"
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError):
        return f"connecting to {where} timed out"
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return f"{where} did not answer in time (read timeout)"
    if isinstance(exc, botocore.exceptions.SSLError):
        return f"TLS failed with {where} (wrong use_ssl setting or untrusted certificate)"
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return f"cannot connect to {where}"
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "no S3 credentials are configured"
    if isinstance(exc, botocore.exceptions.PartialCredentialsError):
        return "the S3 credentials are incomplete (access key id or secret missing)"
    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return f"the connection to {where} failed: {type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"


_BOTO_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


class S3RangeReader(SizedReader):
    """A seekable, read-only file object over one S3 object, reading by ranged GETs.

    Every ``readinto``/``read(n)`` issues exactly one ``GetObject`` with a ``Range`` header for
    the bytes asked (clamped to the object's end); ``seek`` and ``tell`` cost nothing. Reads at
    or past the end return ``b""`` without a request. ``readall`` (``read()``) fetches the rest
    of the object in one GET. For many small sequential reads wrap it in
    ``io.BufferedReader(reader, buffer_size=...)``.

    The object's size and ETag come from one ``HeadObject`` at construction unless ``size`` is
    given. When the ETag is known every GET carries ``If-Match`` so an object overwritten
    mid-read fails loudly instead of mixing two versions.

    Args:
        client: A boto3 S3 client (thread-safe; shared, not closed here).
        bucket: The bucket name.
        key: The full object key (including any prefix).
        size: The object size if already known (skips the HEAD).
        etag: The object's ETag if already known (enables ``If-Match`` without a HEAD).
        error_type: The exception class raised on S3 failures (its constructor takes one
            message); sources pass their own error type.

    Attributes:
        requests: Number of GET requests made so far (for tests and metrics).

    Raises:
        ObjectStoreError: (or ``error_type``) the object is missing or unreadable.
    """

    def __init__(
        self,
        client: BaseClient,
        bucket: str,
        key: str,
        size: int | None = None,
        *,
        etag: str | None = None,
        error_type: type[Exception] = ObjectStoreError,
    ) -> None:
        super().__init__()
        self._client = client
        self._bucket = bucket
        self._key = key
        self._etag = etag
        self._error_type = error_type
        self._pos = 0
        self.requests = 0
        if size is None:
            try:
                head = client.head_object(Bucket=bucket, Key=key)
            except _BOTO_ERRORS as exc:
                raise self._error("open", exc) from exc
            size = int(head["ContentLength"])
            self._etag = self._etag or head.get("ETag")
        self._size = size

    @property
    def name(self) -> str:
        """The object's ``s3://bucket/key`` location."""
        return f"s3://{self._bucket}/{self._key}"

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        return self._size

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current offset with one ranged GET; return the byte count."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._pos)
        if want <= 0:
            return 0
        got = self._get_range(self._pos, want, view)
        self._pos += got
        return got

    def readall(self) -> bytes:
        """Read from the current offset to the end in one GET."""
        self._check_open()
        want = self._size - self._pos
        if want <= 0:
            return b""
        body = self._open_range(self._pos, want)
        try:
            data = body.read()
        except _BOTO_ERRORS as exc:
            raise self._error("read", exc) from exc
        finally:
            body.close()
        self._pos += len(data)
        return data

    def _get_range(self, start: int, length: int, out: memoryview) -> int:
        """GET ``length`` bytes at ``start`` into ``out``; return how many arrived."""
        body = self._open_range(start, length)
        got = 0
        try:
            while got < length:
                chunk = body.read(min(length - got, _READ_CHUNK))
                if not chunk:
                    break
                out[got : got + len(chunk)] = chunk
                got += len(chunk)
        except _BOTO_ERRORS as exc:
            raise self._error("read", exc) from exc
        finally:
            body.close()
        return got

    def _open_range(self, start: int, length: int) -> Any:
        """Send one ranged GET and return its streaming body (the caller closes it)."""
        extra = {"IfMatch": self._etag} if self._etag else {}
        self.requests += 1
        try:
            response = self._client.get_object(
                Bucket=self._bucket,
                Key=self._key,
                Range=f"bytes={start}-{start + length - 1}",
                **extra,
            )
        except _BOTO_ERRORS as exc:
            raise self._error("read", exc) from exc
        if response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 206 and start != 0:
            response["Body"].close()
            raise self._error_type(
                f"S3 read of {self.name} failed: the server ignored the Range header"
            )
        return response["Body"]

    def _error(self, action: str, exc: BaseException) -> Exception:
        endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
        detail = describe_error(exc, endpoint=endpoint)
        return self._error_type(f"S3 {action} of {self.name} failed: {detail}")

class _Crc32cReader(io.RawIOBase):
    """A seekable reader over a local file that checksums the bytes handed out, once each.

    botocore may read a body, seek back and read it again (payload signing over plain HTTP,
    retries). Only bytes that extend the checksummed prefix are added, so the CRC is that of the
    content sent, whatever the re-reads; ``checked`` tells how far that prefix reaches.
    """

    def __init__(self, raw: io.FileIO) -> None:
        super().__init__()
        self._raw = raw
        self.crc = 0
        self.checked = 0
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        # Overridden so a large read is one bytes object (google_crc32c takes only bytes).
        data = self._raw.read(size if size is not None and size >= 0 else -1) or b""
        self._advance(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def _advance(self, chunk: bytes) -> None:
        start, end = self._pos, self._pos + len(chunk)
        if start <= self.checked < end:
            self.crc = checksum.extend(self.crc, chunk[self.checked - start :])
            self.checked = end
        self._pos = end


@dataclass(frozen=True)
class _Part:
    """One uploaded part: what ``CompleteMultipartUpload`` lists, and its size."""

    number: int
    etag: str
    crc: int
    size: int


class S3ObjectStore(ObjectStore):
    """Objects in one S3 bucket, optionally below a key prefix.

    No network traffic happens until the first operation. Errors are raised as
    :class:`ObjectStoreError` with a message naming the bucket, key and cause, never a secret.

    Args:
        bucket: The bucket name (must already exist).
        endpoint_url: The S3 endpoint (``https://minio:9000``); ``None`` for AWS. A URL without a
            scheme gets ``https://`` or ``http://`` according to ``use_ssl``.
        region: The region name (``None``: boto3's default, ``us-east-1`` for most servers).
        access_key_id: The access key id (``None``: boto3's default credential chain).
        secret_access_key: The secret key; never logged or put into an error message.
        use_ssl: Use TLS when ``endpoint_url`` has no scheme (and for AWS).
        prefix: A key prefix inside the bucket (``media/``); our keys are relative to it.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for a response or for the next bytes of one.
        multipart_threshold: Files at least this large are uploaded in parts.
        multipart_chunksize: The part size (S3 requires at least 5 MiB).
        max_concurrency: Parts uploaded in parallel by one ``put_file``.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        use_ssl: bool = True,
        prefix: str = "",
        connect_timeout: float = 10,
        read_timeout: float = 60,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunksize: int = MULTIPART_CHUNKSIZE,
        max_concurrency: int = MAX_CONCURRENCY,
    ) -> None:
        if not bucket:
            raise ObjectStoreError("an S3 object store needs a bucket name")
        self._s3 = S3Connection(endpoint_url, region, access_key_id, secret_access_key, use_ssl,
                                connect_timeout, read_timeout)
        self._s3.check_credentials(ObjectStoreError)
        self._bucket = bucket
        prefix = prefix.strip("/")
        self._prefix = f"{check_key(prefix)}/" if prefix else ""
        if multipart_chunksize < 5 * MIB:
            raise ObjectStoreError("S3 multipart parts must be at least 5 MiB")
        self._multipart_threshold = max(multipart_threshold, 1)
        self._part_size = multipart_chunksize
        self._max_concurrency = max(max_concurrency, 1)
        self._client: BaseClient | None = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return public_repr(self, bucket=self._bucket, endpoint_url=self._s3.endpoint_url,
                           prefix=self._prefix)

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self._bucket

    @property
    def client(self) -> BaseClient:
        """The boto3 S3 client, created on first use (thread-safe, shared by all calls)."""
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = self._s3.client()
                except (botocore.exceptions.BotoCoreError, ValueError) as exc:
                    # e.g. an invalid region name or endpoint URL
                    raise ObjectStoreError(
                        f"cannot set up the S3 client for bucket {self._bucket!r}: "
                        f"{describe_error(exc, endpoint=self._s3.endpoint_url)}"
                    ) from exc
            return self._client

    def full_key(self, key: str) -> str:
        """Return the bucket key for ``key`` (the prefix prepended).

        Raises:
            ObjectStoreError: The key is unsafe.
        """
        return self._prefix + check_key(key)

    def put_file(self, key: str, src: Path, *, content_type: str | None = None) -> StoredObject:
        """Upload ``src`` to ``key`` with its CRC32C, verified by the server (see the module).

        Raises:
            OSError: ``src`` cannot be read.
            ObjectStoreError: The key is unsafe, S3 refused or failed the upload (a body that
                does not match its CRC32C included), or the source changed while being
                uploaded (the object is then deleted).
        """
        self.full_key(key)  # an unsafe key is refused before the file is read
        with open(src, "rb", buffering=0) as raw:
            before = os.fstat(raw.fileno())
            crc, size = checksum.extend_fd(0, raw.fileno(), 0, before.st_size + 1)
            extra: dict[str, Any] = {"Metadata": {CRC32C_METADATA: checksum.to_hex(crc)}}
            if content_type:
                extra["ContentType"] = content_type
            if size < self._multipart_threshold:
                sent, sent_crc = self._put_single(key, raw, size, crc, extra)
            else:
                sent, sent_crc = self._put_multipart(key, raw.fileno(), size, extra)
            after = os.fstat(raw.fileno())
        if (sent, sent_crc, size, after.st_size, after.st_mtime_ns) != (
                size, crc, before.st_size, before.st_size, before.st_mtime_ns):
            self.delete(key)
            raise ObjectStoreError(
                f"source {src} changed while being uploaded to {self.url(key)}; not stored"
            )
        return StoredObject(key=key, size=size, checksum=checksum.to_hex(crc),
                            checksum_algorithm=checksum.CRC32C)

    def _put_single(self, key: str, raw: io.FileIO, size: int, crc: int,
                    extra: dict[str, Any]) -> tuple[int, int]:
        """One ``PutObject`` streaming ``raw``; return the bytes sent and their CRC32C."""
        raw.seek(0)
        reader = _Crc32cReader(raw)
        try:
            self.client.put_object(Bucket=self._bucket, Key=self.full_key(key), Body=reader,
                                   ContentLength=size, ChecksumAlgorithm="CRC32C",
                                   ChecksumCRC32C=checksum.to_base64(crc), **extra)
        except _BOTO_ERRORS as exc:
            raise self._error("upload", key, exc) from exc
        return reader.checked, reader.crc

    def _put_multipart(self, key: str, fd: int, size: int,
                       extra: dict[str, Any]) -> tuple[int, int]:
        """A multipart upload with a CRC32C per part; return the bytes sent and their CRC32C.

        Raises:
            ObjectStoreError: A request failed, or the server's composite checksum is not ours
                (the upload is aborted, or the completed object deleted).
        """
        full_key = self.full_key(key)
        try:
            upload_id = self.client.create_multipart_upload(
                Bucket=self._bucket, Key=full_key, ChecksumAlgorithm="CRC32C",
                **extra)["UploadId"]
        except _BOTO_ERRORS as exc:
            raise self._error("upload", key, exc) from exc
        try:
            parts = self._upload_parts(full_key, upload_id, fd, size)
            response = self.client.complete_multipart_upload(
                Bucket=self._bucket, Key=full_key, UploadId=upload_id,
                MultipartUpload={"Parts": [
                    {"PartNumber": p.number, "ETag": p.etag,
                     "ChecksumCRC32C": checksum.to_base64(p.crc)} for p in parts]})
        except BaseException as exc:
            try:
                self.client.abort_multipart_upload(Bucket=self._bucket, Key=full_key,
                                                   UploadId=upload_id)
            except _BOTO_ERRORS:
                pass  # the bucket's lifecycle rule (or a later upload) cleans it up
            if isinstance(exc, _BOTO_ERRORS):
                raise self._error("upload", key, exc) from exc
            raise
        crc = sent = 0
        for part in parts:
            crc = checksum.combine(crc, part.crc, part.size)
            sent += part.size
        reported = response.get("ChecksumCRC32C") or self._server_crc32c(key)
        # COMPOSITE reads "<CRC32C of the part CRCs>-N" (some servers leave out "-N"); a server
        # defaulting to FULL_OBJECT reports the whole object's CRC32C. A server that keeps no
        # checksum reports none: nothing to compare then.
        expected = checksum.composite([p.crc for p in parts])
        if reported is not None and reported.split("-")[0] not in (expected,
                                                                   checksum.to_base64(crc)):
            self.delete(key)
            raise ObjectStoreError(
                f"S3 upload of {self.url(key)} failed: the server's CRC32C of the stored parts "
                f"({reported}) is not the one sent ({expected}-{len(parts)}); not stored")
        return sent, crc

    def _server_crc32c(self, key: str) -> str | None:
        """The CRC32C the server keeps for ``key`` (``None`` when it keeps none)."""
        try:
            response = self.client.head_object(Bucket=self._bucket, Key=self.full_key(key),
                                               ChecksumMode="ENABLED")
        except _BOTO_ERRORS as exc:
            raise self._error("head", key, exc) from exc
        return response.get("ChecksumCRC32C")

    def _upload_parts(self, full_key: str, upload_id: str, fd: int, size: int) -> list[_Part]:
        """Send every part, ``max_concurrency`` at a time, each read just before it is sent."""
        offsets = range(0, size, self._part_size)
        with ThreadPoolExecutor(max_workers=self._max_concurrency,
                                thread_name_prefix="s3-store-part") as pool:
            running: list[Future[_Part]] = []
            parts: list[_Part] = []
            try:
                for number, offset in enumerate(offsets, start=1):
                    if len(running) >= self._max_concurrency:
                        parts.append(running.pop(0).result())
                    running.append(pool.submit(self._upload_part, full_key, upload_id, fd,
                                               number, offset))
                parts.extend(f.result() for f in running)
            except BaseException:
                for future in running:
                    future.cancel()
                raise
        return parts

    def _upload_part(self, full_key: str, upload_id: str, fd: int, number: int,
                     offset: int) -> _Part:
        data = b"".join(_pread_full(fd, self._part_size, offset))
        crc = checksum.value(data)
        response = self.client.upload_part(
            Bucket=self._bucket, Key=full_key, UploadId=upload_id, PartNumber=number,
            Body=data, ContentLength=len(data), ChecksumAlgorithm="CRC32C",
            ChecksumCRC32C=checksum.to_base64(crc))
        return _Part(number=number, etag=response["ETag"], crc=crc, size=len(data))

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> StoredObject:
        """Store ``data`` under ``key`` in one ``PutObject`` with its CRC32C.

        Raises:
            ObjectStoreError: The key is unsafe or S3 refused or failed the request.
        """
        full_key = self.full_key(key)
        crc = checksum.value(data)
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        try:
            self.client.put_object(
                Bucket=self._bucket,
                Key=full_key,
                Body=data,
                Metadata={CRC32C_METADATA: checksum.to_hex(crc)},
                ChecksumAlgorithm="CRC32C",
                ChecksumCRC32C=checksum.to_base64(crc),
                **extra,
            )
        except _BOTO_ERRORS as exc:
            raise self._error("upload", key, exc) from exc
        return StoredObject(key=key, size=len(data), checksum=checksum.to_hex(crc),
                            checksum_algorithm=checksum.CRC32C)

    def head(self, key: str) -> StoredObject | None:
        """Return size and checksum metadata of ``key``, or ``None`` when it does not exist.

        The checksum is the ``crc32c`` metadata, else the ``sha256`` of objects stored before
        CRC32C. A HEAD response has no body, so a missing bucket also reads as ``None`` here;
        the next write names it.

        Raises:
            ObjectStoreError: The key is unsafe or S3 refused the request.
        """
        full_key = self.full_key(key)
        try:
            response = self.client.head_object(Bucket=self._bucket, Key=full_key)
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                return None
            raise self._error("head", key, exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error("head", key, exc) from exc
        size = int(response["ContentLength"])
        metadata = response.get("Metadata") or {}
        for name, algorithm in ((CRC32C_METADATA, checksum.CRC32C),
                                (SHA256_METADATA, checksum.SHA256)):
            if metadata.get(name):
                return StoredObject(key=key, size=size, checksum=metadata[name],
                                    checksum_algorithm=algorithm)
        return StoredObject(key=key, size=size)

    def open(self, key: str) -> S3RangeReader:
        """Open ``key`` as a seekable :class:`S3RangeReader` (one HEAD now, one GET per read).

        Raises:
            ObjectStoreError: The key is unsafe or the object cannot be opened.
        """
        full_key = self.full_key(key)
        return S3RangeReader(self.client, self._bucket, full_key)

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole in one GET.

        Raises:
            ObjectStoreError: The key is unsafe, missing, or S3 failed the request.
        """
        full_key = self.full_key(key)
        try:
            response = self.client.get_object(Bucket=self._bucket, Key=full_key)
            with response["Body"] as body:
                return body.read()
        except _BOTO_ERRORS as exc:
            raise self._error("read", key, exc) from exc

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error.

        Raises:
            ObjectStoreError: The key is unsafe or S3 refused the request.
        """
        full_key = self.full_key(key)
        try:
            self.client.delete_object(Bucket=self._bucket, Key=full_key)
        except _BOTO_ERRORS as exc:
            if isinstance(exc, botocore.exceptions.ClientError) and _error_code(exc) == "NoSuchKey":
                return
            raise self._error("delete", key, exc) from exc

    def ensure_bucket(self, *, create: bool = True) -> bool:
        """Check that the bucket exists and is reachable; create it when missing and ``create``.

        Returns:
            ``True`` when this call created the bucket, ``False`` when it existed already.

        Raises:
            ObjectStoreError: The server is unreachable, the credentials are refused, or the
                bucket is missing and ``create`` is false.
        """
        where = f" at {self._s3.endpoint_url}" if self._s3.endpoint_url else ""
        try:
            self.client.head_bucket(Bucket=self._bucket)
            return False
        except _BOTO_ERRORS as exc:
            missing = (isinstance(exc, botocore.exceptions.ClientError)
                       and _error_code(exc) in ("404", "NoSuchBucket"))
            if not missing:
                raise ObjectStoreError(
                    f"S3 bucket {self._bucket!r}{where} cannot be checked: "
                    f"{describe_error(exc, endpoint=self._s3.endpoint_url)}") from exc
        if not create:
            raise ObjectStoreError(f"S3 bucket {self._bucket!r}{where} does not exist")
        kwargs: dict[str, Any] = {"Bucket": self._bucket}
        if self._s3.region and self._s3.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._s3.region}
        try:
            self.client.create_bucket(**kwargs)
        except _BOTO_ERRORS as exc:
            if (isinstance(exc, botocore.exceptions.ClientError)
                    and _error_code(exc) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")):
                return False  # created by a concurrent call
            raise ObjectStoreError(
                f"S3 bucket {self._bucket!r}{where} cannot be created: "
                f"{describe_error(exc, endpoint=self._s3.endpoint_url)}") from exc
        return True

    def stream_url(self, key: str, *, expires: float = STREAM_URL_SECONDS) -> str | None:
        """A presigned GET URL of ``key``, valid ``expires`` seconds (1 s to 7 days), for ffmpeg.

        Made offline (no request): a missing object shows when the URL is read. ffmpeg's http
        protocol reads it with range requests (S3 and MinIO answer ``Range: bytes=N-`` with 206),
        so a seek is one new GET. The URL holds a signature and the access key id, never the
        secret; it must still not be logged (see :meth:`ObjectStore.stream_url`).

        Raises:
            ObjectStoreError: The key is unsafe, or the client cannot sign (no credentials).
        """
        full_key = self.full_key(key)
        seconds = int(min(max(math.ceil(expires), 1), MAX_PRESIGN_SECONDS))
        try:
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self._bucket, "Key": full_key},
                ExpiresIn=seconds)
        except _BOTO_ERRORS as exc:
            raise self._error("presign", key, exc) from exc

    def url(self, key: str) -> str:
        """Return ``s3://bucket/<prefix><key>``."""
        return f"s3://{self._bucket}/{self.full_key(key)}"

    def _error(self, action: str, key: str, exc: BaseException) -> ObjectStoreError:
        # The secret never crosses the wire (SigV4 sends only a signature), so neither a server
        # message nor botocore's can contain it; the message is built from safe parts only.
        where = f" at {self._s3.endpoint_url}" if self._s3.endpoint_url else ""
        return ObjectStoreError(
            f"S3 {action} of {self.url(key)}{where} failed: "
            f"{describe_error(exc, endpoint=self._s3.endpoint_url)}"
        )


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _pread_full(fd: int, length: int, offset: int) -> Iterator[bytes]:
    """Read ``length`` bytes at ``offset`` (fewer at the end of the file), in as few reads."""
    while length > 0:
        data = os.pread(fd, length, offset)
        if not data:
            return
        yield data
        length -= len(data)
        offset += len(data)
