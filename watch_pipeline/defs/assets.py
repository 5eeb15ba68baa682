"""The media assets: raw_file → stitched_media → media_object → transcript.

There is one partition per content fingerprint.
Every asset rebuilds what it needs from ``context.partition_key`` and the catalog, and returns a
``MaterializeResult``; media bytes never pass through an IO manager. Each step is idempotent: a
re-run finds the catalog row, the stored object or the transcript already there and says so.
All four are in the ``watch_imports`` concurrency pool (``defs/pools.py``), which bounds the
import runs in progress.
"""


import contextlib
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import WatchSource, WatchSourceFile
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.defs.partitions import media
from watch_pipeline.defs.pools import IMPORT_POOL
from watch_pipeline.media.probe import MediaInfo, ProbeError, content_type_for, probe
from watch_pipeline.media.stitch import StitchError, StitchResult, stitch
from watch_pipeline.media.validate import validate_media
from watch_pipeline.pipeline import claims
from watch_pipeline.pipeline.fingerprint import imohash_fileobj, imohash_path
from watch_pipeline.sources.base import SourceClient, SourceError
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.base import ObjectStore, ObjectStoreError
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline.store.resource import ObjectStoreResource
from watch_pipeline.transcribe import formats
from watch_pipeline.transcribe.base import TranscriptionError
from watch_pipeline.transcribe.resource import TranscriberResource

GROUP = "media"


@dataclass(frozen=True)
class Step:
    """One asset step for one partition: what the shared step functions need of a context."""

    key: str
    asset: str
    log: dg.DagsterLogManager
    run_key: str | None = None

    @classmethod
    def of(cls, context: dg.AssetExecutionContext) -> "Step":
        """The step of an ordinary single-partition asset run."""
        return cls(context.partition_key, context.asset_key.to_user_string(), context.log,
                   context.run.tags.get("dagster/run_key"))


class _StepFailed(Exception):
    """A step failed for a reason worth recording in the catalog."""


@contextlib.contextmanager
def _recorded(catalog: CatalogResource, step: Step,
              sources: SourcesResource) -> Iterator[None]:
    """Record any failure on the catalog rows of this partition, then fail the step clearly.

    Temp files of the partition are removed, except a partial download (``*.part``), from
    which the next attempt resumes.
    """
    try:
        yield
    except dg.Failure:
        raise
    except (_StepFailed, SourceError, ProbeError, ObjectStoreError, TranscriptionError,
            OSError) as exc:
        _clean_temp(sources, step.key, keep_partial=not isinstance(
            exc, _StepFailed | ProbeError))
        reason = f"{step.asset}: {exc}"
        claims.fail(catalog.get(), step.key, reason, run_key=step.run_key)
        step.log.error(reason)
        raise dg.Failure(description=reason, allow_retries=False) from None


def _clean_temp(sources: SourcesResource, fingerprint: str, *, keep_partial: bool) -> None:
    folder = _temp_dir(sources, fingerprint)
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


def _client(catalog: CatalogResource, sources: SourcesResource, source_id: int) -> SourceClient:
    with catalog.get().session() as session:
        return sources.client_for(session.get(WatchSource, source_id))


def _temp_dir(sources: SourcesResource, fingerprint: str) -> Path:
    return sources.scratch() / "imports" / fingerprint


def _local_file(item: queries.ImportItem, remote_path: str, filename: str, size: int,
                file_ids: list[int], client: SourceClient, sources: SourcesResource, *,
                catalog: CatalogResource | None = None,
                log: dg.DagsterLogManager | None = None) -> Path:
    """One file on this machine: in place for local sources, else downloaded to the temp dir.

    Remote downloads are resumable: an interrupted attempt leaves ``<name>.part`` behind and the
    next attempt continues from it.
    """
    path = client.local_path(remote_path)
    if path is not None:
        return path
    folder = _temp_dir(sources, item.fingerprint) / ("parts" if item.is_group else "")
    dest = folder / filename
    if dest.exists() and dest.stat().st_size == size:
        return dest
    if catalog is not None:
        for file_id in file_ids:
            queries.set_status(catalog.get(), file_id, "downloading")
    started = time.monotonic()
    client.download(remote_path, dest, expected_size=size)
    if log is not None:
        seconds = time.monotonic() - started
        log.info(f"downloaded {remote_path}: {size} bytes in {seconds:.1f}s "
                 f"({size / max(seconds, 1e-6) / 1e6:.1f} MB/s)")
    if catalog is not None:
        for file_id in file_ids:
            queries.set_status(catalog.get(), file_id, "importing")
    return dest


def _inputs(item: queries.ImportItem, client: SourceClient, sources: SourcesResource, *,
            catalog: CatalogResource | None = None,
            log: dg.DagsterLogManager | None = None) -> list[tuple[Path, str]]:
    """``(local path, expected fingerprint)`` of the file, or of every part in order."""
    if not item.is_group:
        return [(_local_file(item, item.remote_path, item.filename, item.file_size,
                             [item.file_id], client, sources, catalog=catalog, log=log),
                 item.fingerprint)]
    return [(_local_file(item, p.remote_path, p.filename, p.file_size, [p.file_id], client,
                         sources, catalog=catalog, log=log), p.imohash) for p in item.parts]


def _stitched_path(item: queries.ImportItem, sources: SourcesResource) -> Path:
    return _temp_dir(sources, item.fingerprint) / "stitched" / item.filename


def _media_path(item: queries.ImportItem, client: SourceClient, sources: SourcesResource, *,
                log: dg.DagsterLogManager | None = None) -> Path:
    """The file to store: the raw file, or the stitched recording (stitched again if gone)."""
    if not item.is_group:
        return _inputs(item, client, sources, log=log)[0][0]
    out = _stitched_path(item, sources)
    if not out.exists():
        _stitch(item, client, sources, log=log)
    return out


def _stitch(item: queries.ImportItem, client: SourceClient, sources: SourcesResource, *,
            log: dg.DagsterLogManager | None = None) -> StitchResult:
    paths = [path for path, _ in _inputs(item, client, sources, log=log)]
    out = _stitched_path(item, sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return stitch(paths, out)
    except StitchError as exc:
        raise _StepFailed(f"stitching failed: {exc}") from None


def _probe_metadata(info: MediaInfo) -> dict[str, object]:
    meta: dict[str, object] = {"format": info.format_name}
    if info.duration is not None:
        meta["duration_seconds"] = dg.FloatMetadataValue(round(info.duration, 3))
    if info.video:
        meta["video"] = f"{info.video.codec} {info.video.width}x{info.video.height}"
    if info.audio:
        meta["audio"] = f"{info.audio.codec} {info.audio.sample_rate} Hz {info.audio.channels} ch"
    return meta


@dg.asset(partitions_def=media, group_name=GROUP, kinds={"python", "ffmpeg"}, pool=IMPORT_POOL)
def raw_file(context: dg.AssetExecutionContext, catalog: CatalogResource,
             sources: SourcesResource) -> dg.MaterializeResult:
    """The recording as found in its watch source, checked and probed.

    Local files are read in place. The bytes are checked again against the fingerprint the
    scan recorded, so a file replaced since the scan is never imported under the old identity.
    Re-running is harmless: an imported partition reports itself as such.
    """
    return do_raw_file(Step.of(context), catalog, sources)


def do_raw_file(step: Step, catalog: CatalogResource,
                sources: SourcesResource) -> dg.MaterializeResult:
    """Materialize ``raw_file`` for one partition (the asset and batch runs share this)."""
    fingerprint = step.key
    cat = catalog.get()
    try:
        item = queries.begin_import(cat, fingerprint)
    except queries.NothingToImport as exc:
        done = queries.media_for(cat, fingerprint)
        if done is not None and done.object_key:
            return dg.MaterializeResult(metadata={"status": "already imported",
                                                  "media_id": done.id})
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    what = (f"{len(item.parts)} parts of {item.filename}" if item.is_group
            else item.remote_path)
    step.log.info(f"importing {item.source_name}:{what} ({item.file_size} bytes)")
    with _recorded(catalog, step, sources):
        with _client(catalog, sources, item.source_id) as client:
            infos = []
            for path, expected in _inputs(item, client, sources, catalog=catalog,
                                          log=step.log):
                with open(path, "rb") as fh:
                    check = validate_media(fh, path.stat().st_size)
                    if not check.ok:
                        raise _StepFailed(f"{path.name} is not importable: {check.message}")
                    fh.seek(0)
                    current = imohash_fileobj(fh)
                if current != expected:
                    _clean_temp(sources, fingerprint, keep_partial=False)
                    queries.reset_for_rescan(cat, item.file_id,
                                             "content changed after the scan; fingerprinting "
                                             "again")
                    raise dg.Failure(
                        description=f"{path.name} changed since it was scanned (fingerprint "
                                    f"{current} != {expected}); the next scan imports the new "
                                    "content", allow_retries=False)
                try:
                    infos.append(probe(path))
                except ProbeError as exc:
                    raise _StepFailed(f"corrupt or unreadable media {path.name}: {exc}") from None
    metadata: dict[str, object] = {
        "source": item.source_name,
        "path": item.remote_path,
        "bytes": dg.IntMetadataValue(item.file_size),
        **_probe_metadata(infos[0]),
    }
    if item.is_group:
        metadata["parts"] = dg.IntMetadataValue(len(item.parts))
        metadata["part_files"] = ", ".join(p.remote_path for p in item.parts)
        if item.missing:
            metadata["missing_parts"] = ", ".join(map(str, item.missing))
            step.log.warning(f"parts {item.missing} never arrived; importing the rest")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(partitions_def=media, group_name=GROUP, kinds={"python", "ffmpeg"}, deps=[raw_file],
          pool=IMPORT_POOL)
def stitched_media(context: dg.AssetExecutionContext, catalog: CatalogResource,
                   sources: SourcesResource) -> dg.MaterializeResult:
    """The media item ready to store: the raw file, or a multi-part recording joined into one.

    A single file passes through unchanged.
    """
    return do_stitched_media(Step.of(context), catalog, sources)


def do_stitched_media(step: Step, catalog: CatalogResource,
                      sources: SourcesResource) -> dg.MaterializeResult:
    """Materialize ``stitched_media`` for one partition."""
    item = queries.find_item(catalog.get(), step.key)
    if not item.is_group:
        return dg.MaterializeResult(metadata={
            "mode": "single file (pass-through)",
            "filename": item.filename,
            "bytes": dg.IntMetadataValue(item.file_size),
        })
    with _recorded(catalog, step, sources):
        with _client(catalog, sources, item.source_id) as client:
            result = _stitch(item, client, sources, log=step.log)
    note = (f"parts {', '.join(map(str, item.missing))} missing" if item.missing
            else "all parts")
    step.log.info(f"stitched {len(item.parts)} parts into {item.filename} ({result.mode}, "
                     f"{result.duration:.1f}s, {note})")
    metadata: dict[str, object] = {
        "mode": f"stitched ({result.mode})",
        "filename": item.filename,
        "parts": dg.IntMetadataValue(len(item.parts)),
        "bytes": dg.IntMetadataValue(result.size),
        "duration_seconds": dg.FloatMetadataValue(round(result.duration, 3)),
        "parts_duration_seconds": dg.FloatMetadataValue(round(result.parts_duration, 3)),
    }
    if item.missing:
        metadata["missing_parts"] = ", ".join(map(str, item.missing))
    if result.reencode_reason:
        metadata["reencode_reason"] = result.reencode_reason
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(partitions_def=media, group_name=GROUP, kinds={"python", "s3"},
          deps=[stitched_media], pool=IMPORT_POOL)
def media_object(context: dg.AssetExecutionContext, catalog: CatalogResource,
                 sources: SourcesResource,
                 object_store: ObjectStoreResource) -> dg.MaterializeResult:
    """The media item in the object store, with its catalog ``media_file`` row.

    The object lives at ``user_{owner}/file_{id}/{filename}``.
    The object key is deterministic, so a re-run finds the object already there (same size and
    checksum) and reports it as cached instead of uploading again.
    """
    return do_media_object(Step.of(context), catalog, sources, object_store)


def do_media_object(step: Step, catalog: CatalogResource, sources: SourcesResource,
                    object_store: ObjectStoreResource) -> dg.MaterializeResult:
    """Materialize ``media_object`` for one partition."""
    fingerprint = step.key
    cat = catalog.get()
    done = queries.media_for(cat, fingerprint)
    item = queries.find_item(cat, fingerprint)
    if done is not None and done.object_key and _row_status(cat, item.file_id) in (
            "imported", "stitched_part"):
        return dg.MaterializeResult(metadata={"object_key": done.object_key,
                                              "media_id": done.id, "cached": True})
    with _recorded(catalog, step, sources):
        with _client(catalog, sources, item.source_id) as client:
            path = _media_path(item, client, sources, log=step.log)
            info = probe(path)
            size = path.stat().st_size
            record = queries.ensure_media(
                cat, item, content_type=content_type_for(info, item.filename),
                duration=info.duration, file_size=size,
                imohash=imohash_path(path) if item.is_group else None)
            store = object_store.get_store()
            key = queries.object_key(item.owner_id, record.id, item.filename)
            existing = store.head(key)
            # Objects are written atomically under a key unique to this media item, so an
            # object of the right size there is this file from an earlier attempt.
            cached = existing is not None and existing.size == size
            stored = existing if cached else store.put_file(
                key, path, content_type=record.content_type)
            twins = queries.complete_upload(cat, item, record.id, key=key, sha256=stored.sha256,
                                            auto_transcribe=item.auto_transcribe)
            if twins:
                step.log.info(f"{twins} other file(s) with the same content marked duplicate")
            written_back = None
            if item.is_group and item.upload_stitched_to_source:
                written_back = _write_back(item, client, path, step.log)
            # The temp copies (downloads, stitched file) are no longer needed once stored.
            shutil.rmtree(_temp_dir(sources, fingerprint), ignore_errors=True)
            if item.delete_after_import and item.source_type == "local":
                for original in [p.remote_path for p in item.parts] or [item.remote_path]:
                    try:
                        client.delete(original)
                        step.log.info(f"deleted the original {original}")
                    except (SourceError, OSError) as exc:
                        step.log.warning(f"imported, but could not delete {original}: {exc}")
    return dg.MaterializeResult(metadata={
        "object_key": key,
        "url": dg.UrlMetadataValue(store.url(key)) if store.url(key).startswith("http")
        else store.url(key),
        "media_id": dg.IntMetadataValue(record.id),
        "bytes": dg.IntMetadataValue(size),
        "sha256": stored.sha256 or "",
        "cached": cached,
        "duplicates_marked": dg.IntMetadataValue(twins),
        **({"written_back_to_source": written_back} if written_back else {}),
    })


def _write_back(item: queries.ImportItem, client: SourceClient, path: Path,
                log: dg.DagsterLogManager) -> str:
    """Write the stitched recording next to part 1 (``upload_stitched_to_source``).

    A failure is reported, never fatal. The written file has the stitched media's fingerprint,
    so the next scan records it as a duplicate of that media instead of importing it again.
    """
    folder = item.parts[0].remote_path.rsplit("/", 1)[0] if "/" in item.parts[0].remote_path \
        else ""
    target = f"{folder}/{item.filename}" if folder else item.filename
    try:
        client.upload(path, target)
    except (SourceError, OSError) as exc:
        log.warning(f"stitched recording stored, but writing it back to {target} failed: {exc}")
        return f"failed: {exc}"
    log.info(f"wrote the stitched recording back to {item.source_name}:{target}")
    return target


def _row_status(cat: Catalog, file_id: int) -> str | None:
    with cat.session() as session:
        row = session.get(WatchSourceFile, file_id)
        return row.status if row else None


@contextlib.contextmanager
def _readable_copy(store: ObjectStore, key: str, scratch: Path) -> Iterator[Path]:
    """A local path with the object's bytes: in place for the local store, else a temp copy."""
    if isinstance(store, LocalObjectStore):
        yield store.path(key)
        return
    tmp = Path(tempfile.mkdtemp(prefix="transcribe-", dir=scratch))
    try:
        dest = tmp / key.rsplit("/", 1)[-1]
        with store.open(key) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 8 * 1024 * 1024)
        yield dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_") or "model"


def build_transcript_asset(model_id: str | None = None) -> dg.AssetsDefinition:
    """The ``transcript`` asset, versioned by the transcription model in use.

    The model id (backend, model, options that change output) is the asset's code version: after
    a model change the UI shows every transcript as outdated, and a backfill of ``transcript``
    over the ``media`` partitions re-transcribes them. Transcripts of earlier models are kept.
    """

    @dg.asset(name="transcript", partitions_def=media, group_name=GROUP,
              kinds={"python", "whisper"}, deps=["media_object"], code_version=model_id,
              pool=IMPORT_POOL)
    def _transcript(context: dg.AssetExecutionContext, catalog: CatalogResource,
                    sources: SourcesResource, object_store: ObjectStoreResource,
                    transcriber: TranscriberResource) -> dg.MaterializeResult:
        """The transcript of the media item, keyed by the model that made it.

        JSON, SRT, VTT and plain text are stored beside the media object under
        ``transcripts/<model>``. Skipped when the source has ``auto_transcribe`` off. Re-running
        overwrites the same keys for the same model; transcripts by other models are kept.
        A failure marks the media ``error`` with the reason; the import itself stays.
        """
        return do_transcript(Step.of(context), catalog, sources, object_store, transcriber)

    return _transcript


def do_transcript(step: Step, catalog: CatalogResource, sources: SourcesResource,
                  object_store: ObjectStoreResource,
                  transcriber: TranscriberResource) -> dg.MaterializeResult:
    """Materialize ``transcript`` for one partition."""
    fingerprint = step.key
    cat = catalog.get()
    item = queries.find_item(cat, fingerprint)
    record = queries.media_for(cat, fingerprint)
    if not item.auto_transcribe:
        return dg.MaterializeResult(metadata={
            "skipped": f"auto_transcribe is off for source {item.source_name}"})
    if record is None or not record.object_key:
        raise dg.Failure(description=f"no stored media for {fingerprint}; run media_object first",
                         allow_retries=False)
    try:
        engine = transcriber.get_transcriber()
        store = object_store.get_store()
        with _readable_copy(store, record.object_key, sources.scratch()) as path:
            result = engine.transcribe(path, min_speakers=item.min_speakers,
                                       max_speakers=item.max_speakers)
        base = f"{record.object_key.rsplit('/', 1)[0]}/transcripts/{_slug(engine.model_id)}"
        store.put_bytes(base + ".json", formats.to_json(result).encode(),
                        content_type="application/json")
        store.put_bytes(base + ".srt", formats.to_srt(result).encode(),
                        content_type="application/x-subrip")
        store.put_bytes(base + ".vtt", formats.to_vtt(result).encode(), content_type="text/vtt")
        store.put_bytes(base + ".txt", formats.to_text(result).encode(),
                        content_type="text/plain")
    except (TranscriptionError, ObjectStoreError, OSError) as exc:
        reason = (f"transcription failed: {exc} (the media is imported; re-materialize "
                  f"transcript for partition {fingerprint} to retry)")
        queries.fail_transcript(cat, record.id, reason)
        step.log.error(reason)
        raise dg.Failure(description=reason, allow_retries=False) from None
    queries.complete_transcript(cat, record.id, key=base + ".json", model=engine.model_id)
    lag = (datetime.now(UTC) - item.detected_at).total_seconds()
    step.log.info(f"transcribed media {record.id}: {result.word_count} words, "
                     f"RTF {result.real_time_factor:.2f}, {lag:.1f}s after detection")
    return dg.MaterializeResult(metadata={
        "transcript_key": base + ".json",
        "model": engine.model_id,
        "backend": result.backend,
        "words": dg.IntMetadataValue(result.word_count),
        "audio_seconds": dg.FloatMetadataValue(round(result.audio_duration, 2)),
        "real_time_factor": dg.FloatMetadataValue(round(result.real_time_factor, 3)),
        "detection_to_transcript_seconds": dg.FloatMetadataValue(round(lag, 1)),
        "preview": result.text[:300],
    })
