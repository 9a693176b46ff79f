#!/usr/bin/env bash
# Fill bench/.gpu_wheels/ (git-ignored) with the wheels bench/gpu_check.sh installs on the GPU
# machine, which has torch, transformers, accelerate, pyarrow, pandas, ... but no TRL, DeepSpeed,
# datasets or pydantic, and cannot reach any package index (/work/.library/device/KINDS.md).
#
# Run HERE, with the PyPI mirror reachable:   bash bench/gpu_wheels.sh
# Then on the device:  run(command="bash bench/gpu_check.sh", carry=["bench/.gpu_wheels"])
#
# Versions are those of this repo's .venv (TRL and DeepSpeed exactly; their runtime needs that the
# GPU image lacks). Every wheel is for CPython 3.12 on manylinux x86_64; DeepSpeed is an sdist on
# PyPI, so its wheel is built here with no compiled ops (DS_BUILD_OPS=0: pure Python, and rmflow's
# DeepSpeed engine uses torch's AdamW, no DeepSpeed op). Everything travels with the git tree in
# one 64 MiB budget, so the script prints the total.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_PY=${VENV_PY:-.venv/bin/python}
OUT=bench/.gpu_wheels

version() { "$VENV_PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

# Not in the GPU image, needed at run time (checked by importing trl.RewardTrainer, deepspeed and
# rmflow's training path with every other package missing from the image blocked):
#   trl -> datasets -> dill, multiprocess ; deepspeed -> hjson, pydantic -> pydantic-core,
#   annotated-types, typing-inspection ; and typing-extensions, which the image has, but
#   pydantic(-core) needs >= 4.16 (Sentinel) and the image's version is not known: the carried
#   one comes first on PYTHONPATH (typing-extensions only adds names).
PURE=(trl datasets dill multiprocess hjson pydantic annotated-types typing-inspection typing-extensions)
BINARY=(pydantic-core)

rm -rf "$OUT" && mkdir -p "$OUT"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for name in "${PURE[@]}" "${BINARY[@]}"; do
    spec="$name==$(version "$name")"
    echo "download $spec" >&2
    "$VENV_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d "$OUT" "$spec"
done

ds="deepspeed==$(version deepspeed)"
echo "build $ds (DS_BUILD_OPS=0: no compiled ops)" >&2
DS_BUILD_OPS=0 "$VENV_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "$ds"

# one version of each (two stop the --no-deps install), all for this Python and platform
ls "$OUT"/*.whl | sed 's#.*/##' | cut -d- -f1 | sort | uniq -d | grep . && { echo "two versions above" >&2; exit 1; }
ls -l "$OUT" >&2
wheels=$(du -cb "$OUT"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
others=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
total=$((wheels + tree + ${others:-0}))
"$VENV_PY" -c 'import sys; w, t, o = (int(x) / 2**20 for x in sys.argv[1:]); print(
    f"wheels {w:.1f} MiB + git tree {t:.1f} MiB + untracked {o:.1f} MiB = {w + t + o:.1f} MiB of 64 MiB")' \
    "$wheels" "$tree" "${others:-0}"
[ "$total" -lt $((64 * 1048576)) ] || { echo "over the 64 MiB the device tool carries" >&2; exit 1; }
