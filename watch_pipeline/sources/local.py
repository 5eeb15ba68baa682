"""A watch source that is a folder on this machine, read in place.

Containment: the source's folder (its root) must resolve to a place inside the resolved watch
folder (``WATCH_FOLDER_PATH``); :func:`resolve_root` checks it when a source is added or a client
created, and every listing and file access checks it again. Below the root nothing is ever
reached through the kernel's own path walk: the root is opened once per call and every path is
walked from it one component at a time with ``O_NOFOLLOW`` (:mod:`._beneath`), so a component
swapped for a symlink after the listing cannot lead ``open``, ``local_path``, ``delete`` or
``upload`` out of the root.

Symlink policy:

* a symlink whose target lies outside the root is never opened or descended into; the listing
  yields ``RejectedEntry(..., "symlink points outside the watch root", "outside_root")``;
* a symlink to a file inside the root is followed: it is listed under the link's own path;
* a symlink to a directory inside the root is **not** descended into. The real directory is
  walked anyway, so nothing is lost, and skipping the link rules out loops and double listings;
* a dangling symlink is rejected with ``"broken symlink"``, a looping one with
  ``"symlink loop"`` (skip reason ``symlink_loop``).

One bad entry never stops a listing: a name that is not valid UTF-8 (``unreadable_name``, its
path escaped with :func:`~watch_pipeline.sources.base.escape_path`), a path too long for the
catalog or the system (``path_too_long``), and any other error the system reports for one entry
or one sub-folder are yielded as :class:`RejectedEntry`. Only a root that cannot be used raises.

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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from watch_pipeline.catalog.models import SkipReason
from watch_pipeline.sources import _transfer
from watch_pipeline.sources._beneath import (
    OutsideRootError,
    Root,
    open_beneath,
    open_dir_nofollow,
    parent_beneath,
    stat_beneath,
)
from watch_pipeline.sources.base import (
    MAX_REMOTE_PATH,
    BrowseEntry,
    RejectedEntry,
    SourceClient,
    SourceEntry,
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
    UnsafePathError,
    escape_path,
    extension_suffixes,
    is_decodable,
    matches,
    storable_path,
)

OUTSIDE_ROOT = "symlink points outside the watch root"
BROKEN_SYMLINK = "broken symlink"
SYMLINK_LOOP = "symlink loop"
PERMISSION_DENIED = "permission denied"
UNREADABLE_NAME = "name is not valid UTF-8"

PATH_MAX = 4096
"""The longest path, in bytes, that Linux accepts (``PATH_MAX``, counting the final NUL)."""
NAME_MAX = 255
"""The longest file name, in bytes, that Linux file systems accept."""

_COPY_CHUNK = 1024 * 1024
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a fifo must not hang us


def resolve_root(watch_root: Path, local_path: str, *, must_exist: bool = True) -> Path:
    """Resolve a local source's folder and check it lies inside the watch folder.

    The CLI calls this when a source is added, updated or tested; the client factory calls it
    with ``must_exist=False`` when a client is created, and every listing checks again.

    Args:
        watch_root: ``WATCH_FOLDER_PATH``.
        local_path: The source's ``local_path``, relative to ``watch_root`` (``""`` or ``"."``:
            the watch folder itself).
        must_exist: Require both folders to exist and be directories; without it a missing
            folder is accepted, and only what exists of the path is resolved.

    Returns:
        The resolved (symlink-free) path of the source's folder.

    Raises:
        UnsafePathError: ``local_path`` is absolute, has a ``..`` segment, or resolves (through
            a symlink) to a place outside the watch folder.
        SourceNotFoundError: A folder is missing or not a directory (``must_exist``).
        SourceError: A folder is a symlink loop or its path is too long.
    """
    pure = _relative_root(local_path)
    watch = Path(watch_root).expanduser()
    _check_length(watch / pure)
    watch_real = _realpath(watch, "watch folder", strict=must_exist)
    root_real = _realpath(watch_real / pure, "source folder", strict=must_exist)
    if root_real != watch_real and not root_real.is_relative_to(watch_real):
        raise UnsafePathError(
            f"source folder {_shown(watch / pure)} resolves to {_shown(root_real)}, outside the "
            f"watch folder {_shown(watch_real)}"
        )
    if must_exist and not root_real.is_dir():
        raise SourceNotFoundError(f"source folder {_shown(watch / pure)} is not a directory")
    return root_real


@dataclass(frozen=True)
class _OpenRoot:
    """The root as one call uses it: open, resolved, and the byte length of its path."""

    handle: Root
    path: Path
    path_bytes: int

    def close(self) -> None:
        os.close(self.handle.fd)


class LocalSourceClient(SourceClient):
    """A :class:`SourceClient` over one local folder, walked with :func:`os.scandir`.

    Args:
        root: The source's folder. It is not touched until a method is called.
        watch_root: The watch folder the root must stay inside (``WATCH_FOLDER_PATH``);
            ``None``: the root itself is the boundary.

    """

    def __init__(self, root: Path, *, watch_root: Path | None = None) -> None:
        self._root = Path(root)
        self._watch_root = None if watch_root is None else Path(watch_root)

    @property
    def root(self) -> Path:
        """The watch folder as configured (not resolved)."""
        return self._root

    # -- connection -------------------------------------------------------------------------

    def test_connection(self) -> None:
        """Check the root exists, is a directory inside the watch folder and can be listed.

        Raises:
            SourceNotFoundError: The root is missing or not a directory.
            SourcePermissionError: The root may not be listed.
            UnsafePathError: The root resolves outside the watch folder.
            SourceError: The root is a symlink loop, its path too long, or it cannot be listed.

        """
        with self._opened_root() as root:
            self._check_listable(root)

    # -- listing ----------------------------------------------------------------------------

    def list_files(
        self, *, recursive: bool = True, extensions: tuple[str, ...] = ()
    ) -> Iterator[SourceEntry | RejectedEntry]:
        """Yield every regular file under the root, one directory open at a time.

        The root is checked before the iterator is returned, so an unusable root raises at call
        time. Nothing below the root raises: an unreadable sub-folder, an undecodable name, a
        symlink loop, a path too long, or any other system error for one entry is yielded as a
        :class:`RejectedEntry` carrying its skip reason, and the listing goes on.

        Args:
            recursive: Descend into sub-folders (never into symlinked ones).
            extensions: Dot-prefixed extensions to keep, matched case-insensitively; empty keeps
                every file.

        Returns:
            A generator of :class:`SourceEntry` and :class:`RejectedEntry`.

        Raises:
            SourceNotFoundError: The root is missing or not a directory.
            SourcePermissionError: The root may not be listed.
            UnsafePathError: The root resolves outside the watch folder.
            SourceError: The root is a symlink loop or its path is too long.

        """
        root = self._open_root()
        if not os.access(root.path, os.R_OK | os.X_OK):
            root.close()
            raise SourcePermissionError(f"watch folder {_shown(self._root)} is not readable")
        return self._walk(root, recursive=recursive, suffixes=extension_suffixes(extensions))

    def _walk(
        self, root: _OpenRoot, *, recursive: bool, suffixes: tuple[str, ...]
    ) -> Iterator[SourceEntry | RejectedEntry]:
        # Depth-first with an explicit stack of relative paths; each directory is read to the
        # end before the next is opened, so one directory handle is open however deep the tree.
        try:
            stack: list[tuple[str, ...]] = [()]
            while stack:
                parts = stack.pop()
                subdirs: list[tuple[str, ...]] = []
                yield from self._list_folder(root, parts, recursive, suffixes, subdirs)
                # Reversed so sub-folders are visited in the order the directory listed them.
                stack.extend(reversed(subdirs))
        finally:
            root.close()

    def _list_folder(
        self,
        root: _OpenRoot,
        parts: tuple[str, ...],
        recursive: bool,
        suffixes: tuple[str, ...],
        subdirs: list[tuple[str, ...]],
    ) -> Iterator[SourceEntry | RejectedEntry]:
        try:
            fd = open_dir_nofollow(root.handle.fd, parts)
        except FileNotFoundError:
            return  # removed between listing its parent and opening it
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return  # replaced by a symlink since it was listed: the next scan will see it
            yield _rejected("/".join(parts), exc)
            return
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    item = self._classify(root, entry, (*parts, entry.name), recursive,
                                          suffixes, subdirs)
                    if item is not None:
                        yield item
        except OSError as exc:  # the directory itself failed mid-listing
            if not parts:
                raise _root_error(exc, self._root) from exc
            yield _rejected("/".join(parts), exc)
        finally:
            os.close(fd)

    def _classify(
        self,
        root: _OpenRoot,
        entry: os.DirEntry[str],
        parts: tuple[str, ...],
        recursive: bool,
        suffixes: tuple[str, ...],
        subdirs: list[tuple[str, ...]],
    ) -> SourceEntry | RejectedEntry | None:
        rel = "/".join(parts)
        try:
            is_link = entry.is_symlink()
            is_dir = not is_link and entry.is_dir(follow_symlinks=False)
            if not (is_link or (is_dir and recursive) or matches(entry.name, suffixes)):
                return None
            problem = _name_problem(root, rel)
            if problem is not None:
                return problem
            if is_link:
                return _classify_symlink(root, entry, parts, recursive, suffixes)
            if is_dir:
                if recursive:
                    subdirs.append(parts)
                return None
            if not entry.is_file(follow_symlinks=False):
                return None  # fifo, socket, device: never media
            return _entry(rel, entry.stat(follow_symlinks=False))
        except FileNotFoundError:
            return None  # deleted while we were listing
        except (OSError, OutsideRootError) as exc:
            return _rejected(rel, exc)

    # -- file access ------------------------------------------------------------------------

    def open(self, remote_path: str) -> io.BufferedReader:
        """Open ``remote_path`` read-only, reached without leaving the root.

        Raises:
            UnsafePathError: The path is absolute, has a ``..`` segment or leads outside.
            SourceNotFoundError: No regular file at that path.
            SourcePermissionError: The file may not be read.
            SourceError: Another system error (a symlink loop, a path too long).

        """
        parts = _checked_parts(remote_path)
        with self._opened_root() as root, _file_errors(remote_path):
            fd, _names = open_beneath(root.handle, parts, _READ_FLAGS)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SourceNotFoundError(f"{remote_path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def local_path(self, remote_path: str) -> Path:
        """Return the resolved path of ``remote_path``: local files are read in place.

        The path is found by the same walk as :meth:`open`, so it never leads outside the root
        at the time of the call, and names a regular file.

        Raises:
            UnsafePathError: The path escapes the root.
            SourceNotFoundError: No regular file at that path.

        """
        parts = _checked_parts(remote_path)
        with self._opened_root() as root, _file_errors(remote_path):
            fd, names = open_beneath(root.handle, parts, os.O_PATH)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise SourceNotFoundError(f"{remote_path} is not a regular file")
            finally:
                os.close(fd)
            return root.path.joinpath(*names)

    def download(self, remote_path: str, dest: Path, *, expected_size: int | None = None) -> Path:
        """Copy the file to ``dest`` in chunks (callers normally read in place instead).

        The copy is written to a temporary name beside ``dest`` and renamed, so ``dest`` is
        either absent or complete.

        Raises:
            UnsafePathError: The path escapes the root, or ``dest`` names a folder.
            SourceError: The copied size differs from ``expected_size`` (or a subclass, as for
                :meth:`open`).

        """
        dest = _transfer.destination(dest)
        folder = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with self.open(remote_path) as src:
                copied = _atomic_copy(src, folder, dest.name)
            if expected_size is not None and copied != expected_size:
                os.unlink(dest.name, dir_fd=folder)
                raise SourceError(
                    f"{remote_path} changed while copying: {copied} bytes, expected "
                    f"{expected_size}"
                )
        finally:
            os.close(folder)
        return dest

    def browse(self, path: str = "") -> list[BrowseEntry]:
        """Folders and files directly inside ``path``; symlinks and hidden names are left out."""
        parts = _checked_parts(path) if path.strip("/") else []
        try:
            with self._opened_root() as root, _file_errors(path):
                fd, _names = open_beneath(root.handle, parts, os.O_RDONLY | os.O_DIRECTORY)
        except SourceNotFoundError as exc:
            if not parts:
                raise
            raise SourceNotFoundError(f"{path!r} is not a folder in the watch root") from exc
        items: list[BrowseEntry] = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.name.startswith(".") or entry.is_symlink():
                        continue
                    name = escape_path(entry.name)
                    if entry.is_dir(follow_symlinks=False):
                        items.append(BrowseEntry("folder", name))
                    elif entry.is_file(follow_symlinks=False):
                        items.append(BrowseEntry("file", name,
                                                 entry.stat(follow_symlinks=False).st_size))
        finally:
            os.close(fd)
        return sorted(items, key=lambda e: (e.kind != "folder", e.name.lower()))

    def upload(self, src: Path, remote_path: str) -> None:
        """Copy ``src`` to ``remote_path`` under the root (temporary hidden name, then rename).

        Raises:
            UnsafePathError: ``remote_path`` escapes the root.
            SourcePermissionError: The folder may not be written.

        """
        parts = _checked_parts(remote_path)
        with self._opened_root() as root, _file_errors(remote_path, writing=True):
            folder, name = parent_beneath(root.handle, parts, create=True)
            try:
                with open(src, "rb") as fh:
                    _atomic_copy(fh, folder, name)
            finally:
                os.close(folder)

    def delete(self, remote_path: str) -> None:
        """Remove ``remote_path``; a file that is already gone is not an error.

        A symlink inside the root is removed itself, never its target.

        Raises:
            UnsafePathError: The path escapes the root.
            SourcePermissionError: The file may not be removed.

        """
        parts = _checked_parts(remote_path)
        with self._opened_root() as root, _file_errors(remote_path, writing=True):
            try:
                folder, name = parent_beneath(root.handle, parts)
            except FileNotFoundError:
                return  # its folder is gone, and so is the file
            try:
                os.unlink(name, dir_fd=folder)
            except FileNotFoundError:
                pass
            except IsADirectoryError as exc:
                raise SourceError(f"{remote_path} is a folder, not a file") from exc
            finally:
                os.close(folder)

    # -- the root ---------------------------------------------------------------------------

    def _open_root(self) -> _OpenRoot:
        """Resolve the root, check it lies inside the watch folder, and open it.

        Raises:
            SourceError: A subclass naming why the root cannot be used.
        """
        root_real = _realpath(self._root, "watch folder", strict=True)
        boundary = root_real
        if self._watch_root is not None:
            boundary = _realpath(self._watch_root, "watch folder", strict=True)
            if root_real != boundary and not root_real.is_relative_to(boundary):
                raise UnsafePathError(
                    f"watch folder {_shown(self._root)} resolves to {_shown(root_real)}, "
                    f"outside {_shown(boundary)}"
                )
        try:
            # Walked down from the boundary without following links: a folder on the way that
            # was swapped for a symlink since realpath() looked is refused, not followed.
            top = os.open(boundary, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fd = open_dir_nofollow(top, root_real.relative_to(boundary).parts)
            finally:
                os.close(top)
        except OSError as exc:
            raise _root_error(exc, self._root) from exc
        configured = Path(os.path.abspath(self._root))
        anchors = tuple(dict.fromkeys((root_real.parts[1:], configured.parts[1:])))
        return _OpenRoot(Root(fd, anchors), root_real, len(os.fsencode(root_real)))

    @contextlib.contextmanager
    def _opened_root(self) -> Iterator[_OpenRoot]:
        root = self._open_root()
        try:
            yield root
        finally:
            root.close()

    def _check_listable(self, root: _OpenRoot) -> None:
        """Read the root's first entry, so that a root that cannot be listed raises now."""
        if not os.access(root.path, os.R_OK | os.X_OK):
            raise SourcePermissionError(f"watch folder {_shown(self._root)} is not readable")
        try:
            with os.scandir(root.handle.fd) as it:
                next(it, None)
        except OSError as exc:
            raise _root_error(exc, self._root) from exc


def _classify_symlink(
    root: _OpenRoot,
    entry: os.DirEntry[str],
    parts: tuple[str, ...],
    recursive: bool,
    suffixes: tuple[str, ...],
) -> SourceEntry | RejectedEntry | None:
    rel = "/".join(parts)
    wanted = matches(entry.name, suffixes)
    try:
        st = stat_beneath(root.handle, parts)
    except OutsideRootError:
        # Whether it leads to a folder only decides whether to mention it; nothing is opened.
        to_folder = _follows_to_folder(entry)
        if (to_folder and recursive) or (not to_folder and wanted):
            return RejectedEntry(rel, OUTSIDE_ROOT, SkipReason.OUTSIDE_ROOT)
        return None
    except (FileNotFoundError, NotADirectoryError):
        return RejectedEntry(rel, BROKEN_SYMLINK) if wanted else None
    except OSError as exc:
        if exc.errno == errno.ELOOP and (recursive or wanted):
            return RejectedEntry(rel, SYMLINK_LOOP, SkipReason.SYMLINK_LOOP)
        if exc.errno == errno.ELOOP:
            return None
        raise
    if stat.S_ISDIR(st.st_mode) or not wanted or not stat.S_ISREG(st.st_mode):
        return None  # a folder inside the root is walked through its real path
    return _entry(rel, st)


def _follows_to_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _name_problem(root: _OpenRoot, rel: str) -> RejectedEntry | None:
    """Reject a path the catalog cannot store as it is, or that the system cannot open."""
    if not is_decodable(rel):
        return RejectedEntry(storable_path(escape_path(rel)), UNREADABLE_NAME,
                             SkipReason.UNREADABLE_NAME)
    size = len(os.fsencode(rel))
    if len(rel) > MAX_REMOTE_PATH or root.path_bytes + 1 + size >= PATH_MAX:
        return RejectedEntry(
            storable_path(rel),
            f"path is too long ({size} bytes below the watch root; at most {MAX_REMOTE_PATH} "
            f"characters and {PATH_MAX - 1} bytes in all)",
            SkipReason.PATH_TOO_LONG,
        )
    return None


def _rejected(rel: str, exc: BaseException) -> RejectedEntry:
    """The listing's answer to a system error on one entry or sub-folder."""
    path = storable_path(escape_path(rel))
    if isinstance(exc, OutsideRootError):
        return RejectedEntry(path, OUTSIDE_ROOT, SkipReason.OUTSIDE_ROOT)
    code = getattr(exc, "errno", None)
    if code == errno.ELOOP:
        return RejectedEntry(path, SYMLINK_LOOP, SkipReason.SYMLINK_LOOP)
    if code == errno.ENAMETOOLONG:
        return RejectedEntry(path, "path is too long for the system", SkipReason.PATH_TOO_LONG)
    if isinstance(exc, PermissionError):
        return RejectedEntry(path, PERMISSION_DENIED)
    detail = getattr(exc, "strerror", None) or type(exc).__name__
    return RejectedEntry(path, f"cannot be read: {detail}")


def _root_error(exc: OSError, root: Path, what: str = "watch folder") -> SourceError:
    """A :class:`SourceError` naming why the root (or the folder ``what``) cannot be used."""
    shown = f"{what} {_shown(root)}"
    if isinstance(exc, FileNotFoundError):
        return SourceNotFoundError(f"{shown} does not exist")
    if isinstance(exc, NotADirectoryError):
        return SourceNotFoundError(f"{shown} is not a directory")
    if isinstance(exc, PermissionError):
        return SourcePermissionError(f"{shown} is not readable")
    if exc.errno == errno.ELOOP:
        return SourceError(f"{shown} is a symlink loop (or a link on its path changed while "
                           "it was opened)")
    if exc.errno == errno.ENAMETOOLONG:
        return SourceError(f"{shown} has a path too long for the system")
    return SourceError(f"{shown} cannot be used: {exc.strerror or exc}")


@contextlib.contextmanager
def _file_errors(remote_path: str, *, writing: bool = False) -> Iterator[None]:
    """Translate the system's and the walk's errors for one file into :class:`SourceError`."""
    try:
        yield
    except OutsideRootError as exc:
        raise UnsafePathError(f"{remote_path!r} is outside the watch root") from exc
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise SourceNotFoundError(f"{remote_path} does not exist") from exc
    except PermissionError as exc:
        verb = "written" if writing else "read"
        raise SourcePermissionError(f"{remote_path} cannot be {verb}") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(f"{remote_path!r} leads through a symlink loop") from exc
        raise SourceError(f"{remote_path} cannot be used: {exc.strerror or exc}") from exc


def _checked_parts(remote_path: str) -> list[str]:
    """The parts of a path below the root, refusing anything that is not plainly relative."""
    if not remote_path or "\x00" in remote_path:
        raise UnsafePathError("empty path or NUL byte in path")
    pure = PurePosixPath(remote_path)
    if pure.is_absolute() or remote_path.startswith("\\"):
        raise UnsafePathError(f"{remote_path!r} is absolute")
    if ".." in pure.parts:
        raise UnsafePathError(f"{remote_path!r} contains '..'")
    if not pure.parts:
        raise UnsafePathError(f"{remote_path!r} names the watch root itself")
    return list(pure.parts)


def _relative_root(local_path: str) -> PurePosixPath:
    if "\x00" in local_path:
        raise UnsafePathError("local_path contains a NUL byte")
    pure = PurePosixPath(local_path or ".")
    if pure.is_absolute() or local_path.startswith("\\") or ".." in pure.parts:
        raise UnsafePathError(
            f"local_path {local_path!r} must be relative to the watch folder, without '..'"
        )
    return pure


def _check_length(path: Path) -> None:
    encoded = os.fsencode(path)
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if len(encoded) >= PATH_MAX or longest > NAME_MAX:
        raise SourceError(
            f"folder {_shown(path)} has a path too long for the system ({len(encoded)} bytes, "
            f"longest name {longest} bytes; at most {PATH_MAX - 1} and {NAME_MAX})"
        )


def _realpath(path: Path, what: str, *, strict: bool) -> Path:
    try:
        return Path(os.path.realpath(path, strict=strict))
    except OSError as exc:
        raise _root_error(exc, path, what) from exc


def _shown(path: Path | str) -> str:
    """A path short enough for a message (the catalog stores the message)."""
    text = escape_path(str(path))
    return text if len(text) <= 160 else f"{text[:80]}...{text[-60:]} ({len(text)} chars)"


def _entry(rel: str, st: os.stat_result) -> SourceEntry:
    return SourceEntry(
        remote_path=rel,
        size=st.st_size,
        mtime=datetime.fromtimestamp(st.st_mtime, tz=UTC),
        etag=None,
    )


def _atomic_copy(src: io.BufferedIOBase | io.RawIOBase, folder: int, name: str) -> int:
    """Stream ``src`` to a hidden temp name in ``folder``, then rename; return bytes copied."""
    tmp = f".{name}.{uuid.uuid4().hex[:12]}{_transfer.PART_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644, dir_fd=folder)
    try:
        os.fchmod(fd, 0o644)  # whatever the umask: other readers must see the file
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, _COPY_CHUNK)
            copied = out.tell()
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=folder)
        raise
    return copied
