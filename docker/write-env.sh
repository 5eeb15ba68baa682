#!/usr/bin/env bash
# Write docker/.env for docker/compose.yaml, or bring an existing one up to date (build.sh runs it).
#
#   docker/write-env.sh [--env-file PATH] [--image TAG] [--socket PATH]
#
# A new file gets random passwords: the PostgreSQL superuser's and MinIO's root keys (for the
# postgres, minio and one-shot setup services only) and the app's own (its database role and its
# S3 access key, which the setup services create). An existing file keeps every value it has and
# gains what it lacks; a file from before the app had credentials of its own keeps its superuser
# (POSTGRES_SUPERUSER=dagster, the name the stack used then). DOCKER_GID is always the Docker
# socket's group as found now: the daemon (the run launcher) joins that group, nothing else does.
# Without a socket it is left out, and compose refuses to start until it is set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
env_file=$here/.env
image=${WATCH_IMAGE:-watch-pipeline:latest}
sock=/var/run/docker.sock
while (($#)); do
  case $1 in
    --env-file) env_file=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --socket) sock=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "write-env.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

umask 077
secret() { head -c 24 /dev/urandom | base64 | tr '+/' '-_'; }
has() { grep -q "^$1=" "$env_file"; }
add() {  # add NAME VALUE COMMENT: only when the file has no NAME yet
  if ! has "$1"; then
    printf '# %s\n%s=%s\n' "$3" "$1" "$2" >> "$env_file"
    echo "[env] $env_file: added $1"
  fi
}

if [ ! -f "$env_file" ]; then
  echo "[env] writing $env_file (passwords are random; keep the file private)"
  cat > "$env_file" <<ENV
# Written by docker/write-env.sh on $(date -u +%F). Read by docker compose (docker/compose.yaml).
WATCH_IMAGE=$image
# Drop media here; the containers read it as /watch (user id 10001 needs read access, and write
# access for sources with delete-after-import).
WATCH_FOLDER=$here/watch
# Riva on a GPU host: uncomment both lines (see README "Production").
# COMPOSE_PROFILES=gpu
# WATCH_TRANSCRIBER_BACKEND=riva
ENV
elif has POSTGRES_PASSWORD && ! has POSTGRES_SUPERUSER; then
  add POSTGRES_SUPERUSER dagster "the superuser this stack's database was created with"
fi
chmod 600 "$env_file"
add WATCH_IMPORT_FOLDER "$here/import" \
  "files brought by hand (media import, manual_import_job) are read from here, as /import"
add POSTGRES_SUPERUSER postgres "PostgreSQL superuser: for the postgres and setup services only"
add POSTGRES_PASSWORD "$(secret)" "its password"
add WATCH_DB_USER watch "the app's own PostgreSQL role (no superuser, createrole or createdb)"
add WATCH_DB_PASSWORD "$(secret)" "its password"
add MINIO_ROOT_USER watch "MinIO's root keys: for the minio and minio-setup services only"
add MINIO_ROOT_PASSWORD "$(secret)" "its secret"
add WATCH_S3_ACCESS_KEY_ID watch-app "the app's own S3 access key, limited to the bucket"
add WATCH_S3_SECRET_ACCESS_KEY "$(secret)" "its secret"

if [ -S "$sock" ]; then
  gid=$(stat -c %g "$sock")
  if ! has DOCKER_GID; then
    add DOCKER_GID "$gid" "the group owning $sock: the daemon launches run containers through it"
  elif [ "$(sed -n 's/^DOCKER_GID=//p' "$env_file")" != "$gid" ]; then
    sed -i "s/^DOCKER_GID=.*/DOCKER_GID=$gid/" "$env_file"
    echo "[env] $env_file: DOCKER_GID is now $gid (the group owning $sock)"
  fi
elif ! has DOCKER_GID; then
  echo "[env] no Docker socket at $sock: set DOCKER_GID in $env_file to its group id" \
    "(compose refuses to start without it)" >&2
fi
