"""A watch source that is a folder on this machine, read in place.

Symlink policy (the root is resolved once, then every path is checked against it):

* a symlink whose resolved target lies outside the root is never opened, stat'ed for content or
  descended into; the listing yields ``RejectedEntry(..., "symlink points outside the watch
  root")`` so the scan can record it;
* a symlink to a file inside the root is followed: it is listed under the link's own path;
* a symlink to a directory inside the root is **not** descended into. The real directory is
  walked anyway, so nothing is lost, and skipping the link rules out loops and double listings;
* a dangling symlink is rejected with ``"broken symlink"``.

Names starting with ``.`` are skipped: they are hidden files and the temporary names that
``rsync``, ``upload()`` and many copy tools write before renaming into place. Other partially
copied files are held back by the scan's stability rule, not here.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from watch_pipeline.sources.base import (
    BrowseEntry,
    RejectedEntry,
    SourceClient,
    SourceEntry,
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
    UnsafePathError,
)

OUTSIDE_ROOT = "symlink points outside the watch root"
BROKEN_SYMLINK = "broken symlink"
PERMISSION_DENIED = "permission denied"

_COPY_CHUNK = 1024 * 1024


class LocalSourceClient(SourceClient):
    """A :class:`SourceClient` over one local folder, walked with :func:`os.scandir`.

    Args:
        root: The watch folder. It is not touched until a method is called.

    """

    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        """The watch folder as configured (not resolved)."""
        return self._root

    # -- connection -------------------------------------------------------------------------

    def test_connection(self) -> None:
        """Check the root exists, is a directory and can be listed.

        Raises:
            SourceNotFoundError: The root is missing or not a directory.
            SourcePermissionError: The root may not be listed.

        """
        root = self._checked_root()
        try:
            with os.scandir(root) as it:
                next(it, None)
        except PermissionError as exc:
            raise SourcePermissionError(f"watch folder {self._root} is not readable") from exc
        except OSError as exc:
            raise SourceError(
                f"watch folder {self._root} cannot be listed: {exc.strerror}"
            ) from exc

    # -- listing ----------------------------------------------------------------------------

    def list_files(
        self, *, recursive: bool = True, extensions: tuple[str, ...] = ()
    ) -> Iterator[SourceEntry | RejectedEntry]:
        """Yield every regular file under the root, one directory open at a time.

        The root is checked before the iterator is returned, so a missing or unreadable root
        raises at call time. An unreadable sub-folder does not abort the scan: it is yielded as
        ``RejectedEntry(folder, "permission denied")`` and skipped.

        Args:
            recursive: Descend into sub-folders (never into symlinked ones).
            extensions: Dot-prefixed extensions to keep, matched case-insensitively; empty keeps
                every file.

        Returns:
            A generator of :class:`SourceEntry` and :class:`RejectedEntry`.

        Raises:
            SourceNotFoundError: The root is missing or not a directory.
            SourcePermissionError: The root may not be listed.

        """
        root = self._checked_root()
        if not os.access(root, os.R_OK | os.X_OK):
            raise SourcePermissionError(f"watch folder {self._root} is not readable")
        suffixes = tuple(_normalise_extension(ext) for ext in extensions if ext)
        return self._walk(root, recursive=recursive, suffixes=suffixes)

    def _walk(
        self, root: Path, *, recursive: bool, suffixes: tuple[str, ...]
    ) -> Iterator[SourceEntry | RejectedEntry]:
        # Depth-first with an explicit stack; each directory is read to the end before the next
        # is opened, so at most one directory handle is open however deep the tree is.
        stack: list[tuple[str, str]] = [(str(root), "")]
        while stack:
            dir_path, prefix = stack.pop()
            try:
                it = os.scandir(dir_path)
            except PermissionError:
                if not prefix:
                    raise SourcePermissionError(
                        f"watch folder {self._root} is not readable"
                    ) from None
                yield RejectedEntry(prefix.rstrip("/"), PERMISSION_DENIED)
                continue
            except FileNotFoundError:
                if not prefix:
                    raise SourceNotFoundError(f"watch folder {self._root} does not exist") from None
                continue  # removed between listing its parent and opening it
            subdirs: list[tuple[str, str]] = []
            with it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    rel = prefix + entry.name
                    item = self._classify(entry, rel, root, recursive, suffixes, subdirs)
                    if item is not None:
                        yield item
            # Reversed so sub-folders are visited in the order the directory listed them.
            stack.extend(reversed(subdirs))

    def _classify(
        self,
        entry: os.DirEntry[str],
        rel: str,
        root: Path,
        recursive: bool,
        suffixes: tuple[str, ...],
        subdirs: list[tuple[str, str]],
    ) -> SourceEntry | RejectedEntry | None:
        try:
            if entry.is_symlink():
                return self._classify_symlink(entry, rel, root, recursive, suffixes)
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    subdirs.append((entry.path, rel + "/"))
                return None
            if not entry.is_file(follow_symlinks=False):
                return None  # fifo, socket, device: never media
            if not _matches(entry.name, suffixes):
                return None
            return _entry(rel, entry.stat(follow_symlinks=False))
        except FileNotFoundError:
            return None  # deleted while we were listing
        except PermissionError:
            return RejectedEntry(rel, PERMISSION_DENIED)

    def _classify_symlink(
        self,
        entry: os.DirEntry[str],
        rel: str,
        root: Path,
        recursive: bool,
        suffixes: tuple[str, ...],
    ) -> SourceEntry | RejectedEntry | None:
        target = Path(os.path.realpath(entry.path))
        inside = _is_within(target, root)
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            if not recursive:
                return None  # would not be descended into anyway
            return None if inside else RejectedEntry(rel, OUTSIDE_ROOT)
        if not _matches(entry.name, suffixes):
            return None
        if not inside:
            return RejectedEntry(rel, OUTSIDE_ROOT)
        if st is None:
            return RejectedEntry(rel, BROKEN_SYMLINK)
        if not stat.S_ISREG(st.st_mode):
            return None
        return _entry(rel, st)

    # -- file access ------------------------------------------------------------------------

    def open(self, remote_path: str) -> io.BufferedReader:
        """Open ``remote_path`` read-only after checking it stays under the root.

        Raises:
            UnsafePathError: The path is absolute, has a ``..`` segment or resolves outside.
            SourceNotFoundError: No regular file at that path.
            SourcePermissionError: The file may not be read.

        """
        path = self._resolve(remote_path)
        # O_NONBLOCK: opening a fifo must not hang the scan; O_NOFOLLOW: the checked path must
        # not have been swapped for a symlink since it was resolved.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"{remote_path} does not exist") from exc
        except PermissionError as exc:
            raise SourcePermissionError(f"{remote_path} is not readable") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(f"{remote_path!r} changed into a symlink") from exc
            raise SourceError(f"{remote_path} cannot be opened: {exc.strerror}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SourceNotFoundError(f"{remote_path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def local_path(self, remote_path: str) -> Path:
        """Return the checked, resolved path of ``remote_path``: local files are read in place.

        Raises:
            UnsafePathError: The path escapes the root.

        """
        return self._resolve(remote_path)

    def download(self, remote_path: str, dest: Path, *, expected_size: int | None = None) -> Path:
        """Copy the file to ``dest`` in chunks (callers normally read in place instead).

        The copy is written to a temporary name beside ``dest`` and renamed, so ``dest`` is
        either absent or complete.

        Raises:
            SourceError: The copied size differs from ``expected_size``.

        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.open(remote_path) as src:
            copied = _atomic_copy(src, dest)
        if expected_size is not None and copied != expected_size:
            dest.unlink(missing_ok=True)
            raise SourceError(
                f"{remote_path} changed while copying: {copied} bytes, expected {expected_size}"
            )
        return dest

    def browse(self, path: str = "") -> list[BrowseEntry]:
        """Folders and files directly inside ``path``; symlinks and hidden names are left out."""
        folder = self._resolve(path) if path.strip("/") else self._checked_root()
        if not folder.is_dir():
            raise SourceNotFoundError(f"{path!r} is not a folder in the watch root")
        items: list[BrowseEntry] = []
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith(".") or entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    items.append(BrowseEntry("folder", entry.name))
                elif entry.is_file(follow_symlinks=False):
                    items.append(BrowseEntry("file", entry.name,
                                             entry.stat(follow_symlinks=False).st_size))
        return sorted(items, key=lambda e: (e.kind != "folder", e.name.lower()))

    def upload(self, src: Path, remote_path: str) -> None:
        """Copy ``src`` to ``remote_path`` under the root (temporary hidden name, then rename).

        Raises:
            UnsafePathError: ``remote_path`` escapes the root.
            SourcePermissionError: The folder may not be written.

        """
        dest = self._resolve(remote_path)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as fh:
                _atomic_copy(fh, dest)
        except PermissionError as exc:
            raise SourcePermissionError(f"{remote_path} cannot be written") from exc

    def delete(self, remote_path: str) -> None:
        """Remove ``remote_path``; a file that is already gone is not an error.

        A symlink inside the root is removed itself, never its target.

        Raises:
            UnsafePathError: The path escapes the root.
            SourcePermissionError: The file may not be removed.

        """
        self._resolve(remote_path)
        # Unlink the listed name inside its resolved folder, so a link is removed, not its target.
        pure = PurePosixPath(remote_path)
        root = self._real_root()
        parent = Path(os.path.realpath(root / pure.parent))
        if not _is_within(parent, root):
            raise UnsafePathError(f"{remote_path!r} is outside the watch root")
        target = parent / pure.name
        try:
            target.unlink(missing_ok=True)
        except PermissionError as exc:
            raise SourcePermissionError(f"{remote_path} cannot be deleted") from exc
        except IsADirectoryError as exc:
            raise SourceError(f"{remote_path} is a folder, not a file") from exc

    # -- path checks ------------------------------------------------------------------------

    def _real_root(self) -> Path:
        return Path(os.path.realpath(self._root))

    def _checked_root(self) -> Path:
        root = self._real_root()
        try:
            st = os.stat(root)
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"watch folder {self._root} does not exist") from exc
        except PermissionError as exc:
            raise SourcePermissionError(f"watch folder {self._root} is not readable") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise SourceNotFoundError(f"watch folder {self._root} is not a directory")
        return root

    def _resolve(self, remote_path: str) -> Path:
        """Validate a relative path and return it resolved, guaranteed strictly under the root."""
        if not remote_path or "\x00" in remote_path:
            raise UnsafePathError("empty path or NUL byte in path")
        pure = PurePosixPath(remote_path)
        if pure.is_absolute() or remote_path.startswith("\\"):
            raise UnsafePathError(f"{remote_path!r} is absolute")
        if ".." in pure.parts:
            raise UnsafePathError(f"{remote_path!r} contains '..'")
        root = self._real_root()
        resolved = Path(os.path.realpath(root / pure))
        if resolved == root or not _is_within(resolved, root):
            raise UnsafePathError(f"{remote_path!r} is outside the watch root")
        return resolved


def _normalise_extension(ext: str) -> str:
    ext = ext.lower()
    return ext if ext.startswith(".") else "." + ext


def _matches(name: str, suffixes: tuple[str, ...]) -> bool:
    # endswith, not splitext, so multi-dot extensions such as ".tar.gz" work too.
    return not suffixes or name.lower().endswith(suffixes)


def _is_within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _entry(rel: str, st: os.stat_result) -> SourceEntry:
    return SourceEntry(
        remote_path=rel,
        size=st.st_size,
        mtime=datetime.fromtimestamp(st.st_mtime, tz=UTC),
        etag=None,
    )


def _atomic_copy(src: io.BufferedIOBase | io.RawIOBase, dest: Path) -> int:
    """Stream ``src`` into a hidden temp file beside ``dest``, then rename; return bytes copied."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from other readers
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, _COPY_CHUNK)
            copied = out.tell()
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return copied
