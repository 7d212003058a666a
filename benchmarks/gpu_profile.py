"""Per-phase profile of the LBP-WHT backward on a CUDA device (CuPy), against the dense GEMMs.

Run from the repository root on a machine with CuPy::

    python benchmarks/gpu_profile.py

Prints, for ViT-B MLP layers at batch 256 (float32, ``lp_l1:6`` and ``lp_l1:3``,
patch 8, a 16x16 grid and the reflect-padded 14x14 grid), the median GPU time in
ms of each phase: the projections of ``x`` and ``grad_y`` (fused kernels), the two
coefficient GEMMs, the reconstruction of ``grad_x``, the whole ``lbp_backward``
and the two dense GEMMs, plus a device-to-device copy of the bytes each
projection reads and writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _phases(cp, xp, ms, copy_ms, x, w, gy, grid, spec, dense):
    """One line of per-phase times for one layer and one selection."""
    import lbpcore  # noqa: PLC0415 - run as a script on the GPU machine
    from lbpcore._patches import make_plan, project_raw, reconstruct_raw  # noqa: PLC0415

    batch, _, cin = x.shape
    cout = w.shape[0]
    plan = make_plan(grid, 8, spec)
    _, xs = project_raw(xp, x, plan, "tokens", 0, keep_extra=True, any_order=True)
    _, gs = project_raw(xp, gy, plan, "tokens", 0, keep_extra=True, any_order=True)
    gs2, xs2 = gs.reshape(-1, cout), xs.reshape(-1, cin)
    gxs = (gs2 @ w).reshape(batch, -1, cin)
    px = ms(lambda: project_raw(xp, x, plan, "tokens", 0, keep_extra=True, any_order=True))
    pg = ms(lambda: project_raw(xp, gy, plan, "tokens", 0, keep_extra=True, any_order=True))
    gw = ms(lambda: gs2.T @ xs2)
    gx = ms(lambda: gs2 @ w)
    rec = ms(lambda: reconstruct_raw(xp, gxs, plan, "tokens", any_order=True))
    total = ms(lambda: lbpcore.lbp_backward(x, w, gy, grid=grid, patch=8, bases=spec))
    ideal = lbpcore.backward_cost(x.shape, cout, grid=grid, patch=8, bases=spec).ideal_speedup
    cx, cg, cr = copy_ms(x.nbytes + xs.nbytes), copy_ms(gy.nbytes + gs.nbytes), copy_ms(gxs.nbytes + x.nbytes)
    return (f"{grid[0]}x{grid[1]} {cin}->{cout} {spec}: ms proj x {px:.3f} (copy {cx:.3f}), "
            f"proj gy {pg:.3f} (copy {cg:.3f}), gemm gw {gw:.3f}, gemm gx {gx:.3f}, "
            f"recon {rec:.3f} (copy {cr:.3f}), lbp_backward {total:.3f}, dense gemms {dense:.3f}; "
            f"speed-up {dense / total:.2f} of ideal {ideal:.2f} = {dense / total / ideal:.2f}")


def _layer(cp, xp, ms, copy_ms, grid, cin, cout, batch=256):
    rng = np.random.default_rng(0)
    length = grid[0] * grid[1]
    x = cp.asarray(rng.standard_normal((batch, length, cin), dtype=np.float32))
    gy = cp.asarray(rng.standard_normal((batch, length, cout), dtype=np.float32))
    w = cp.asarray(rng.standard_normal((cout, cin), dtype=np.float32))
    dense = ms(lambda: (gy.reshape(-1, cout).T @ x.reshape(-1, cin), gy.reshape(-1, cout) @ w))
    for spec in ("lp_l1:6", "lp_l1:3"):
        print(_phases(cp, xp, ms, copy_ms, x, w, gy, grid, spec, dense))


def main() -> int:
    import array_api_compat  # noqa: PLC0415 - run as a script on the GPU machine
    import cupy as cp  # noqa: PLC0415
    from cupyx.profiler import benchmark  # noqa: PLC0415

    def ms(fn):
        return float(np.median(benchmark(fn, n_repeat=10, n_warmup=2).gpu_times[0])) * 1e3

    def copy_ms(nbytes):
        a = cp.empty(max(1, nbytes // 8), dtype=cp.float32)
        b = cp.empty_like(a)
        return ms(lambda: cp.copyto(b, a))

    xp = array_api_compat.array_namespace(cp.empty(1))
    for grid, cin, cout in (((16, 16), 768, 3072), ((16, 16), 3072, 768), ((14, 14), 768, 3072)):
        _layer(cp, xp, ms, copy_ms, grid, cin, cout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
