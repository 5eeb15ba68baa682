"""Alembic environment: runs migrations on the connection handed in by ``catalog.db``."""

from __future__ import annotations

from alembic import context

from watch_pipeline.catalog.db import create_catalog_engine, resolve_catalog_url
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
else:  # the `alembic` command line, for developers writing a new revision
    engine = create_catalog_engine(resolve_catalog_url())
    with engine.begin() as conn:
        _run(conn)
