"""The PyTorch rows of ``lbp bench``: the backward of ``lbpcore.torch.LBPLinear`` against ``nn.Linear``'s.

Each row builds an ``nn.Linear`` of a ViT-B MLP shape and an ``LBPLinear``
sharing its parameters, runs both forward passes once, and times their backward
passes (``torch.autograd.grad`` of ``x``, ``weight`` and ``bias``, the graph
kept) interleaved, round after round; *of ideal* is the speed-up over
``nn.Linear`` divided by :attr:`lbpcore.BackwardCost.ideal_speedup`.  CPU
tensors run lbpcore's NumPy kernels, CUDA tensors CuPy's (or the array-API path
on the tensors without CuPy).  PyTorch is imported only when the rows run.
"""

from __future__ import annotations

import gc
import statistics
import time

import lbpcore

from .io import text_table

__all__ = ["available", "bench_torch", "torch_table"]


def available(device="cpu") -> bool:
    """Whether PyTorch is installed (with a CUDA device for ``device="gpu"``).

    Parameters
    ----------
    device : {"cpu", "gpu"}, optional

    Returns
    -------
    bool

    Examples
    --------
    >>> from analysis.bench_torch import available
    >>> isinstance(available(), bool)
    True
    """
    try:
        import torch  # noqa: PLC0415 - PyTorch is optional
    except ImportError:
        return False
    return device == "cpu" or torch.cuda.is_available()


def _interleaved(fns, rounds, sync):
    """Median seconds of each callable over ``rounds`` interleaved rounds, after one warm-up round."""
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    sync()
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_torch(batch, rounds, layers, specs=("lp_l1:6", "lp_l1:3"), device="cpu") -> list:
    """Backward of ``nn.Linear`` and of ``LBPLinear`` for each layer shape and selection.

    Parameters
    ----------
    batch : int
    rounds : int
        Timed rounds (the median is kept).
    layers : sequence of ((int, int), int, int)
        ``(grid, C_in, C_out)``.
    specs : sequence of str, optional
        Basis selections at patch 8.
    device : {"cpu", "gpu"}, optional
        ``"gpu"``: the current CUDA device.

    Returns
    -------
    list of dict
        Per layer: ``grid``, ``batch``, ``c_in``, ``c_out``, ``device``, ``engine``
        (what runs lbpcore's kernels), ``times_s`` (``"nn.Linear"`` and
        ``"LBPLinear <spec>"``) and, per spec, ``ideal_speedup``, ``speedup``
        (``nn.Linear`` time over ``LBPLinear`` time) and ``of_ideal``.

    Examples
    --------
    >>> from analysis.bench_torch import bench_torch
    >>> rows = bench_torch(2, 1, [((8, 8), 16, 32)], specs=("lp_l1:3",))  # doctest: +SKIP
    >>> rows[0]["specs"]["lp_l1:3"]["ideal_speedup"]  # doctest: +SKIP
    10.666666666666666

    (Skipped as a doctest: it needs PyTorch.)
    """
    import torch  # noqa: PLC0415 - PyTorch is optional: only these rows need it

    from lbpcore.torch import LBPLinear  # noqa: PLC0415 - imports PyTorch
    from lbpcore.torch._bridge import engine  # noqa: PLC0415 - as above

    dev = torch.device("cuda" if device == "gpu" else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)
    rows = []
    for grid, c_in, c_out in layers:
        length = grid[0] * grid[1]
        dense = torch.nn.Linear(c_in, c_out).to(dev)
        x = torch.randn(batch, length, c_in, generator=gen).to(dev).requires_grad_()
        g = torch.randn(batch, length, c_out, generator=gen).to(dev)
        inputs = (x, dense.weight, dense.bias)
        y = dense(x)
        def backward(y, inputs=inputs, g=g):
            return lambda: torch.autograd.grad(y, inputs, g, retain_graph=True)

        fns = {"nn.Linear": backward(y)}
        for spec in specs:
            fns[f"LBPLinear {spec}"] = backward(LBPLinear.from_linear(dense, grid=grid, patch=8, bases=spec)(x))
        t = _interleaved(fns, rounds, sync)
        row = {"grid": list(grid), "batch": batch, "c_in": c_in, "c_out": c_out, "device": str(dev),
               "engine": engine(x), "times_s": t, "specs": {}}
        for spec in specs:
            ideal = lbpcore.backward_cost((batch, length, c_in), c_out, grid=grid, patch=8, bases=spec).ideal_speedup
            speedup = t["nn.Linear"] / t[f"LBPLinear {spec}"]
            row["specs"][spec] = {"ideal_speedup": ideal, "speedup": speedup, "of_ideal": speedup / ideal}
        rows.append(row)
        del fns, y, x, g, dense
        gc.collect()
    return rows


def torch_table(rows) -> str:
    """Plain-text table of :func:`bench_torch` rows (times in ms).

    Parameters
    ----------
    rows : list of dict

    Returns
    -------
    str

    Examples
    --------
    >>> from analysis.bench_torch import torch_table
    >>> row = {"grid": [16, 16], "c_in": 768, "c_out": 3072, "device": "cpu", "engine": "numpy",
    ...        "times_s": {"nn.Linear": 0.9, "LBPLinear lp_l1:6": 0.4},
    ...        "specs": {"lp_l1:6": {"ideal_speedup": 3.05, "speedup": 2.25, "of_ideal": 0.74}}}
    >>> print(torch_table([row]))
    layer            device  nn.Linear  spec     LBPLinear  ideal  speed-up  of ideal
    ---------------  ------  ---------  -------  ---------  -----  --------  --------
    16x16 768->3072  cpu         900.0  lp_l1:6      400.0   3.05      2.25      0.74
    """
    table = []
    for row in rows:
        t = row["times_s"]
        left = [f"{row['grid'][0]}x{row['grid'][1]} {row['c_in']}->{row['c_out']}",
                f"{row['device']}" + ("" if row["engine"] in ("numpy", "cupy") else f" ({row['engine']})"),
                f"{t['nn.Linear'] * 1e3:.1f}"]
        for spec, d in row["specs"].items():
            table.append(left + [spec, f"{t['LBPLinear ' + spec] * 1e3:.1f}", f"{d['ideal_speedup']:.2f}",
                                 f"{d['speedup']:.2f}", f"{d['of_ideal']:.2f}"])
            left = ["", "", ""]
    return text_table(["layer", "device", "nn.Linear", "spec", "LBPLinear", "ideal", "speed-up", "of ideal"],
                      table, align="llrlrrrr")
