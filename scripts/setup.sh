#!/usr/bin/env bash
# Install what watch_pipeline needs on a Debian machine: system packages and the virtual
# environment from the committed lock file. Idempotent: a second run only checks.
# `--test` adds what only the test suite needs: Debian's Docker engine, docker-compose and
# debootstrap (the production stack test builds and runs our image).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(ffmpeg espeak-ng samba smbclient postgresql)
if [ "${1:-}" = "--test" ]; then
  APT_PACKAGES+=(docker.io docker-compose debootstrap)
fi
VENV=${WATCH_VENV:-.venv}
PYTHON=${PYTHON:-python3}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "[setup] installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$VENV/.watch_pipeline.stamp"
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing the Python environment into $VENV (from requirements.lock)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # The lock pins every package; the project itself is installed editable on top of it.
  "$VENV/bin/pip" install -q -r requirements.lock
  "$VENV/bin/pip" install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
