"""``watch-pipeline media ...``: list, show, print transcripts, fetch previews, stats of lag."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.orm import Session

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.crud import NotFoundError
from watch_pipeline.catalog.models import MediaFile, MediaStatus
from watch_pipeline.cli.context import (
    CliContext,
    Column,
    emit_json,
    fail,
    list_options,
    pass_cli,
    print_fields,
    print_table,
)
from watch_pipeline.pipeline.previews import PreviewKeys, is_audio_only
from watch_pipeline.store.base import ObjectStore, ObjectStoreError
from watch_pipeline.transcribe import formats
from watch_pipeline.transcribe.base import Transcript

LIST_KEYS = ("id", "title", "filename", "imohash", "status", "object_key", "duration",
             "created_at")
"""The keys of ``media list --json``, in this order; ``media show`` has every column."""
_LIST_COLUMNS = (Column("ID", 5, right=True), Column("STATUS", 10), Column("DURATION", 9, True),
                 Column("CREATED", 16), Column("IMOHASH", 32), Column("TITLE", 24),
                 Column("FILENAME", 24), Column("OBJECT KEY"))

TRANSCRIPT_FORMATS: dict[str, Callable[[Transcript], str]] = {
    "txt": formats.to_text,
    "srt": formats.to_srt,
    "vtt": formats.to_vtt,
    "json": formats.to_json,
}
"""Each ``--format`` with the renderer used when its stored sibling file is missing."""


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _media_to_dict(row: MediaFile, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    names = keys or tuple(c.name for c in MediaFile.__table__.columns)
    return {name: _jsonable(getattr(row, name)) for name in names}


def _find_media(session: Session, media_id: int) -> MediaFile:
    row = session.get(MediaFile, media_id)
    if row is None:
        raise NotFoundError(f"no media numbered {media_id}")
    return row


@click.group()
def media() -> None:
    """Inspect imported media and read their transcripts."""


@media.command("list")
@list_options(MediaStatus, "media")
@pass_cli
def list_(cli: CliContext, status: str | None, limit: int | None, as_json: bool) -> None:
    """List imported media, newest first."""
    with cli.session() as session:
        query = sa.select(MediaFile).order_by(MediaFile.id.desc())
        if status:
            query = query.where(MediaFile.status == status)
        if limit:
            query = query.limit(limit)
        rows = [_media_to_dict(r, LIST_KEYS) for r in session.scalars(query)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no media" + (f" with status {status}" if status else ""))
        return
    print_table(_LIST_COLUMNS, (
        (r["id"], r["status"], "-" if r["duration"] is None else f"{r['duration']:.1f}s",
         (r["created_at"] or "-")[:16].replace("T", " "), r["imohash"], r["title"],
         r["filename"], r["object_key"])
        for r in rows))


def stored_previews(store: ObjectStore, object_key: str | None) -> dict[str, str | None]:
    """Each preview's key, or ``None`` when it is not stored (not made yet, or failed).

    The names are ``thumbnail``, ``thumbnail_small``, ``waveform`` and ``waveform_png``.
    """
    if not object_key:
        return dict.fromkeys(PreviewKeys.of("x/x").as_dict())
    return {name: key if store.head(key) is not None else None
            for name, key in PreviewKeys.of(object_key).as_dict().items()}


@media.command("show")
@click.argument("media_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def show(cli: CliContext, media_id: int, as_json: bool) -> None:
    """Show every field of the media item ID, and the keys of its stored previews."""
    with cli.session() as session:
        data = _media_to_dict(_find_media(session, media_id))
    try:
        found = stored_previews(cli.object_store(), data["object_key"])
    except ObjectStoreError as exc:
        fail(f"cannot read the previews of media {media_id}: {exc}")
        return
    if as_json:
        emit_json({**data, "previews": found})
        return
    print_fields({**data, **{f"preview_{name}": key for name, key in found.items()}})


def _fetch(cli: CliContext, media_id: int, names: tuple[str, ...] | None, output: Path) -> str:
    """Copy the first stored preview of ``names`` to ``output``; return its key.

    ``None`` names the thumbnail: ``thumbnail`` for video, ``waveform_png`` for audio only
    (both, in this order, when the content type does not tell). Exits with 1 (stderr says why)
    when the media has no stored object or none of the previews.
    """
    with cli.session() as session:
        row = _find_media(session, media_id)
        object_key, status, audio_only = row.object_key, row.status, is_audio_only(row)
    if names is None:
        names = {True: ("waveform_png",), False: ("thumbnail",)}.get(
            audio_only, ("thumbnail", "waveform_png"))
    if not object_key:
        fail(f"media {media_id} has no stored object (status {status})")
    keys = PreviewKeys.of(object_key or "").as_dict()
    store = cli.object_store()
    try:
        for name in names:
            if store.head(keys[name]) is None:
                continue
            with store.open(keys[name]) as src, open(output, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            return keys[name]
    except (ObjectStoreError, OSError) as exc:
        fail(f"cannot fetch the preview of media {media_id}: {exc}")
    fail(f"media {media_id} has no {names[0].replace('_', ' ')} yet: materialize the "
         f"{names[0].split('_')[0]} asset for its partition")
    return ""


_OUTPUT = click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                       required=True, help="The file to write.")


@media.command("thumbnail")
@click.argument("media_id", metavar="ID", type=int)
@_OUTPUT
@click.option("--small", is_flag=True, help="The 160 px image instead of the 640 px one.")
@pass_cli
def thumbnail(cli: CliContext, media_id: int, output: Path, small: bool) -> None:
    """Write the thumbnail of the media item ID (WebP; audio only: the waveform PNG).

    With ``--small``, the 160 px WebP (video only).
    """
    key = _fetch(cli, media_id, ("thumbnail_small",) if small else None, output)
    click.echo(f"{key} -> {output}")


@media.command("waveform")
@click.argument("media_id", metavar="ID", type=int)
@_OUTPUT
@click.option("--png", "as_png", is_flag=True, help="The PNG picture instead of the JSON peaks.")
@pass_cli
def waveform(cli: CliContext, media_id: int, output: Path, as_png: bool) -> None:
    """Write the waveform of the media item ID (audiowaveform JSON v2, or its PNG)."""
    key = _fetch(cli, media_id, ("waveform_png",) if as_png else ("waveform",), output)
    click.echo(f"{key} -> {output}")


def read_transcript(store: ObjectStore, transcript_key: str, fmt: str) -> str:
    """The transcript in ``fmt``: its stored sibling file, else rendered from the JSON.

    Args:
        store: The object store holding the transcript.
        transcript_key: The media's ``transcript_key`` (a ``.json`` key; the ``.txt``,
            ``.srt`` and ``.vtt`` siblings share its stem).
        fmt: One of ``txt``, ``srt``, ``vtt``, ``json``.

    Returns:
        The transcript text.

    Raises:
        ObjectStoreError: Neither the sibling nor the JSON document is stored.
        ValueError: The JSON document is not a transcript.
    """
    stem = transcript_key.removesuffix(".json")
    sibling = transcript_key if fmt == "json" else f"{stem}.{fmt}"
    if store.head(sibling) is not None:
        return store.get_bytes(sibling).decode("utf-8")
    if store.head(transcript_key) is None:
        raise ObjectStoreError(f"transcript {transcript_key!r} is missing from the object store")
    transcript = formats.from_json(store.get_bytes(transcript_key).decode("utf-8"))
    return TRANSCRIPT_FORMATS[fmt](transcript)


@media.command("transcript")
@click.argument("media_id", metavar="ID", type=int)
@click.option("--format", "fmt", type=click.Choice(list(TRANSCRIPT_FORMATS)), default="txt",
              show_default=True, help="Plain text, SubRip, WebVTT or the full JSON document.")
@pass_cli
def transcript(cli: CliContext, media_id: int, fmt: str) -> None:
    """Print the transcript of the media item ID."""
    with cli.session() as session:
        row = _find_media(session, media_id)
        key, status = row.transcript_key, row.status
    if not key:
        fail(f"media {media_id} has no transcript yet (status {status})")
        return
    try:
        text = read_transcript(cli.object_store(), key, fmt)
    except (ObjectStoreError, ValueError, UnicodeDecodeError) as exc:
        fail(f"cannot read the transcript of media {media_id}: {exc}")
        return
    click.echo(text, nl=bool(text) and not text.endswith("\n"))


# -- stats ---------------------------------------------------------------------------------------

STATS_KEYS = ("transcripts", "landed_unknown", "landed_to_transcript_seconds")
"""The keys of ``media stats --json``; the last holds ``count``, ``p50``, ``p95`` and ``max``."""


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values``; ``None`` when there are none.

    That is the smallest value with at least ``fraction`` of the values at or below it.
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@media.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def stats(cli: CliContext, as_json: bool) -> None:
    """Show how long transcripts took from the file landing (p50, p95, max seconds)."""
    with cli.session() as session:
        unknown, lags = queries.landed_to_transcript_seconds(session)
    distribution = {"count": len(lags), "p50": percentile(lags, 0.50),
                    "p95": percentile(lags, 0.95), "max": max(lags, default=None)}
    data = {"transcripts": len(lags) + unknown, "landed_unknown": unknown,
            "landed_to_transcript_seconds": distribution}
    if as_json:
        emit_json(data)
        return
    click.echo(f"transcripts: {data['transcripts']}"
               + (f" ({unknown} without a landing time)" if unknown else ""))
    if not lags:
        click.echo("landed to transcript: no data yet")
        return
    click.echo(f"landed to transcript: p50 {distribution['p50']:.1f} s, "
               f"p95 {distribution['p95']:.1f} s, max {distribution['max']:.1f} s "
               f"(of {len(lags)})")
