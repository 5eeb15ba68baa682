"""Opening the catalog: URL resolution, SQLite pragmas, automatic and concurrent migration."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.db import (
    Catalog,
    CatalogConfigError,
    current_revision,
    redact_url,
    resolve_catalog_url,
)


def test_default_url_is_sqlite_under_dagster_home(dagster_home):
    assert resolve_catalog_url(os.environ) == f"sqlite:///{dagster_home}/watch_catalog.sqlite"


def test_catalog_url_env_wins_and_pins_psycopg2(dagster_home, monkeypatch):
    monkeypatch.setenv("WATCH_CATALOG_URL", "postgresql://u:p@db/x")
    assert resolve_catalog_url(os.environ) == "postgresql+psycopg2://u:p@db/x"


def test_missing_configuration_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("WATCH_CATALOG_URL", raising=False)
    with pytest.raises(CatalogConfigError, match="DAGSTER_HOME"):
        resolve_catalog_url(os.environ)


def test_redact_url_hides_password():
    assert "hunter2" not in redact_url("postgresql+psycopg2://u:hunter2@h/db")


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_catalog):
    with sqlite_catalog.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_an_empty_url_is_a_clear_error():
    with pytest.raises(CatalogConfigError, match="DAGSTER_HOME"):
        Catalog(None)


def test_migrates_on_first_use(dagster_home):
    catalog = Catalog(resolve_catalog_url(os.environ))
    assert current_revision(catalog.engine) is not None
    catalog.dispose()


def test_unreachable_database_is_a_clear_error(dagster_home):
    with pytest.raises(CatalogConfigError, match="cannot open the catalog") as info:
        Catalog("postgresql+psycopg2://u:topsecret@127.0.0.1:1/none")
    assert "topsecret" not in str(info.value)


def test_concurrent_first_use_migrates_once(dagster_home, tmp_path):
    """Several processes opening a new catalog at once (webserver, daemon, CLI) all succeed."""
    code = ("import os; from watch_pipeline.catalog.db import Catalog, resolve_catalog_url; "
            "Catalog(resolve_catalog_url(os.environ)).dispose()")
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    engine = sa.create_engine(f"sqlite:///{dagster_home}/watch_catalog.sqlite")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    engine.dispose()


def test_postgres_concurrent_first_use(postgres_url, dagster_home):
    code = f"from watch_pipeline.catalog.db import Catalog; Catalog({postgres_url!r}).dispose()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
