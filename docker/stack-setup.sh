#!/bin/sh
# The compose stack's one-shot `setup` service: bring both databases to the newest schema, make
# sure the object store's bucket exists, and watch /watch when no source is configured yet.
# Safe to run again (every upgrade runs it before the long-lived services start).
set -eu
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
