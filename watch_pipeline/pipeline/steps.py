"""The import of one partition: fetch → check → stitch → store → transcribe, on our ABCs.

Plain Python, no Dagster: each step takes a :class:`StepContext` (partition key, step name, run
key and id, a logger), the catalog and our seams (:class:`~watch_pipeline.sources.base.
SourceClient` through :class:`SourceAccess`, :class:`~watch_pipeline.store.base.ObjectStore`,
:class:`~watch_pipeline.transcribe.base.Transcriber`), and returns a frozen result whose
:meth:`metadata` holds plain values. ``defs/assets.py`` and ``defs/batch.py`` turn results into
materializations and :class:`StepFailed` into a ``dg.Failure``.

Every step is idempotent: a re-run finds the catalog row, the stored object or the transcript
already there and says so. A failure is recorded on the partition's catalog rows (with the retry
backoff of :func:`watch_pipeline.pipeline.claims.fail`) before :class:`StepFailed` is raised, so
the file goes back for a retry; a transcription failure marks only the media.

A file refused for good (media longer than ``watch.max_media_duration_hours``) is not an error:
``raw_file`` marks the partition's rows ``skipped_invalid`` with the skip reason and a message,
stores nothing, and the later steps report the skip instead of working.

Temp layout, under ``scratch/imports/<partition>/``: downloads of a single remote file at the
top, downloads of parts in ``parts/``, the stitched recording in ``stitched/``. A partial
download (``*.part``) survives a failure so the next attempt resumes; everything else goes.

Exactly once: ``raw_file`` takes the partition's rows with :func:`queries.begin_import`, which
serialises concurrent runs on a database lock and refuses a partition another *live* run holds
(:class:`queries.PartitionBusy`): that run fails clearly without touching the holder's rows, and
the media row of a partition is unique in the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import (
    FileStatus,
    SkipReason,
    SourceType,
    WatchSource,
    WatchSourceFile,
)
from watch_pipeline.catalog.settings import get_setting
from watch_pipeline.media import limits
from watch_pipeline.media.errors import MediaTooLong
from watch_pipeline.media.probe import (
    MediaInfo,
    ProbeError,
    content_type_for,
    load_probes,
    probe,
    save_probes,
)
from watch_pipeline.media.stitch import StitchError, StitchResult, stitch
from watch_pipeline.media.validate import validate_media
from watch_pipeline.pipeline import claims
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION, imohash_fileobj, imohash_path
from watch_pipeline.pipeline.multipart import compile_part_regex, output_name, parse_part
from watch_pipeline.sources.base import SourceClient, SourceEntry, SourceError
from watch_pipeline.store.base import ObjectStore, ObjectStoreError
from watch_pipeline.transcribe import formats
from watch_pipeline.transcribe.base import Transcriber, Transcript, TranscriptionError

RAW_FILE = "raw_file"
STITCHED_MEDIA = "stitched_media"
MEDIA_OBJECT = "media_object"
TRANSCRIPT = "transcript"
STEPS = (RAW_FILE, STITCHED_MEDIA, MEDIA_OBJECT, TRANSCRIPT)
"""The steps of one partition, in order (also the asset names)."""


class Log(Protocol):
    """What a step needs of a logger (``logging.Logger`` and Dagster's log manager fit)."""

    def info(self, msg: str, *args: Any) -> Any:
        """Progress."""

    def warning(self, msg: str, *args: Any) -> Any:
        """Something went wrong that does not fail the step."""

    def error(self, msg: str, *args: Any) -> Any:
        """The step failed."""


def _always_live(_run_id: str) -> bool:
    return True


@dataclass(frozen=True)
class StepContext:
    """One step of one partition, as the steps see it.

    Attributes:
        partition_key: The partition (content fingerprint) being imported.
        step: The step's name (one of :data:`STEPS`); it prefixes recorded failures.
        log: Where progress goes.
        run_key: The run key the run was requested with (a claim's key), if any.
        run_id: The run doing the work; recorded on the rows it holds while importing. ``None``
            for a caller outside Dagster, which then holds the rows anonymously.
        is_live: Whether another run id still runs (asked of the Dagster instance); a row held
            by a live run is never taken over. The default treats every holder as live.
    """

    partition_key: str
    step: str
    log: Log
    run_key: str | None = None
    run_id: str | None = None
    is_live: Callable[[str], bool] = field(default=_always_live, compare=False)


@dataclass(frozen=True)
class SourceAccess:
    """How steps reach the files of a source: a client per catalog row, and scratch space."""

    client_for: Callable[[WatchSource], SourceClient]
    scratch: Path


class StepFailed(Exception):
    """A step failed; its catalog rows already say why. The message is catalog-safe."""


class _Failed(Exception):
    """Raised inside a step for a reason that :func:`_recorded` records on the rows."""


# -- results ---------------------------------------------------------------------------------

Metadata = dict[str, str | int | float | bool]


def known(**values: str | int | float | bool | None) -> Metadata:
    """The metadata entries whose value is known: ``None`` and empty strings are left out."""
    return {key: value for key, value in values.items() if value is not None and value != ""}


@dataclass(frozen=True)
class ProbeSummary:
    """What ffprobe said about the (first) file, as plain values."""

    format_name: str
    duration: float | None = None
    video: str | None = None
    audio: str | None = None

    @classmethod
    def of(cls, info: MediaInfo) -> ProbeSummary:
        """The summary of one probe result."""
        return cls(
            info.format_name, info.duration,
            f"{info.video.codec} {info.video.width}x{info.video.height}" if info.video else None,
            (f"{info.audio.codec} {info.audio.sample_rate} Hz {info.audio.channels} ch"
             if info.audio else None))

    def metadata(self) -> Metadata:
        """``format`` and, when known, ``duration_seconds``, ``video``, ``audio``."""
        return known(format=self.format_name, video=self.video, audio=self.audio,
                     duration_seconds=None if self.duration is None
                     else round(self.duration, 3))


@dataclass(frozen=True)
class RawFile:
    """The outcome of ``raw_file``: the file checked and probed, or already imported.

    Attributes:
        already_imported: The media id when an earlier run imported this partition.
        skipped: Why the file was refused for good (recorded on its rows as ``skipped_invalid``
            with its skip reason, e.g. ``too_long``), else ``None``. Nothing was stored.
    """

    source: str = ""
    path: str = ""
    size: int = 0
    probe: ProbeSummary | None = None
    parts: tuple[str, ...] = ()
    missing: tuple[int, ...] = ()
    already_imported: int | None = None
    skipped: str | None = None

    def metadata(self) -> Metadata:
        """The materialization's metadata."""
        if self.already_imported is not None:
            return {"status": "already imported", "media_id": self.already_imported}
        if self.skipped is not None:
            return {"status": "skipped", "reason": self.skipped, "source": self.source,
                    "path": self.path}
        meta: Metadata = {"source": self.source, "path": self.path, "bytes": self.size}
        if self.probe is not None:
            meta.update(self.probe.metadata())
        if self.parts:
            meta["parts"] = len(self.parts)
            meta["part_files"] = ", ".join(self.parts)
            if self.missing:
                meta["missing_parts"] = ", ".join(map(str, self.missing))
        return meta


@dataclass(frozen=True)
class StitchedMedia:
    """The outcome of ``stitched_media``: a pass-through, or the stitched recording."""

    filename: str
    size: int
    parts: int = 0
    mode: str | None = None
    duration: float = 0.0
    parts_duration: float = 0.0
    missing: tuple[int, ...] = ()
    reencode_reason: str | None = None
    skipped: str | None = None

    def metadata(self) -> Metadata:
        """The materialization's metadata."""
        if self.skipped is not None:
            return {"skipped": self.skipped}
        if not self.parts:
            return {"mode": "single file (pass-through)", "filename": self.filename,
                    "bytes": self.size}
        return known(mode=f"stitched ({self.mode})", filename=self.filename, parts=self.parts,
                     bytes=self.size, duration_seconds=round(self.duration, 3),
                     parts_duration_seconds=round(self.parts_duration, 3),
                     missing_parts=", ".join(map(str, self.missing)),
                     reencode_reason=self.reencode_reason)


@dataclass(frozen=True)
class MediaObject:
    """The outcome of ``media_object``: where the media is stored, and whether it was new.

    Attributes:
        done_before: An earlier run stored it; only ``object_key``, ``media_id`` and ``cached``
            are meaningful then.
        skipped: Why nothing was stored (the partition was refused by ``raw_file``).
    """

    object_key: str = ""
    media_id: int = 0
    cached: bool = False
    done_before: bool = False
    url: str = ""
    size: int = 0
    checksum: str = ""
    checksum_algorithm: str = ""
    duplicates_marked: int = 0
    written_back: str | None = None
    skipped: str | None = None

    def metadata(self) -> Metadata:
        """The materialization's metadata (``url`` is a link when it is an HTTP URL)."""
        if self.skipped is not None:
            return {"skipped": self.skipped}
        if self.done_before:
            return {"object_key": self.object_key, "media_id": self.media_id, "cached": True}
        return {"object_key": self.object_key, "url": self.url, "media_id": self.media_id,
                "bytes": self.size, "checksum": self.checksum,
                "checksum_algorithm": self.checksum_algorithm, "cached": self.cached,
                "duplicates_marked": self.duplicates_marked,
                **known(written_back_to_source=self.written_back)}


@dataclass(frozen=True)
class Transcription:
    """The outcome of ``transcript``: the stored transcript, or why there is none."""

    skipped: str | None = None
    transcript_key: str = ""
    model: str = ""
    backend: str = ""
    words: int = 0
    audio_seconds: float = 0.0
    real_time_factor: float = 0.0
    landed_to_transcript_seconds: float = 0.0
    preview: str = ""

    def metadata(self) -> Metadata:
        """The materialization's metadata."""
        if self.skipped is not None:
            return {"skipped": self.skipped}
        return {
            "transcript_key": self.transcript_key,
            "model": self.model,
            "backend": self.backend,
            "words": self.words,
            "audio_seconds": round(self.audio_seconds, 2),
            "real_time_factor": round(self.real_time_factor, 3),
            "landed_to_transcript_seconds": round(self.landed_to_transcript_seconds, 1),
            "preview": self.preview,
        }


Result = RawFile | StitchedMedia | MediaObject | Transcription
"""What a step returns."""


# -- failure recording and temp files --------------------------------------------------------


@contextlib.contextmanager
def _recorded(catalog: Catalog, ctx: StepContext, sources: SourceAccess) -> Iterator[None]:
    """Record any failure on the catalog rows of this partition, then raise :class:`StepFailed`.

    Temp files of the partition are removed, except a partial download (``*.part``), from
    which the next attempt resumes.
    """
    try:
        yield
    except StepFailed:
        raise
    except (_Failed, SourceError, ProbeError, ObjectStoreError, TranscriptionError,
            OSError) as exc:
        _clean_temp(sources, ctx.partition_key,
                    keep_partial=not isinstance(exc, _Failed | ProbeError))
        reason = f"{ctx.step}: {exc}"
        claims.fail(catalog, ctx.partition_key, reason, run_key=ctx.run_key, run_id=ctx.run_id)
        ctx.log.error(reason)
        raise StepFailed(reason) from None


def temp_dir(sources: SourceAccess, fingerprint: str) -> Path:
    """The partition's scratch folder (downloads, parts, the stitched recording)."""
    return sources.scratch / "imports" / fingerprint


def _clean_temp(sources: SourceAccess, fingerprint: str, *, keep_partial: bool) -> None:
    folder = temp_dir(sources, fingerprint)
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if keep_partial and ".part" in path.name:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _client(catalog: Catalog, sources: SourceAccess, source_id: int) -> SourceClient:
    with catalog.session() as session:
        return sources.client_for(session.get(WatchSource, source_id))


# -- fetching and stitching ------------------------------------------------------------------


def _local_file(item: queries.ImportItem, part: queries.PartRef | None, client: SourceClient,
                sources: SourceAccess, *, catalog: Catalog | None = None,
                log: Log | None = None) -> Path:
    """One file on this machine: in place for local sources, else downloaded to the temp dir.

    Remote downloads are resumable: an interrupted attempt leaves ``<name>.part`` behind and the
    next attempt continues from it. With ``catalog``, the file's row says ``downloading``
    meanwhile.
    """
    remote_path, filename, size, file_id = (
        (part.remote_path, part.filename, part.file_size, part.file_id) if part is not None
        else (item.remote_path, item.filename, item.file_size, item.file_id))
    path = client.local_path(remote_path)
    if path is not None:
        return path
    folder = temp_dir(sources, item.fingerprint) / ("parts" if item.is_group else "")
    dest = folder / filename
    if dest.exists() and dest.stat().st_size == size:
        return dest
    if catalog is not None:
        queries.set_status(catalog, file_id, FileStatus.DOWNLOADING)
    started = time.monotonic()
    client.download(remote_path, dest, expected_size=size)
    if log is not None:
        seconds = time.monotonic() - started
        log.info(f"downloaded {remote_path}: {size} bytes in {seconds:.1f}s "
                 f"({size / max(seconds, 1e-6) / 1e6:.1f} MB/s)")
    if catalog is not None:
        queries.set_status(catalog, file_id, FileStatus.IMPORTING)
    return dest


def _inputs(item: queries.ImportItem, client: SourceClient, sources: SourceAccess, *,
            catalog: Catalog | None = None, log: Log | None = None) -> list[tuple[Path, str]]:
    """``(local path, expected fingerprint)`` of the file, or of every part in order."""
    if not item.is_group:
        return [(_local_file(item, None, client, sources, catalog=catalog, log=log),
                 claims.content_of(item.fingerprint))]
    return [(_local_file(item, p, client, sources, catalog=catalog, log=log), p.imohash)
            for p in item.parts]


def _probes_file(item: queries.ImportItem, sources: SourceAccess) -> Path:
    """Where ``raw_file`` leaves its probes for the later steps (which may run elsewhere)."""
    return temp_dir(sources, item.fingerprint) / "probes.json"


def _probed(item: queries.ImportItem, sources: SourceAccess, path: Path) -> MediaInfo:
    """``raw_file``'s probe of ``path`` when it still fits the file, else a new probe."""
    info = load_probes(_probes_file(item, sources)).get(path)
    if info is None or info.duration is None or info.size != path.stat().st_size:
        return probe(path)
    return info


def _stitched_path(item: queries.ImportItem, sources: SourceAccess) -> Path:
    return temp_dir(sources, item.fingerprint) / "stitched" / item.filename


def _stitch(item: queries.ImportItem, client: SourceClient, sources: SourceAccess, *,
            log: Log | None = None) -> StitchResult:
    paths = [path for path, _ in _inputs(item, client, sources, log=log)]
    out = _stitched_path(item, sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return stitch(paths, out, probes=load_probes(_probes_file(item, sources)))
    except StitchError as exc:
        raise _Failed(f"stitching failed: {exc}") from None


def _media_path(item: queries.ImportItem, client: SourceClient, sources: SourceAccess, *,
                log: Log | None = None) -> Path:
    """The file to store: the raw file, or the stitched recording (stitched again if gone)."""
    if not item.is_group:
        return _inputs(item, client, sources, log=log)[0][0]
    out = _stitched_path(item, sources)
    if not out.exists():
        _stitch(item, client, sources, log=log)
    return out


# -- the steps -------------------------------------------------------------------------------


def fetch_raw_file(ctx: StepContext, catalog: Catalog, sources: SourceAccess) -> RawFile:
    """``raw_file``: take the partition's rows, fetch the file(s), check and probe them.

    Local files are read in place. The bytes are checked again against the fingerprint the
    scan recorded, so a file replaced since the scan is never imported under the old identity
    (its row goes back to the scan, and the step fails without a retry being scheduled).
    Re-running is harmless: an imported partition reports itself as such.

    Raises:
        StepFailed: Nothing waits for this partition, another live run holds it, the content
            changed, or the file is not importable (recorded for a retry).
    """
    fingerprint = ctx.partition_key
    try:
        item = _named(queries.begin_import(catalog, fingerprint, holder=ctx.run_id,
                                           is_live=ctx.is_live))
    except queries.PartitionBusy as exc:
        # The holder's rows are left alone: that run finishes (or fails) the import itself.
        ctx.log.error(str(exc))
        raise StepFailed(str(exc)) from None
    except queries.NothingToImport as exc:
        done = queries.media_for(catalog, fingerprint)
        if done is not None and done.object_key:
            return RawFile(already_imported=done.id)
        raise StepFailed(str(exc)) from None
    what = (f"{len(item.parts)} parts of {item.filename}" if item.is_group
            else item.remote_path)
    ctx.log.info(f"importing {item.source_name}:{what} ({item.file_size} bytes)")
    with _recorded(catalog, ctx, sources), _client(catalog, sources, item.source_id) as client:
        probed: dict[Path, MediaInfo] = {}
        for path, expected in _inputs(item, client, sources, catalog=catalog, log=ctx.log):
            with open(path, "rb") as fh:
                check = validate_media(fh, path.stat().st_size)
                if not check.ok:
                    raise _Failed(f"{path.name} is not importable: {check.message}")
                fh.seek(0)
                current = imohash_fileobj(fh)
            if current != expected:
                _clean_temp(sources, fingerprint, keep_partial=False)
                queries.reset_for_rescan(catalog, item.file_id,
                                         "content changed after the scan; fingerprinting again")
                raise StepFailed(f"{path.name} changed since it was scanned (fingerprint "
                                 f"{current} != {expected}); the next scan imports the new "
                                 "content")
            try:
                probed[path] = probe(path)
            except ProbeError as exc:
                raise _Failed(f"corrupt or unreadable media {path.name}: {exc}") from None
        infos = list(probed.values())
        try:
            limits.check_duration(infos, _max_duration_hours(catalog))
        except MediaTooLong as exc:
            return _refuse(ctx, catalog, sources, item, SkipReason.TOO_LONG,
                           f"{exc}; not imported (a retry would refuse it again)")
        # The stitch and the store reuse these instead of probing again (~0.1 s each).
        _probes_file(item, sources).parent.mkdir(parents=True, exist_ok=True)
        save_probes(_probes_file(item, sources), probed)
    if item.missing:
        ctx.log.warning(f"parts {item.missing} never arrived; importing the rest")
    return RawFile(source=item.source_name, path=item.remote_path, size=item.file_size,
                   probe=ProbeSummary.of(infos[0]),
                   parts=tuple(p.remote_path for p in item.parts), missing=item.missing)


def _max_duration_hours(catalog: Catalog) -> float:
    with catalog.session() as session:
        return float(get_setting(session, "watch.max_media_duration_hours"))


def _refuse(ctx: StepContext, catalog: Catalog, sources: SourceAccess, item: queries.ImportItem,
            reason: SkipReason, message: str) -> RawFile:
    """Refuse the partition for good: its rows say why, its temp files go, nothing is stored."""
    _clean_temp(sources, item.fingerprint, keep_partial=False)
    queries.skip_partition(catalog, item.fingerprint, reason, message)
    ctx.log.warning(f"{item.source_name}:{item.remote_path} skipped ({reason}): {message}")
    return RawFile(source=item.source_name, path=item.remote_path, size=item.file_size,
                   skipped=message)


def _refused(catalog: Catalog, item: queries.ImportItem) -> str | None:
    """Why ``raw_file`` refused this partition for good, or ``None`` (later steps then skip)."""
    with catalog.session() as session:
        row = session.get(WatchSourceFile, item.file_id)
        if row is None or row.status != FileStatus.SKIPPED_INVALID:
            return None
        return row.error_message or f"skipped ({row.skip_reason})"


def stitch_media(ctx: StepContext, catalog: Catalog, sources: SourceAccess) -> StitchedMedia:
    """``stitched_media``: a single file passes through; parts are joined into one recording.

    Raises:
        StepFailed: Stitching failed (recorded for a retry).
    """
    item = _find_item(catalog, ctx.partition_key)
    refused = _refused(catalog, item)
    if refused is not None:
        return StitchedMedia(filename=item.filename, size=item.file_size, skipped=refused)
    if not item.is_group:
        return StitchedMedia(filename=item.filename, size=item.file_size)
    with _recorded(catalog, ctx, sources), _client(catalog, sources, item.source_id) as client:
        result = _stitch(item, client, sources, log=ctx.log)
    note = (f"parts {', '.join(map(str, item.missing))} missing" if item.missing
            else "all parts")
    ctx.log.info(f"stitched {len(item.parts)} parts into {item.filename} ({result.mode}, "
                 f"{result.duration:.1f}s, {note})")
    return StitchedMedia(filename=item.filename, size=result.size, parts=len(item.parts),
                         mode=result.mode, duration=result.duration,
                         parts_duration=result.parts_duration, missing=item.missing,
                         reencode_reason=result.reencode_reason)


def store_media(ctx: StepContext, catalog: Catalog, sources: SourceAccess,
                store: ObjectStore) -> MediaObject:
    """``media_object``: the media in the object store, with its catalog ``media_file`` row.

    The object lives at ``user_{owner}/file_{id}/{filename}``. The key is deterministic, so a
    re-run finds the object already there (same size) and reports it as cached instead of
    uploading again. Once stored: other rows with the same content become duplicates, a
    stitched recording is written back when the source asks for it, the temp copies go, and a
    source with ``delete_after_import`` loses its original(s) (see :func:`_delete_originals`;
    a failed or refused delete is a warning, never a failure of the import).

    Raises:
        StepFailed: Reading, probing or storing failed (recorded for a retry).
    """
    fingerprint = ctx.partition_key
    done = queries.media_for(catalog, fingerprint)
    item = _find_item(catalog, fingerprint)
    refused = _refused(catalog, item)
    if refused is not None:
        return MediaObject(skipped=refused)
    if done is not None and done.object_key and queries.file_status(
            catalog, item.file_id) in (FileStatus.IMPORTED, FileStatus.STITCHED_PART):
        return MediaObject(object_key=done.object_key, media_id=done.id, cached=True,
                           done_before=True)
    with _recorded(catalog, ctx, sources), _client(catalog, sources, item.source_id) as client:
        path = _media_path(item, client, sources, log=ctx.log)
        info = probe(path) if item.is_group else _probed(item, sources, path)
        size = path.stat().st_size
        record = queries.ensure_media(
            catalog, item, content_type=content_type_for(info, item.filename),
            duration=info.duration, file_size=size,
            imohash=imohash_path(path) if item.is_group else claims.content_of(item.fingerprint),
            imohash_version=ALGORITHM_VERSION)
        key = queries.object_key(item.owner_id, record.id, item.filename)
        existing = store.head(key)
        # Objects are written atomically under a key unique to this media item, so an
        # object of the right size there is this file from an earlier attempt.
        cached = existing is not None and existing.size == size
        stored = existing if cached and existing is not None else store.put_file(
            key, path, content_type=record.content_type)
        twins = queries.complete_upload(catalog, item, record.id, key=key,
                                        checksum=stored.checksum,
                                        checksum_algorithm=stored.checksum_algorithm,
                                        auto_transcribe=item.auto_transcribe)
        if twins:
            ctx.log.info(f"{twins} other file(s) with the same content marked duplicate")
        written_back = None
        if item.is_group and item.upload_stitched_to_source:
            written_back = _write_back(item, client, path, ctx.log)
        # The temp copies (downloads, stitched file) are no longer needed once stored.
        shutil.rmtree(temp_dir(sources, fingerprint), ignore_errors=True)
        if item.delete_after_import:
            _delete_originals(catalog, item, client, ctx.log)
    return MediaObject(object_key=key, media_id=record.id, cached=cached, url=store.url(key),
                       size=size, checksum=stored.checksum or "",
                       checksum_algorithm=stored.checksum_algorithm or "", duplicates_marked=twins,
                       written_back=written_back)


def _delete_originals(catalog: Catalog, item: queries.ImportItem, client: SourceClient,
                      log: Log) -> None:
    """``delete_after_import``: remove the imported file(s), each only as it was scanned.

    Called once the media is stored, so never after a failure, and only for the partition's
    own rows, so never for a duplicate (which is another row, not imported). All parts of a
    multi-part recording go once the stitched recording is stored.

    A remote original is deleted only while it is still the version the scan recorded: an S3
    object with the same ETag (and size), an SMB file with the same size and modification
    time, as :meth:`SourceClient.stat` gives them now. A local original is read in place and
    deleted directly (the manual-imports source is never listed).

    Nothing here fails the import: a changed original is kept, and a delete the server refuses
    (or a server that cannot be reached) leaves the original in place; either way the file's
    row says why in its message and the run log warns.
    """
    originals = ([(p.file_id, p.remote_path) for p in item.parts]
                 or [(item.file_id, item.remote_path)])
    current: dict[str, SourceEntry] | None = None
    if item.source_type != SourceType.LOCAL:
        try:
            current = _current_versions(client, [path for _, path in originals])
        except (SourceError, OSError) as exc:
            for file_id, path in originals:
                _kept(catalog, file_id, log, f"imported, but the original {path} was kept: "
                      f"could not check it is the version imported ({exc})")
            return
    for file_id, path in originals:
        if current is not None:
            now = current.get(path)
            if now is None:
                log.info(f"the original {path} is already gone")
                continue
            changed = _changed_since_scan(catalog, file_id, now)
            if changed is not None:
                _kept(catalog, file_id, log, f"imported, but the original {path} was kept: "
                      f"{changed} since it was scanned, so it is not the version imported")
                continue
        try:
            client.delete(path)
        except (SourceError, OSError) as exc:
            _kept(catalog, file_id, log,
                  f"imported, but deleting the original {path} failed: {exc}")
            continue
        log.info(f"deleted the original {path}")


def _current_versions(client: SourceClient, paths: list[str]) -> dict[str, SourceEntry]:
    """The current entries of ``paths`` that still exist (one request each, see ``stat``)."""
    found = {path: client.stat(path) for path in paths}
    return {path: entry for path, entry in found.items() if entry is not None}


def _changed_since_scan(catalog: Catalog, file_id: int, now: SourceEntry) -> str | None:
    """What differs between the version the scan recorded and ``now``, or ``None``."""
    with catalog.session() as session:
        row = session.get(WatchSourceFile, file_id)
        if row is None:
            return "its catalog row is gone"
        size, mtime, etag = row.file_size, row.file_modified_at, row.etag
    if (etag or None) != (now.etag or None):
        return f"its ETag changed ({etag} -> {now.etag})"
    if size != now.size:
        return f"its size changed ({size} -> {now.size} bytes)"
    if mtime != now.mtime:
        return f"its modification time changed ({_iso(mtime)} -> {_iso(now.mtime)})"
    return None


def _iso(at: datetime | None) -> str:
    return at.isoformat() if at is not None else "unknown"


def _kept(catalog: Catalog, file_id: int, log: Log, why: str) -> None:
    """An original stays: the run log warns and the file's row says why (status unchanged)."""
    log.warning(why)
    with catalog.session() as session:
        queries.update_file_row(session, file_id, {"error_message": why[:4000]})


def _write_back(item: queries.ImportItem, client: SourceClient, path: Path, log: Log) -> str:
    """Write the stitched recording next to part 1 (``upload_stitched_to_source``).

    A failure is reported, never fatal. The written file has the stitched media's fingerprint,
    so the next scan records it as a duplicate of that media instead of importing it again.
    """
    first = item.parts[0].remote_path
    folder = first.rsplit("/", 1)[0] if "/" in first else ""
    target = f"{folder}/{item.filename}" if folder else item.filename
    try:
        client.upload(path, target)
    except (SourceError, OSError) as exc:
        log.warning(f"stitched recording stored, but writing it back to {target} failed: {exc}")
        return f"failed: {exc}"
    log.info(f"wrote the stitched recording back to {item.source_name}:{target}")
    return target


@contextlib.contextmanager
def readable_copy(store: ObjectStore, key: str, scratch: Path) -> Iterator[Path]:
    """A local path with the object's bytes: in place when the store has one, else a temp copy."""
    in_place = store.local_path(key)
    if in_place is not None:
        yield in_place
        return
    tmp = Path(tempfile.mkdtemp(prefix="transcribe-", dir=scratch))
    try:
        dest = tmp / key.rsplit("/", 1)[-1]
        with store.open(key) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 8 * 1024 * 1024)
        yield dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_slug(model_id: str) -> str:
    """``model_id`` as one safe key segment (``whisper:tiny.en`` → ``whisper_tiny.en``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_") or "model"


def transcript_base(object_key: str, model_id: str) -> str:
    """Where a model's transcripts of a media object live: ``.../transcripts/<model>``.

    The four formats are stored as ``<base>.json``, ``.srt``, ``.vtt`` and ``.txt``.
    """
    return f"{object_key.rsplit('/', 1)[0]}/transcripts/{model_slug(model_id)}"


TRANSCRIPT_FORMATS: tuple[tuple[str, Callable[[Transcript], str], str], ...] = (
    ("json", formats.to_json, "application/json"),
    ("srt", formats.to_srt, "application/x-subrip"),
    ("vtt", formats.to_vtt, "text/vtt"),
    ("txt", formats.to_text, "text/plain"),
)
"""The stored formats of a transcript: extension, renderer, content type (JSON first)."""


def keep_earlier_transcript(store: ObjectStore, base: str, new: Transcript) -> str | None:
    """Keep the transcript stored at ``base`` when ``new`` says something else.

    A model id does not pin the weights (Riva's server default model is upgraded, a Whisper
    model directory is replaced under the same name, faster-whisper changes), so the same
    ``base`` can receive a different transcript. Before it is overwritten, the earlier one's
    files are copied to ``<base>.<first 12 hex digits of its JSON's SHA-256>.*``: a key that
    depends only on that transcript, so a retry keeps it once. An earlier transcript with the
    same text and segments is simply rewritten.

    Returns:
        The base the earlier transcript was kept under, or ``None`` (none, or the same).
    """
    if store.head(base + ".json") is None:
        return None
    earlier = store.get_bytes(base + ".json")
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        previous = formats.from_json(earlier.decode("utf-8"))
        if (previous.text, previous.segments) == (new.text, new.segments):
            return None
    kept = f"{base}.{hashlib.sha256(earlier).hexdigest()[:12]}"
    for extension, _, content_type in TRANSCRIPT_FORMATS:
        key = f"{base}.{extension}"
        if store.head(key) is not None:
            store.put_bytes(f"{kept}.{extension}",
                            earlier if extension == "json" else store.get_bytes(key),
                            content_type=content_type)
    return kept


def transcribe_media(ctx: StepContext, catalog: Catalog, sources: SourceAccess,
                     store: ObjectStore, transcriber: Transcriber, *,
                     requested: bool = False) -> Transcription:
    """``transcript``: transcribe the stored media and store JSON, SRT, VTT and text.

    An import skips it when the source has ``auto_transcribe`` off; a ``requested`` transcript
    (a run of ``transcribe_job``, a backfill or a materialization of ``transcript`` alone) is
    made whatever the source says. Transcripts are keyed by model id (:func:`transcript_base`):
    other models' transcripts are kept, and so is an earlier one of the same model id that says
    something else (:func:`keep_earlier_transcript`). A failure marks the media ``error`` with
    the reason; the import itself (object, rows) stays.

    Args:
        ctx: The step.
        catalog: The catalog.
        sources: Scratch space for a copy of the media when the store has no local path.
        store: Where the media is and the transcripts go.
        transcriber: The configured backend.
        requested: Someone asked for this transcript; ``auto_transcribe`` is then not consulted.

    Raises:
        StepFailed: No stored media, or the transcription failed (recorded on the media).
    """
    fingerprint = ctx.partition_key
    item = _find_item(catalog, fingerprint)
    record = queries.media_for(catalog, fingerprint)
    refused = _refused(catalog, item)
    if refused is not None:
        return Transcription(skipped=refused)
    if not item.auto_transcribe and not requested:
        return Transcription(skipped=f"auto_transcribe is off for source {item.source_name}")
    if record is None or not record.object_key:
        raise StepFailed(f"no stored media for {fingerprint}; run media_object first")
    try:
        with readable_copy(store, record.object_key, sources.scratch) as path:
            result = transcriber.transcribe(path, min_speakers=item.min_speakers,
                                            max_speakers=item.max_speakers)
        base = transcript_base(record.object_key, transcriber.model_id)
        kept = keep_earlier_transcript(store, base, result)
        if kept is not None:
            ctx.log.info(f"an earlier, different transcript of {transcriber.model_id} is kept "
                         f"at {kept}.*")
        for extension, render, content_type in TRANSCRIPT_FORMATS:
            store.put_bytes(f"{base}.{extension}", render(result).encode(),
                            content_type=content_type)
    except (TranscriptionError, ObjectStoreError, OSError) as exc:
        reason = (f"transcription failed: {exc} (the media is imported; re-materialize "
                  f"transcript for partition {fingerprint} to retry)")
        queries.fail_transcript(catalog, record.id, reason)
        ctx.log.error(reason)
        raise StepFailed(reason) from None
    queries.complete_transcript(catalog, record.id, key=base + ".json",
                                model=transcriber.model_id)
    lag = landed_to_transcript(_landed_at(catalog, item) or item.detected_at, datetime.now(UTC))
    ctx.log.info(f"transcribed media {record.id}: {result.word_count} words, "
                 f"RTF {result.real_time_factor:.2f}, {lag:.1f}s after the file landed")
    return Transcription(transcript_key=base + ".json", model=transcriber.model_id,
                         backend=result.backend, words=result.word_count,
                         audio_seconds=result.audio_duration,
                         real_time_factor=result.real_time_factor,
                         landed_to_transcript_seconds=lag, preview=result.text[:300])


def landed_to_transcript(landed_at: datetime, now: datetime) -> float:
    """Seconds from ``landed_at`` to ``now``; a source clock ahead of ours counts as 0."""
    return max(0.0, (now - landed_at).total_seconds())


def _landed_at(catalog: Catalog, item: queries.ImportItem) -> datetime | None:
    """When the file landed: its mtime or the watcher's move-in/close event, the newer.

    A multi-part recording counts from its newest part. ``None`` when neither is known (the
    caller then counts from the first scan that saw the file). A copy that keeps an older mtime
    (``cp -p``, ``rsync -t``) with no watcher event counts from that mtime.
    """
    return queries.landed_at(catalog, [part.file_id for part in item.parts] or [item.file_id])


def _find_item(catalog: Catalog, fingerprint: str) -> queries.ImportItem:
    try:
        return _named(queries.find_item(catalog, fingerprint))
    except queries.NothingToImport as exc:
        raise StepFailed(str(exc)) from None


def _named(item: queries.ImportItem) -> queries.ImportItem:
    """The item under the name it is stored as: a multi-part recording gets its stitched name."""
    if not item.is_group or not item.multipart_regex:
        return item
    parsed = parse_part(compile_part_regex(item.multipart_regex), item.filename)
    return replace(item, filename=output_name(parsed.base, parsed.extension)) if parsed else item
