"""Which kernels should run a converted layer's CPU backward: projections (NumPy, torch) and products (oneDNN, MKL)?

For the layer shapes of ViT-S/16 and EfficientFormer-L1 at 224 pixels, time the
projection and the reconstruction of ``lbpcore.torch._bridge`` on CPU tensors
through lbpcore's NumPy kernels (the cache-blocked kernel on the tensor's
memory: what the bridge uses) and through lbpcore's array-API kernels on the
tensors themselves (PyTorch's own matmul; the path of devices without CuPy),
interleaved in one process (medians of rounds), with one ``clone()`` of the
input as the memory-bound yardstick.

Then the two backward products of the same layers (``gs.T @ xs`` and
``gs @ W`` on the ``B * (e + P r)`` coefficient rows) through the two
settings of :func:`lbpcore.torch.products_engine`: ``"auto"`` (oneDNN's 1x1
convolution and its weight gradient on views, for float32) and ``"mm"``
(:func:`torch.mm`, MKL on x86), also interleaved, with the GFLOP/s of each.

    python benchmarks/torch_paths.py [--batch 8] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lbpcore._patches import make_plan
from lbpcore.torch import _bridge, products_engine
from lbpcore.torch._products import grad_weight_product, gs_times_weight

#: (name, grid, channels, extra tokens): ViT-S/16's token layers, EfficientFormer-L1's maps (channels last)
SHAPES = [
    ("vit_s16 qkv/proj/fc1 in", (14, 14), 384, 1), ("vit_s16 fc1 out / fc2 in", (14, 14), 1536, 1),
    ("vit_s16 qkv out", (14, 14), 1152, 1), ("eff stage1 fc1 in", (56, 56), 48, 0),
    ("eff stage1 fc2 in", (56, 56), 192, 0), ("eff stage2 fc2 in", (28, 28), 384, 0),
    ("eff stage3 fc2 in", (14, 14), 896, 0), ("eff stage4 fc2 in", (7, 7), 1792, 0),
]

#: (name, grid, C_in, C_out, extra tokens): the converted layers whose backward products are timed
LAYERS = [
    ("vit_s16 qkv", (14, 14), 384, 1152, 1), ("vit_s16 fc1", (14, 14), 384, 1536, 1),
    ("vit_s16 fc2", (14, 14), 1536, 384, 1), ("eff stage1 fc1", (56, 56), 48, 192, 0),
    ("eff stage1 fc2", (56, 56), 192, 48, 0), ("eff stage2 fc2", (28, 28), 384, 96, 0),
    ("eff stage3 fc2", (14, 14), 896, 224, 0), ("eff stage4 fc2", (7, 7), 1792, 448, 0),
]


def _median(fn, rounds):
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.threads} threads, lp_l1:6 at patch 8, reflect padding; ms (medians)")
    print(f"{'layer':26s} {'input MB':>8s} {'clone':>7s} {'proj np':>8s} {'proj torch':>10s} "
          f"{'recon np':>8s} {'recon torch':>11s}")
    for name, grid, c, e in SHAPES:
        x = torch.randn(args.batch, e + grid[0] * grid[1], c)
        t = _time_shape(x, make_plan(grid, 8, "lp_l1:6", "reflect"), e, args.rounds)
        print(f"{name:26s} {x.numel() * 4 / 1e6:8.1f} {t['clone']:7.2f} {t['proj np']:8.2f} {t['proj torch']:10.2f} "
              f"{t['recon np']:8.2f} {t['recon torch']:11.2f}")
    print("\nbackward products, ms (medians) and GFLOP/s: gw = gs.T @ xs, gx = gs @ W")
    print(f"{'layer':18s} {'rows':>7s} {'gw auto':>8s} {'gw mm':>8s} {'gx auto':>8s} {'gx mm':>8s} "
          f"{'GFLOP/s auto':>12s} {'mm':>6s}")
    for name, grid, c_in, c_out, e in LAYERS:
        plan = make_plan(grid, 8, "lp_l1:6", "reflect")
        rows = args.batch * (e + plan.num_patches * plan.rank)
        t = _time_products(torch.randn(rows, c_out), torch.randn(rows, c_in), torch.randn(c_out, c_in), args.rounds)
        gflop = 2 * rows * c_in * c_out / 1e6  # per product, divided by ms below: GFLOP/s
        auto, mm = (t["gw auto"] + t["gx auto"]) / 2, (t["gw mm"] + t["gx mm"]) / 2
        print(f"{name:18s} {rows:7d} {t['gw auto']:8.2f} {t['gw mm']:8.2f} {t['gx auto']:8.2f} {t['gx mm']:8.2f} "
              f"{gflop / auto:12.0f} {gflop / mm:6.0f}")


def _time_products(gs, xs, weight, rounds):
    """Median milliseconds of both products under both settings of :func:`products_engine`, interleaved."""
    def under(setting, fn):
        def run():
            before = products_engine(setting)
            try:
                return fn()
            finally:
                products_engine(before)
        return run

    fns = {f"{k} {s}": under(s, f) for s in ("auto", "mm")
           for k, f in (("gw", lambda: grad_weight_product(gs, xs)), ("gx", lambda: gs_times_weight(gs, weight)))}
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            times[k].append(_median(f, 1))
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _time_shape(x, plan, e, rounds):
    """Median milliseconds of the clone, projections and reconstructions of one input ``x``."""
    coef = _bridge.coefficients(x, plan, e, "tokens")
    real = _bridge.engine

    def numpy_or_torch(kind, fn):
        def run():
            _bridge.engine = (lambda t: kind)
            try:
                return fn()
            finally:
                _bridge.engine = real
        return run

    fns = {
        "clone": lambda: x.clone(),
        "proj np": numpy_or_torch("numpy", lambda: _bridge.coefficients(x, plan, e, "tokens")),
        "proj torch": numpy_or_torch("torch", lambda: _bridge.coefficients(x, plan, e, "tokens")),
        "recon np": numpy_or_torch("numpy", lambda: _bridge.grid_values(coef, plan, e, "tokens", x.shape)),
        "recon torch": numpy_or_torch("torch", lambda: _bridge.grid_values(coef, plan, e, "tokens", x.shape)),
    }
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            times[k].append(_median(f, 1))
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}

if __name__ == "__main__":
    main()
