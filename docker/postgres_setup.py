"""The setup service's first step: the app's own PostgreSQL role and the two databases it owns.

Connects as the superuser (``POSTGRES_SUPERUSER``, default ``postgres``, password
``POSTGRES_PASSWORD``; only the ``postgres`` and ``setup`` services get these) and makes sure that:

- the role ``DAGSTER_PG_USERNAME`` exists, logs in with ``DAGSTER_PG_PASSWORD``, and is neither
  superuser nor allowed to create roles or databases, replicate or bypass row security;
- Dagster's database (``DAGSTER_PG_DB``) and the catalog's (the database of ``WATCH_CATALOG_URL``,
  whose user must be the same role) exist, belong to that role, and only it (and superusers) may
  connect to them;
- every table, view, sequence, type and function in their ``public`` schemas belongs to that role
  (stacks made before the role existed had everything owned by the superuser).

The password is sent as a SCRAM verifier computed here, never in clear, so it cannot show up in
the server's log. Safe to run again (every upgrade does); a password changed in ``docker/.env``
takes effect. Exit 0 done, 1 with one line saying what is wrong (never a password).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, encrypt_password
from sqlalchemy.engine import make_url

# Attributes the app's role must not have (pg_roles columns) and the words that drop them.
FORBIDDEN_ATTRIBUTES = {
    "rolsuper": "NOSUPERUSER",
    "rolcreaterole": "NOCREATEROLE",
    "rolcreatedb": "NOCREATEDB",
    "rolreplication": "NOREPLICATION",
    "rolbypassrls": "NOBYPASSRLS",
}

# pg_class.relkind -> the ALTER statement's object word. Sequences come last: a sequence that
# belongs to a table column changes owner with its table (and refuses to change on its own).
_RELATION_KINDS = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW",
                   "m": "MATERIALIZED VIEW"}


class SetupError(Exception):
    """The environment is incomplete or inconsistent; the message names what to fix."""


@dataclass(frozen=True)
class Settings:
    """Where the server is, who administers it, and the app's role and databases."""

    host: str
    port: int
    admin_user: str
    admin_password: str
    role: str
    role_password: str
    databases: tuple[str, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read the compose file's variables; raise ``SetupError`` naming a missing one."""

        def need(name: str) -> str:
            value = env.get(name, "")
            if not value:
                raise SetupError(f"{name} is not set (docker/compose.yaml sets it for `setup`)")
            return value

        role = need("DAGSTER_PG_USERNAME")
        catalog = make_url(need("WATCH_CATALOG_URL"))
        if catalog.username != role:
            raise SetupError("WATCH_CATALOG_URL must name the same user as DAGSTER_PG_USERNAME")
        password = need("DAGSTER_PG_PASSWORD")
        if env.get("PGPASSWORD", password) != password:
            raise SetupError("PGPASSWORD (the catalog's) must equal DAGSTER_PG_PASSWORD")
        admin = env.get("POSTGRES_SUPERUSER") or "postgres"
        if admin == role:
            raise SetupError(f"the app's role {role!r} must not be the superuser")
        databases = tuple(dict.fromkeys([need("DAGSTER_PG_DB"), catalog.database or ""]))
        if "" in databases:
            raise SetupError("WATCH_CATALOG_URL names no database")
        return cls(host=need("DAGSTER_PG_HOST"), port=int(need("DAGSTER_PG_PORT")),
                   admin_user=admin, admin_password=need("POSTGRES_PASSWORD"), role=role,
                   role_password=password, databases=databases)


def _connect(settings: Settings, dbname: str) -> connection:
    conn = psycopg2.connect(host=settings.host, port=settings.port, user=settings.admin_user,
                            password=settings.admin_password, dbname=dbname, connect_timeout=30)
    conn.autocommit = True
    return conn


def ensure_role(conn: connection, role: str, password: str) -> bool:
    """Create or repair the login role; return True when it was created."""
    verifier = encrypt_password(password, role, conn)
    attributes = sql.SQL(" ").join(map(sql.SQL, ["LOGIN", *FORBIDDEN_ATTRIBUTES.values()]))
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        created = cur.fetchone() is None
        verb = "CREATE ROLE" if created else "ALTER ROLE"
        cur.execute(sql.SQL("{} {} {} PASSWORD {}").format(
            sql.SQL(verb), sql.Identifier(role), attributes, sql.Literal(verifier)))
    return created


def ensure_database(conn: connection, name: str, role: str) -> bool:
    """Create the database owned by ``role`` (or hand it over); return True when created."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        created = cur.fetchone() is None
        if created:
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(role)))
        else:
            cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(name), sql.Identifier(role)))
        cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    return created


def hand_over_objects(conn: connection, role: str) -> int:
    """Give ``role`` every object of the ``public`` schema it does not own; return the count."""
    changed = 0
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.oid::regclass::text, c.relkind FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f', 'v', 'm')"
            " AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)", (role,))
        statements = [(_RELATION_KINDS[kind], name) for name, kind in cur.fetchall()]
        for kind, name in statements:
            cur.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(
                sql.SQL(kind), sql.SQL(name), sql.Identifier(role)))
        changed += len(statements)
        # What is still someone else's now: free sequences, enum/domain/composite types, functions.
        for kind, query in (
            ("SEQUENCE", "SELECT c.oid::regclass::text FROM pg_class c"
                         " JOIN pg_namespace n ON n.oid = c.relnamespace"
                         " WHERE n.nspname = 'public' AND c.relkind = 'S'"
                         " AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)"),
            ("TYPE", "SELECT t.oid::regtype::text FROM pg_type t"
                     " JOIN pg_namespace n ON n.oid = t.typnamespace"
                     " WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c', 'r')"
                     " AND (t.typtype <> 'c' OR t.typrelid = 0 OR (SELECT relkind FROM pg_class"
                     " WHERE oid = t.typrelid) = 'c')"
                     " AND t.typowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)"),
            ("FUNCTION", "SELECT p.oid::regprocedure::text FROM pg_proc p"
                         " JOIN pg_namespace n ON n.oid = p.pronamespace"
                         " WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p', 'a', 'w')"
                         " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid"
                         " AND d.deptype = 'e')"
                         " AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)"),
        ):
            cur.execute(query, (role,))
            names = [row[0] for row in cur.fetchall()]
            for name in names:
                cur.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(
                    sql.SQL(kind), sql.SQL(name), sql.Identifier(role)))
            changed += len(names)
    return changed


def setup(settings: Settings, say: Callable[[str], object]) -> None:
    """Bring the role and the databases to the state the module docstring describes."""
    admin = _connect(settings, "postgres")
    try:
        created = ensure_role(admin, settings.role, settings.role_password)
        say(f"role {settings.role}: {'created' if created else 'checked'} (no superuser, "
            "createrole or createdb)")
        for name in settings.databases:
            created = ensure_database(admin, name, settings.role)
            say(f"database {name}: {'created' if created else 'checked'}, owner {settings.role}")
    finally:
        admin.close()
    for name in settings.databases:
        conn = _connect(settings, name)
        try:
            moved = hand_over_objects(conn, settings.role)
        finally:
            conn.close()
        if moved:
            say(f"database {name}: {moved} objects handed over to {settings.role}")


def main() -> int:
    """Run ``setup`` from the environment; return the exit code."""
    try:
        setup(Settings.from_env(os.environ), say=lambda line: sys.stdout.write(f"[setup] {line}\n"))
    except SetupError as exc:
        sys.stderr.write(f"[setup] postgres: {exc}\n")
        return 1
    except psycopg2.Error as exc:
        # libpq's messages name hosts, users and databases, never the password.
        sys.stderr.write(f"[setup] postgres: {type(exc).__name__}: {str(exc).strip()}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
