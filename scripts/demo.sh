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
# `rmflow run` finds the running stack: the run shows in the Prefect UI and logs to the MLflow server.
$RMFLOW run demo "$@"
echo
echo "The stack keeps running for the UIs; stop it with: make down"
