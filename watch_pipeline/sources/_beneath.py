"""Walk a relative path below a directory file descriptor without ever leaving that directory.

The kernel's own path walk follows every symlink wherever it leads. Here each component is
looked up relative to the directory reached so far (``dir_fd``) and entered with ``O_NOFOLLOW``;
a symlink is read (``readlink``) and its target walked the same way, so a link that leads out of
the root is refused instead of followed, and so is a component swapped for such a link at any
moment (the ``O_NOFOLLOW`` open then fails and the component is looked at again). ``..`` pops
the walk's own stack of open directories, so it cannot climb above the root.

An absolute link target is followed only when it names a place below one of the root's
``anchors`` (its resolved path, and the path it was configured as); it is then walked from the
root like any other path.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

MAX_LINKS = 40
"""Symlinks followed in one walk before it counts as a loop (Linux's own limit)."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class OutsideRootError(Exception):
    """The path, or a symlink on it, leads out of the root."""


@dataclass(frozen=True)
class Root:
    """An open directory the walks stay below.

    Attributes:
        fd: The directory, opened by the caller (and closed by it).
        anchors: Absolute paths, as parts, under which an absolute link target counts as inside.
    """

    fd: int
    anchors: tuple[tuple[str, ...], ...]


def open_dir_nofollow(dir_fd: int, parts: Iterable[str]) -> int:
    """Open the directory ``parts`` below ``dir_fd`` following no symlink at all.

    Raises:
        OSError: ``ELOOP`` when a component is a symlink; others as ``os.open`` raises them.
    """
    fd = os.dup(dir_fd)
    try:
        for part in parts:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def stat_beneath(root: Root, parts: Iterable[str]) -> os.stat_result:
    """``stat`` of the path ``parts``, following symlinks only while they stay below the root.

    Raises:
        OutsideRootError: The path or a link on it leads out of the root.
        OSError: ``ELOOP`` for a symlink loop; ``ENOENT``, ``ENOTDIR`` and the like as usual.
    """
    with _Walk(root) as walk:
        return walk.follow(parts).stat


def open_beneath(root: Root, parts: Iterable[str], flags: int) -> tuple[int, tuple[str, ...]]:
    """Open ``parts`` below the root with ``flags``, following only links that stay inside.

    Returns:
        The new file descriptor (the caller closes it) and the path it was reached by, as
        parts below the root with every symlink resolved.

    Raises:
        OutsideRootError: The path or a link on it leads out of the root.
        OSError: As :func:`stat_beneath`.
    """
    with _Walk(root) as walk:
        end = walk.follow(parts, open_flags=flags)
        assert end.fd is not None
        return end.fd, (*walk.names, end.name) if end.name else tuple(walk.names)


def parent_beneath(root: Root, parts: Iterable[str], *, create: bool = False) -> tuple[int, str]:
    """Open the folder holding the last of ``parts``; the last part itself is not followed.

    Args:
        root: The root to stay below.
        parts: A path below the root, at least one part.
        create: Create missing folders on the way (mode 0777 less the umask).

    Returns:
        The folder's file descriptor (the caller closes it) and the last part.

    Raises:
        OutsideRootError: A link on the way leads out of the root.
        OSError: As :func:`stat_beneath`.
    """
    with _Walk(root) as walk:
        end = walk.follow(parts, follow_last=False, create=create)
        if end.name is None:
            raise IsADirectoryError(errno.EISDIR, "the path names a folder", "/".join(parts))
        return os.dup(walk.fd), end.name


@dataclass(frozen=True)
class _End:
    name: str | None  # the last component, inside walk.fd; None when the walk ended on walk.fd
    stat: os.stat_result
    fd: int | None = None


class _Walk:
    """One walk: the stack of directories entered so far below the root."""

    def __init__(self, root: Root) -> None:
        self._root = root
        self._fds: list[int] = [root.fd]
        self.names: list[str] = []
        self._links = 0

    @property
    def fd(self) -> int:
        return self._fds[-1]

    def __enter__(self) -> _Walk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._back_to_root()

    def follow(self, parts: Iterable[str], *, open_flags: int | None = None,
               follow_last: bool = True, create: bool = False) -> _End:
        todo = deque(_clean(parts))
        while todo:
            part = todo.popleft()
            if part == "..":
                self._up()
                continue
            if not todo and not follow_last:
                return _End(part, os.stat(self.fd))
            st = self._lstat(part, create=create and bool(todo))
            if stat.S_ISLNK(st.st_mode):
                todo.extendleft(reversed(self._target(part)))
                continue
            try:
                if todo:
                    self._enter(part)
                    continue
                fd = None if open_flags is None else self._open(part, open_flags)
            except _SwappedError:
                todo.appendleft(part)  # it became a symlink meanwhile: look again
                continue
            return _End(part, st, fd)
        fd = None if open_flags is None else os.open(".", open_flags, dir_fd=self.fd)
        return _End(None, os.stat(self.fd), fd)

    def _lstat(self, part: str, *, create: bool) -> os.stat_result:
        try:
            return os.stat(part, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(part, dir_fd=self.fd)
        except FileExistsError:
            pass  # created meanwhile by someone else
        return os.stat(part, dir_fd=self.fd, follow_symlinks=False)

    def _target(self, part: str) -> list[str]:
        """The parts a symlink stands for; an absolute target restarts the walk at the root."""
        self._count_link()
        target = os.readlink(part, dir_fd=self.fd)
        if not target.startswith("/"):
            return _clean(target.split("/"))
        rel = _below_anchor(target, self._root.anchors)
        self._back_to_root()
        return rel

    def _enter(self, part: str) -> None:
        try:
            fd = os.open(part, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._count_link()
                raise _SwappedError from exc
            raise
        self._fds.append(fd)
        self.names.append(part)

    def _open(self, part: str, flags: int) -> int:
        try:
            return os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._count_link()
                raise _SwappedError from exc
            raise

    def _up(self) -> None:
        if not self.names:
            raise OutsideRootError("'..' leads above the root")
        os.close(self._fds.pop())
        self.names.pop()

    def _back_to_root(self) -> None:
        while len(self._fds) > 1:
            os.close(self._fds.pop())
        self.names.clear()

    def _count_link(self) -> None:
        self._links += 1
        if self._links > MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))


class _SwappedError(Exception):
    """A component turned into a symlink between its ``lstat`` and its ``open``."""


def _clean(parts: Iterable[str]) -> list[str]:
    return [p for p in parts if p not in ("", ".")]


def _below_anchor(target: str, anchors: tuple[tuple[str, ...], ...]) -> list[str]:
    parts = PurePosixPath(target).parts[1:]
    for anchor in anchors:
        if parts[: len(anchor)] == anchor:
            return list(parts[len(anchor):])
    raise OutsideRootError(f"a symlink leads to {target}, outside the root")
