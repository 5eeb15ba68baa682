"""The object store as a local directory: the embedded default.

Each key is a file below ``root`` (``a/b/c.mp4`` → ``root/a/b/c.mp4``). Writes go to a hidden
temporary file in the destination directory and are renamed over the key with ``os.replace``,
so a reader or a crash never sees half an object under the final key. The CRC32C and the
content type are kept as extended attributes on the file when the file system supports them
(objects written before CRC32C carry a SHA-256 attribute instead, still reported by ``head``).

How ``put_file`` copies, fastest first:

1. **Reflink** (``FICLONE``: Btrfs, XFS with reflink, bcachefs...): the new file shares the
   source's extents, nothing is copied. The CRC32C is computed over the source; the clone cannot
   differ from it, and the source's size and mtime are compared before and after.
2. **Kernel copy** (``os.copy_file_range``, else ``os.sendfile``) in 64 MiB steps on a worker
   thread, no user-space buffer. Behind it, the calling thread reads each copied range of the
   source *and* of the destination from the page cache and extends one CRC32C for each; they
   must agree after every range, so a difference stops the copy at once. With ``fsync`` a
   second worker flushes the copied data (``fdatasync``) every 128 MiB while the copy goes on,
   so the final flush only has the tail to write.
3. **Streamed copy** (small files, and file pairs the kernel refuses): 1 MiB positional reads,
   each CRC'd and written, then the destination is read back and its CRC compared.

The trade, measured with ``bench/import_local.py`` (1 GiB in the page cache, ext4, 2 shared
cores): ``shutil.copyfile`` 0.26 s and the ``fsync`` after it 0.33-0.40 s; ``put_file`` 0.51 s
with both CRCs and the flush; SHA-256 alone took 0.60 s. A CRC32C stream over a cached GiB costs
~0.14 s of CPU, so verification reads every byte twice more (source and destination) at memory
speed, on a second core beside the kernel copy. Skipping the destination read would save one
of those streams but only prove what we *handed* to the kernel; reading it back proves what the
file holds. Neither can see a disk that corrupts data after accepting it: that would need a
read from the device after the flush (``O_DIRECT``), at the disk's read rate, which the store
does not pay. The source's size and mtime are compared before and after, and the byte counts
must agree, so a source that changes during the copy is refused instead of being stored with
a wrong checksum.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from watch_pipeline.catalog.files import fsync_dir
from watch_pipeline.store import checksum
from watch_pipeline.store.base import (
    STREAM_URL_SECONDS,
    ObjectStore,
    ObjectStoreError,
    StoredObject,
    check_key,
)

COPY_STEP = 64 * 1024 * 1024
"""Bytes per kernel copy call: the granularity at which the checksums follow the copy."""
FLUSH_EVERY = 128 * 1024 * 1024
"""With ``fsync``, start writing the copied data back after this many new bytes."""
STREAM_BELOW = 2 * COPY_STEP
"""Files smaller than this take the streamed copy (no threads to start)."""

CRC32C_XATTR = "user.watch_pipeline.crc32c"
SHA256_XATTR = "user.watch_pipeline.sha256"
"""Written by the store before CRC32C; still read by :meth:`LocalObjectStore.head`."""
CONTENT_TYPE_XATTR = "user.mime_type"  # the freedesktop.org name, shown by file managers

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)

# A kernel copy or clone refused for the file pair (file system, kernel, seccomp): fall back.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOTTY,
                errno.EPERM, errno.EBADF}


class _Mismatch(Exception):
    """The destination's CRC32C differs from the source's (at or before ``offset``)."""

    def __init__(self, offset: int, source_crc: int, stored_crc: int) -> None:
        super().__init__(offset, source_crc, stored_crc)
        self.offset = offset
        self.source_crc = source_crc
        self.stored_crc = stored_crc


class LocalObjectStore(ObjectStore):
    """Keys as files below a root directory.

    Args:
        root: The directory holding the objects; created on the first write.
        fsync: Flush each new object (and its directory entry) to disk before ``put_*``
            returns, so a power loss cannot leave an empty file under a key the catalog
            already records. Large files are flushed while the copy goes on; turn it off
            only for scratch stores and benchmarks.
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

    def stream_url(self, key: str, *, expires: float = STREAM_URL_SECONDS) -> str | None:
        """The path of the file that holds ``key``: ffmpeg reads it in place (``expires`` unused).

        Raises:
            ObjectStoreError: The key is unsafe.
        """
        return str(self.path(key))

    def put_file(self, key: str, src: Path, *, content_type: str | None = None) -> StoredObject:
        """Copy ``src`` to ``key`` atomically, verified by CRC32C; return its size and CRC32C.

        Raises:
            OSError: ``src`` cannot be opened.
            ObjectStoreError: The key is unsafe, the source changed while being copied, the
                stored bytes differ from the source, or the store directory cannot be written.
                Nothing is left under ``key`` then (an object already there stays).
        """
        dest = self.path(key)
        with open(src, "rb", buffering=0) as source:
            before = os.fstat(source.fileno())
            with self._atomic_writer(key, dest, content_type) as target:
                try:
                    size, crc = _copy_verified(source.fileno(), target, before.st_size,
                                               fsync=self._fsync)
                except _Mismatch as exc:
                    raise ObjectStoreError(
                        f"the bytes stored for {key!r} differ from the source {src} (crc32c "
                        f"{checksum.to_hex(exc.stored_crc)} != {checksum.to_hex(exc.source_crc)} "
                        f"by offset {exc.offset}); not stored") from None
                after = os.fstat(source.fileno())
                if size != before.st_size or (after.st_size, after.st_mtime_ns) != (
                    before.st_size,
                    before.st_mtime_ns,
                ):
                    raise ObjectStoreError(
                        f"source {src} changed while being stored under {key!r}; not stored"
                    )
                _set_xattr(target, CRC32C_XATTR, checksum.to_hex(crc))
        return StoredObject(key=key, size=size, checksum=checksum.to_hex(crc),
                            checksum_algorithm=checksum.CRC32C)

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> StoredObject:
        """Write ``data`` to ``key`` atomically.

        Raises:
            ObjectStoreError: The key is unsafe or the store directory cannot be written.
        """
        dest = self.path(key)
        crc = checksum.to_hex(checksum.value(data))
        with self._atomic_writer(key, dest, content_type) as target:
            _write_all(target, memoryview(data))
            _set_xattr(target, CRC32C_XATTR, crc)
        return StoredObject(key=key, size=len(data), checksum=crc,
                            checksum_algorithm=checksum.CRC32C)

    def head(self, key: str) -> StoredObject | None:
        """Return size and recorded checksum of ``key``, or ``None`` if it does not exist.

        The checksum is the CRC32C attribute, else the SHA-256 one of objects stored before
        CRC32C; ``None`` for files not written by this store or on file systems without user
        extended attributes.
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
        for name, algorithm in ((CRC32C_XATTR, checksum.CRC32C), (SHA256_XATTR, checksum.SHA256)):
            value = _get_xattr(path, name)
            if value is not None:
                return StoredObject(key=key, size=st.st_size, checksum=value,
                                    checksum_algorithm=algorithm)
        return StoredObject(key=key, size=st.st_size)

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
    """Create a hidden, uniquely named file beside ``dest`` (mode 0666 less the umask).

    Opened for reading too: the copy reads the destination back to verify it.
    """
    while True:
        tmp_path = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.part")
        try:
            return tmp_path, os.open(tmp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _copy_verified(src_fd: int, dst_fd: int, size: int, *, fsync: bool) -> tuple[int, int]:
    """Copy ``src_fd`` to the empty ``dst_fd`` from offset 0; return ``(bytes, crc32c)``.

    Reflink first, then the kernel copy, then the streamed copy (see the module docstring).

    Raises:
        _Mismatch: The destination's bytes differ from the source's.
        OSError: Reading or writing failed.
    """
    if size >= STREAM_BELOW and _reflink(src_fd, dst_fd):
        crc, end = checksum.extend_fd(0, src_fd, 0, size + 1)
        return end, crc
    if size >= STREAM_BELOW:
        copied = _kernel_copy_checked(src_fd, dst_fd, fsync=fsync)
        if copied is not None:
            return copied
        os.ftruncate(dst_fd, 0)
    return _stream_copy_checked(src_fd, dst_fd)


def _reflink(src_fd: int, dst_fd: int) -> bool:
    """Clone the source's extents into the destination; ``False`` where unsupported."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return False
        raise
    return True


class _Progress:
    """How far the copying thread got, for the thread that checks behind it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._copied = 0
        self._finished = False
        self.stopped = False

    def advance(self, offset: int) -> None:
        with self._cond:
            self._copied = offset
            self._cond.notify()

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify()

    def stop(self) -> None:
        self.stopped = True

    def wait_beyond(self, offset: int) -> tuple[int, bool]:
        """Block until more than ``offset`` bytes are copied or the copy ended."""
        with self._cond:
            self._cond.wait_for(lambda: self._copied > offset or self._finished)
            return self._copied, self._finished


def _kernel_copy_checked(src_fd: int, dst_fd: int, *, fsync: bool) -> tuple[int, int] | None:
    """The kernel copy with the CRC32C of source and destination following it.

    Returns:
        ``(bytes, crc32c)``, or ``None`` when the kernel refused to copy this file pair
        (nothing was written; the caller streams instead).
    """
    progress = _Progress()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="local-store") as pool:
        copier = pool.submit(_copy_in_kernel, src_fd, dst_fd, progress)
        flushed: Future[None] | None = None
        unflushed = source_crc = stored_crc = checked = 0
        try:
            while True:
                reached, finished = progress.wait_beyond(checked)
                if reached > checked:
                    source_crc, got = checksum.extend_fd(source_crc, src_fd, checked, reached)
                    stored_crc, put = checksum.extend_fd(stored_crc, dst_fd, checked, reached)
                    if source_crc != stored_crc or got != put:
                        raise _Mismatch(reached, source_crc, stored_crc)
                    unflushed += reached - checked
                    checked = reached
                    if fsync and unflushed >= FLUSH_EVERY and (flushed is None or flushed.done()):
                        unflushed = 0
                        flushed = pool.submit(os.fdatasync, dst_fd)
                elif finished:
                    break
            copied = copier.result()
        except BaseException:
            progress.stop()
            raise
        if flushed is not None:
            flushed.result()
    if copied is None:
        return None
    return copied, source_crc


def _copy_in_kernel(src_fd: int, dst_fd: int, progress: _Progress) -> int | None:
    """Copy to EOF with ``copy_file_range``, else ``sendfile``; ``None`` if both are refused.

    Explicit source offsets throughout: the checking thread reads the same descriptors.
    """
    steps: list[Callable[[int], int]] = [
        lambda offset: os.sendfile(dst_fd, src_fd, offset, COPY_STEP)]
    if hasattr(os, "copy_file_range"):
        steps.insert(0, lambda offset: os.copy_file_range(src_fd, dst_fd, COPY_STEP, offset,
                                                          offset))
    try:
        for step in steps:
            offset = 0
            try:
                while not progress.stopped and (n := step(offset)):
                    offset += n
                    progress.advance(offset)
                return offset
            except OSError as exc:
                if offset or exc.errno not in _UNSUPPORTED:
                    raise
        return None
    finally:
        progress.finish()


def _stream_copy_checked(src_fd: int, dst_fd: int) -> tuple[int, int]:
    """Copy through user space, CRC'ing each chunk; then read the destination back and compare."""
    crc = offset = 0
    while data := os.pread(src_fd, checksum.READ_CHUNK, offset):
        crc = checksum.extend(crc, data)
        _pwrite_all(dst_fd, data, offset)
        offset += len(data)
    stored_crc, stored = checksum.extend_fd(0, dst_fd, 0, offset + 1)
    if stored_crc != crc or stored != offset:
        raise _Mismatch(offset, crc, stored_crc)
    return offset, crc


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)


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
