"""The ``watch-pipeline`` operator CLI: the command group and its nouns, one module each.

A thin boundary over the catalog and pipeline modules; what the commands share (the context,
errors and exit codes, the printers) is in :mod:`watch_pipeline.cli.context`.
"""

from __future__ import annotations

import os

import click

from watch_pipeline.cli import (
    admin,
    email,
    events,
    imports,
    media,
    multipart,
    sources,
    store,
    transcriber,
)
from watch_pipeline.cli.context import Boundary, CliContext


@click.group(cls=Boundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--catalog-url", envvar="WATCH_CATALOG_URL", default=None, metavar="URL",
              help="Catalog database (default: SQLite under $DAGSTER_HOME).")
@click.pass_context
def cli(ctx: click.Context, catalog_url: str | None) -> None:
    """Configure and inspect watch_pipeline: sources, settings, the catalog and its secrets."""
    ctx.obj = CliContext(catalog_url, os.environ)  # the CLI's entry: the environment enters here
    ctx.call_on_close(ctx.obj.close)


for _command in (sources.source, media.media, admin.settings, admin.db, admin.secrets,
                 admin.fingerprints, transcriber.transcriber, store.store, multipart.multipart,
                 email.email, events.events):
    cli.add_command(_command)
media.media.add_command(imports.import_)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="watch-pipeline")
