#!/usr/bin/env bash
# The GPU recipe's one command on the device machine, from the repository root (README.md beside
# this file gives the device call): configs/lite0_vr_gpu.yaml trained in at most $FS_GPU_BUDGET_S
# seconds (540) from the start of this script, its result copied to $OUT.
#   1. the carried wheels (.whl) into /tmp/site; the repository itself on PYTHONPATH
#   2. recipe.py check: versions, accelerator, the pack (.gpu) and the init codec's sha256
#   3. a calibration run (2 epochs of $FS_GPU_CAL_STEPS steps, 150) and recipe.py plan: the
#      steps_per_epoch that fill the time left (FS_GPU_STEPS=N sets it, FS_GPU_CALIBRATE=0 keeps
#      the config's)
#   4. the training under `timeout`; stopped early, its last finished epoch is exported
#   5. $OUT: best.safetensors, summary.json, calibration.json, run.log
# Extra arguments are passed to every `frankensplit train` as they are (--set KEY=VALUE): the CPU
# try of tools/gpu_recipe/README.md runs this script with --set device=cpu and tiny step counts.
set -uo pipefail
start=$(date +%s)
budget=${FS_GPU_BUDGET_S:-540}
config=${FS_GPU_CONFIG:-configs/lite0_vr_gpu.yaml}
out=${OUT:-/tmp/fs-gpu-out}
work=${FS_GPU_WORK:-/tmp/fs-gpu-run}
py=${PYTHON:-python3}
left() { echo $((budget - ($(date +%s) - start))); }
mkdir -p "$out" "$work"
exec > >(tee -a "$out/run.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
echo "run.sh: config $config, budget ${budget}s, extra: $*"

if [ "${FS_GPU_INSTALL:-1}" = 1 ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
sets=()
for a in "$@"; do [ "$a" = --set ] || sets+=(--set "$a"); done  # recipe.py takes the same --set
$py tools/gpu_recipe/recipe.py check --config "$config" "${sets[@]}" || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

steps=${FS_GPU_STEPS:-}
if [ -z "$steps" ] && [ "${FS_GPU_CALIBRATE:-1}" = 1 ]; then
    cal=$(date +%s)
    timeout --signal=TERM $(($(left) - 120)) $py -m frankensplit train --config "$config" \
        --no-progress --out "$work/calibrate" \
        --set stages.0.epochs=2 --set "stages.0.steps_per_epoch=${FS_GPU_CAL_STEPS:-150}" "$@" \
        || { echo "run.sh: the calibration run failed"; exit 1; }
    cp "$work/calibrate/variable-rate/summary.json" "$out/calibration.json"
    steps=$($py tools/gpu_recipe/recipe.py plan --config "$config" "${sets[@]}" \
        --calibration "$work/calibrate" --wall $(($(date +%s) - cal)) --left "$(left)") || exit 1
fi
plan=()
[ -n "$steps" ] && plan=(--set "stages.0.steps_per_epoch=$steps")
echo "run.sh: training, $(left)s left, steps_per_epoch ${steps:-from the config}"
timeout --signal=TERM $(($(left) - 25)) $py -m frankensplit train --config "$config" \
    --no-progress --out "$work/main" "${plan[@]}" "$@"
rc=$?
run=$work/main/variable-rate
if [ $rc -ne 0 ] || [ ! -f "$run/summary.json" ]; then
    echo "run.sh: training stopped (exit $rc) before its end; exporting its last finished epoch"
    $py tools/gpu_recipe/recipe.py export-last --config "$config" "${sets[@]}" --run "$run" \
        || exit 1
fi
cp "$run/best.safetensors" "$run/summary.json" "$out/" || exit 1
echo "run.sh: done in $(($(date +%s) - start))s -> $out: $(ls "$out" | tr '\n' ' ')"
