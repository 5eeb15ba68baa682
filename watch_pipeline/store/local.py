"""The object store as a local directory: the embedded default.

Each key is a file below ``root`` (``a/b/c.mp4`` → ``root/a/b/c.mp4``). Writes go to a hidden
temporary file in the destination directory and are renamed over the key with ``os.replace``,
so a reader or a crash never sees half an object under the final key. The SHA-256 and the
content type are kept as extended attributes on the file when the file system supports them.

``put_file`` copies and hashes at the same time: the kernel copies the source to the
temporary file (``os.sendfile``, no user-space buffer) on a worker thread while the calling
thread hashes the same source in 8 MiB reads (``hashlib`` releases the GIL). A file therefore
costs about ``max(copy, sha256)`` rather than their sum. The source's size and mtime are compared
before and after, and the byte counts of both passes must agree, so a source that changes
during the copy is refused instead of being stored with a wrong hash.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from watch_pipeline.catalog.files import fsync_dir
from watch_pipeline.store.base import ObjectStore, ObjectStoreError, StoredObject, check_key

CHUNK_SIZE = 8 * 1024 * 1024
"""Bytes per read/copy step: large enough for full disk and hash speed, small enough to stay
responsive to a failure on the other thread."""

SHA256_XATTR = "user.watch_pipeline.sha256"
CONTENT_TYPE_XATTR = "user.mime_type"  # the freedesktop.org name, shown by file managers

# sendfile refuses some file pairs (certain file systems, special files); we then copy in
# user space instead, hashing each buffer as it passes.
_SENDFILE_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV}


class LocalObjectStore(ObjectStore):
    """Keys as files below a root directory.

    Args:
        root: The directory holding the objects; created on the first write.
        fsync: Flush each new object (and its directory entry) to disk before ``put_*``
            returns, so a power loss cannot leave an empty file under a key the catalog
            already records. The flush overlaps with hashing; turn it off only for scratch
            stores and benchmarks.
    """

    def __init__(self, root: Path | str, *, fsync: bool = True) -> None:
        self._root = Path(root).expanduser().absolute()
        self._fsync = fsync

    @property
    def root(self) -> Path:
        """The absolute root directory."""
        return self._root

    def path(self, key: str) -> Path:
        """Return the file that holds ``key`` (whether or not it exists).

        Raises:
            ObjectStoreError: The key is unsafe.
        """
        return self._root.joinpath(*check_key(key).split("/"))

    def local_path(self, key: str) -> Path | None:
        """The file that holds ``key``: objects of this store are read in place.

        Raises:
            ObjectStoreError: The key is unsafe.
        """
        return self.path(key)

    def put_file(self, key: str, src: Path, *, content_type: str | None = None) -> StoredObject:
        """Copy ``src`` to ``key`` atomically, returning its size and SHA-256.

        Raises:
            OSError: ``src`` cannot be opened.
            ObjectStoreError: The key is unsafe, the source changed while being copied, or the
                store directory cannot be written.
        """
        dest = self.path(key)
        with open(src, "rb", buffering=0) as source:
            before = os.fstat(source.fileno())
            with self._atomic_writer(key, dest, content_type) as target:
                size, sha256 = _copy_and_hash(
                    source.fileno(), target, before.st_size, fsync=self._fsync
                )
                after = os.fstat(source.fileno())
                if size != before.st_size or (after.st_size, after.st_mtime_ns) != (
                    before.st_size,
                    before.st_mtime_ns,
                ):
                    raise ObjectStoreError(
                        f"source {src} changed while being stored under {key!r}; not stored"
                    )
                _set_xattr(target, SHA256_XATTR, sha256)
        return StoredObject(key=key, size=size, sha256=sha256)

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> StoredObject:
        """Write ``data`` to ``key`` atomically.

        Raises:
            ObjectStoreError: The key is unsafe or the store directory cannot be written.
        """
        dest = self.path(key)
        sha256 = hashlib.sha256(data).hexdigest()
        with self._atomic_writer(key, dest, content_type) as target:
            _write_all(target, memoryview(data))
            _set_xattr(target, SHA256_XATTR, sha256)
        return StoredObject(key=key, size=len(data), sha256=sha256)

    def head(self, key: str) -> StoredObject | None:
        """Return size and recorded SHA-256 of ``key``, or ``None`` if it does not exist.

        ``sha256`` is ``None`` for files not written by this store or on file systems without
        user extended attributes.
        """
        path = self.path(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ObjectStoreError(f"cannot stat object {key!r}: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            return None
        return StoredObject(key=key, size=st.st_size, sha256=_get_xattr(path, SHA256_XATTR))

    def open(self, key: str) -> io.BufferedReader:
        """Open ``key`` as an ordinary read-only binary file.

        Raises:
            ObjectStoreError: The key is unsafe or no object exists under it.
        """
        path = self.path(key)
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise ObjectStoreError(f"no object under key {key!r}") from exc
        except OSError as exc:
            raise ObjectStoreError(f"cannot open object {key!r}: {exc.strerror}") from exc

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole.

        Raises:
            ObjectStoreError: The key is unsafe or no object exists under it.
        """
        with self.open(key) as fh:
            return fh.read()

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error.

        Empty parent directories are left in place: removing them would race with a
        concurrent ``put`` creating a sibling.
        """
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ObjectStoreError(f"cannot delete object {key!r}: {exc.strerror}") from exc

    def url(self, key: str) -> str:
        """Return the ``file://`` URI of ``key``."""
        return self.path(key).as_uri()

    @contextlib.contextmanager
    def _atomic_writer(self, key: str, dest: Path, content_type: str | None) -> Iterator[int]:
        """Yield the descriptor of a new temporary file beside ``dest``; on success rename it.

        On any exception the temporary file is removed and ``dest`` is left as it was.
        """
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp_path, fd = _create_temp(dest)
        except OSError as exc:
            raise ObjectStoreError(
                f"cannot create object {key!r} below {self._root}: {exc.strerror}"
            ) from exc
        try:
            try:
                yield fd
                if content_type:
                    _set_xattr(fd, CONTENT_TYPE_XATTR, content_type)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_path, dest)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            if isinstance(exc, OSError):
                raise ObjectStoreError(f"cannot store object {key!r}: {exc}") from exc
            raise
        if self._fsync:
            fsync_dir(dest.parent)


def _create_temp(dest: Path) -> tuple[Path, int]:
    """Create a hidden, uniquely named file beside ``dest`` (mode 0666 less the umask)."""
    while True:
        tmp_path = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.part")
        try:
            return tmp_path, os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _copy_and_hash(src_fd: int, dst_fd: int, expected_size: int, *, fsync: bool) -> tuple[int, str]:
    """Copy ``src_fd`` to ``dst_fd`` from offset 0 and return ``(bytes, sha256 hex)``.

    Small files and file pairs ``sendfile`` refuses take the single-thread path. With
    ``fsync`` the copying thread flushes the copy to disk while hashing still runs.

    Raises:
        ObjectStoreError: The copy and the hash saw different byte counts.
    """
    if expected_size < 2 * CHUNK_SIZE:
        return _copy_and_hash_buffered(src_fd, dst_fd)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-store-copy") as pool:
        copied_future = pool.submit(_sendfile_all, src_fd, dst_fd, stop, fsync)
        try:
            hashed, sha256 = _hash_fd(src_fd)
        except BaseException:
            stop.set()
            raise
        try:
            copied = copied_future.result()
        except OSError as exc:
            if exc.errno not in _SENDFILE_UNSUPPORTED:
                raise
            copied = None
    if copied is None:
        os.lseek(dst_fd, 0, os.SEEK_SET)
        os.ftruncate(dst_fd, 0)
        return _copy_and_hash_buffered(src_fd, dst_fd)
    if copied != hashed:
        raise ObjectStoreError("source changed while being copied (copy and hash disagree)")
    return copied, sha256


def _sendfile_all(src_fd: int, dst_fd: int, stop: threading.Event, fsync: bool) -> int:
    """Copy in the kernel with explicit source offsets (the hashing thread shares ``src_fd``)."""
    offset = 0
    while not stop.is_set():
        sent = os.sendfile(dst_fd, src_fd, offset, CHUNK_SIZE)
        if sent == 0:
            break
        offset += sent
    if fsync and not stop.is_set():
        os.fsync(dst_fd)
    return offset


def _hash_fd(fd: int) -> tuple[int, str]:
    """Hash ``fd`` from offset 0 to EOF with positional reads; return ``(bytes, hex)``."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    offset = 0
    while n := os.preadv(fd, [buf], offset):
        digest.update(view[:n])
        offset += n
    return offset, digest.hexdigest()


def _copy_and_hash_buffered(src_fd: int, dst_fd: int) -> tuple[int, str]:
    """Copy and hash through one reused buffer (the portable path)."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    offset = 0
    while n := os.preadv(src_fd, [buf], offset):
        chunk = view[:n]
        digest.update(chunk)
        _write_all(dst_fd, chunk)
        offset += n
    return offset, digest.hexdigest()


def _write_all(fd: int, data: memoryview) -> None:
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])


def _set_xattr(fd: int, name: str, value: str) -> None:
    """Record ``value`` on the file; silently skipped where xattrs are unsupported."""
    with contextlib.suppress(OSError, AttributeError):
        os.setxattr(fd, name, value.encode())


def _get_xattr(path: Path, name: str) -> str | None:
    try:
        return os.getxattr(path, name).decode()
    except (OSError, AttributeError, UnicodeDecodeError):
        return None
