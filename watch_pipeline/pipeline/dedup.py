"""The one dedup rule (SPEC §5): is this content already imported, and from where?

Layer 1 (same path in a source) is the scan's change detection (:mod:`.plan`). Layers 2 and 3
are decided here, from what the catalog holds for a fingerprint or a partition key:

2. a file row already ``imported`` (or a stitched part) with the same content: from this source
   (another name for one recording) it is ``duplicate_same_source``, from another source
   ``duplicate_other_source``;
3. otherwise a ``media_file`` with that content that is not in ``error``: ``duplicate_existing``
   (any origin).

A file brought by hand is not a watch source's file: content it brought in makes a later watched
copy ``duplicate_existing``, and a file brought by hand after any import is
``duplicate_existing`` too.

A row in ``error`` never blocks an import. The scan asks before any download; the import step
asks again when it marks the other waiting copies of what it just stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from watch_pipeline.catalog.models import SkipReason
from watch_pipeline.catalog.queries import ImportedCopy

__all__ = ["Duplicate", "ImportedCopy", "find_duplicate", "reason_between"]


@dataclass(frozen=True)
class Duplicate:
    """Why a file is not imported: the content is already there."""

    reason: SkipReason
    media_file_id: int | None
    message: str


def reason_between(source_id: int, other_source_id: int) -> SkipReason:
    """The skip reason of a copy in ``source_id`` of content imported from ``other_source_id``."""
    return (SkipReason.DUPLICATE_SAME_SOURCE if other_source_id == source_id
            else SkipReason.DUPLICATE_OTHER_SOURCE)


def find_duplicate(*, content: str, source_id: int, imported: ImportedCopy | None,
                   existing_media_id: int | None, by_hand: bool = False) -> Duplicate | None:
    """Apply layers 2 and 3 to a file of ``source_id`` whose content key is ``content``.

    Args:
        content: The file's imohash, or a multi-part group's partition key (for messages).
        source_id: The source the new file was found in.
        imported: A row already imported with this content, if any (the same source included).
        existing_media_id: A ``media_file`` with this content that is not in ``error``.
        by_hand: The new file was brought by hand (``media import``), not found by a scan.

    Returns:
        ``None`` when the content is new.
    """
    if imported is not None and (by_hand or imported.by_hand):
        media_id = imported.media_file_id or existing_media_id
        how = "by hand" if imported.by_hand else f"from source {imported.source_id}"
        return Duplicate(SkipReason.DUPLICATE_EXISTING, media_id,
                         f"same content ({content}) already imported {how}"
                         + (f" as media {media_id}" if media_id else ""))
    if imported is not None:
        media_id = imported.media_file_id
        where = ("this source" if imported.source_id == source_id
                 else f"source {imported.source_id}")
        return Duplicate(reason_between(source_id, imported.source_id), media_id,
                         f"same content ({content}) already imported from {where}"
                         + (f" as media {media_id}" if media_id else ""))
    if existing_media_id is not None:
        return Duplicate(SkipReason.DUPLICATE_EXISTING, existing_media_id,
                         f"same content ({content}) already exists as media {existing_media_id}")
    return None
