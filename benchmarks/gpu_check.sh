#!/usr/bin/env bash
# One-shot GPU check for lbpcore (CuPy): the GPU tests, the kernel benchmark and
# `lbp bench --device gpu`, sized to fit one 15-minute device lease.
#
# Run from the repository root on a machine with an NVIDIA GPU, cupy-cuda13x (or
# cupy-cuda12x), numpy, pytest and hypothesis.  Pure-Python packages the machine
# lacks (array-api-compat, array-api-strict) travel as wheels in .whl/:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp -d .whl array-api-compat array-api-strict
# Logs and JSON land in $OUT (default ./gpu-out).  Every step has its own timeout
# (BUDGET seconds in all, default 560); the script always exits 0 after a summary.
# STEPS (default "kernels gpu bench kbench profile"; "models" adds lbp bench --model at batch 64)
# picks and orders the steps.
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
STEPS="${STEPS:-kernels gpu bench kbench profile}"
BUDGET="${BUDGET:-560}"  # seconds for all steps together; each step gets at most what is left
start=$(date +%s)
left() { local l=$(( BUDGET - ($(date +%s) - start) )); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
{
  echo "== environment"; date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | head -3
  "$PY" - <<'PY'
import sys, numpy
print("python", sys.version.split()[0], "numpy", numpy.__version__)
for name in ("cupy", "array_api_compat", "array_api_strict", "torch", "hypothesis"):
    try:
        mod = __import__(name)
        print(name, mod.__version__)
    except Exception as exc:
        print(name, "missing:", exc)
PY
} > "$OUT/env.log" 2>&1
: > "$OUT/summary.txt"

for step in $STEPS; do
  t0=$(date +%s)
  if [ "$(left 99999)" -lt 10 ]; then echo "$step skipped: budget spent" >> "$OUT/summary.txt"; continue; fi
  case "$step" in
    kernels)  # the fused kernels first: NVRTC compiles every variant here
      timeout "$(left 200)" "$PY" -m pytest -m gpu -x -q -p no:cacheprovider tests/test_cuda_kernels.py \
        > "$OUT/pytest_kernels.log" 2>&1 ;;
    gpu)      # every other gpu-marked test (CuPy against NumPy; torch on CUDA where present)
      timeout "$(left 150)" "$PY" -m pytest -m gpu -q -p no:cacheprovider tests --ignore=tests/test_cuda_kernels.py \
        > "$OUT/pytest_gpu.log" 2>&1 ;;
    bench)    # lbp bench --device gpu: batch 256, ViT-B MLP layers, fwht on 2**24 elements
      timeout "$(left 150)" "$PY" -m analysis bench --device gpu --json "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1 ;;
    kbench)   # the kernels against copies of the same bytes
      timeout "$(left 100)" "$PY" benchmarks/cuda_kernels.py --out "$OUT/cuda_kernels.json" > "$OUT/cuda_kernels.log" 2>&1 ;;
    models)   # lbp bench --model on CUDA: whole replicas at batch 64, dense vs converted, the ideal
      timeout "$(left 200)" "$PY" -m analysis bench --device gpu --model vit_s16 --model efficientformer_l1 \
        --model swin_t --batch 64 --json "$OUT/bench_models_gpu.json" > "$OUT/bench_models_gpu.log" 2>&1 ;;
    profile)  # where the GPU LBP backward spends its time (CuPy, then through lbpcore.torch)
      timeout "$(left 45)" "$PY" benchmarks/gpu_profile.py > "$OUT/profile_gpu.log" 2>&1
      timeout "$(left 40)" "$PY" benchmarks/torch_gpu_profile.py >> "$OUT/profile_gpu.log" 2>&1 ;;
    *) echo "unknown step $step" >> "$OUT/summary.txt"; continue ;;
  esac
  rc=$?
  echo "$step rc=$rc ($(( $(date +%s) - t0 )) s)" >> "$OUT/summary.txt"
  if [ "$step" = kernels ] && [ "$rc" -ne 0 ]; then
    echo "the fused kernels failed: stopping here (every CuPy path uses them)" >> "$OUT/summary.txt"
    break
  fi
done
echo "elapsed_s=$(( $(date +%s) - start ))" >> "$OUT/summary.txt"
for f in pytest_kernels pytest_gpu; do
  [ -f "$OUT/$f.log" ] && { echo "-- $f"; tail -n 3 "$OUT/$f.log"; } >> "$OUT/summary.txt"
done
grep -E "^\s+\[(met|MISS)\]" "$OUT/bench_gpu.log" >> "$OUT/summary.txt" 2>/dev/null
cat "$OUT/summary.txt"
exit 0
