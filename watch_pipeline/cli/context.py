r"""What every ``watch-pipeline`` command shares: the context, the error boundary, the printers.

Exit codes: 0 success, 2 invalid input (the message names the field and the rule), 1 runtime
failure (missing row, unreachable database, wrong key, ...). Errors go to stderr, and only from
:class:`Boundary` or :func:`fail`.

Everything printed that came from a file name or the catalog goes through :func:`safe`: a name
holding ESC, BEL or CR shows as ``\x1b``, ``\x07``, ``\r`` and never acts on the terminal.
"""

from __future__ import annotations

import enum
import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import sqlalchemy as sa
from sqlalchemy.orm import Session

from watch_pipeline.catalog import db as catalog_db
from watch_pipeline.catalog.crud import NotFoundError
from watch_pipeline.catalog.db import Catalog, CatalogConfigError
from watch_pipeline.catalog.secrets import KeyConfig, SecretBox, SecretKeyError
from watch_pipeline.catalog.validation import ValidationError, is_control
from watch_pipeline.sources.base import SourceError

if TYPE_CHECKING:
    from watch_pipeline.store.base import ObjectStore

CATALOG_BACKENDS = ("sqlite", "postgresql")


class CliContext:
    """Lazily opened catalog and secret box shared by the commands of one invocation.

    Args:
        catalog_url: ``--catalog-url`` (or ``WATCH_CATALOG_URL``), ``None`` for the default.
        environ: The environment the CLI was started with (the default catalog is found from it).
    """

    def __init__(self, catalog_url: str | None, environ: Mapping[str, str]) -> None:
        self.catalog_url = catalog_url
        self.environ = environ
        self._catalog: Catalog | None = None
        self._box: SecretBox | None = None

    def url(self) -> str:
        """The catalog URL (``--catalog-url``, else the default), checked to be one we open.

        Raises:
            CatalogConfigError: It is not a SQLite or PostgreSQL URL (the message never repeats
                an unparseable value, which may hold a password).
        """
        url = catalog_db.normalise_url(self.catalog_url
                                       or catalog_db.resolve_catalog_url(self.environ))
        try:
            backend = sa.engine.make_url(url).get_backend_name()
        except sa.exc.ArgumentError:
            raise CatalogConfigError(
                "the catalog URL (--catalog-url or WATCH_CATALOG_URL) is not a database URL; "
                "e.g. postgresql://user@host/watch or sqlite:////var/lib/watch/catalog.sqlite"
            ) from None
        if backend not in CATALOG_BACKENDS:
            raise CatalogConfigError(
                f"the catalog URL {catalog_db.redact_url(url)} names {backend!r}; the catalog "
                f"runs on {' or '.join(CATALOG_BACKENDS)}")
        return url

    @property
    def catalog(self) -> Catalog:
        """The catalog, migrated to the newest schema on first use."""
        if self._catalog is None:
            self._catalog = Catalog(self.url())
        return self._catalog

    def box(self) -> SecretBox:
        """The secret box for the active key."""
        if self._box is None:
            from watch_pipeline.catalog.keys import active_box

            self._box, _ = active_box(self.key_config(),
                                      catalog=self.catalog)  # checked against stored secrets
        return self._box

    # What the environment configures, read from the mapping handed in at the CLI's entry
    # (the same variables defs/resources.py maps for Dagster).

    def key_config(self) -> KeyConfig:
        """Where the secret key is: ``WATCH_SECRET_KEY``, else the key file."""
        return KeyConfig.from_environ(self.environ)

    def watch_root(self) -> Path:
        """``WATCH_FOLDER_PATH``, the root every local source is relative to.

        Raises:
            SourceError: It is not set.
        """
        value = self.environ.get("WATCH_FOLDER_PATH", "").strip()
        if not value:
            raise SourceError("WATCH_FOLDER_PATH is not set: local sources have no root folder")
        return Path(value).expanduser()

    def has_dagster_home(self) -> bool:
        """Whether ``DAGSTER_HOME`` names a Dagster instance for this process."""
        return bool(self.environ.get("DAGSTER_HOME", "").strip())

    def object_store(self) -> ObjectStore:
        """The object store the import assets write to (the same resource configuration)."""
        # Imported here: the resource module pulls in dagster, which only a few commands need.
        from watch_pipeline.defs.resources import object_store_from_env

        return object_store_from_env(self.environ)

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


def safe(value: object) -> str:
    r"""``value`` as text that shows on a terminal and never acts on it.

    Control characters become Python escapes (ESC -> ``\x1b``, CR -> ``\r``); a byte of an
    undecodable file name (a surrogate escape) shows as the byte, ``\xff``. Printable text,
    accented letters included, is unchanged.
    """
    text = str(value)
    if all(c.isprintable() for c in text):
        return text
    return "".join(_escape(c) if is_control(c) or (not c.isprintable() and c != " ") else c
                   for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape of one undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    return repr(char)[1:-1] if code < 0x10000 else f"\\U{code:08x}"


def fail(message: str, code: int = 1) -> None:
    """Print ``message`` to stderr on one line and exit with ``code``."""
    click.echo(f"error: {safe(message)}", err=True)
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


def pass_cli(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator handing the command its :class:`CliContext` as the first argument."""

    @functools.wraps(func)
    @click.pass_obj
    def wrapper(obj: CliContext, *args: Any, **kwargs: Any) -> Any:
        return func(obj, *args, **kwargs)

    return wrapper


def list_options(statuses: type[enum.StrEnum], noun: str) -> Callable[[Callable[..., Any]],
                                                                         Callable[..., Any]]:
    """Decorator adding ``--status``, ``--limit N`` and ``--json`` to a list of catalog rows.

    Args:
        statuses: The status enum ``--status`` chooses from.
        noun: What is listed, for the help texts ("files", "media").
    """

    def attach(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed((
            click.option("--status", type=click.Choice([s.value for s in statuses]),
                         help=f"Only {noun} with this status."),
            click.option("--limit", type=click.IntRange(min=1), metavar="N",
                         help=f"At most N {noun} (default all)."),
            click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
        )):
            func = option(func)
        return func

    return attach


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


# -- catalog fields as options ---------------------------------------------------------------

FieldOption = tuple[tuple[str, ...], str, dict[str, Any]]
"""(flag declaration(s), catalog column, click keyword arguments) of one column's option."""


@dataclass(frozen=True)
class FieldOptions:
    """The click options of a catalog table's columns, in table order."""

    options: Sequence[FieldOption]

    def attach(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate ``func`` with one click option per column."""
        for decls, _column, kwargs in reversed(self.options):
            func = click.option(*decls, **kwargs)(func)
        return func

    def given(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The catalog columns whose options were given, with their values."""
        fields: dict[str, Any] = {}
        for decls, column, _kwargs in self.options:
            value = params.get(_param_name(decls))
            if value is not None:
                fields[column] = value
        return fields


def field_option(decls: str, column: str, text: str | None = None, **kwargs: Any) -> FieldOption:
    """One column's option: ``decls`` space-separated, as click spells them; ``text`` its help.

    ``"--from from_address"`` also names the parameter. An on/off flag (``--a/--b``) defaults
    to ``None``: not given, it leaves the column as it is.
    """
    names = tuple(decls.split())
    if "/" in names[0]:
        kwargs.setdefault("default", None)
    if text is not None:
        kwargs["help"] = text
    return names, column, kwargs


def for_kind(kind: str, options: Iterable[FieldOption]) -> list[FieldOption]:
    """``options`` that only a ``kind`` of row uses; their help says so first (``s3: ...``)."""
    return [(decls, column, {**kwargs, "help": f"{kind}: {kwargs['help']}"})
            for decls, column, kwargs in options]


def _param_name(decls: tuple[str, ...]) -> str:
    if len(decls) == 2 and not decls[1].startswith("-"):
        return decls[1]
    return decls[0].split("/")[0].lstrip("-").replace("-", "_")


# -- output ------------------------------------------------------------------------------------

def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON with stable key order (control characters escaped)."""
    click.echo(json.dumps(data, indent=2, default=str))


def print_fields(pairs: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
    """Print ``key  value`` lines, keys padded to one width; empty values show as ``-``."""
    items = list(pairs.items() if isinstance(pairs, Mapping) else pairs)
    width = max((len(key) for key, _ in items), default=0)
    for key, value in items:
        click.echo(f"{key.ljust(width)}  {_cell(value)}")


@dataclass(frozen=True)
class Column:
    """One column of :func:`print_table`.

    Attributes:
        header: Its title.
        width: Characters it takes (longer values are cut); ``0`` for the last, free column.
        right: Right-aligned (numbers).
    """

    header: str
    width: int = 0
    right: bool = False


def print_table(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> None:
    """Print a header and one line per row; cells are escaped, cut to width and aligned."""
    click.echo(_line(columns, [c.header for c in columns]))
    for row in rows:
        click.echo(_line(columns, [_cell(value) for value in row]))


def _line(columns: Sequence[Column], cells: Sequence[str]) -> str:
    parts = []
    for column, cell in zip(columns, cells, strict=True):
        if not column.width:
            parts.append(cell)
        elif column.right:
            parts.append(cell[:column.width].rjust(column.width))
        else:
            parts.append(cell[:column.width].ljust(column.width))
    return "  ".join(parts).rstrip()


def _cell(value: Any) -> str:
    if value is None or value == [] or value == "":
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(safe(x) for x in value)
    return safe(value)
