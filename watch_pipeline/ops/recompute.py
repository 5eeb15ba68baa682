"""Recompute fingerprints stored by an older algorithm (``imohash_version``).

Changing the fingerprint algorithm changes every stored fingerprint; until they are recomputed,
dedup would miss duplicates. This walks the catalog's file rows (through each source's client:
three small reads per file) and the stored media (through the object store), and rewrites the
fingerprints that are not of the current version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import sqlalchemy as sa

from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import MediaFile, WatchSource, WatchSourceFile
from watch_pipeline.pipeline.fingerprint import ALGORITHM_VERSION, imohash_fileobj
from watch_pipeline.sources.base import SourceClient, SourceError
from watch_pipeline.store.base import ObjectStore, ObjectStoreError

log = logging.getLogger(__name__)


@dataclass
class RecomputeReport:
    """Counts of one recompute pass."""

    files_updated: int = 0
    files_unchanged: int = 0
    media_updated: int = 0
    media_unchanged: int = 0
    problems: list[str] = field(default_factory=list)


def _stale(column_version: sa.ColumnElement) -> sa.ColumnElement[bool]:
    return sa.or_(column_version.is_(None), column_version != ALGORITHM_VERSION)


def recompute(catalog: Catalog, *, client_for: Callable[[WatchSource], SourceClient],
              store: ObjectStore | None, dry_run: bool = False) -> RecomputeReport:
    """Re-fingerprint every row whose ``imohash_version`` is not the current algorithm's."""
    report = RecomputeReport()
    _recompute_files(catalog, report, client_for, dry_run)
    if store is not None:
        _recompute_media(catalog, report, store, dry_run)
    return report


def _recompute_files(catalog: Catalog, report: RecomputeReport,
                     client_for: Callable[[WatchSource], SourceClient], dry_run: bool) -> None:
    f = WatchSourceFile
    with catalog.session() as session:
        source_ids = list(session.scalars(sa.select(f.watch_source_id).distinct().where(
            f.imohash.is_not(None), _stale(f.imohash_version))))
    for source_id in source_ids:
        with catalog.session() as session:
            source = session.get(WatchSource, source_id)
            rows = session.execute(sa.select(f.id, f.remote_path, f.imohash).where(
                f.watch_source_id == source_id, f.imohash.is_not(None),
                _stale(f.imohash_version))).all()
            try:
                client = client_for(source)
            except SourceError as exc:
                report.problems.append(f"source {source.name!r}: {exc}")
                continue
        with client:
            _refresh(catalog, report, "files", f, rows, dry_run,
                     read=client.open, where=lambda row: row.remote_path,
                     label=lambda row: row.remote_path, errors=(SourceError,))


def _recompute_media(catalog: Catalog, report: RecomputeReport, store: ObjectStore,
                     dry_run: bool) -> None:
    with catalog.session() as session:
        media = session.execute(sa.select(MediaFile.id, MediaFile.object_key,
                                          MediaFile.imohash, MediaFile.partition_key)
                                .where(MediaFile.object_key.is_not(None),
                                       _stale(MediaFile.imohash_version))).all()
    _refresh(catalog, report, "media", MediaFile, media, dry_run,
             read=store.open, where=lambda m: m.object_key,
             label=lambda m: f"media {m.id}", errors=(ObjectStoreError,))


def _refresh(catalog: Catalog, report: RecomputeReport, what: str,
             table: type[WatchSourceFile] | type[MediaFile], rows: Sequence[sa.Row[Any]],
             dry_run: bool, *, read: Callable[[str], AbstractContextManager[BinaryIO]],
             where: Callable[[sa.Row[Any]], str], label: Callable[[sa.Row[Any]], str],
             errors: tuple[type[Exception], ...]) -> None:
    """Fingerprint each row's bytes (``read(where(row))``), count it, store it unless dry."""
    for row in rows:
        try:
            with read(where(row)) as fh:
                value = imohash_fileobj(fh)
        except (*errors, OSError, EOFError) as exc:
            report.problems.append(f"{label(row)}: {exc}")
            continue
        _count(report, what, value != row.imohash)
        if not dry_run:
            with catalog.session() as session:
                session.execute(sa.update(table).where(table.id == row.id).values(
                    imohash=value, imohash_version=ALGORITHM_VERSION))


def _count(report: RecomputeReport, what: str, changed: bool) -> None:
    name = f"{what}_{'updated' if changed else 'unchanged'}"
    setattr(report, name, getattr(report, name) + 1)
