#!/usr/bin/env bash
# Install everything, then run the whole test suite (lint, then pytest). Extra arguments go to
# pytest, e.g. `./scripts/test.sh -k catalog`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
export HF_HUB_OFFLINE=1
.venv/bin/ruff check watch_pipeline watch_pipeline_tests bench
exec .venv/bin/pytest "$@"
