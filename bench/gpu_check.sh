#!/usr/bin/env bash
# The GPU check of issue 14, as one command for a lent GPU machine (bench/gpu_check.py says what
# it measures). That machine has torch, transformers and accelerate but no TRL, DeepSpeed or
# datasets, and cannot fetch anything: the wheels travel in bench/.gpu_wheels (made here by
# bench/gpu_wheels.sh) and are installed with no index into a folder of their own.
#
#   run(command="bash bench/gpu_check.sh", carry=["bench/.gpu_wheels"], timeout_s=540)
#
# Prints ONE JSON line on stdout (bench/gpu_check.py's; everything else goes to stderr) and exits
# non-zero when a stage failed. Extra arguments go to gpu_check.py (--dry: the CPU check; --steps N).
# Where $OUT is set (the device tool), the JSON line and the whole log are also written there.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${RMFLOW_GPU_WHEELS:-bench/.gpu_wheels}
SITE=${RMFLOW_GPU_SITE:-/tmp/rmflow-gpu-site}

fail() {  # the one JSON line, also when set-up fails
    "$PY" -c 'import json, sys; print(json.dumps({"ok": False, "errors": ["setup: " + sys.argv[1]]}))' "$1"
    exit 1
}

if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    fail "no wheels in $WHEELS: run 'bash bench/gpu_wheels.sh' where PyPI is reachable and carry $WHEELS"
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl >&2 || fail "pip could not install the wheels in $WHEELS into $SITE (see stderr)"

export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

{  # what the image holds, for the record (a version mismatch is the likeliest failure)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|transformers|accelerate|huggingface.hub|tokenizers|pyarrow|fsspec|pandas|numpy|typing.extensions|flash.attn|trl|datasets|deepspeed|pydantic) '
} >&2

if [ -n "${OUT:-}" ]; then
    "$PY" bench/gpu_check.py "$@" 2> >(tee "$OUT/gpu_check.log" >&2) | tee "$OUT/gpu_check.json"
else
    "$PY" bench/gpu_check.py "$@"
fi
