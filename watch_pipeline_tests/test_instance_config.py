"""The two instance configurations share one policy, and the production storage block works."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

ROOT = Path(__file__).resolve().parent.parent
POLICY = ("concurrency", "run_monitoring", "retention", "telemetry")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_embedded_and_production_configs_carry_the_same_policy():
    embedded, production = _load(ROOT / "dagster.yaml"), _load(ROOT / "docker" / "dagster.yaml")
    for block in POLICY:
        assert embedded.get(block) == production.get(block), f"{block} drifted"
    assert production["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_production_storage_block_runs_on_postgres(postgres_server, monkeypatch):
    db = "dagster_storage"
    postgres_server.create_database(db)
    monkeypatch.setenv("DAGSTER_PG_USERNAME", postgres_server.user)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused")
    monkeypatch.setenv("DAGSTER_PG_HOST", postgres_server.host)
    monkeypatch.setenv("DAGSTER_PG_DB", db)
    storage = _load(ROOT / "docker" / "dagster.yaml")["storage"]
    storage["postgres"]["postgres_db"]["port"] = postgres_server.port
    with dg.instance_for_test(overrides={"storage": storage}) as instance:
        instance.add_dynamic_partitions("media", ["a" * 32])
        assert instance.get_dynamic_partitions("media") == ["a" * 32]
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
