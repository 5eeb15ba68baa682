"""Migration 0009: media checksums name their algorithm; old SHA-256 rows read as ``sha256``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command

from watch_pipeline.catalog.db import (
    Catalog,
    alembic_config,
    create_catalog_engine,
    current_revision,
    upgrade,
)
from watch_pipeline.catalog.models import MediaFile

SHA256_OF_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_url(request, tmp_path) -> str:
    """An empty database, once SQLite and once PostgreSQL (no migration run)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.sqlite'}"
    return request.getfixturevalue("postgres_url")


def _insert_media(engine: sa.Engine, rows: list[tuple[int, str | None]]) -> None:
    """Media rows as the code before 0009 wrote them: ``(id, checksum_sha256)``."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    media = sa.table("media_file", sa.column("id"), sa.column("title"), sa.column("filename"),
                     sa.column("status"), sa.column("origin"), sa.column("owner_id"),
                     sa.column("checksum_sha256"), sa.column("object_key"),
                     sa.column("collections", sa.JSON), sa.column("tags", sa.JSON),
                     sa.column("created_at", sa.DateTime(timezone=True)),
                     sa.column("updated_at", sa.DateTime(timezone=True)))
    with engine.begin() as conn:
        conn.execute(media.insert(), [
            {"id": i, "title": "t", "filename": "t.wav", "status": "completed",
             "origin": "watch", "owner_id": 1, "checksum_sha256": sha, "collections": [],
             "tags": [], "object_key": f"user_1/file_{i}/t.wav", "created_at": now,
             "updated_at": now} for i, sha in rows])


def _downgrade(engine: sa.Engine, revision: str) -> None:
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def test_old_sha256_rows_read_back_with_their_algorithm(catalog_url: str) -> None:
    engine = create_catalog_engine(catalog_url)
    try:
        upgrade(engine, "0008")
        _insert_media(engine, [(1, SHA256_OF_ABC), (2, None)])

        upgrade(engine)

        catalog = Catalog(catalog_url)
        try:
            with catalog.session() as session:
                rows = {m.id: (m.checksum, m.checksum_algorithm, m.checksum_sha256)
                        for m in session.scalars(sa.select(MediaFile))}
                session.add(MediaFile(id=3, title="new", filename="n.wav",
                                      checksum="e3069283", checksum_algorithm="crc32c"))
        finally:
            catalog.dispose()
        assert rows == {1: (SHA256_OF_ABC, "sha256", SHA256_OF_ABC), 2: (None, None, None)}
    finally:
        engine.dispose()


def test_downgrade_drops_the_columns_and_keeps_old_sha256(catalog_url: str) -> None:
    engine = create_catalog_engine(catalog_url)
    try:
        upgrade(engine, "0008")
        _insert_media(engine, [(1, SHA256_OF_ABC)])
        upgrade(engine, "0009")
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE media_file SET checksum = 'e3069283', "
                                 "checksum_algorithm = 'crc32c' WHERE id = 1"))

        _downgrade(engine, "0008")

        assert current_revision(engine) == "0008"
        columns = {c["name"] for c in sa.inspect(engine).get_columns("media_file")}
        assert "checksum" not in columns and "checksum_algorithm" not in columns
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT checksum_sha256 FROM media_file")).scalar() == (
                SHA256_OF_ABC)
        upgrade(engine)  # and up again
        with engine.connect() as conn:
            assert conn.execute(sa.text(
                "SELECT checksum, checksum_algorithm FROM media_file")).one() == (
                SHA256_OF_ABC, "sha256")
    finally:
        engine.dispose()


def test_media_show_names_the_algorithm_of_an_old_row(
    dagster_home: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from watch_pipeline.cli.main import cli

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_catalog_engine(url)
    try:
        upgrade(engine, "0008")
        _insert_media(engine, [(1, SHA256_OF_ABC)])
    finally:
        engine.dispose()
    monkeypatch.setenv("WATCH_CATALOG_URL", url)

    result = CliRunner().invoke(cli, ["media", "show", "1", "--json"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert '"checksum": "' + SHA256_OF_ABC in result.output
    assert '"checksum_algorithm": "sha256"' in result.output
