"""The object store as an S3 bucket (AWS, MinIO or any S3-compatible server), via boto3.

This module is the one place boto3 transfer settings live (multipart threshold, part size,
concurrency, retries, timeouts, checksum policy).

Uploads and the SHA-256: S3 metadata is fixed when an object is created, and a multipart
upload cannot know the hash of its content before its last part is sent. ``put_file`` therefore
reads the local file twice: a first streaming pass computes the SHA-256 (local reads run at
over 1 GB/s, far faster than any upload), then ``upload_fileobj`` sends the file with
``x-amz-meta-sha256`` already set, reading it through :class:`_HashingReader`, which hashes the
bytes actually read for sending. If the two hashes differ the source changed between the
passes: the object is deleted and :class:`ObjectStoreError` raised. The alternative, uploading
first and then rewriting the metadata with ``copy_object``, would leave a window in which the
object has no hash, copies the whole object again on the server, and needs a multipart copy
above 5 GiB.

Reads: :class:`S3RangeReader` is a seekable read-only file object over ranged GETs, so a
fingerprint of three small windows costs three small requests, never a download.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.config import Config

from watch_pipeline.catalog.secrets import public_repr
from watch_pipeline.store.base import (
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
"""Parallel part uploads per ``put_file``. s3transfer reads each part of a file object into
memory, so one upload holds at most ``MAX_CONCURRENCY * MULTIPART_CHUNKSIZE`` of parts."""
MAX_ATTEMPTS = 3
"""Attempts per request (botocore "standard" retry mode: throttling, 5xx, connection errors)."""

SHA256_METADATA = "sha256"
"""User metadata name: sent as the ``x-amz-meta-sha256`` header."""

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
}


def make_s3_client(*, endpoint_url: str | None, region: str | None,
                   access_key_id: str | None, secret_access_key: str | None, use_ssl: bool,
                   connect_timeout: float, read_timeout: float) -> BaseClient:
    """A boto3 S3 client with the project's settings (the one place they are chosen).

    Path-style addressing for custom endpoints (MinIO and most S3-compatible servers need it),
    standard retries, and checksums only when required: boto3 >= 1.36 adds CRC checksums to
    every upload, which several S3-compatible servers reject (we verify content ourselves).

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

class _HashingReader(io.RawIOBase):
    """A seekable reader over a local file that hashes the bytes handed out, once each.

    s3transfer reads upload parts from it in order, and botocore may read a body, seek back
    and read it again (payload signing over plain HTTP, retries). Only bytes that extend the
    hashed prefix are hashed, so the digest is that of the content sent, whatever the re-reads;
    ``hashed`` tells how far that prefix reaches.
    """

    def __init__(self, raw: io.FileIO) -> None:
        super().__init__()
        self._raw = raw
        self._digest = hashlib.sha256()
        self._hashed = 0
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
        # Overridden so a 16 MiB part is one bytes object, not a bytearray plus a copy.
        data = self._raw.read(size) if size is None or size < 0 else self._read_full(size)
        self._advance(memoryview(data))
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = self._raw.readinto(view) or 0
        self._advance(view[:n])
        return n

    @property
    def hashed(self) -> int:
        """How many bytes from offset 0 have been hashed."""
        return self._hashed

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def _read_full(self, size: int) -> bytes:
        data = self._raw.read(size) or b""
        while len(data) < size:
            more = self._raw.read(size - len(data))
            if not more:
                break
            data += more
        return data

    def _advance(self, chunk: memoryview) -> None:
        start, end = self._pos, self._pos + len(chunk)
        if start <= self._hashed < end:
            self._digest.update(chunk[self._hashed - start :])
            self._hashed = end
        self._pos = end


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
        self._transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            use_threads=True,
            # The CRT client ignores most of these settings; keep behaviour identical everywhere.
            preferred_transfer_client="classic",
        )
        # Not a constructor argument of boto3's TransferConfig, but honoured by s3transfer:
        # bounds the parts read into memory from our file object.
        self._transfer_config.max_in_memory_upload_chunks = max_concurrency
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
        """Upload ``src`` to ``key`` (multipart above the threshold) with its SHA-256 as metadata.

        Raises:
            OSError: ``src`` cannot be read.
            ObjectStoreError: The key is unsafe, S3 refused or failed the upload, or the source
                changed while being uploaded (the partial object is then deleted).
        """
        full_key = self.full_key(key)
        size, sha256 = _hash_file(src)
        extra: dict[str, Any] = {"Metadata": {SHA256_METADATA: sha256}}
        if content_type:
            extra["ContentType"] = content_type
        with open(src, "rb", buffering=0) as raw:
            reader = _HashingReader(raw)
            try:
                self.client.upload_fileobj(
                    reader, self._bucket, full_key, ExtraArgs=extra, Config=self._transfer_config
                )
            except _BOTO_ERRORS as exc:
                raise self._error("upload", key, exc) from exc
            sent_size = raw.seek(0, io.SEEK_END)
        if (reader.hashed, sent_size, reader.hexdigest()) != (size, size, sha256):
            self.delete(key)
            raise ObjectStoreError(
                f"source {src} changed while being uploaded to {self.url(key)}; not stored"
            )
        return StoredObject(key=key, size=size, sha256=sha256)

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> StoredObject:
        """Store ``data`` under ``key`` in one ``PutObject`` with its SHA-256 as metadata.

        Raises:
            ObjectStoreError: The key is unsafe or S3 refused or failed the request.
        """
        full_key = self.full_key(key)
        sha256 = hashlib.sha256(data).hexdigest()
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        try:
            self.client.put_object(
                Bucket=self._bucket,
                Key=full_key,
                Body=data,
                Metadata={SHA256_METADATA: sha256},
                **extra,
            )
        except _BOTO_ERRORS as exc:
            raise self._error("upload", key, exc) from exc
        return StoredObject(key=key, size=len(data), sha256=sha256)

    def head(self, key: str) -> StoredObject | None:
        """Return size and SHA-256 metadata of ``key``, or ``None`` when it does not exist.

        A HEAD response has no body, so a missing bucket also reads as ``None`` here; the next
        write names it.

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
        return StoredObject(
            key=key,
            size=int(response["ContentLength"]),
            sha256=(response.get("Metadata") or {}).get(SHA256_METADATA),
        )

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


def _hash_file(src: Path) -> tuple[int, str]:
    """Stream ``src`` once and return ``(size, sha256 hex)``."""
    digest = hashlib.sha256()
    buf = bytearray(8 * MIB)
    view = memoryview(buf)
    size = 0
    with open(src, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()
