"""The client of the manual-imports source: files brought by hand, read where they are.

Files brought by hand (``watch-pipeline media import``, ``manual_import_job``) are recorded as
rows of one hidden system source (``watch_source.is_manual``). Each row's ``remote_path`` is the
file's resolved absolute path without its leading ``/`` (:func:`remote_path_of`), so the
client is a :class:`LocalSourceClient` whose root is the file system's root: reads walk the path
one component at a time from ``/`` as for any local source. Who may register which path is
decided before a row exists (the CLI: any readable file of its user; the Dagster job: only below
``WATCH_IMPORT_ROOT``; see :mod:`watch_pipeline.pipeline.manual`).

The source is never listed: :meth:`ManualImportsClient.list_files` and ``browse`` refuse, so
even a scan started by mistake cannot walk the whole disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from watch_pipeline.sources.base import BrowseEntry, RejectedEntry, SourceEntry, SourceError
from watch_pipeline.sources.local import LocalSourceClient

NEVER_LISTED = ("the manual-imports source is never scanned: its files are registered by "
                "`watch-pipeline media import` or manual_import_job")


def remote_path_of(path: Path) -> str:
    """The ``remote_path`` of the manual-imports row for the resolved absolute ``path``."""
    pure = PurePosixPath(path)
    if not pure.is_absolute():
        raise ValueError(f"{path} is not an absolute path")
    return pure.relative_to("/").as_posix()


def shown_path(remote_path: str) -> str:
    """A manual-imports ``remote_path`` as the absolute path a person gave."""
    return "/" + remote_path


class ManualImportsClient(LocalSourceClient):
    """Reads (and, for staged downloads, deletes) files by their absolute path; never lists."""

    def __init__(self) -> None:
        super().__init__(Path("/"))

    def list_files(self, *, recursive: bool = True, extensions: tuple[str, ...] = ()
                   ) -> Iterator[SourceEntry | RejectedEntry]:
        """Refused: the source is never scanned.

        Raises:
            SourceError: Always.
        """
        raise SourceError(NEVER_LISTED)

    def browse(self, path: str = "") -> list[BrowseEntry]:
        """Refused: the source is never browsed.

        Raises:
            SourceError: Always.
        """
        raise SourceError(NEVER_LISTED)

    def upload(self, src: Path, remote_path: str) -> None:
        """Refused: nothing is written back to a file brought by hand.

        Raises:
            SourceError: Always.
        """
        raise SourceError("nothing is written back to files brought by hand")
