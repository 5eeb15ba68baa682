"""The ``watch-pipeline`` operator CLI: a thin boundary over the catalog and pipeline modules.

Exit codes: 0 success, 2 invalid input (the message names the field and the rule), 1 runtime
failure (missing row, unreachable database, wrong key, ...). Errors go to stderr.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.orm import Session

from watch_pipeline.catalog.db import Catalog, CatalogConfigError
from watch_pipeline.catalog.secrets import SecretBox, SecretKeyError
from watch_pipeline.catalog.sources import NotFoundError
from watch_pipeline.catalog.validation import ValidationError


class CliContext:
    """Lazily opened catalog and secret box shared by the commands of one invocation."""

    def __init__(self, catalog_url: str | None) -> None:
        self.catalog_url = catalog_url
        self._catalog: Catalog | None = None
        self._box: SecretBox | None = None

    @property
    def catalog(self) -> Catalog:
        """The catalog, migrated to the newest schema on first use."""
        if self._catalog is None:
            self._catalog = Catalog(self.catalog_url)
        return self._catalog

    def box(self) -> SecretBox:
        """The secret box for the active key."""
        if self._box is None:
            from watch_pipeline.catalog.keys import active_box

            self._box, _ = active_box()
        return self._box

    def close(self) -> None:
        """Release the catalog's connections (at the end of every command)."""
        if self._catalog is not None:
            self._catalog.dispose()
            self._catalog = None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction on the catalog."""
        with self.catalog.session() as session:
            yield session


def fail(message: str, code: int = 1) -> None:
    """Print ``message`` to stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class Boundary(click.Group):
    """A click group that turns our exceptions into messages and exit codes, in one place."""

    def invoke(self, ctx: click.Context) -> Any:  # noqa: D102
        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            fail(str(exc), 2)
        except (NotFoundError, CatalogConfigError, SecretKeyError) as exc:
            fail(str(exc), 1)
        except sa.exc.IntegrityError as exc:
            fail(f"the catalog refused the change: {exc.orig}", 1)
        except sa.exc.OperationalError as exc:
            fail(f"catalog database error: {exc.orig}", 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON with stable key order."""
    click.echo(json.dumps(data, indent=2, default=str))


def read_secret(from_stdin: bool, *, prompt: str, required: bool, field: str) -> str | None:
    """Read a secret from stdin (when asked) or an interactive hidden prompt; never from argv."""
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise ValidationError(field, "stdin was empty")
        return value
    if not required:
        return None
    if sys.stdin.isatty():
        return click.prompt(prompt, hide_input=True)
    raise ValidationError(field, f"is required: pipe it in with the --{field}-stdin flag")


def pass_cli(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator handing the command its :class:`CliContext` as the first argument."""

    @functools.wraps(func)
    @click.pass_obj
    def wrapper(obj: CliContext, *args: Any, **kwargs: Any) -> Any:
        return func(obj, *args, **kwargs)

    return wrapper


@click.group(cls=Boundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--catalog-url", envvar="WATCH_CATALOG_URL", default=None, metavar="URL",
              help="Catalog database (default: SQLite under $DAGSTER_HOME).")
@click.pass_context
def cli(ctx: click.Context, catalog_url: str | None) -> None:
    """Configure and inspect watch_pipeline: sources, settings, the catalog and its secrets."""
    ctx.obj = CliContext(catalog_url)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    from watch_pipeline.cli import admin, media, multipart, sources, store, transcriber
    from watch_pipeline.cli.email import email

    cli.add_command(sources.source)
    cli.add_command(media.media)
    cli.add_command(admin.settings)
    cli.add_command(admin.db)
    cli.add_command(admin.secrets)
    cli.add_command(admin.fingerprints)
    cli.add_command(transcriber.transcriber)
    cli.add_command(store.store)
    cli.add_command(multipart.multipart)
    cli.add_command(email)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="watch-pipeline")
