#!/bin/sh
# The compose stack's one-shot `setup` service: as the PostgreSQL superuser, make sure the app's
# own role exists and owns both databases (postgres_setup.py); then, as that role, bring both
# databases to the newest schema, check the object store's bucket with the app's access key, and
# watch /watch when no source is configured yet. Safe to run again (every upgrade runs it before
# the long-lived services start).
set -eu
echo "[setup] PostgreSQL: the app's role and databases (postgres_setup.py)"
python /opt/dagster/app/postgres_setup.py
# The superuser's password is needed no further.
unset POSTGRES_PASSWORD
echo "[setup] catalog schema (watch-pipeline db upgrade)"
watch-pipeline db upgrade
echo "[setup] Dagster storage schema (dagster instance migrate)"
dagster instance migrate
echo "[setup] object store"
watch-pipeline store check --create-bucket
if [ "$(watch-pipeline source list --json)" = "[]" ]; then
  echo "[setup] first start: watching the root of the mounted watch folder every minute"
  watch-pipeline source add --name watch --type local --path . --polling-interval-minutes 1
fi
echo "[setup] done"
