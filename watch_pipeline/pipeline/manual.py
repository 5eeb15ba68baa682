"""Files brought by hand: registered as arrivals, then imported by the watch pipeline itself.

``watch-pipeline media import PATH|--url URL`` and the Dagster ``manual_import_job`` call
:func:`register_path` or :func:`register_url`. Registration does what a scan does for a stable
file, and nothing more: check the bytes are media, fingerprint them (imohash, three small
windows), apply the dedup rule (:mod:`.dedup`: a file brought by hand after any import of its
content is ``duplicate_existing``), and record one row of the hidden manual-imports source
(:mod:`watch_pipeline.catalog.manual`) with the arrival's owner, collections, tags,
``auto_transcribe`` and origin (``upload`` for a path, ``url`` for a download). The local watch
sensor claims that row on its next tick like any scanned file, so the import is the same
partition, the same four assets, the same retries and the same dedup as a watched file's;
a watched copy found later is ``duplicate_existing`` of it.

Which paths may be registered: the CLI registers any regular, readable media file of its user;
the Dagster job only a path that resolves (symlinks followed) below ``WATCH_IMPORT_ROOT``
(:func:`resolve_under_root`), so the UI cannot read arbitrary files. The import run reads the
file where it is, so the path must be the same for the Dagster run workers.

A URL is downloaded first (:mod:`watch_pipeline.sources.http`: resumable, streamed, capped)
into ``<scratch>/manual/<hash of the URL>/`` and registered from there with
``delete_after_import``: the import removes the staged copy once stored; a duplicate's copy is
removed at once.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from watch_pipeline.catalog import manual as catalog_manual
from watch_pipeline.catalog import queries
from watch_pipeline.catalog import validation as v
from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import FileStatus, MediaOrigin, WatchSourceFile
from watch_pipeline.catalog.settings import get_setting
from watch_pipeline.media.validate import sniff, validate_media
from watch_pipeline.pipeline import dedup
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION, imohash_fileobj
from watch_pipeline.pipeline.keys import media_partition_key
from watch_pipeline.sources import http
from watch_pipeline.sources.manual import remote_path_of, shown_path

if TYPE_CHECKING:
    import requests

STAGING_FOLDER = "manual"
"""URL downloads are staged in ``<scratch>/manual/``."""

WAITING = catalog_manual.WAITING


class ManualImportError(Exception):
    """A path or URL cannot be brought in; the message says which and why (no secrets)."""


@dataclass(frozen=True)
class ManualOptions:
    """What an arrival imports with instead of the source's defaults.

    Attributes:
        owner_id: The media's owner (``None``: the manual-imports source's, user 1).
        collections: Collections the media joins.
        tags: Tags of the media.
        auto_transcribe: Whether the import transcribes it.
    """

    owner_id: int | None = None
    collections: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    auto_transcribe: bool = True

    def checked(self) -> ManualOptions:
        """The options normalised (labels trimmed, de-duplicated).

        Raises:
            ValidationError: A label or the owner breaks a rule.
        """
        if self.owner_id is not None:
            v.int_range("owner", self.owner_id, 1, 2**31 - 1)
        return ManualOptions(self.owner_id, tuple(v.labels("collections", self.collections)),
                             tuple(v.labels("tags", self.tags)), bool(self.auto_transcribe))


@dataclass(frozen=True)
class Arrival:
    """What registering one file did.

    Attributes:
        file_id: The manual-imports row.
        path: The path given (absolute, resolved), or the URL without user info and query.
        filename: The file's name.
        size: Bytes.
        fingerprint: The imohash.
        partition_key: The ``media`` partition it is imported in (``None`` for a duplicate).
        status: The row's status.
        outcome: ``queued`` (the next tick of local_watch_sensor imports it), ``duplicate``
            (already imported: ``duplicate_existing``), ``already_queued``,
            ``already_imported`` (this very path, same content) or ``skipped``.
        skip_reason: With ``duplicate`` (and ``skipped``).
        media_id: The media it was imported as, or duplicates.
        message: One line for a person.
        origin: ``upload`` or ``url``.
    """

    file_id: int
    path: str
    filename: str
    size: int
    fingerprint: str
    partition_key: str | None
    status: str
    outcome: str
    skip_reason: str | None
    media_id: int | None
    message: str
    origin: str

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, with stable keys (``media import --json``)."""
        return asdict(self)


def _now() -> datetime:
    return datetime.now(UTC)


def partition_key_for(session: Session, filename: str, fingerprint: str) -> str:
    """The ``media`` partition key of content brought by hand, as a scan would give it.

    Content the catalog already holds keeps its key, so a watched copy waiting at the same time
    shares the partition (and the import); new content gets ``<slug of the name>-<fingerprint>``
    (:func:`.keys.media_partition_key`), which the UI's partition filter finds by the name.
    """
    return (queries.recorded_partition_key(session, fingerprint)
            or media_partition_key(filename, fingerprint))


# -- paths ------------------------------------------------------------------------------------

def resolve_under_root(root: Path | None, given: str) -> Path:
    """The file ``given`` names, resolved, if it lies below the import ``root``.

    ``given`` is relative to ``root`` or absolute. Symlinks are resolved before the check, so a
    link below the root that leads out of it is refused like a ``..`` that does; nothing is said
    about what lies outside.

    Raises:
        ManualImportError: No root is configured, or the path resolves outside it.
    """
    if root is None:
        raise ManualImportError(
            "WATCH_IMPORT_ROOT is not set: manual_import_job imports paths only below it "
            "(set it for the code location, or use `watch-pipeline media import PATH`)")
    if not given.strip() or "\x00" in given:
        raise ManualImportError("path: give a file below the import root")
    root_real = Path(os.path.realpath(root))
    if not root_real.is_dir():
        raise ManualImportError(f"the import root {root} (WATCH_IMPORT_ROOT) is not a folder")
    candidate = Path(given) if os.path.isabs(given) else Path(root) / given
    real = Path(os.path.realpath(candidate))
    if real == root_real or not real.is_relative_to(root_real):
        raise ManualImportError(
            f"{given!r} is outside the import root {root} (WATCH_IMPORT_ROOT): the Dagster job "
            "imports only files below it")
    return real


def _open_media(path: Path, within: Path | None) -> tuple[Path, os.stat_result, str]:
    """Resolve ``path``, check it is a readable media file, and fingerprint it.

    The path returned is the one of the file actually opened (``/proc/self/fd``), checked to lie
    below ``within`` when given: a link swapped in after :func:`resolve_under_root` looked
    cannot lead the registration out of the import root.

    Raises:
        ManualImportError: Missing, not a regular file, unreadable, not media, or outside
            ``within``.
    """
    try:
        real = Path(os.path.realpath(path.expanduser(), strict=True))
    except FileNotFoundError:
        raise ManualImportError(f"{path}: no such file") from None
    except OSError as exc:
        raise ManualImportError(f"{path}: cannot be resolved ({exc.strerror or exc})") from None
    try:
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ManualImportError(f"{path}: is {kind}; give a media file")
        with open(real, "rb") as fh:
            real = _opened_path(fh.fileno(), real)
            if within is not None and not real.is_relative_to(os.path.realpath(within)):
                raise ManualImportError(f"{path}: is outside the import root {within}")
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):  # replaced since it was looked at
                raise ManualImportError(f"{path}: is not a regular file; give a media file")
            check = validate_media(fh, st.st_size)
            if not check.ok:
                raise ManualImportError(f"{path}: is not a media file ({check.message})")
            fh.seek(0)
            fingerprint = imohash_fileobj(fh)
    except PermissionError:
        raise ManualImportError(f"{path}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise ManualImportError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return real, st, fingerprint


def _opened_path(fd: int, fallback: Path) -> Path:
    """The path of the open file ``fd`` as the kernel knows it (Linux), else ``fallback``."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # pragma: no cover - no /proc
        return fallback


def register_path(catalog: Catalog, path: Path, *, options: ManualOptions,
                  origin: MediaOrigin = MediaOrigin.UPLOAD, delete_after_import: bool = False,
                  shown: str | None = None, within: Path | None = None) -> Arrival:
    """Register the media file at ``path`` for import (see the module docstring).

    Args:
        catalog: The catalog.
        path: The file (resolved here; the row records the resolved path).
        options: Owner, collections, tags, transcription.
        origin: ``upload`` (a path) or ``url`` (a staged download).
        delete_after_import: The import removes the file once stored (staged downloads).
        shown: How to name the arrival to a person (default: the resolved path).
        within: The file opened must lie below this folder (the Dagster job's import root).

    Raises:
        ManualImportError: The file is missing, not a regular file, unreadable or not media.
        ValidationError: An option breaks a rule.
    """
    options = options.checked()
    real, st, fingerprint = _open_media(path, within)
    source_id = catalog_manual.manual_source_id(catalog)
    remote_path = remote_path_of(real)
    name = real.name
    shown = shown or shown_path(remote_path)
    now = _now()
    with catalog.session() as session:
        row = catalog_manual.file_at(session, source_id, remote_path)
        if row is not None and row.imohash == fingerprint:
            return _again(session, row, shown, now)
        duplicate = dedup.find_duplicate(
            content=fingerprint, source_id=source_id,
            imported=queries.imported_copy(session, fingerprint),
            existing_media_id=queries.existing_media(session, fingerprint), by_hand=True)
        key = None if duplicate else partition_key_for(session, name, fingerprint)
        values = dict(
            filename=name[:500], file_size=st.st_size,
            file_modified_at=datetime.fromtimestamp(st.st_mtime, tz=UTC), etag=None,
            imohash=fingerprint, imohash_version=ALGORITHM_VERSION,
            partition_key=key,
            status=FileStatus.SKIPPED_DUPLICATE if duplicate else FileStatus.PENDING,
            skip_reason=duplicate.reason if duplicate else None,
            media_file_id=duplicate.media_file_id if duplicate else None,
            error_message=duplicate.message if duplicate else None,
            processed_at=now if duplicate else None, created_at=now, stable_since=now,
            last_seen_at=now, retry_count=0, wait_scans=0, run_key=None, run_requested_at=None,
            next_retry_at=None, import_run_id=None, part_group=None, part_number=None,
            owner_id=options.owner_id, collections=list(options.collections),
            tags=list(options.tags), auto_transcribe=options.auto_transcribe,
            delete_after_import=delete_after_import, origin=str(origin))
        if row is None:
            row = WatchSourceFile(watch_source_id=source_id, remote_path=remote_path, **values)
            session.add(row)
        else:  # this path held other content before: a new arrival at the same place
            for column, value in values.items():
                setattr(row, column, value)
        session.flush()
        if duplicate:
            return _arrival(row, shown, "duplicate", duplicate.message)
        return _arrival(row, shown, "queued",
                        f"queued for import as partition {key} (local_watch_sensor starts it "
                        "on its next tick)")


def _again(session: Session, row: WatchSourceFile, shown: str, now: datetime) -> Arrival:
    """The same content at the same path was brought before: say where it stands."""
    if row.status == FileStatus.ERROR:
        catalog_manual.release_retry(session, row, now)
        return _arrival(row, shown, "already_queued",
                        f"brought before and failed ({row.error_message or 'no reason'}); "
                        "retried on the next tick")
    if row.status in WAITING:
        return _arrival(row, shown, "already_queued", "already queued for import")
    if row.status in (FileStatus.IMPORTED, FileStatus.STITCHED_PART):
        return _arrival(row, shown, "already_imported",
                        f"already imported from this path as media {row.media_file_id}")
    if row.status == FileStatus.SKIPPED_DUPLICATE:
        return _arrival(row, shown, "duplicate", row.error_message or "already imported")
    return _arrival(row, shown, "skipped", row.error_message or f"skipped ({row.skip_reason})")


def _arrival(row: WatchSourceFile, shown: str, outcome: str, message: str) -> Arrival:
    return Arrival(row.id, shown, row.filename, row.file_size or 0, row.imohash or "",
                   row.partition_key if outcome in ("queued", "already_queued") else None,
                   str(row.status), outcome, row.skip_reason, row.media_file_id, message,
                   row.origin or MediaOrigin.UPLOAD.value)


# -- URLs -------------------------------------------------------------------------------------

def url_limits(catalog: Catalog) -> http.DownloadLimits:
    """The size cap, timeout and redirect limit of URL downloads (settings ``import.url_*``)."""
    with catalog.session() as session:
        return http.DownloadLimits(
            max_bytes=int(get_setting(session, "import.url_max_bytes")),
            timeout_seconds=float(get_setting(session, "import.url_timeout_seconds")),
            max_redirects=int(get_setting(session, "import.url_max_redirects")))


def not_media(head: bytes) -> str | None:
    """Why the first bytes of a download are not media, or ``None`` when they look like it."""
    if sniff(head) is not None:
        return None
    # The bytes themselves are not quoted: they may come from a server the reader may not see.
    return "not a known media container" + (
        " (it looks like a web page)" if head.lstrip()[:1] == b"<" else "")


def register_url(catalog: Catalog, url: str, *, scratch: Path, options: ManualOptions,
                 limits: http.DownloadLimits | None = None,
                 http_session: requests.Session | None = None) -> Arrival:
    """Download ``url`` into the staging folder and register the file (origin ``url``).

    A download of the same URL interrupted earlier resumes; one whose file is still waiting
    for its import is not downloaded again.

    Args:
        catalog: The catalog.
        url: An http(s) URL.
        scratch: The scratch folder (``WATCH_TEMP_DIR``); downloads go to ``manual/`` in it.
        options: Owner, collections, tags, transcription.
        limits: Size cap, timeout, redirects (default: the ``import.url_*`` settings).
        http_session: A ``requests.Session`` to download with (default: a new one).

    Raises:
        DownloadError: The download failed or was refused (404, too large, redirect loop,
            not media, ...); nothing is kept except a partial file a later call resumes.
        ManualImportError: The downloaded file cannot be registered.
        ValidationError: An option breaks a rule.
    """
    options = options.checked()
    url = http.check_url(url)
    staging = Path(scratch) / STAGING_FOLDER
    _prune(staging)
    folder = http.staging_folder(staging, url)
    source_id = catalog_manual.manual_source_id(catalog)
    with catalog.session() as db:
        waiting = catalog_manual.waiting_under(
            db, source_id, remote_path_of(Path(os.path.realpath(folder))))
        if waiting is not None:
            return _arrival(waiting, http.shown_url(url), "already_queued",
                            "this URL was downloaded and waits for its import")
    got = http.download(url, staging, limits=limits or url_limits(catalog), head_check=not_media,
                        session=http_session)
    try:
        arrival = register_path(catalog, got.path, options=options, origin=MediaOrigin.URL,
                                delete_after_import=True, shown=http.shown_url(url))
    except BaseException:
        got.path.unlink(missing_ok=True)
        raise
    if arrival.status not in WAITING:  # nothing will import the staged copy
        got.path.unlink(missing_ok=True)
    return arrival


def _prune(staging: Path) -> None:
    """Remove staging folders their import emptied (only a lock file is left)."""
    if not staging.is_dir():
        return
    for folder in staging.iterdir():
        try:
            names = {p.name for p in folder.iterdir()}
        except OSError:
            continue
        if names <= {http.LOCK}:
            shutil.rmtree(folder, ignore_errors=True)


# -- waiting ----------------------------------------------------------------------------------

FINAL = (FileStatus.IMPORTED, FileStatus.STITCHED_PART, FileStatus.SKIPPED_DUPLICATE,
         FileStatus.SKIPPED_INVALID, FileStatus.SKIPPED_OLD, FileStatus.ERROR)


def wait_for(catalog: Catalog, file_id: int, *, timeout_seconds: float,
             poll_seconds: float = 1.0, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> catalog_manual.ArrivalState | None:
    """Poll the arrival ``file_id`` until it is imported, skipped or failed.

    A row the import found changed since it was registered (back to ``pending`` without a
    fingerprint) counts as failed: nothing scans the manual-imports source, so only bringing
    the file again imports the new content.

    Returns:
        The final state, the last state seen when ``timeout_seconds`` passed, or ``None``
        when the row was removed.
    """
    deadline = clock() + timeout_seconds
    while True:
        state = catalog_manual.arrival_state(catalog, file_id)
        if state is None or state.status in FINAL or not state.fingerprinted:
            return state
        if clock() >= deadline:
            return state
        sleep(poll_seconds)
