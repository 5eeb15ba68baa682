"""The app's own credentials, on real servers (no Docker needed).

PostgreSQL: ``docker/postgres_setup.py`` (the setup service's first step) makes a login role with
no superuser, createrole or createdb right that owns both databases, hands over what a stack made
before it left to the superuser, and is safe to repeat. S3: compose.yaml's policy for the app's
access key lets the object store do its whole job in the bucket and nothing outside it (moto's
server with IAM checks on).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg2
import pytest
from psycopg2 import sql

from watch_pipeline.store.base import ObjectStoreError
from watch_pipeline.store.s3 import S3ObjectStore
from watch_pipeline_tests.fixtures.postgres import PostgresServer
from watch_pipeline_tests.fixtures.s3_server import S3Server
from watch_pipeline_tests.stack.test_compose_config import DOCKER, app_s3_policy


def _load_postgres_setup() -> ModuleType:
    spec = importlib.util.spec_from_file_location("postgres_setup", DOCKER / "postgres_setup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


postgres_setup = _load_postgres_setup()


def _admin(server: PostgresServer, dbname: str = "postgres") -> psycopg2.extensions.connection:
    conn = psycopg2.connect(host=server.host, port=server.port, user=server.user, dbname=dbname)
    conn.autocommit = True
    return conn


def _query(server: PostgresServer, dbname: str, query: str, *args: object) -> list[tuple]:
    conn = _admin(server, dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    finally:
        conn.close()


class Stack:
    """One test's names on the session's cluster: a role and its two databases."""

    def __init__(self, server: PostgresServer) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.server = server
        self.role = f"app_{suffix}"
        self.dagster_db = f"dagster_{suffix}"
        self.catalog_db = f"catalog_{suffix}"

    def env(self, password: str) -> dict[str, str]:
        """The variables compose.yaml gives the setup service."""
        return {
            "DAGSTER_PG_HOST": self.server.host, "DAGSTER_PG_PORT": str(self.server.port),
            "DAGSTER_PG_USERNAME": self.role, "DAGSTER_PG_PASSWORD": password,
            "DAGSTER_PG_DB": self.dagster_db, "PGPASSWORD": password,
            "WATCH_CATALOG_URL": f"postgresql://{self.role}@{self.server.host}:"
                                 f"{self.server.port}/{self.catalog_db}",
            "POSTGRES_SUPERUSER": self.server.user, "POSTGRES_PASSWORD": "unused-with-trust",
        }

    def run(self, password: str = "first-Secret-1") -> list[str]:
        """Run the setup step; return what it says."""
        lines: list[str] = []
        postgres_setup.setup(postgres_setup.Settings.from_env(self.env(password)), lines.append)
        return lines

    def verifier(self) -> str:
        ((value,),) = _query(self.server, "postgres",
                             "SELECT rolpassword FROM pg_authid WHERE rolname = %s", self.role)
        return value

    def drop(self) -> None:
        conn = _admin(self.server)
        try:
            with conn.cursor() as cur:
                for db in (self.dagster_db, self.catalog_db):
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(db)))
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(self.role)))
        finally:
            conn.close()


@pytest.fixture
def stack(postgres_server: PostgresServer) -> Iterator[Stack]:
    s = Stack(postgres_server)
    yield s
    s.drop()


def test_setup_makes_an_unprivileged_role_owning_both_databases(stack: Stack) -> None:
    said = stack.run()
    assert f"role {stack.role}: created (no superuser, createrole or createdb)" in said
    ((attributes),) = _query(
        stack.server, "postgres",
        "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
        " FROM pg_roles WHERE rolname = %s", stack.role)
    assert attributes == (True, False, False, False, False, False)
    owners = dict(_query(stack.server, "postgres",
                         "SELECT datname, pg_get_userbyid(datdba) FROM pg_database"
                         " WHERE datname IN (%s, %s)", stack.dagster_db, stack.catalog_db))
    assert owners == {stack.dagster_db: stack.role, stack.catalog_db: stack.role}
    # Sent as a SCRAM verifier: the server never saw the password itself.
    assert stack.verifier().startswith("SCRAM-SHA-256$")
    # Nobody else may connect (PUBLIC lost CONNECT); the role itself creates its tables.
    ((public_connect,),) = _query(stack.server, "postgres",
                                  "SELECT has_database_privilege('public', %s, 'CONNECT')",
                                  stack.catalog_db)
    assert public_connect is False
    ((can_create,),) = _query(stack.server, stack.catalog_db,
                              "SELECT has_schema_privilege(%s, 'public', 'CREATE')", stack.role)
    assert can_create is True


def test_setup_is_safe_to_repeat_and_applies_a_new_password(stack: Stack) -> None:
    stack.run()
    first = stack.verifier()
    said = stack.run()
    assert f"role {stack.role}: checked (no superuser, createrole or createdb)" in said
    assert not [line for line in said if "handed over" in line or ": created" in line], said
    stack.run("second-Secret-2")
    assert stack.verifier() != first


def test_setup_takes_back_rights_and_objects_a_superuser_left(stack: Stack) -> None:
    # A stack from before: the databases, their tables, a sequence and an enum owned by the
    # superuser, and a role that somebody made too powerful.
    conn = _admin(stack.server)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE").format(
                sql.Identifier(stack.role)))
            for db in (stack.dagster_db, stack.catalog_db):
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    finally:
        conn.close()
    conn = _admin(stack.server, stack.catalog_db)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TYPE status AS ENUM ('new', 'done')")
            cur.execute("CREATE TABLE media_file (id serial PRIMARY KEY, status status)")
            cur.execute("CREATE SEQUENCE free_counter")
            cur.execute("CREATE VIEW done AS SELECT id FROM media_file WHERE status = 'done'")
    finally:
        conn.close()

    said = stack.run()
    assert f"database {stack.catalog_db}: 4 objects handed over to {stack.role}" in said, said
    ((attributes),) = _query(stack.server, "postgres",
                             "SELECT rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s",
                             stack.role)
    assert attributes == (False, False)
    owned = _query(
        stack.server, stack.catalog_db,
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        " AND c.relkind IN ('r', 'S', 'v')"
        " UNION ALL SELECT t.typname, pg_get_userbyid(t.typowner) FROM pg_type t"
        " JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public'"
        " AND t.typtype = 'e'")
    assert {name for name, _ in owned} == {"media_file", "media_file_id_seq", "free_counter",
                                           "done", "status"}
    assert {owner for _, owner in owned} == {stack.role}
    # As the owner now, the role can migrate its tables.
    conn = psycopg2.connect(host=stack.server.host, port=stack.server.port, user=stack.role,
                            dbname=stack.catalog_db)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE media_file ADD COLUMN note text")
            cur.execute("INSERT INTO media_file (status) VALUES ('new') RETURNING id")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"WATCH_CATALOG_URL": "postgresql://other@db:5432/watch_catalog"},
         "WATCH_CATALOG_URL must name the same user as DAGSTER_PG_USERNAME"),
        ({"PGPASSWORD": "different"}, "PGPASSWORD (the catalog's) must equal"),
        ({"POSTGRES_PASSWORD": ""}, "POSTGRES_PASSWORD is not set"),
        ({"POSTGRES_SUPERUSER": "APP"}, "must not be the superuser"),
    ],
)
def test_setup_refuses_an_inconsistent_environment_without_showing_a_password(
    stack: Stack, change: dict[str, str], message: str
) -> None:
    env = stack.env("first-Secret-1")
    env.update({k: stack.role if v == "APP" else v for k, v in change.items()})
    with pytest.raises(postgres_setup.SetupError, match=re.escape(message)) as raised:
        postgres_setup.Settings.from_env(env)
    assert "first-Secret-1" not in str(raised.value)


# --- S3: the app's access key --------------------------------------------------------------------

@pytest.fixture
def app_key(s3_server: S3Server, s3_bucket: str) -> Iterator[tuple[str, str]]:
    """A user holding only compose.yaml's app policy for ``s3_bucket``, while IAM is enforced."""
    iam = s3_server.client("iam")
    user = f"watch-app-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="watch-app",
                        PolicyDocument=json.dumps(app_s3_policy(s3_bucket)))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    s3_server.set_auth(enforced=True)
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        s3_server.set_auth(enforced=False)


def test_the_app_key_does_the_object_stores_whole_job_in_its_bucket_and_no_more(
    s3_server: S3Server, s3_bucket: str, app_key: tuple[str, str], tmp_path: Path
) -> None:
    key_id, secret = app_key

    def store(bucket: str, **options: int) -> S3ObjectStore:
        return S3ObjectStore(bucket, endpoint_url=s3_server.endpoint_url, region="us-east-1",
                             access_key_id=key_id, secret_access_key=secret, use_ssl=False,
                             prefix="media", **options)

    mine = store(s3_bucket, multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    assert mine.ensure_bucket(create=False) is False
    small = tmp_path / "small.wav"
    small.write_bytes(b"RIFF" + b"\0" * 1000)
    big = tmp_path / "big.wav"
    big.write_bytes(bytes(range(256)) * (11 * 2**20 // 256))  # three parts
    assert mine.put_file("a/small.wav", small).size == small.stat().st_size
    assert mine.put_file("a/big.wav", big).size == big.stat().st_size
    assert mine.head("a/big.wav") is not None
    assert mine.get_bytes("a/small.wav") == small.read_bytes()
    with mine.open("a/big.wav") as reader:
        reader.seek(2**20)
        assert reader.read(4) == big.read_bytes()[2**20:2**20 + 4]
    mine.delete("a/small.wav")
    assert mine.head("a/small.wav") is None

    # Outside its bucket the key is refused: no other bucket, no new bucket.
    admin = s3_server.client()
    other = f"other-{uuid.uuid4().hex[:8]}"
    s3_server.set_auth(enforced=False)
    admin.create_bucket(Bucket=other)
    s3_server.set_auth(enforced=True)
    try:
        with pytest.raises(ObjectStoreError, match="access denied"):
            store(other).put_file("x.wav", small)
        with pytest.raises(ObjectStoreError, match=r"access denied|cannot be"):
            store(f"new-{uuid.uuid4().hex[:8]}").ensure_bucket(create=True)
    finally:
        s3_server.set_auth(enforced=False)
        admin.delete_bucket(Bucket=other)
