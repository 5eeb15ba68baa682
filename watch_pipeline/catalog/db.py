"""Opening the catalog database: URL resolution, engine set-up, automatic migration.

The default catalog is a SQLite file under ``$DAGSTER_HOME`` (WAL mode, foreign keys on);
``WATCH_CATALOG_URL`` selects another database, e.g. ``postgresql+psycopg2://...``. Callers hand
in the URL (or the environment mapping to resolve it from); nothing here reads ``os.environ``.
The schema is brought to the newest Alembic revision the first time a process opens a URL, under
a lock, so a webserver, a daemon and the CLI starting together never race on a migration.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session, sessionmaker

CATALOG_FILENAME = "watch_catalog.sqlite"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# An arbitrary constant naming our advisory lock in PostgreSQL.
_PG_MIGRATION_LOCK_ID = 0x5741_5443  # "WATC"

_migrated: set[str] = set()
_migrate_lock = threading.Lock()


class CatalogConfigError(Exception):
    """The catalog location is not configured or not usable."""


NO_CATALOG = (f"no catalog configured: set DAGSTER_HOME (the embedded default keeps the catalog "
              f"in $DAGSTER_HOME/{CATALOG_FILENAME}) or WATCH_CATALOG_URL")


def default_catalog_url(dagster_home: str) -> str:
    """The embedded default: the SQLite file under ``dagster_home``."""
    return f"sqlite:///{Path(dagster_home).expanduser().resolve() / CATALOG_FILENAME}"


def resolve_catalog_url(environ: Mapping[str, str]) -> str:
    """Return the catalog URL from ``WATCH_CATALOG_URL`` or the SQLite file under DAGSTER_HOME.

    Args:
        environ: The environment the caller was launched with (it reads ``os.environ`` at its
            entry; this function never does).

    Raises:
        CatalogConfigError: Neither variable is set.
    """
    url = environ.get("WATCH_CATALOG_URL", "").strip()
    if url:
        return normalise_url(url)
    home = environ.get("DAGSTER_HOME", "").strip()
    if not home:
        raise CatalogConfigError(NO_CATALOG)
    return default_catalog_url(home)


def normalise_url(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg2 (SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable catalog URL>"


def create_catalog_engine(url: str) -> sa.Engine:
    """Create an engine for ``url`` with the catalog's connection settings."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config pointing at our migrations, optionally bound to ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest migration revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        lock_path = Path(f"{database}.migrate.lock") if database else None
        with contextlib.ExitStack() as stack:
            if lock_path is not None and database != ":memory:":
                fh = stack.enter_context(open(lock_path, "a+b"))
                fcntl.flock(fh, fcntl.LOCK_EX)
            with engine.begin() as conn:
                yield conn
    else:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"),
                             {"k": _PG_MIGRATION_LOCK_ID})
            yield conn


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` under a cross-process lock."""
    with _migration_lock(engine) as conn:
        command.upgrade(alembic_config(conn), revision)


def ensure_schema(engine: sa.Engine) -> None:
    """Migrate ``engine``'s database to head once per process (cheap when already there)."""
    key = engine.url.render_as_string(hide_password=False)
    with _migrate_lock:
        if key in _migrated:
            return
        if current_revision(engine) != head_revision():
            upgrade(engine)
        _migrated.add(key)


class Catalog:
    """An open catalog: an engine plus a session factory.

    Args:
        url: Database URL (see :func:`resolve_catalog_url`).
        migrate: Bring the schema to head on first use (the default).

    Raises:
        CatalogConfigError: ``url`` is empty, or the database cannot be opened.
    """

    def __init__(self, url: str | None, *, migrate: bool = True) -> None:
        if not url:
            raise CatalogConfigError(NO_CATALOG)
        self.url = normalise_url(url)
        self.engine = create_catalog_engine(self.url)
        if migrate:
            try:
                ensure_schema(self.engine)
            except sa.exc.OperationalError as exc:
                raise CatalogConfigError(
                    f"cannot open the catalog at {redact_url(self.url)}: {exc.orig}"
                ) from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
