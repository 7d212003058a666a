"""Where the backward of ``lbpcore.torch.LBPLinear`` spends its time on a CUDA device.

Run from the repository root on a machine with a CUDA build of PyTorch and CuPy::

    python benchmarks/torch_gpu_profile.py

For the ViT-B MLP shape at batch 64 (16x16 grid, 768 -> 3072, float32,
``lp_l1:6``) it prints the median time in ms (CUDA events around each phase,
after warm-up) of: ``nn.Linear``'s backward through autograd; ``LBPLinear``'s;
the same LBP-WHT backward called on CuPy views of the tensors
(``lbpcore.LBPLinear.backward``, no autograd, no bridge); and the bridge's own
phases one by one (DLPack views, projection of ``grad_y``, the two coefficient
GEMMs, the reconstruction, the bias sum, the tensors handed back).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    import cupy as cp  # noqa: PLC0415 - run as a script on the GPU machine
    import torch  # noqa: PLC0415

    import lbpcore  # noqa: PLC0415
    from lbpcore._linear import _bias_grad, _coefficient_grads  # noqa: PLC0415
    from lbpcore._patches import make_plan, reconstruct_raw  # noqa: PLC0415
    from lbpcore.torch import LBPLinear  # noqa: PLC0415
    from lbpcore.torch._bridge import as_array, as_tensor, kernel_stream, namespace  # noqa: PLC0415

    dev = torch.device("cuda")
    batch, grid, c_in, c_out, spec = 64, (16, 16), 768, 3072, "lp_l1:6"
    length = grid[0] * grid[1]
    gen = torch.Generator(device="cpu").manual_seed(0)
    dense = torch.nn.Linear(c_in, c_out).to(dev)
    layer = LBPLinear.from_linear(dense, grid=grid, patch=8, bases=spec)
    x = torch.randn(batch, length, c_in, generator=gen).to(dev).requires_grad_()
    g = torch.randn(batch, length, c_out, generator=gen).to(dev)

    def ms(fn, rounds=20):
        for _ in range(3):
            fn()
        times = []
        for _ in range(rounds):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        return statistics.median(times)

    y_dense = dense(x)
    y_lbp = layer(x)
    params = (x, dense.weight, dense.bias)
    out = {"nn.Linear backward (autograd)": ms(lambda: torch.autograd.grad(y_dense, params, g, retain_graph=True)),
           "LBPLinear backward (autograd)": ms(lambda: torch.autograd.grad(y_lbp, params, g, retain_graph=True))}

    xa, wa, ba, ga = (cp.from_dlpack(t.detach()) for t in (x, dense.weight, dense.bias, g))
    core = lbpcore.LBPLinear(wa, ba, grid=grid, patch=8, bases=spec)
    core.forward(xa)
    out["lbpcore.LBPLinear.backward on CuPy views"] = ms(lambda: core.backward(ga))

    plan = make_plan(grid, 8, spec)
    xs = core._saved.coefficients
    with kernel_stream(g, "cupy"):
        gy = as_array(g, "cupy")
        xp = namespace(gy)
        out["as_array(grad_y) (DLPack)"] = ms(lambda: as_array(g, "cupy"))
        out["coefficient grads (projection of grad_y + 2 GEMMs)"] = ms(
            lambda: _coefficient_grads(xp, xs, wa, gy, plan, 0, "tokens", overwrite_xs=False))
        _, gxs = _coefficient_grads(xp, xs, wa, gy, plan, 0, "tokens", overwrite_xs=False)
        out["reconstruction of grad_x"] = ms(lambda: reconstruct_raw(xp, gxs, plan, "tokens", any_order=True))
        out["bias gradient (sum over B*L rows)"] = ms(lambda: _bias_grad(xp, gy, True, "tokens"))
        gwa = cp.empty((c_out, c_in), dtype=cp.float32)
        out["as_tensor(grad_weight) (DLPack)"] = ms(lambda: as_tensor(gwa))
    out["torch sum over B*L rows (reference)"] = ms(lambda: g.reshape(-1, c_out).sum(0))
    for k, v in out.items():
        print(f"{k:<55} {v:8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
