#!/usr/bin/env bash
# Build the watch_pipeline image for the production stack (docker/compose.yaml).
#
#   docker/build.sh [--base IMAGE] [--tag TAG] [--no-env]
#
# 1. Fills docker/.build/wheelhouse on this host from ../requirements.lock (plus our own wheel):
#    the image build itself installs with `pip --no-index` and never reaches a registry.
# 2. Builds the image (default tag watch-pipeline:latest) on the base image (default
#    debian:bookworm-slim; docker/build-base.sh makes a local one with debootstrap).
# 3. Writes docker/.env with write-env.sh (the first time: random passwords for the superusers and
#    for the app's own database role and S3 key, the watch folder; later: adds what an older file
#    lacks) and the Docker socket's group, for `docker compose -f docker/compose.yaml up -d`.
#    --no-env skips this step.
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
  "$here/stack-setup.sh" "$here/postgres_setup.py" "$ctx/"
rm -rf "$root/build"  # setuptools' scratch directory from the wheel build

echo "[build] image $tag on $base"
docker build --build-arg "BASE_IMAGE=$base" -t "$tag" -f "$here/Dockerfile" "$ctx"

env_file="$here/.env"
if [ "$write_env" = 1 ]; then
  # New: random passwords and the socket's group; existing: what it lacks, DOCKER_GID refreshed.
  bash "$here/write-env.sh" --env-file "$env_file" --image "$tag"
fi
for name in WATCH_FOLDER WATCH_IMPORT_FOLDER; do
  dir=$( [ "$write_env" = 1 ] && sed -n "s/^$name=//p" "$env_file" || true)
  if [ -n "$dir" ] && [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown 10001:10001 "$dir"; else chmod 0777 "$dir"; fi
  fi
done
echo "[build] done: $tag. Start the stack with: docker compose -f docker/compose.yaml up -d"
