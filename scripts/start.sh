#!/usr/bin/env bash
# Install everything, then start watch_pipeline on the embedded default: Dagster (webserver +
# daemon) with SQLite storage in ./.dagster_home, the watch folder ./watch, a local object store,
# and faster-whisper tiny.en on the CPU. Drop media into ./watch and read transcripts with the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/.dagster_home}
export WATCH_FOLDER_PATH=${WATCH_FOLDER_PATH:-$PWD/watch}
export WATCH_TEMP_DIR=${WATCH_TEMP_DIR:-$DAGSTER_HOME/tmp}
export HF_HUB_OFFLINE=1
mkdir -p "$DAGSTER_HOME" "$WATCH_FOLDER_PATH" "$WATCH_TEMP_DIR"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

.venv/bin/watch-pipeline db upgrade
# First start: watch the root of ./watch, checking every minute.
if [ "$(.venv/bin/watch-pipeline source list --json)" = "[]" ]; then
  .venv/bin/watch-pipeline source add --name watch --type local --path . --polling-interval-minutes 1
fi
echo "[start] DAGSTER_HOME=$DAGSTER_HOME WATCH_FOLDER_PATH=$WATCH_FOLDER_PATH"
echo "[start] web UI on http://${WATCH_UI_HOST:-127.0.0.1}:${WATCH_UI_PORT:-3000}"
exec .venv/bin/dagster dev -w workspace.yaml -h "${WATCH_UI_HOST:-127.0.0.1}" -p "${WATCH_UI_PORT:-3000}"
