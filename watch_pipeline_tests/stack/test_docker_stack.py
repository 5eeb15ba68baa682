"""The production stack, for real: our image built with docker/build.sh on a base image made
here with debootstrap (no registry), docker/compose.yaml started with a loopback-only test
override, and a file dropped into the mounted watch folder that becomes a transcript through the
containers, its run launched by the DockerRunLauncher in a container of its own.

Skipped only when no Docker daemon can be started (not root, or dockerd missing or failing).
The image is built in the background while the rest of the suite runs
(``fixtures/docker_stack.py``); this test runs last.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
import yaml

from watch_pipeline_tests.fixtures.docker_stack import IMAGE

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
OVERRIDE = Path(__file__).with_name("compose.test.yaml")
# Passwords the stack receives; none may show up in any container's log. The superuser's and
# MinIO root's (PG_ROOT_SECRET, S3_ROOT_SECRET) may not even reach the app's containers.
PG_ROOT_SECRET = "pg-Secret-4d1e9c"
S3_ROOT_SECRET = "s3-Secret-77b0aa"
PG_APP_SECRET = "pg-App-Secret-90c2f1"
S3_APP_SECRET = "s3-App-Secret-5be7d3"
APP_ROLE = "watch"
APP_KEY = "watch-app"

pytestmark = pytest.mark.slow


def _run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _inspect(container_id: str) -> dict:
    (info,) = json.loads(_run(["docker", "inspect", container_id], timeout=60).stdout)
    return info


def _env(info: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in info["Config"]["Env"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    tmp: Path
    name: str = field(default_factory=lambda: f"wptest{os.getpid()}")
    ports: dict[str, int] = field(default_factory=dict)
    _engines: dict[str, sa.Engine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.watch = self.tmp / "watch"
        self.watch.mkdir()
        self.imports = self.tmp / "import"
        self.imports.mkdir()
        self.env_file = self.tmp / "empty.env"  # never the developer's docker/.env
        self.env_file.write_text("")
        self.rendered = DOCKER / "compose.yaml"
        self.ports = {k: _free_port() for k in ("pg", "s3", "code", "web")}
        self.env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("WATCH_", "DAGSTER_", "COMPOSE_", "RIVA_"))},
            "WATCH_IMAGE": IMAGE, "WATCH_STACK": self.name, "WATCH_FOLDER": str(self.watch),
            "WATCH_IMPORT_FOLDER": str(self.imports),
            "POSTGRES_PASSWORD": PG_ROOT_SECRET, "MINIO_ROOT_USER": "testing",
            "MINIO_ROOT_PASSWORD": S3_ROOT_SECRET,
            "WATCH_DB_PASSWORD": PG_APP_SECRET, "WATCH_S3_SECRET_ACCESS_KEY": S3_APP_SECRET,
            "PG_PORT": str(self.ports["pg"]), "S3_PORT": str(self.ports["s3"]),
            "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.ports["pg"]),
            "WATCH_S3_ENDPOINT_URL": f"http://127.0.0.1:{self.ports['s3']}",
            "WATCH_CODE_SERVER_HOST": "127.0.0.1",
            "WATCH_CODE_SERVER_PORT": str(self.ports["code"]),
            "WATCH_WEBSERVER_PORT": str(self.ports["web"]),
            "WATCH_SENSOR_INTERVAL_SECONDS": "3",
            # What build.sh writes: the socket's group (the fixture's dockerd made the socket).
            "DOCKER_GID": str(Path("/var/run/docker.sock").stat().st_gid),
        }

    def _compose(self, files: list[Path], *args: str, timeout: float,
                 check: bool) -> subprocess.CompletedProcess[str]:
        binary = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
        options = [x for f in files for x in ("-f", str(f))]
        return _run([*binary, "--env-file", str(self.env_file), "--project-directory",
                     str(DOCKER), "-p", self.name, *options, *args],
                    timeout=timeout, env=self.env, check=check)

    def render(self) -> None:
        """Merge docker/compose.yaml with the test override into one file. Published ports
        cannot be combined with host networking, and an override can add keys but not remove
        them, so they are dropped here from the merged result."""
        merged = yaml.safe_load(self._compose([DOCKER / "compose.yaml", OVERRIDE], "config",
                                              timeout=120, check=True).stdout)
        for service in merged["services"].values():
            if service.get("network_mode") == "host":
                service.pop("ports", None)
                service.pop("networks", None)
        self.rendered = self.tmp / "compose.rendered.yaml"
        self.rendered.write_text(yaml.safe_dump(merged, sort_keys=False))

    def compose(self, *args: str, timeout: float = 600,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._compose([self.rendered], *args, timeout=timeout, check=check)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "300", check=False).stdout

    def _engine(self, db: str) -> sa.Engine:
        """Connect as the app's role, with its password: the way the containers connect."""
        if db not in self._engines:
            self._engines[db] = sa.create_engine(
                f"postgresql+psycopg2://{APP_ROLE}:{PG_APP_SECRET}@127.0.0.1:{self.ports['pg']}"
                f"/{db}", pool_pre_ping=True)
        return self._engines[db]

    def catalog(self) -> sa.Engine:
        return self._engine("watch_catalog")

    def dagster_db(self) -> sa.Engine:
        return self._engine("dagster")

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def health(self, service: str) -> str:
        cid = self.container(service)
        if not cid:
            return "missing"
        return _run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid],
                    timeout=60).stdout.strip()

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(sa.exc.OperationalError):
                if predicate():
                    return
            time.sleep(3)
        raise AssertionError(f"timed out waiting for {what}; logs:\n{self.logs()[-12000:]}")

    def run_containers(self) -> list[dict]:
        out = _run(["docker", "ps", "-a", "--filter", "label=dagster/run_id", "--filter",
                    f"ancestor={IMAGE}", "--format", "{{json .}}"], timeout=60).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def down(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        for c in self.run_containers():
            _run(["docker", "rm", "-f", c["ID"]], timeout=120, check=False)
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)


@pytest.fixture
def stack(stack_image: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    s.render()
    try:
        yield s
    finally:
        s.down()


def test_dropped_file_becomes_a_transcript_through_the_containers(
    stack: Stack, speech_factory, tmp_path: Path
) -> None:
    image_user = _run(["docker", "image", "inspect", "-f", "{{.Config.User}}", IMAGE],
                      timeout=60).stdout.strip()
    assert image_user == "watch", "the image must run as its non-root user"

    wav = speech_factory("the quick brown fox jumps over the lazy dog", tmp_path / "fox.wav")
    dropped = stack.watch / "fox.wav"
    shutil.copyfile(wav, dropped)
    os.chmod(dropped, 0o644)
    past = time.time() - 3600  # long since written: stable at its first sighting
    os.utime(dropped, (past, past))

    stack.compose("up", "-d", timeout=900)

    def completed() -> list[tuple]:
        with stack.catalog().connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(
                "SELECT id, filename, object_key FROM media_file WHERE status = 'completed'")]

    def transcribed() -> bool:
        with stack.dagster_db().connect() as conn:
            failed = conn.exec_driver_sql("SELECT count(*) FROM runs WHERE status = 'FAILURE'")
            if failed.scalar():
                raise AssertionError(f"an import run failed; logs:\n{stack.logs()[-12000:]}")
        return len(completed()) == 1

    stack.wait_for(transcribed, 600, "the transcript")
    (media_id, filename, object_key), = completed()
    assert filename == "fox.wav"

    transcript = stack.compose("run", "--rm", "--no-deps", "setup", "watch-pipeline", "media",
                               "transcript", str(media_id), "--format", "txt").stdout.lower()
    assert "quick" in transcript and "fox" in transcript
    # The run container made the previews from the object in the bucket (a presigned URL).
    shown = json.loads(stack.compose("run", "--rm", "--no-deps", "setup", "watch-pipeline",
                                     "media", "show", str(media_id), "--json").stdout)
    folder = object_key.rsplit("/", 1)[0]
    assert shown["previews"]["waveform"] == f"{folder}/waveform.json", shown["previews"]
    assert shown["previews"]["waveform_png"] == f"{folder}/waveform.png", shown["previews"]

    # The import ran in a container of its own, launched by the DockerRunLauncher.
    with stack.dagster_db().connect() as conn:
        launched = [r[0] for r in conn.exec_driver_sql(
            "SELECT value FROM run_tags WHERE key = 'docker/container_id'")]
        statuses = [r[0] for r in conn.exec_driver_sql("SELECT status FROM runs")]
    assert launched, "no run was launched in a container"
    assert "SUCCESS" in statuses and "FAILURE" not in statuses, statuses
    containers = {c["ID"]: c for c in stack.run_containers()}
    assert any(cid.startswith(short) for cid in launched for short in containers), (
        launched, containers)
    assert all("Exited (0)" in c["Status"] for c in containers.values()), containers

    # Least privilege. A run container holds the app's credentials only: no superuser password,
    # no MinIO root key, under any name.
    for cid in containers:
        env = _env(_inspect(cid))
        leaked = [k for k, v in env.items() if PG_ROOT_SECRET in v or S3_ROOT_SECRET in v
                  or k in ("POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")]
        assert not leaked, f"run container {cid} holds root credentials in {leaked}"
        assert (env["DAGSTER_PG_USERNAME"], env["DAGSTER_PG_PASSWORD"], env["PGPASSWORD"]) == (
            APP_ROLE, PG_APP_SECRET, PG_APP_SECRET)
        assert (env["WATCH_S3_ACCESS_KEY_ID"], env["WATCH_S3_SECRET_ACCESS_KEY"]) == (
            APP_KEY, S3_APP_SECRET)
    # So do the long-lived services; only the daemon has the Docker socket (and the group that
    # opens it); the webserver has no key volume and no object store or catalog secret.
    mounts, envs = {}, {}
    for service in ("code-server", "webserver", "daemon"):
        info = _inspect(stack.container(service))
        mounts[service] = {m["Destination"] for m in info["Mounts"]}
        envs[service] = _env(info)
        assert not [k for k, v in envs[service].items()
                    if PG_ROOT_SECRET in v or S3_ROOT_SECRET in v], service
        groups = info["HostConfig"]["GroupAdd"] or []
        assert (stack.env["DOCKER_GID"] in groups) == (service == "daemon"), (service, groups)
    assert {s for s, m in mounts.items() if "/var/run/docker.sock" in m} == {"daemon"}, mounts
    assert "/var/lib/watch/keys" not in mounts["webserver"], mounts["webserver"]
    assert not {"PGPASSWORD", "WATCH_S3_SECRET_ACCESS_KEY", "RIVA_API_KEY"} & set(
        envs["webserver"])

    # The app's PostgreSQL role (the tests connect as it, with its password) owns both databases'
    # tables and can do nothing more: not superuser, no role or database creation.
    for engine in (stack.catalog(), stack.dagster_db()):
        with engine.connect() as conn:
            role = conn.exec_driver_sql(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls"
                " FROM pg_roles WHERE rolname = current_user").one()
            assert tuple(role) == (APP_ROLE, False, False, False, False), role
            tables, foreign = conn.exec_driver_sql(
                "SELECT count(*), count(*) FILTER (WHERE tableowner <> current_user)"
                " FROM pg_tables WHERE schemaname = 'public'").one()
            assert tables > 0 and foreign == 0, (tables, foreign)
    for statement in ("CREATE ROLE intruder", "CREATE ROLE intruder SUPERUSER"):
        with pytest.raises(sa.exc.ProgrammingError, match="InsufficientPrivilege"), \
                stack.catalog().connect() as conn:
            conn.exec_driver_sql(statement)

    # The media went to the S3 server (moto here, MinIO in production), in the bucket that the
    # setup services created; the app's key is an IAM user whose one policy reaches only that
    # bucket (moto stands in for `mc admin`, see compose.test.yaml).
    endpoint = f"http://127.0.0.1:{stack.ports['s3']}"
    root = {"endpoint_url": endpoint, "region_name": "us-east-1",
            "aws_access_key_id": "testing", "aws_secret_access_key": S3_ROOT_SECRET}
    s3 = boto3.client("s3", **root)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="watch-media").get("Contents", [])]
    assert object_key in keys, keys
    iam = boto3.client("iam", **root)
    assert iam.list_user_policies(UserName=APP_KEY)["PolicyNames"] == ["watch-app"]
    policy = iam.get_user_policy(UserName=APP_KEY, PolicyName="watch-app")["PolicyDocument"]
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {"arn:aws:s3:::watch-media", "arn:aws:s3:::watch-media/*"}, policy

    # An upgrade re-runs the setup service: every step is safe to repeat and changes nothing.
    again = stack.compose("run", "--rm", "--no-deps", "setup").stdout
    assert "[setup] done" in again and "first start" not in again, again
    assert f"role {APP_ROLE}: checked" in again and "handed over" not in again, again
    with stack.catalog().connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM watch_source").scalar() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM media_file").scalar() == 1

    # Long-lived services report healthy; the UI answers; no password reached any log.
    for service in ("code-server", "webserver", "daemon"):
        stack.wait_for(lambda s=service: stack.health(s) == "healthy", 300, f"{service} healthy")
    with urllib.request.urlopen(
            f"http://127.0.0.1:{stack.ports['web']}/server_info", timeout=30) as response:
        assert response.status == 200
    logs = stack.logs()
    for secret in (PG_ROOT_SECRET, S3_ROOT_SECRET, PG_APP_SECRET, S3_APP_SECRET):
        assert secret not in logs
