"""The two instance configurations share one policy, and the production storage block works."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from watch_pipeline_tests.fixtures.config_tree import env_refs

ROOT = Path(__file__).resolve().parent.parent
POLICY = ("concurrency", "run_queue", "run_monitoring", "retention", "telemetry")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_embedded_and_production_configs_carry_the_same_policy():
    embedded, production = _load(ROOT / "dagster.yaml"), _load(ROOT / "docker" / "dagster.yaml")
    for block in POLICY:
        assert embedded.get(block) == production.get(block), f"{block} drifted"
    assert production["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_run_containers_get_every_variable_the_storage_block_reads():
    production = _load(ROOT / "docker" / "dagster.yaml")
    storage_vars = env_refs(production["storage"])
    assert storage_vars == {f"DAGSTER_PG_{k}" for k in
                            ("USERNAME", "PASSWORD", "HOST", "PORT", "DB")}
    # each run's container resolves the storage block again from its own environment
    assert storage_vars <= set(production["run_launcher"]["config"]["env_vars"])


def test_production_storage_block_runs_on_postgres(postgres_server, monkeypatch):
    db = "dagster_storage"
    postgres_server.create_database(db)
    monkeypatch.setenv("DAGSTER_PG_USERNAME", postgres_server.user)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused")
    monkeypatch.setenv("DAGSTER_PG_HOST", postgres_server.host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(postgres_server.port))
    monkeypatch.setenv("DAGSTER_PG_DB", db)
    storage = _load(ROOT / "docker" / "dagster.yaml")["storage"]
    with dg.instance_for_test(overrides={"storage": storage}) as instance:
        instance.add_dynamic_partitions("media", ["a" * 32])
        assert instance.get_dynamic_partitions("media") == ["a" * 32]
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"


@pytest.mark.parametrize("config", [ROOT / "dagster.yaml", ROOT / "docker" / "dagster.yaml"])
def test_each_instance_config_is_valid_as_a_whole(config, tmp_path, monkeypatch):
    # Dagster's own validation of a whole dagster.yaml (no public API validates without opening
    # the storage, which for production is a PostgreSQL server).
    from dagster._core.instance.config import dagster_instance_config

    for name in ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST",
                 "DAGSTER_PG_DB", "DAGSTER_PG_PORT", "WATCH_IMAGE", "WATCH_DOCKER_NETWORK"):
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else "x")
    (tmp_path / "dagster.yaml").write_text(config.read_text())
    loaded, _ = dagster_instance_config(str(tmp_path))
    assert loaded["run_queue"]["dequeue_interval_seconds"] == 1
