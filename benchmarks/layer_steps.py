"""Where the time of one converted layer's training step goes, measured inside autograd.

For the layer shapes that miss the "no converted layer slower than dense"
target (EfficientFormer-L1's 1x1 convolutions at 224 pixels, channels-last
maps) and one that meets it (ViT-S/16's ``fc2``), run the dense layer and its
:mod:`lbpcore.torch` conversion (``lp_l1:6``, patch 8, reflect) through the same
step, forward then ``torch.autograd.grad`` of every input, interleaved in one
process, and time each piece of the converted step where it runs: the dense
forward, the projection of ``x`` (forward), the projection of ``grad_y``, the
two backward products, the reconstruction of ``grad_x`` and the bias gradient
(backward; the pieces of :mod:`lbpcore.torch._function`, wrapped with timers for
this benchmark only).  The remainder of each pass is autograd's own work.  For
the three kernels the table gives the bytes each reads and writes and the rate
(GB/s) at which it moves them.

    python benchmarks/layer_steps.py [--batch 8] [--rounds 15] [--threads 2]

Medians over rounds after one warm-up; run with ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` unset and other jobs paused.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

import lbpcore.torch._function as lbp_function
from lbpcore._patches import make_plan
from lbpcore.torch import LBPConv2d, LBPLinear

#: (name, C_in, C_out, grid, extra tokens, kind): the layers timed
LAYERS = [
    ("eff stage0 fc1", 48, 192, 56, 0, "conv"), ("eff stage0 fc2", 192, 48, 56, 0, "conv"),
    ("eff stage1 fc2", 384, 96, 28, 0, "conv"), ("eff stage2 fc2", 896, 224, 14, 0, "conv"),
    ("vit_s16 fc2", 1536, 384, 14, 1, "linear"),
]

#: The pieces of the converted step that are timed, in the order of the table.
PIECES = ["dense forward", "project x", "project grad_y", "grad_weight product", "grad_x coefficients",
          "reconstruct grad_x", "bias gradient"]


class _Timers:
    """Wraps the pieces of :mod:`lbpcore.torch._function` with timers while active."""

    _WRAPPED = {"_dense_forward": "dense forward", "grad_weight_product": "grad_weight product",
                "gs_times_weight": "grad_x coefficients", "grid_values": "reconstruct grad_x",
                "_bias_grad": "bias gradient", "coefficients": None}  # None: x or grad_y, by phase

    def __init__(self):
        self.phase = "forward"
        self.times = defaultdict(float)
        self._saved = {}

    def __enter__(self):
        for attr, label in self._WRAPPED.items():
            fn = getattr(lbp_function, attr)
            self._saved[attr] = fn
            setattr(lbp_function, attr, self._timed(fn, label))
        return self

    def __exit__(self, *exc):
        for attr, fn in self._saved.items():
            setattr(lbp_function, attr, fn)

    def _timed(self, fn, label):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            key = label or ("project x" if self.phase == "forward" else "project grad_y")
            self.times[key] += time.perf_counter() - t0
            return out

        return timed


def _step(module, x, grad, timers=None):
    """Seconds of the forward and of the backward of one step of ``module`` on ``x``."""
    inputs = [x] + list(module.parameters())
    if timers is not None:
        timers.phase = "forward"
    t0 = time.perf_counter()
    y = module(x)
    t1 = time.perf_counter()
    if timers is not None:
        timers.phase = "backward"
    torch.autograd.grad(y, inputs, grad)
    return t1 - t0, time.perf_counter() - t1


def _kernel_bytes(b, c_in, c_out, h, e, plan, itemsize):
    """Bytes read plus written by the projections of ``x`` and ``grad_y`` and the reconstruction of ``grad_x``."""
    coef = b * (e + plan.num_patches * plan.rank)
    grid = b * (e + h * h)
    return {"project x": (grid + coef) * c_in * itemsize, "project grad_y": (grid + coef) * c_out * itemsize,
            "reconstruct grad_x": (grid + coef) * c_in * itemsize}


def bench_layer(c_in, c_out, h, e, kind, batch, rounds):
    """Rows of the table for one layer: dense and converted passes, then the converted pieces."""
    if kind == "conv":
        dense = torch.nn.Conv2d(c_in, c_out, 1)
        lbp = LBPConv2d.from_conv(dense)
        x = torch.randn(batch, c_in, h, h).contiguous(memory_format=torch.channels_last)
    else:
        dense = torch.nn.Linear(c_in, c_out)
        lbp = LBPLinear.from_linear(dense, extra_tokens=e)
        x = torch.randn(batch, e + h * h, c_in)
    x.requires_grad_()
    with torch.no_grad():
        grad = torch.randn_like(dense(x))
    passes = {"dense": [], "lbp": []}
    pieces = defaultdict(list)
    with _Timers() as timers:
        for i in range(rounds + 1):
            d = _step(dense, x, grad)
            timers.times.clear()
            c = _step(lbp, x, grad, timers)
            if i:
                passes["dense"].append(d)
                passes["lbp"].append(c)
                for key in PIECES:
                    pieces[key].append(timers.times.get(key, 0.0))
    med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in passes.items()}
    return med, {k: statistics.median(v) for k, v in pieces.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    print(f"B={args.batch}, {args.threads} threads, {args.rounds} rounds, float32, ms (GB/s for the kernels)")
    for name, c_in, c_out, h, e, kind in LAYERS:
        med, pieces = bench_layer(c_in, c_out, h, e, kind, args.batch, args.rounds)
        plan = make_plan((h, h), 8, "lp_l1:6", "reflect")
        nbytes = _kernel_bytes(args.batch, c_in, c_out, h, e, plan, 4)
        (df, db), (cf, cb) = med["dense"], med["lbp"]
        print(f"\n{name}: {c_in}->{c_out}, {h}x{h}{f' + {e}' if e else ''}"
              f"  dense fwd {df * 1e3:.2f} bwd {db * 1e3:.2f} | converted fwd {cf * 1e3:.2f} bwd {cb * 1e3:.2f}"
              f"  (bwd x {db / cb:.2f}, step x {(df + db) / (cf + cb):.2f})")
        fwd_rest, bwd_rest = cf, cb
        for key in PIECES:
            t = pieces[key]
            rate = f"  {nbytes[key] / t / 1e9:5.1f} GB/s" if key in nbytes and t > 0 else ""
            print(f"  {key:<22} {t * 1e3:6.2f}{rate}")
            if key in ("dense forward", "project x"):
                fwd_rest -= t
            else:
                bwd_rest -= t
        print(f"  {'rest of forward':<22} {fwd_rest * 1e3:6.2f}\n  {'rest of backward':<22} {bwd_rest * 1e3:6.2f}")


if __name__ == "__main__":
    main()
