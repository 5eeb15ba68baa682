"""Alembic environment: runs migrations on the connection handed in by ``catalog.db``."""

from __future__ import annotations

from alembic import context

from watch_pipeline.catalog.db import create_catalog_engine, normalise_url
from watch_pipeline.catalog.models import Base

target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # the `alembic` command line, for developers writing a revision: `-x url=<catalog URL>`
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("name the catalog: alembic -x url=sqlite:///path/watch_catalog.sqlite ...")
    engine = create_catalog_engine(normalise_url(url))
    with engine.begin() as conn:
        _run(conn)
