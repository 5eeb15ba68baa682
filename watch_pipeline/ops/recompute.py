"""Recompute fingerprints stored by an older algorithm (``imohash_version``).

Changing the fingerprint algorithm changes every stored fingerprint; until they are recomputed,
dedup would miss duplicates. This walks the catalog's file rows (through each source's client:
three small reads per file) and the stored media (through the object store), and rewrites the
fingerprints that are not of the current version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

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
            for row in rows:
                try:
                    with client.open(row.remote_path) as fh:
                        value = imohash_fileobj(fh)
                except (SourceError, OSError, EOFError) as exc:
                    report.problems.append(f"{row.remote_path}: {exc}")
                    continue
                _count(report, "files", value != row.imohash)
                if not dry_run:
                    with catalog.session() as session:
                        session.execute(sa.update(f).where(f.id == row.id).values(
                            imohash=value, imohash_version=ALGORITHM_VERSION))
    if store is not None:
        with catalog.session() as session:
            media = session.execute(sa.select(MediaFile.id, MediaFile.object_key,
                                              MediaFile.imohash, MediaFile.partition_key)
                                    .where(MediaFile.object_key.is_not(None),
                                           _stale(MediaFile.imohash_version))).all()
        for m in media:
            try:
                with store.open(m.object_key) as fh:
                    value = imohash_fileobj(fh)
            except (ObjectStoreError, OSError, EOFError) as exc:
                report.problems.append(f"media {m.id}: {exc}")
                continue
            _count(report, "media", value != m.imohash)
            if not dry_run:
                with catalog.session() as session:
                    session.execute(sa.update(MediaFile).where(MediaFile.id == m.id).values(
                        imohash=value, imohash_version=ALGORITHM_VERSION))
    return report


def _count(report: RecomputeReport, what: str, changed: bool) -> None:
    name = f"{what}_{'updated' if changed else 'unchanged'}"
    setattr(report, name, getattr(report, name) + 1)
