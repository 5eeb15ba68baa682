"""The production files agree with each other (no Docker needed): every variable the run launcher
forwards is set for the daemon, the code server hands run containers the volumes that the
services mount, and the workspace points at the code server the compose file starts."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _instance() -> dict:
    return yaml.safe_load((DOCKER / "dagster.yaml").read_text())


def test_every_forwarded_variable_is_set_for_the_daemon() -> None:
    daemon_env = _compose()["services"]["daemon"]["environment"]
    forwarded = _instance()["run_launcher"]["config"]["env_vars"]
    missing = [name for name in forwarded if "=" not in name and name not in daemon_env]
    assert not missing, f"the DockerRunLauncher would fail: daemon lacks {missing}"


def test_instance_reads_only_variables_the_services_set() -> None:
    wanted: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"}:
                wanted.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(_instance())
    assert {"DAGSTER_PG_PASSWORD", "WATCH_IMAGE", "WATCH_DOCKER_NETWORK"} <= wanted
    env = _compose()["services"]["daemon"]["environment"]
    assert wanted <= set(env), wanted - set(env)


def test_run_containers_mount_what_the_services_mount() -> None:
    compose = _compose()
    code_server = compose["services"]["code-server"]
    context = json.loads(code_server["environment"]["DAGSTER_CONTAINER_CONTEXT"].replace(
        "${WATCH_STACK:-watch_pipeline}", "watch_pipeline"))
    run_mounts = {m.split(":", 1)[1] for m in context["docker"]["container_kwargs"]["volumes"]}
    service_mounts = {m.split(":", 1)[1] for m in code_server["volumes"]}
    assert run_mounts == service_mounts
    volume_names = {v["name"].replace("${WATCH_STACK:-watch_pipeline}", "watch_pipeline")
                    for v in compose["volumes"].values()}
    for mount in context["docker"]["container_kwargs"]["volumes"]:
        assert mount.split(":", 1)[0] in volume_names, mount


def test_workspace_points_at_the_code_server() -> None:
    (entry,) = yaml.safe_load((DOCKER / "workspace.yaml").read_text())["load_from"]
    server = entry["grpc_server"]
    env = _compose()["services"]["webserver"]["environment"]
    assert server["host"] == {"env": "WATCH_CODE_SERVER_HOST"}
    assert server["port"] == {"env": "WATCH_CODE_SERVER_PORT"}
    assert "WATCH_CODE_SERVER_HOST" in env and "WATCH_CODE_SERVER_PORT" in env
    assert "--port $${WATCH_CODE_SERVER_PORT}" in " ".join(
        _compose()["services"]["code-server"]["command"])


def test_gpu_profile_reserves_a_gpu_and_is_off_by_default() -> None:
    riva = _compose()["services"]["riva"]
    assert riva["profiles"] == ["gpu"]
    (device,) = riva["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert all("profiles" not in s for name, s in _compose()["services"].items()
               if name != "riva")
