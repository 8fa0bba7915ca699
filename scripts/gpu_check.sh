#!/usr/bin/env bash
# One GPU, one command: the memory kernels' GPU check, then the benchmark at ViT-B-16-mem shapes and at 1M slots,
# all written to one file. About 5 minutes on one H100 by estimate; every step has a time limit, 8 minutes in all.
#
#   bash scripts/gpu_check.sh                 # writes gpu_check_<host>_<date>.txt in the current folder
#   OUT=h100.txt PYTHON=.venv/bin/python bash scripts/gpu_check.sh
#
# The exit status is the GPU check's (1 when a check FAILed, 124 when it ran out of time).
set -uo pipefail

PYTHON=${PYTHON:-python}
OUT=${OUT:-gpu_check_$(hostname -s 2>/dev/null || echo host)_$(date +%Y-%m-%d_%H%M).txt}
# the compiled kernels, the automatic backend and path: nothing from the caller's environment may change them
unset TRITON_INTERPRET MEMORY_LAYERS_BACKEND MEMORY_LAYERS_BAG_PATH

step() {  # step SECONDS ARGS...: print the command, run it under a time limit, print its exit status
  local limit=$1; shift
  echo "\$ $*"
  timeout "$limit" "$@"
  local status=$?
  echo "(exit $status)"
  return $status
}

{
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  echo "memclip GPU check, $(date '+%Y-%m-%d %H:%M'), $(hostname 2>/dev/null), commit $commit"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: not found"
  step 330 "$PYTHON" -m memory_layers.gpu_check
  echo "$?" > "$OUT.status"
  step 75 "$PYTHON" -m memory_layers.bench --repeats 10 --warmup 3
  step 75 "$PYTHON" -m memory_layers.bench --memory n_keys=1024 --variants fused,auto,mlp --repeats 10 --warmup 3
} 2>&1 | tee "$OUT"

status=$(cat "$OUT.status" 2>/dev/null || echo 1)
rm -f "$OUT.status"
echo "output written to $OUT"
exit "$status"
