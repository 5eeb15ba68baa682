"""The production files agree with each other (no Docker needed): every variable the run launcher
forwards is set for the daemon, the code server hands run containers the volumes that the
services mount, and the workspace points at the code server the compose file starts. Least
privilege: only the daemon has the Docker socket, with an explicit group; the webserver has no
key and no app secret; root credentials stay with the servers and the one-shot setup; run
containers get only the app's; docker/write-env.sh writes them and compose refuses to start
without the socket's group."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from watch_pipeline_tests.fixtures.config_tree import env_refs

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
    wanted = env_refs(_instance())
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


# --- least privilege ---------------------------------------------------------------------------

ROOT_VARIABLES = ("POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
APP_SECRETS = ("PGPASSWORD", "WATCH_S3_SECRET_ACCESS_KEY", "RIVA_API_KEY")


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> source of each volume of a service."""
    return {m.split(":")[1]: m.split(":")[0] for m in service.get("volumes", [])}


def _references(value: object, names: tuple[str, ...]) -> set[str]:
    return {name for name in names if f"${{{name}" in str(value)}


def test_only_the_daemon_reaches_the_docker_socket_with_an_explicit_group() -> None:
    services = _compose()["services"]
    with_socket = {name for name, s in services.items()
                   if "/var/run/docker.sock" in _mounts(s)}
    assert with_socket == {"daemon"}
    assert {name for name, s in services.items() if "group_add" in s} == {"daemon"}
    (group,) = services["daemon"]["group_add"]
    # No fallback (a default of 0 gave the root group): compose stops when it is unset.
    assert group.startswith("${DOCKER_GID:?") and "build.sh" in group, group


def test_the_webserver_gets_neither_keys_nor_app_secrets_but_what_the_instance_needs() -> None:
    webserver = _compose()["services"]["webserver"]
    assert set(_mounts(webserver)) == {"/opt/dagster/home/storage"}
    env = webserver["environment"]
    assert not set(APP_SECRETS) & set(env), set(APP_SECRETS) & set(env)
    assert not _references(env, ROOT_VARIABLES)
    needed = env_refs(_instance())
    assert needed <= set(env), needed - set(env)


def test_root_credentials_stay_with_the_servers_and_the_one_shot_setup() -> None:
    holders = {name: _references(s.get("environment", {}), ROOT_VARIABLES)
               for name, s in _compose()["services"].items()}
    assert {name for name, refs in holders.items() if refs} == {
        "postgres", "minio", "minio-setup", "setup"}
    assert holders["setup"] == {"POSTGRES_PASSWORD"}  # MinIO's root stays with minio-setup
    assert holders["minio-setup"] == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}


def test_run_containers_are_forwarded_only_the_apps_credentials() -> None:
    forwarded = _instance()["run_launcher"]["config"]["env_vars"]
    daemon_env = _compose()["services"]["daemon"]["environment"]
    assert not set(ROOT_VARIABLES) & {name.split("=")[0] for name in forwarded}
    for name in forwarded:
        assert "=" not in name, f"{name}: a value written into dagster.yaml"
        assert not _references(daemon_env[name], ROOT_VARIABLES), (name, daemon_env[name])
    assert "POSTGRES_PASSWORD" not in daemon_env and "POSTGRES_SUPERUSER" not in daemon_env
    for name in ("DAGSTER_PG_PASSWORD", "PGPASSWORD"):
        assert _references(daemon_env[name], ("WATCH_DB_PASSWORD",)), daemon_env[name]
    assert daemon_env["DAGSTER_PG_USERNAME"] == "${WATCH_DB_USER:-watch}"
    assert daemon_env["WATCH_S3_ACCESS_KEY_ID"] == "${WATCH_S3_ACCESS_KEY_ID:-watch-app}"


def test_keys_are_mounted_only_where_secrets_are_decrypted() -> None:
    services = _compose()["services"]
    with_keys = {name for name, s in services.items() if "/var/lib/watch/keys" in _mounts(s)}
    assert with_keys == {"setup", "code-server"}  # and run containers (the context above)


def app_s3_policy(bucket: str = "watch-media") -> dict:
    """compose.yaml's policy for the app's access key, for ``bucket``."""
    text = _compose()["x-s3-app-policy"]
    return json.loads(text.replace("${WATCH_S3_BUCKET:-watch-media}", bucket))


def test_the_app_s3_policy_names_only_the_bucket() -> None:
    policy = app_s3_policy()
    statements = policy["Statement"]
    assert {s["Effect"] for s in statements} == {"Allow"}
    resources = {r for s in statements for r in s["Resource"]}
    assert resources == {"arn:aws:s3:::watch-media", "arn:aws:s3:::watch-media/*"}
    actions = {a for s in statements for a in s["Action"]}
    assert all(a.startswith("s3:") and "*" not in a for a in actions), actions
    assert not actions & {"s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy",
                          "s3:ListAllMyBuckets"}
    minio_setup = _compose()["services"]["minio-setup"]
    assert minio_setup["environment"]["WATCH_S3_APP_POLICY"] == _compose()["x-s3-app-policy"]
    script = " ".join(minio_setup["entrypoint"])
    for step in ("mc mb --ignore-existing", "mc admin policy create root watch-app",
                 "mc admin user add root", "mc admin policy attach root watch-app"):
        assert step in script, step


# --- docker/.env and compose's refusal without it ---------------------------------------------

COMPOSE = shutil.which("docker-compose")


def _write_env(env_file: Path, socket_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(DOCKER / "write-env.sh"), "--env-file", str(env_file),
                           "--socket", str(socket_path), "--image", "wp:test"],
                          capture_output=True, text=True, timeout=60, check=True)


def _values(env_file: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                if line and not line.startswith("#"))


@pytest.fixture
def docker_socket(tmp_path: Path) -> Iterator[Path]:
    """A unix socket owned by group 4242, standing in for /var/run/docker.sock."""
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        if os.geteuid() == 0:
            os.chown(path, -1, 4242)
        yield path


def test_write_env_makes_private_random_credentials_and_the_sockets_group(
    tmp_path: Path, docker_socket: Path
) -> None:
    env_file = tmp_path / ".env"
    _write_env(env_file, docker_socket)
    values = _values(env_file)
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert values["DOCKER_GID"] == str(docker_socket.stat().st_gid)
    secrets = [values[k] for k in ("POSTGRES_PASSWORD", "WATCH_DB_PASSWORD",
                                   "MINIO_ROOT_PASSWORD", "WATCH_S3_SECRET_ACCESS_KEY")]
    assert len(set(secrets)) == 4 and all(len(s) >= 24 for s in secrets)
    assert (values["POSTGRES_SUPERUSER"], values["WATCH_DB_USER"]) == ("postgres", "watch")
    assert values["WATCH_S3_ACCESS_KEY_ID"] != values["MINIO_ROOT_USER"]
    before = env_file.read_text()
    _write_env(env_file, docker_socket)
    assert env_file.read_text() == before, "a second run must change nothing"


def test_write_env_upgrades_an_old_file_keeping_its_passwords(
    tmp_path: Path, docker_socket: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("WATCH_IMAGE=wp:old\nPOSTGRES_PASSWORD=old-pg\nMINIO_ROOT_USER=watch\n"
                        "MINIO_ROOT_PASSWORD=old-minio\nDOCKER_GID=0\n")
    out = _write_env(env_file, docker_socket).stdout
    values = _values(env_file)
    # The old stack's superuser was `dagster`; its passwords stay; the app gets its own.
    assert values["POSTGRES_SUPERUSER"] == "dagster"
    assert (values["POSTGRES_PASSWORD"], values["MINIO_ROOT_PASSWORD"]) == ("old-pg", "old-minio")
    assert values["WATCH_DB_PASSWORD"] and values["WATCH_S3_SECRET_ACCESS_KEY"]
    assert values["DOCKER_GID"] == str(docker_socket.stat().st_gid)
    assert "added WATCH_DB_PASSWORD" in out
    assert "old-pg" not in out and values["WATCH_DB_PASSWORD"] not in out


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed")
def test_compose_refuses_to_start_without_the_sockets_group(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    missing = tmp_path / "no-docker.sock"
    result = subprocess.run(["bash", str(DOCKER / "write-env.sh"), "--env-file", str(env_file),
                             "--socket", str(missing)], capture_output=True, text=True,
                            timeout=60, check=True)
    assert "DOCKER_GID" in result.stderr and "DOCKER_GID" not in _values(env_file)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("WATCH_", "DAGSTER_", "DOCKER_", "POSTGRES_", "MINIO_"))}

    def config() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(COMPOSE), "--env-file", str(env_file), "-f",
                               str(DOCKER / "compose.yaml"), "config"], capture_output=True,
                              text=True, timeout=120, env=clean, cwd=tmp_path)

    refused = config()
    assert refused.returncode != 0
    assert "DOCKER_GID is not set - run docker/build.sh" in refused.stderr, refused.stderr
    with env_file.open("a") as f:
        f.write("DOCKER_GID=4242\n")
    rendered = config()
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    assert services["daemon"]["group_add"] == ["4242"]
    assert not any("docker.sock" in str(v) for v in services["webserver"].get("volumes", []))
    secrets = _values(env_file)
    for service in ("webserver", "daemon", "code-server"):
        values = set(map(str, services[service]["environment"].values()))
        assert secrets["POSTGRES_PASSWORD"] not in values, service
        assert secrets["MINIO_ROOT_PASSWORD"] not in values, service
