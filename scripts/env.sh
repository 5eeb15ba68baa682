# Source this file (`. scripts/env.sh`) to use the CLI against the embedded default started by
# scripts/start.sh: it points DAGSTER_HOME and WATCH_FOLDER_PATH at this checkout.
_wp_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
export DAGSTER_HOME=${DAGSTER_HOME:-$_wp_root/.dagster_home}
export WATCH_FOLDER_PATH=${WATCH_FOLDER_PATH:-$_wp_root/watch}
export WATCH_TEMP_DIR=${WATCH_TEMP_DIR:-$DAGSTER_HOME/tmp}
export HF_HUB_OFFLINE=1
export PATH="$_wp_root/.venv/bin:$PATH"
unset _wp_root
