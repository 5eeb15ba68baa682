"""``watch-pipeline settings|db|secrets ...``: global settings, schema upgrades, key rotation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import sqlalchemy as sa

from watch_pipeline.catalog import db as catalog_db
from watch_pipeline.catalog import keys
from watch_pipeline.catalog import settings as settings_mod
from watch_pipeline.catalog.secrets import SecretBox
from watch_pipeline.cli.context import (
    CliContext,
    Column,
    emit_json,
    pass_cli,
    print_table,
    safe,
)


@click.group()
def settings() -> None:
    """Read and change global settings (applied on the next sensor tick)."""


@settings.command("get")
@click.argument("key", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def settings_get(cli: CliContext, key: str | None, as_json: bool) -> None:
    """Print KEY's value, or every setting with its default and meaning."""
    with cli.session() as session:
        if key:
            value = settings_mod.get_setting(session, key)
            if as_json:
                emit_json({key: value})
            else:
                click.echo(_shown(value))
            return
        values = settings_mod.all_settings(session)
    if as_json:
        emit_json(values)
        return
    print_table((Column("SETTING", 32), Column("VALUE", 8), Column("DEFAULT", 8),
                 Column("MEANING")),
                ((name, _shown(value), _shown(settings_mod.SETTINGS[name].default),
                  settings_mod.SETTINGS[name].help) for name, value in values.items()))


def _shown(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@settings.command("set")
@click.argument("key")
@click.argument("value")
@pass_cli
def settings_set(cli: CliContext, key: str, value: str) -> None:
    """Validate and store VALUE for KEY.

    watch.max_concurrent_imports is also the limit of the Dagster concurrency pool of the import
    steps: it is set at once in the instance under DAGSTER_HOME, else by the watch sensors on
    their next tick.
    """
    with cli.session() as session:
        typed = settings_mod.set_setting(session, key, value)
    click.echo(f"{key} = {_shown(typed)}")
    if key == "watch.max_concurrent_imports":
        _apply_import_pool(cli, typed)


def _apply_import_pool(cli: CliContext, limit: int) -> None:
    """Copy the import limit into the Dagster instance's pool now, when there is an instance."""
    if not cli.has_dagster_home():
        click.echo("no Dagster instance here (DAGSTER_HOME is not set): the watch sensors set "
                   "the import pool's limit on their next tick")
        return
    # Dagster is imported only here: every other command stays quick to start.
    from watch_pipeline.defs.pools import IMPORT_POOL, sync_current_instance

    try:
        sync = sync_current_instance(limit)
    except Exception as exc:  # the setting is stored either way; the sensors apply it later
        click.echo(f"warning: could not set the Dagster pool {IMPORT_POOL} to {limit} "
                   f"({type(exc).__name__}: {exc}); the watch sensors set it on their next tick",
                   err=True)
        return
    click.echo(sync.describe())


@click.group()
def db() -> None:
    """Catalog schema maintenance."""


@contextmanager
def _engine(cli: CliContext) -> Iterator[sa.Engine]:
    """An engine on the catalog that does not migrate it first (these commands do that)."""
    engine = catalog_db.create_catalog_engine(cli.url())
    try:
        yield engine
    finally:
        engine.dispose()


@db.command("upgrade")
@pass_cli
def db_upgrade(cli: CliContext) -> None:
    """Apply every pending catalog migration (also done automatically at first use)."""
    with _engine(cli) as engine:
        before = catalog_db.current_revision(engine)
        catalog_db.upgrade(engine)
        after = catalog_db.current_revision(engine)
    where = catalog_db.redact_url(cli.url())
    if before == after:
        click.echo(f"catalog at {where} is up to date (revision {after})")
    else:
        click.echo(f"catalog at {where} upgraded from {before or 'empty'} to {after}")


@db.command("current")
@pass_cli
def db_current(cli: CliContext) -> None:
    """Print the catalog's schema revision and the newest one this code ships."""
    with _engine(cli) as engine:
        current = catalog_db.current_revision(engine)
    click.echo(f"current {current or 'empty'}, head {catalog_db.head_revision()}")


@click.group()
def secrets() -> None:
    """Manage the key that encrypts stored passwords and secret keys."""


@secrets.command("rotate")
@click.option("--new-key-file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File holding the new key (base64 of 32 bytes); created if it does not exist.")
@pass_cli
def secrets_rotate(cli: CliContext, new_key_file: Path) -> None:
    """Re-encrypt every stored secret with a new key, in one transaction."""
    old_box, active = keys.active_box(cli.key_config(),
                                       catalog=cli.catalog)  # the key the catalog needs
    new_box = SecretBox(keys.prepare_new_key(new_key_file))
    if new_box.key_id == old_box.key_id:
        click.echo("the new key is the active key; nothing to do")
        return
    with cli.session() as session:
        count = keys.rotate_values(session, old_box, new_box)
    backup = keys.install_key_file(new_key_file, active)
    click.echo(f"re-encrypted {count} secret(s): key {old_box.key_id} -> {new_box.key_id}")
    if backup is not None:
        click.echo(f"the default key file now holds the new key; the old key is in {backup}")
    else:
        click.echo("set WATCH_SECRET_KEY to the contents of the new key file and restart the "
                   "Dagster webserver, daemon and code server")


@click.group()
def fingerprints() -> None:
    """Content fingerprints (imohash) stored in the catalog."""


@fingerprints.command("recompute")
@click.option("--dry-run", is_flag=True, help="Compute and count, but write nothing.")
@pass_cli
def fingerprints_recompute(cli: CliContext, dry_run: bool) -> None:
    """Recompute fingerprints stored by an older algorithm version (files and stored media).

    The same work as the recompute_fingerprints_job in Dagster; safe to repeat.
    """
    from watch_pipeline.ops.recompute import recompute
    from watch_pipeline.sources.connect import client_for_source

    report = recompute(cli.catalog, client_for=lambda s: client_for_source(s, box=cli.box,
                                                                      watch_folder=cli.watch_root),
                       store=cli.object_store(), dry_run=dry_run)
    for problem in report.problems[:20]:
        click.echo(f"problem: {safe(problem)}", err=True)  # names files
    verb = "would update" if dry_run else "updated"
    click.echo(f"files: {report.files_updated} {verb}, {report.files_unchanged} unchanged; "
               f"media: {report.media_updated} {verb}, {report.media_unchanged} unchanged; "
               f"{len(report.problems)} problem(s)")
    if not dry_run:
        with cli.session() as session:
            settings_mod.set_setting(session, "fingerprints.recompute_complete", True)
