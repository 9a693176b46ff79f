#!/usr/bin/env bash
# The offline demo: bring the local stack up (Prefect + MLflow on 127.0.0.1), run the
# end-to-end pipeline on the demo recipe with the small PyPI model, print where to look.
# Data: $RMFLOW_DATA_DIR or --data-dir DIR when given (a hub mirror), else the built-in
# GENERATED sample (said plainly in the output).
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1
RMFLOW=.venv/bin/rmflow
$RMFLOW up
# shellcheck disable=SC1091
source .rmflow/env.sh
$RMFLOW run demo "$@"
