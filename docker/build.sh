#!/usr/bin/env bash
# Build the watch_pipeline image for the production stack (docker/compose.yaml).
#
#   docker/build.sh [--base IMAGE] [--tag TAG] [--no-env]
#
# 1. Fills docker/.build/wheelhouse on this host from ../requirements.lock (plus our own wheel):
#    the image build itself installs with `pip --no-index` and never reaches a registry.
# 2. Builds the image (default tag watch-pipeline:latest) on the base image (default
#    debian:bookworm-slim; docker/build-base.sh makes a local one with debootstrap).
# 3. On the first run, writes docker/.env (random database and MinIO passwords, the watch folder,
#    the docker socket's group) for `docker compose -f docker/compose.yaml up -d`. --no-env skips
#    this step.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
base=${WATCH_BASE_IMAGE:-debian:bookworm-slim}
tag=${WATCH_IMAGE:-watch-pipeline:latest}
write_env=1
while (($#)); do
  case $1 in
    --base) base=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --no-env) write_env=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v docker >/dev/null || { echo "build.sh: docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build.sh: the Docker daemon is not reachable" >&2; exit 1; }

# The wheels must match the image's Python (3.11, Debian bookworm's).
python=""
for candidate in "$root/.venv/bin/python" python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
     && "$candidate" -m pip --version >/dev/null 2>&1; then
    python=$candidate; break
  fi
done
[ -n "$python" ] || { echo "build.sh: needs Python 3.11 with pip on the host to fill the" \
  "wheelhouse (Debian bookworm: apt-get install python3-pip, or run scripts/setup.sh)" >&2; exit 1; }

ctx="$here/.build"
mkdir -p "$ctx/wheelhouse" "$ctx/project"
lock_hash=$(sha256sum "$root/requirements.lock" | cut -d' ' -f1)
if [ "$(cat "$ctx/wheelhouse.stamp" 2>/dev/null)" != "$lock_hash" ]; then
  echo "[build] wheelhouse from requirements.lock ($ctx/wheelhouse)"
  rm -rf "$ctx/wheelhouse" && mkdir -p "$ctx/wheelhouse"
  "$python" -m pip wheel -q --disable-pip-version-check --wheel-dir "$ctx/wheelhouse" \
    -r "$root/requirements.lock"
  echo "$lock_hash" > "$ctx/wheelhouse.stamp"
else
  echo "[build] wheelhouse up to date with requirements.lock"
fi
rm -f "$ctx"/project/*.whl
"$python" -m pip wheel -q --disable-pip-version-check --no-deps --wheel-dir "$ctx/project" "$root"
cp "$root/requirements.lock" "$here/dagster.yaml" "$here/workspace.yaml" "$here/healthcheck.py" \
  "$here/stack-setup.sh" "$ctx/"
rm -rf "$root/build"  # setuptools' scratch directory from the wheel build

echo "[build] image $tag on $base"
docker build --build-arg "BASE_IMAGE=$base" -t "$tag" -f "$here/Dockerfile" "$ctx"

env_file="$here/.env"
if [ "$write_env" = 1 ] && [ ! -f "$env_file" ]; then
  echo "[build] first build: writing $env_file (passwords are random; keep the file private)"
  secret() { "$python" -c 'import secrets; print(secrets.token_urlsafe(24))'; }
  sock=/var/run/docker.sock
  umask 077
  cat > "$env_file" <<ENV
# Written by docker/build.sh on $(date -u +%F). Read by docker compose (docker/compose.yaml).
WATCH_IMAGE=$tag
# Drop media here; the containers read it as /watch (user id 10001 needs read access, and write
# access for sources with delete-after-import).
WATCH_FOLDER=$here/watch
POSTGRES_PASSWORD=$(secret)
MINIO_ROOT_USER=watch
MINIO_ROOT_PASSWORD=$(secret)
# The group owning $sock: the daemon and webserver launch and stop run containers through it.
DOCKER_GID=$( [ -S $sock ] && stat -c %g $sock || echo 0)
# Riva on a GPU host: uncomment both lines (see README "Production").
# COMPOSE_PROFILES=gpu
# WATCH_TRANSCRIBER_BACKEND=riva
ENV
fi
watch_dir=$( [ "$write_env" = 1 ] && sed -n 's/^WATCH_FOLDER=//p' "$env_file" || true)
if [ -n "$watch_dir" ] && [ ! -d "$watch_dir" ]; then
  mkdir -p "$watch_dir"
  if [ "$(id -u)" -eq 0 ]; then chown 10001:10001 "$watch_dir"; else chmod 0777 "$watch_dir"; fi
fi
echo "[build] done: $tag. Start the stack with: docker compose -f docker/compose.yaml up -d"
