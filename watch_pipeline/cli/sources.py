"""``watch-pipeline source ...``: add, list, show, update, remove, enable, disable, scan, files."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click
import sqlalchemy as sa

from watch_pipeline.catalog import queries
from watch_pipeline.catalog import sources as svc
from watch_pipeline.catalog.models import FileStatus, SourceType, WatchSourceFile
from watch_pipeline.catalog.settings import WatchSettings
from watch_pipeline.catalog.validation import ValidationError
from watch_pipeline.cli.context import (
    CliContext,
    Column,
    FieldOptions,
    emit_json,
    fail,
    field_option,
    for_kind,
    list_options,
    pass_cli,
    print_fields,
    print_table,
    read_secret,
    safe,
)
from watch_pipeline.pipeline import plan
from watch_pipeline.pipeline import scan as scanner
from watch_pipeline.sources.base import SourceClient, SourceError
from watch_pipeline.sources.connect import client_for_source
from watch_pipeline.sources.local import resolve_root

_OPTIONS = FieldOptions([
    field_option("--name", "name", "Unique display name (1-200 characters)."),
    field_option("--type source_type", "source_type", "Source kind (fixed at creation).",
                 type=click.Choice([t.value for t in SourceType])),
    *for_kind("local", [
        field_option("--path local_path", "local_path",
                     "folder relative to WATCH_FOLDER_PATH ('.' = the root)."),
    ]),
    field_option("--delete-after-import/--keep-after-import", "delete_after_import",
                 "Delete the original once its media is stored (S3: the object, SMB: the file), "
                 "only if unchanged since the scan; never a duplicate or a failed import."),
    *for_kind("s3", [
        field_option("--endpoint-url", "s3_endpoint_url", "endpoint (MinIO); default AWS."),
        field_option("--bucket", "s3_bucket_name", "bucket name."),
        field_option("--prefix", "s3_prefix", "key prefix to watch."),
        field_option("--region", "s3_region", "region."),
        field_option("--access-key", "s3_access_key_id", "access key id."),
        field_option("--ssl/--no-ssl", "s3_use_ssl", "use TLS (default on)."),
    ]),
    *for_kind("smb", [
        field_option("--server", "smb_server", "server host name or address."),
        field_option("--share", "smb_share", "share name."),
        field_option("--smb-path", "smb_path", "folder inside the share (default /)."),
        field_option("--username", "smb_username", "user name."),
        field_option("--domain", "smb_domain", "domain used in the login."),
        field_option("--port", "smb_port", "port (default 445).", type=int),
    ]),
    field_option("--polling-interval-minutes", "polling_interval_minutes",
                 "Minutes between scans, 1-1440 (default 15).", type=int),
    *for_kind("local", [
        field_option("--fs-events/--no-fs-events use_fs_events", "use_fs_events",
                     "react to file-system events (default on)."),
    ]),
    field_option("--extensions", "file_extensions",
                 "Comma-separated extensions to import, e.g. .mp4,.wav (empty = all)."),
    field_option("--skip-older-than-days", "skip_files_older_than_days",
                 "Skip files modified more than N days ago (default 30).", type=int),
    field_option("--recursive/--no-recursive", "recursive",
                 "Descend into sub-folders (default on)."),
    field_option("--auto-transcribe/--no-auto-transcribe", "auto_transcribe",
                 "Transcribe imported media (default on)."),
    field_option("--min-speakers", "min_speakers",
                 "Fewest speakers, 1-20 (default 1). Riva only, as is --max-speakers: the "
                 "whisper backend labels no speakers and ignores both.", type=int),
    field_option("--max-speakers", "max_speakers",
                 "Most speakers Riva labels, 1-20 (default 20; 1 = no labels).", type=int),
    field_option("--collections", "collections", "Comma-separated collections for imports."),
    field_option("--tags", "tags", "Comma-separated tags for imports."),
    field_option("--owner", "owner_id", "Owner user id of imported media.", type=int),
    field_option("--multipart/--no-multipart", "multipart_enabled",
                 "Stitch name_P001, name_P002, ... into one recording."),
    field_option("--multipart-regex", "multipart_regex",
                 "Regex with 3 groups: base, part number, extension."),
    field_option("--multipart-time-window-hours", "multipart_time_window_hours", type=int),
    field_option("--multipart-wait-scans", "multipart_wait_scans", type=int),
    field_option("--upload-stitched-to-source/--no-upload-stitched-to-source",
                 "upload_stitched_to_source"),
    field_option("--enabled/--disabled", "is_enabled", "Scan this source (default enabled)."),
])


def source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attach every source field option, plus the secret-from-stdin flags."""
    func = _OPTIONS.attach(func)
    func = click.option("--never-skip-old", is_flag=True,
                        help="Import files of any age.")(func)
    func = click.option("--secret-key-stdin", is_flag=True,
                        help="s3: read the secret key from stdin.")(func)
    func = click.option("--password-stdin", is_flag=True,
                        help="smb: read the password from stdin.")(func)
    return func


def _fields(params: dict[str, Any]) -> dict[str, Any]:
    fields = _OPTIONS.given(params)
    if params.get("never_skip_old"):
        if "skip_files_older_than_days" in fields:
            raise ValidationError("skip_files_older_than_days",
                                  "cannot be combined with --never-skip-old")
        fields["skip_files_older_than_days"] = None
    return fields


def _secret(params: dict[str, Any], source_type: str, fields: dict[str, Any], *,
            creating: bool) -> str | None:
    if params.get("secret_key_stdin") and source_type != SourceType.S3:
        raise ValidationError("secret-key", "--secret-key-stdin only applies to s3 sources")
    if params.get("password_stdin") and source_type != SourceType.SMB:
        raise ValidationError("password", "--password-stdin only applies to smb sources")
    if source_type == SourceType.S3:
        needed = creating and bool(fields.get("s3_access_key_id"))
        return read_secret(params.get("secret_key_stdin", False), prompt="S3 secret key",
                           required=needed, field="secret-key")
    if source_type == SourceType.SMB:
        needed = creating and bool(fields.get("smb_username"))
        return read_secret(params.get("password_stdin", False), prompt="SMB password",
                           required=needed, field="password")
    return None


def _check_inside_watch_folder(cli: CliContext, source: svc.WatchSource) -> None:
    """Refuse a local source whose folder resolves outside ``WATCH_FOLDER_PATH``.

    The path was checked as text by the catalog; here its symlinks are followed (``escape`` ->
    ``/etc`` is refused). The folder need not exist yet; every scan checks again.

    Raises:
        ValidationError: The folder leaves the watch folder, or is a symlink loop.
    """
    if source.source_type != SourceType.LOCAL:
        return
    try:
        watch_root = cli.watch_root()
    except SourceError:
        click.echo("warning: WATCH_FOLDER_PATH is not set here, so the folder could not be "
                   "checked; each scan checks that it lies inside the watch folder", err=True)
        return
    try:
        resolve_root(watch_root, source.local_path or ".", must_exist=False)
    except SourceError as exc:
        raise ValidationError("local_path", str(exc)) from None


def _location(source: svc.WatchSource) -> str:
    if source.source_type == SourceType.LOCAL:
        return f"./{source.local_path}" if source.local_path != "." else "./"
    if source.source_type == SourceType.S3:
        return f"s3://{source.s3_bucket_name}/{source.s3_prefix or ''}"
    return f"//{source.smb_server}/{source.smb_share}{source.smb_path or '/'}"


@click.group()
def source() -> None:
    """Manage watch sources (local folders, S3 buckets, SMB shares)."""


@source.command("add")
@source_options
@pass_cli
def add(cli: CliContext, **params: Any) -> None:
    """Add a watch source; secrets are read from stdin or a prompt, never from arguments."""
    fields = _fields(params)
    if "name" not in fields:
        raise ValidationError("name", "is required (--name)")
    if "source_type" not in fields:
        raise ValidationError("source_type", "is required (--type local|s3|smb)")
    secret = _secret(params, fields["source_type"], fields, creating=True)
    box = cli.box() if secret is not None else None
    with cli.session() as session:
        created = svc.create_source(session, box, fields=fields, secret=secret)
        _check_inside_watch_folder(cli, created)
        click.echo(f"added {created.source_type} source {created.name!r} (id {created.id})")


@source.command("update")
@click.argument("ref")
@source_options
@pass_cli
def update(cli: CliContext, ref: str, **params: Any) -> None:
    """Change fields of the source REF (name or id); unspecified fields keep their value."""
    fields = _fields(params)
    with cli.session() as session:
        target = svc.find_source(session, ref)
        secret = _secret(params, target.source_type, fields, creating=False)
        if not fields and secret is None:
            raise ValidationError("options", "nothing to update: give at least one option")
        box = cli.box() if secret is not None else None
        svc.update_source(session, box, target, fields=fields, secret=secret)
        _check_inside_watch_folder(cli, target)
        changed = sorted(fields) + (["secret"] if secret is not None else [])
        click.echo(f"updated source {target.name!r}: {', '.join(changed)}")


_LIST_COLUMNS = (Column("ID", 4, right=True), Column("NAME", 24), Column("TYPE", 5),
                 Column("ON", 3), Column("EVERY", 6, right=True), Column("LAST SCAN", 20),
                 Column("LOCATION"))


@source.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--type", "source_type", type=click.Choice([t.value for t in SourceType]))
@click.option("--all", "show_all", is_flag=True,
              help="Also the system source holding files imported by hand.")
@pass_cli
def list_(cli: CliContext, as_json: bool, source_type: str | None, show_all: bool) -> None:
    """List watch sources with their last scan."""
    with cli.session() as session:
        rows = [s for s in svc.list_sources(session, source_type=source_type)
                if show_all or not s.is_manual]
        if as_json:
            emit_json([svc.source_to_dict(s) for s in rows])
            return
        if not rows:
            click.echo("no watch sources; add one with `watch-pipeline source add`")
            return
        print_table(_LIST_COLUMNS, (
            (s.id, s.name, s.source_type, "yes" if s.is_enabled else "no",
             f"{s.polling_interval_minutes}m",
             f"{s.last_scan_status} {s.last_scan_at:%Y-%m-%d %H:%M}" if s.last_scan_at
             else "never", _location(s))
            for s in rows))


@source.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def show(cli: CliContext, ref: str, as_json: bool) -> None:
    """Show every field of the source REF (name or id); secrets show only as has_secret."""
    with cli.session() as session:
        data = svc.source_to_dict(svc.find_source(session, ref))
    if as_json:
        emit_json(data)
    else:
        print_fields(data)


@source.command("remove")
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def remove(cli: CliContext, ref: str, yes: bool) -> None:
    """Remove the source REF and its file history (imported media are kept)."""
    with cli.session() as session:
        target = svc.find_source(session, ref)
        if not yes and not click.confirm(f"remove source {target.name!r}?", default=False):
            click.echo("not removed")
            return
        name = target.name
        files = svc.delete_source(session, target)
    click.echo(f"removed source {name!r} ({files} file records)")


def _set_enabled(cli: CliContext, ref: str, enabled: bool) -> None:
    with cli.session() as session:
        target = svc.find_source(session, ref)
        svc.update_source(session, None, target, fields={"is_enabled": enabled})
        click.echo(f"source {target.name!r} {'enabled' if enabled else 'disabled'}")


@source.command("enable")
@click.argument("ref")
@pass_cli
def enable(cli: CliContext, ref: str) -> None:
    """Resume scanning the source REF."""
    _set_enabled(cli, ref, True)


@source.command("disable")
@click.argument("ref")
@pass_cli
def disable(cli: CliContext, ref: str) -> None:
    """Stop scanning the source REF (its history is kept)."""
    _set_enabled(cli, ref, False)


# -- scan -------------------------------------------------------------------------------------

def _client_for(cli: CliContext, target: svc.WatchSource) -> SourceClient:
    """An unconnected client for ``target``, built as the watch sensor builds it."""
    return client_for_source(target, box=cli.box, watch_folder=cli.watch_root)


def _report_to_dict(report: scanner.ScanReport, *, source_type: str,
                    dry_run: bool) -> dict[str, Any]:
    return {
        "source_id": report.source_id,
        "source_name": report.source_name,
        "source_type": source_type,
        "dry_run": dry_run,
        "summary": report.summary,
        "files_seen": report.files_seen,
        "new_pending": list(report.new_pending),
        "waiting": report.waiting,
        "skipped": dict(sorted(report.skipped.items())),
        "errors": list(report.errors),
        "finished": report.finished,
        "error": report.error,
        "duration_seconds": round(report.duration_seconds, 3),
        "decisions": [{"remote_path": path, "decision": decision}
                      for path, decision in report.decisions],
    }


@source.command("scan")
@click.argument("ref", metavar="NAME")
@click.option("--dry-run", is_flag=True,
              help="Decide for each file and print why, but write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def scan(cli: CliContext, ref: str, dry_run: bool, as_json: bool) -> None:
    """Scan the source NAME (name or id) once now, with the watch sensor's rules.

    A scan only records what it finds in the catalog; the source kind's watch sensor
    (e.g. local_watch_sensor) starts the imports on its next tick. With --dry-run nothing is
    written and every file that needs a decision is listed with what would happen and why.
    """
    try:
        with cli.session() as session:
            target = svc.find_source(session, ref)
            source_id, name, kind = target.id, target.name, target.source_type
            enabled = target.is_enabled
            settings = WatchSettings.load(session)
            client = _client_for(cli, target)
    except SourceError as exc:
        fail(f"cannot scan source {ref!r}: {exc}")
        return
    with client:
        report = scanner.scan_source(cli.catalog, source_id, client, settings=settings,
                                         dry_run=dry_run)
    if as_json:
        emit_json(_report_to_dict(report, source_type=kind, dry_run=dry_run))
    else:
        if not enabled:
            click.echo(f"note: source {name!r} is disabled; scanned because you asked")
        mode = " (dry run, nothing written)" if dry_run else ""
        click.echo(f"scan of {kind} source {name!r}{mode}: {safe(report.summary)}")
        if dry_run:
            _print_decisions(report.decisions, files_seen=report.files_seen)
        count = len(report.new_pending)
        if dry_run:
            click.echo(f"{count} new file(s) would be queued for import")
        else:
            click.echo(f"{count} new file(s) queued; the {kind}_watch_sensor starts their imports")
    if report.error:
        fail(f"scan of source {name!r} failed: {report.error}")


def _print_decisions(decisions: list[tuple[str, str]], *, files_seen: int) -> None:
    if not decisions:
        if files_seen:
            click.echo("  no file changed since the last scan")
        return
    shown = [(safe(path), safe(decision)) for path, decision in decisions]
    width = min(60, max(len(path) for path, _ in shown))
    for path, decision in shown:
        click.echo(f"  {path.ljust(width)}  {decision}")


# -- files ------------------------------------------------------------------------------------

FILE_KEYS = ("id", "remote_path", "filename", "file_size", "file_modified_at", "etag", "imohash",
             "media_file_id", "status", "skip_reason", "part_group", "part_number",
             "error_message", "retry_count", "wait_scans", "processed_at", "created_at")
"""The keys of ``source files --json``: ``watch_source_file`` column names, in this order."""


def _file_to_dict(row: WatchSourceFile) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in FILE_KEYS:
        value = getattr(row, key)
        data[key] = value.isoformat() if hasattr(value, "isoformat") else value
    return data


_FILE_COLUMNS = (Column("ID", 6, right=True), Column("STATUS", 17), Column("REASON", 22),
                 Column("SIZE", 12, right=True), Column("IMOHASH", 32), Column("PATH"))


def _file_reason(row: dict[str, Any]) -> str:
    if row["part_group"]:
        reason = f"part {row['part_number']} of {row['part_group'][:8]}"
        if row["status"] == FileStatus.WAITING_FOR_PARTS:
            reason += f" w{row['wait_scans']}"
        return reason
    if row["skip_reason"]:
        return row["skip_reason"]
    return f"retries {row['retry_count']}" if row["status"] == FileStatus.ERROR else "-"


class DefaultCommandGroup(click.Group):
    """A group whose first argument, when it names no sub-command, goes to a default one.

    ``source files NAME`` then means ``source files list NAME`` while ``source files retry
    NAME`` reaches ``retry``. A source named like a sub-command is listed with the explicit
    ``list`` form.
    """

    def __init__(self, *args: Any, default_command: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:  # noqa: D102
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:  # noqa: D102
        return [f"NAME [OPTIONS] | {self.subcommand_metavar}"]


@source.group("files", cls=DefaultCommandGroup, default_command="list")
def files() -> None:
    """List the files scans have seen in a source, or release failed ones for retry.

    `source files NAME [OPTIONS]` is short for `source files list NAME [OPTIONS]`.
    """


@files.command("list")
@click.argument("ref", metavar="NAME")
@list_options(FileStatus, "files")
@pass_cli
def files_list(cli: CliContext, ref: str, status: str | None, limit: int | None,
               as_json: bool) -> None:
    """List the files of the source NAME (name or id) in the order scans found them."""
    with cli.session() as session:
        target = svc.find_source(session, ref)
        query = (sa.select(WatchSourceFile).where(WatchSourceFile.watch_source_id == target.id)
                 .order_by(WatchSourceFile.id))
        if status:
            query = query.where(WatchSourceFile.status == status)
        if limit:
            query = query.limit(limit)
        rows = [_file_to_dict(r) for r in session.scalars(query)]
        name = target.name
    if as_json:
        emit_json(rows)
        return
    if not rows:
        which = f" with status {status}" if status else ""
        click.echo(f"no files{which} recorded for source {name!r}")
        return
    print_table(_FILE_COLUMNS, ((r["id"], r["status"], _file_reason(r), r["file_size"],
                                 r["imohash"], r["remote_path"]) for r in rows))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["part_group"] and r["status"] == FileStatus.WAITING_FOR_PARTS:
            groups.setdefault(r["part_group"], []).append(r)
    for group_id, members in groups.items():
        numbers = sorted(m["part_number"] for m in members if m["part_number"])
        note = members[0]["error_message"] or "waiting"
        click.echo(f"group {group_id[:8]}: parts {', '.join(map(str, numbers))} - {safe(note)}")


@files.command("retry")
@click.argument("ref", metavar="NAME")
@click.argument("remote_path", metavar="PATH", required=False)
@pass_cli
def files_retry(cli: CliContext, ref: str, remote_path: str | None) -> None:
    """Release the source's failed files (or only PATH) for another import attempt.

    Their retry counters go back to zero, so the watch sensor requests them again on its next
    tick, however often they failed before.
    """
    with cli.session() as session:
        target = svc.find_source(session, ref)
        source_id, name = target.id, target.name
    released = queries.retry_files(cli.catalog, source_id, remote_path)
    where = f" at {remote_path!r}" if remote_path else ""
    click.echo(f"released {released} failed file(s){where} of source {name!r} for retry")


# -- test / browse ------------------------------------------------------------------------------

@source.command("test")
@click.argument("ref", metavar="NAME")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def test(cli: CliContext, ref: str, as_json: bool) -> None:
    """Connect to the source NAME, list its root, and print counts and latency.

    Exits 1 with the specific reason (unreachable, login refused, missing bucket/share/folder,
    permission denied) when the source cannot be used.
    """
    with cli.session() as session:
        target = svc.find_source(session, ref)
        name, kind, location = target.name, target.source_type, _location(target)
        extensions = tuple(target.file_extensions or ())
        try:
            # a local folder must exist, and its symlinks must stay inside the watch folder
            if kind == SourceType.LOCAL:
                resolve_root(cli.watch_root(), target.local_path or ".")
            client = _client_for(cli, target)
        except SourceError as exc:
            fail(f"source {name!r} ({location}): {exc}")
            return
    started = time.monotonic()
    try:
        with client:
            client.test_connection()
            connected = time.monotonic() - started
            entries = client.browse("")
    except SourceError as exc:
        fail(f"source {name!r} ({location}): {exc}")
        return
    listed = time.monotonic() - started
    folders = sum(1 for e in entries if e.kind == "folder")
    files = [e for e in entries if e.kind == "file"]
    media = [e for e in files if plan.matches_extensions(e.name, extensions)
             and _looks_like_media(e.name)]
    data = {"name": name, "source_type": kind, "location": location, "ok": True,
            "connect_ms": round(connected * 1000, 1), "list_ms": round(listed * 1000, 1),
            "folders": folders, "files": len(files), "media_files": len(media)}
    if as_json:
        emit_json(data)
        return
    click.echo(f"source {name!r} ({safe(location)}): OK, connected in {data['connect_ms']} ms, "
               f"root listed in {data['list_ms']} ms: {folders} folder(s), {len(files)} "
               f"file(s), {len(media)} of them media")


_MEDIA_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .wmv .asf .flv .ts .mts .m2ts .mpg .mpeg .3gp .wav .mp3 "
    ".m4a .aac .flac .ogg .oga .opus .wma .amr .aif .aiff".split())


def _looks_like_media(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in _MEDIA_SUFFIXES


@source.command("browse")
@click.argument("ref", metavar="NAME")
@click.argument("path", required=False, default="")
@click.option("--all", "show_all", is_flag=True, help="Show every file, not only media files.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def browse(cli: CliContext, ref: str, path: str, show_all: bool, as_json: bool) -> None:
    """List the folders and media files at PATH in the source NAME.

    Use it to choose --path, --prefix or --smb-path: PATH is relative to the source's root.
    """
    with cli.session() as session:
        target = svc.find_source(session, ref)
        name, location = target.name, _location(target)
        try:
            client = _client_for(cli, target)
        except SourceError as exc:
            fail(f"source {name!r} ({location}): {exc}")
            return
    try:
        with client:
            entries = client.browse(path.strip("/"))
    except SourceError as exc:
        fail(f"source {name!r} ({location}): {exc}")
        return
    shown = [e for e in entries
             if e.kind == "folder" or show_all or _looks_like_media(e.name)]
    if as_json:
        emit_json([{"kind": e.kind, "name": e.name, "size": e.size} for e in shown])
        return
    if not shown:
        click.echo(f"no folders or media files at {safe(path or '/')}")
    for e in shown:
        if e.kind == "folder":
            click.echo(f"{'<dir>':>14}  {safe(e.name)}/")
        else:
            click.echo(f"{e.size if e.size is not None else '':>14}  {safe(e.name)}")
