#!/usr/bin/env bash
# One-shot GPU check for lbpcore (CuPy): the GPU test suite and `lbp bench --device gpu`.
#
# Run from the repository root on a machine with an NVIDIA GPU and cupy-cuda13x
# (or cupy-cuda12x), numpy and pytest.  array-api-compat (and threadpoolctl, if
# carried) are expected on PYTHONPATH, e.g.
#     pip install --no-deps --target /tmp/site .whl/*.whl
#     export PYTHONPATH=/tmp/site:$PWD
# Logs and the JSON land in $OUT (default ./gpu-out).  Budget: well under 6 minutes
# (each step has its own timeout; the script always exits 0 after writing a summary).
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:-}:$PWD"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python}"
start=$(date +%s)
{
  echo "== environment"; date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  "$PY" - <<'PY'
import sys, numpy
print("python", sys.version.split()[0], "numpy", numpy.__version__)
try:
    import cupy
    print("cupy", cupy.__version__, "devices", cupy.cuda.runtime.getDeviceCount())
except Exception as exc:
    print("cupy import failed:", exc)
try:
    import array_api_compat
    print("array_api_compat", array_api_compat.__version__)
except Exception as exc:
    print("array_api_compat missing:", exc)
PY
} > "$OUT/env.log" 2>&1

# 1. GPU tests (pytest marker "gpu"); -p no:cacheprovider keeps the tree clean
timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests > "$OUT/pytest_gpu.log" 2>&1
echo "pytest_rc=$?" > "$OUT/summary.txt"

# 2. the GPU benchmark (batch 256 layers, 2**24-element fwht)
timeout 200 "$PY" -m analysis bench --device gpu --json "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1
echo "bench_rc=$?" >> "$OUT/summary.txt"

# 3. a short profile of where the GPU LBP backward spends its time (best effort, 60 s)
timeout 45 "$PY" - > "$OUT/profile_gpu.log" 2>&1 <<'PY'
import cupy as cp, numpy as np
from cupyx.profiler import benchmark
import lbpcore
from lbpcore._patches import make_plan, project_raw, reconstruct_raw
import array_api_compat
rng = np.random.default_rng(0)
for grid, cin, cout in (((16, 16), 768, 3072), ((14, 14), 768, 3072)):
    L = grid[0] * grid[1]
    x = cp.asarray(rng.standard_normal((256, L, cin), dtype=np.float32))
    gy = cp.asarray(rng.standard_normal((256, L, cout), dtype=np.float32))
    w = cp.asarray(rng.standard_normal((cout, cin), dtype=np.float32))
    xp = array_api_compat.array_namespace(x)
    plan = make_plan(grid, 8, "lp_l1:6")
    t = lambda f: float(np.median(benchmark(f, n_repeat=10, n_warmup=2).gpu_times[0])) * 1e3
    _, gs = project_raw(xp, gy, plan, "tokens", 0, keep_extra=True, any_order=True)
    _, xs = project_raw(xp, x, plan, "tokens", 0, keep_extra=True, any_order=True)
    gs2, xs2 = gs.reshape(-1, cout), xs.reshape(-1, cin)
    gxs = (gs2 @ w).reshape(256, -1, cin)
    print(grid, cin, cout, "ms:",
          "proj x %.2f" % t(lambda: project_raw(xp, x, plan, "tokens", 0, keep_extra=True, any_order=True)),
          "proj gy %.2f" % t(lambda: project_raw(xp, gy, plan, "tokens", 0, keep_extra=True, any_order=True)),
          "gemm gw %.2f" % t(lambda: gs2.T @ xs2), "gemm gx %.2f" % t(lambda: gs2 @ w),
          "recon %.2f" % t(lambda: reconstruct_raw(xp, gxs, plan, "tokens", any_order=True)),
          "dense gw %.2f" % t(lambda: gy.reshape(-1, cout).T @ x.reshape(-1, cin)),
          "dense gx %.2f" % t(lambda: gy.reshape(-1, cout) @ w))
PY
echo "profile_rc=$?" >> "$OUT/summary.txt"
echo "elapsed_s=$(( $(date +%s) - start ))" >> "$OUT/summary.txt"
tail -n 3 "$OUT/pytest_gpu.log" >> "$OUT/summary.txt" 2>/dev/null
grep -E "^\s+\[(met|MISS)\]" "$OUT/bench_gpu.log" >> "$OUT/summary.txt" 2>/dev/null
cat "$OUT/summary.txt"
exit 0
