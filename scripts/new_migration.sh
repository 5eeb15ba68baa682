#!/usr/bin/env bash
# Autogenerate a catalog migration from the models against a scratch SQLite catalog at head.
set -euo pipefail
cd "$(dirname "$0")/.."
msg=${1:?usage: scripts/new_migration.sh "message"}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
DAGSTER_HOME=$scratch .venv/bin/python - "$msg" <<'PY'
import sys
from alembic import command
from watch_pipeline.catalog.db import Catalog, alembic_config

catalog = Catalog()  # migrates the scratch catalog to head first
with catalog.engine.begin() as conn:
    command.revision(alembic_config(conn), message=sys.argv[1], autogenerate=True)
PY
