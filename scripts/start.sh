#!/usr/bin/env bash
# Install everything, then start watch_pipeline on the embedded default: Dagster (webserver +
# daemon, `dg dev`) with SQLite storage in ./.dagster_home, the watch folder ./watch, a local
# object store, and faster-whisper tiny.en on the CPU. Drop media into ./watch and read
# transcripts with the CLI (`. scripts/env.sh` first).
#
# Beside Dagster runs `watch-pipeline events`, the file-system events watcher (inotify) that
# lets a file dropped into ./watch be imported within seconds of its writer closing it.
#
# Stop with Ctrl-C or SIGTERM: Dagster and every process it started (webserver, daemon, code
# server, run workers), and the events watcher, are asked to stop, and whatever still runs
# STOP_GRACE_SECONDS later is killed, so the script is gone within 10 s. An import cut short is
# retried on the next start.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
./scripts/setup.sh

export DAGSTER_HOME=${DAGSTER_HOME:-$ROOT/.dagster_home}
export WATCH_FOLDER_PATH=${WATCH_FOLDER_PATH:-$ROOT/watch}
export WATCH_IMPORT_ROOT=${WATCH_IMPORT_ROOT:-$ROOT/import}
export WATCH_TEMP_DIR=${WATCH_TEMP_DIR:-$DAGSTER_HOME/tmp}
export HF_HUB_OFFLINE=1
# Dagster 1.13 warns about its own `owners` parameter whenever a sensor's job gets resources
# bound; nothing here sets owners. Only that message is silenced.
export PYTHONWARNINGS=${PYTHONWARNINGS:-"ignore:Parameter \`owners\` of initializer:Warning"}
STOP_GRACE_SECONDS=${STOP_GRACE_SECONDS:-6}
mkdir -p "$DAGSTER_HOME" "$WATCH_FOLDER_PATH" "$WATCH_IMPORT_ROOT" "$WATCH_TEMP_DIR"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

.venv/bin/watch-pipeline db upgrade
# First start: watch the root of ./watch, checking every minute.
if [ "$(.venv/bin/watch-pipeline source list --json)" = "[]" ]; then
  .venv/bin/watch-pipeline source add --name watch --type local --path . --polling-interval-minutes 1
fi
echo "[start] DAGSTER_HOME=$DAGSTER_HOME WATCH_FOLDER_PATH=$WATCH_FOLDER_PATH"
echo "[start] web UI on http://${WATCH_UI_HOST:-127.0.0.1}:${WATCH_UI_PORT:-3000} (Ctrl-C stops)"

# Dagster reads the instance configuration from DAGSTER_HOME; started from there (with the
# workspace named), it does not mistake the checkout's dagster.yaml for a forgotten one.
cd "$DAGSTER_HOME"
# Job control gives Dagster a process group of its own: one signal reaches all its processes
# (run workers included), and never the shell or service manager that started this script.
set -m
"$ROOT/.venv/bin/watch-pipeline" events &
events_pid=$!
"$ROOT/.venv/bin/dg" dev -w "$ROOT/workspace.yaml" \
  -h "${WATCH_UI_HOST:-127.0.0.1}" -p "${WATCH_UI_PORT:-3000}" &
dagster_pid=$!
set +m

group_alive() { kill -0 -- "-$dagster_pid" 2>/dev/null || kill -0 -- "-$events_pid" 2>/dev/null; }

stop() {
  trap '' INT TERM HUP
  echo "[start] stopping Dagster (at most ${STOP_GRACE_SECONDS}s, then killed)" >&2
  kill -INT -- "-$dagster_pid" 2>/dev/null || true
  kill -TERM -- "-$events_pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_GRACE_SECONDS))
  while group_alive && ((SECONDS < deadline)); do sleep 0.2; done
  if group_alive; then
    echo "[start] Dagster did not stop in time: killing its processes" >&2
    kill -KILL -- "-$dagster_pid" 2>/dev/null || true
    kill -KILL -- "-$events_pid" 2>/dev/null || true
  fi
  wait "$dagster_pid" "$events_pid" 2>/dev/null || true
  echo "[start] stopped" >&2
  exit 0
}
trap stop INT TERM HUP

status=0
wait "$dagster_pid" || status=$?
# Dagster ended on its own (a crash): leave none of its processes, nor the watcher, behind.
trap '' INT TERM HUP
kill -KILL -- "-$dagster_pid" 2>/dev/null || true
kill -TERM -- "-$events_pid" 2>/dev/null || true
exit "$status"
