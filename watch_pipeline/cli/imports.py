"""``watch-pipeline media import``: bring files or URLs in by hand, through the watch pipeline.

The command registers each file (:mod:`watch_pipeline.pipeline.manual`): checked, fingerprinted,
deduplicated and recorded for import; ``local_watch_sensor`` starts its import run on its next
tick. ``--wait`` then polls the catalog until each file is imported, skipped or failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from watch_pipeline.catalog.settings import get_setting
from watch_pipeline.cli.context import CliContext, emit_json, fail, pass_cli, safe
from watch_pipeline.pipeline import manual
from watch_pipeline.sources.base import SourceError

JSON_KEYS = ("file_id", "path", "filename", "size", "fingerprint", "partition_key", "status",
             "outcome", "skip_reason", "media_id", "message", "origin")
"""The keys of each arrival in ``media import --json`` (``final`` is added with ``--wait``)."""


@click.command("import")
@click.argument("paths", nargs=-1, metavar="PATH...")
@click.option("--url", "urls", multiple=True, metavar="URL",
              help="Download an http(s) URL and import it (repeatable).")
@click.option("--owner", type=click.IntRange(min=1), metavar="N",
              help="Owner user id of the media (default 1).")
@click.option("--collection", "collections", multiple=True, metavar="C",
              help="Add the media to collection C (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="T", help="Tag the media T (repeatable).")
@click.option("--no-transcribe", is_flag=True, help="Import without transcribing.")
@click.option("--wait", is_flag=True,
              help="Wait until each file is imported (or skipped, or failed).")
@click.option("--timeout", "timeout_seconds", type=click.FloatRange(min=1), default=3600.0,
              show_default=True, metavar="SECONDS", help="How long --wait waits.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def import_(cli: CliContext, paths: tuple[str, ...], urls: tuple[str, ...], owner: int | None,
            collections: tuple[str, ...], tags: tuple[str, ...], no_transcribe: bool, wait: bool,
            timeout_seconds: float, as_json: bool) -> None:
    """Import media files PATH... (or --url URL) as if they were dropped in a watch folder.

    Each file is checked (a regular, readable media file), fingerprinted and deduplicated: one
    already imported (by hand or from a watch source) is recorded as duplicate_existing and
    not imported again. New content is queued; local_watch_sensor starts its import run on its
    next tick, so Dagster must be running. The file is read where it is: the Dagster run
    workers must see the same path. A URL is downloaded first (resumable; limits in the
    settings import.url_max_bytes, import.url_timeout_seconds, import.url_max_redirects).
    """
    if not paths and not urls:
        raise click.UsageError("give at least one PATH or --url URL")
    options = manual.ManualOptions(owner, collections, tags, not no_transcribe)
    arrivals: list[manual.Arrival] = []
    errors: list[tuple[str, int]] = []
    for path in paths:
        try:
            arrivals.append(manual.register_path(cli.catalog, Path(path), options=options))
        except manual.ManualImportError as exc:
            errors.append((str(exc), 2))
    for url in urls:
        try:
            arrivals.append(manual.register_url(cli.catalog, url, scratch=_scratch(cli),
                                                options=options))
        except (manual.ManualImportError, SourceError) as exc:
            errors.append((str(exc), 1))
    finals = _wait(cli, arrivals, timeout_seconds, quiet=as_json) if wait else {}
    if as_json:
        emit_json({"arrivals": [_to_json(a, finals) for a in arrivals],
                   "errors": [message for message, _ in errors]})
    else:
        for arrival in arrivals:
            click.echo(f"{arrival.outcome:<16} {safe(arrival.path)}: {safe(arrival.message)}")
            if arrival.file_id in finals:
                click.echo(f"{'':<16} {_final_line(finals[arrival.file_id])}")
    failed = [a for a in arrivals if _failed(finals.get(a.file_id))] if wait else []
    for message, _code in errors[:-1]:
        click.echo(f"error: {safe(message)}", err=True)
    if errors:
        fail(errors[-1][0], max(code for _, code in errors))
    if failed:
        fail(f"{len(failed)} file(s) did not import; see above "
             "(`watch-pipeline source files` lists them)")


def _scratch(cli: CliContext) -> Path:
    """The scratch folder the code location uses (``WATCH_TEMP_DIR``), for staged downloads."""
    from watch_pipeline.defs.resources import build_sources  # dagster: only for URLs

    return build_sources(cli.environ).scratch()


def _wait(cli: CliContext, arrivals: list[manual.Arrival], timeout_seconds: float, *,
          quiet: bool) -> dict[int, dict[str, Any]]:
    """Poll each queued arrival until it is final; returns its final state by file id."""
    queued = [a for a in arrivals if a.status in manual.WAITING]
    if queued and not quiet:
        with cli.session() as session:
            if not get_setting(session, "watch.enabled"):
                click.echo("warning: watch.enabled is false; the imports wait until it is on",
                           err=True)
    finals: dict[int, dict[str, Any]] = {}
    for arrival in queued:
        state = manual.wait_for(cli.catalog, arrival.file_id, timeout_seconds=timeout_seconds)
        finals[arrival.file_id] = ({"status": "removed"} if state is None else {
            "status": state.status if state.fingerprinted else "changed",
            "skip_reason": state.skip_reason, "media_id": state.media_id,
            "media_status": state.media_status, "message": state.message,
            "timed_out": state.status in manual.WAITING and state.fingerprinted})
    return finals


def _failed(final: dict[str, Any] | None) -> bool:
    return final is not None and (final["status"] in ("error", "changed", "removed",
                                                      "skipped_invalid")
                                  or bool(final.get("timed_out")))


def _final_line(final: dict[str, Any]) -> str:
    status = final["status"]
    if final.get("timed_out"):
        return f"still {status} when --timeout passed"
    if status in ("imported", "stitched_part"):
        return (f"imported as media {final['media_id']} (media status "
                f"{final['media_status']})")
    if status == "changed":
        return ("the file changed after it was registered; import it again "
                f"({safe(final['message'] or '')})")
    if status == "removed":
        return "its catalog record was removed"
    return f"{status}: {safe(final.get('message') or final.get('skip_reason') or '')}"


def _to_json(arrival: manual.Arrival, finals: dict[int, dict[str, Any]]) -> dict[str, Any]:
    data = arrival.to_dict()
    out = {key: data[key] for key in JSON_KEYS}
    if arrival.file_id in finals:
        out["final"] = finals[arrival.file_id]
    return out
