"""``lbp bench``: time the LBP-WHT backward and the fast Walsh–Hadamard transform.

Each row is a ratio measured in one process (the contenders run interleaved,
round after round; each time is the median over the rounds): dense versus
LBP-WHT backward of ViT-B sized layers, the memory the layer saves, and
:func:`lbpcore.fwht` against the anchors that are installed; ``--device gpu``
runs the same with CuPy.  What each row and target means, and the latest
numbers: :doc:`/benchmarks`.

Entry points: :func:`main` (``argv`` list, as the ``lbp`` command line passes it),
:func:`run_bench` (keyword arguments, returns the results ``dict``) and
:func:`add_arguments` (adds the options to an :mod:`argparse` parser).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from functools import partial

import numpy as np

import lbpcore

from ._outdir import check_output_file, created_directory, path_option
from .bench_models import BENCH_MODELS, run_model_bench
from .bench_torch import available as torch_available
from .bench_torch import bench_torch, torch_table
from .io import text_table, write_json
from .machine import _ffht, machine_info

__all__ = ["add_arguments", "main", "run_bench", "format_table"]

#: Targets of the performance issue (ratios; see docs/benchmarks.md).
TARGETS = {
    "lbp_of_ideal_lp_l1:6": 0.75,
    "lbp_of_ideal_lp_l1:3": 0.5,
    "dense_over_plain_max": 1.25,
    "fwht_over_ffht_batched_max": 2.0,
    "fwht_over_ffht_single_max": 3.0,
    "fwht_over_dense_max_n_le_64": 1.0,
    "radix2_over_fwht_min": 10.0,
    "overhead_us_max": 10.0,
    "gpu_lbp_of_ideal_lp_l1:6": 0.75,
    "gpu_lbp_of_ideal_lp_l1:3": 0.5,
    "gpu_layer_of_ideal_lp_l1:6": 0.85,
    "gpu_fwht_of_copy_bandwidth": 0.6,
    "torch_lbp_of_ideal_lp_l1:6": 0.7,
}

LAYERS = (((16, 16), 768, 3072), ((16, 16), 3072, 768), ((14, 14), 768, 3072))
SPECS = ("lp_l1:6", "lp_l1:3")


# ---------------------------------------------------------------------------
# timing


def _interleaved(fns: dict, rounds: int, setup=None) -> dict:
    """Median seconds of each callable, run interleaved ``rounds`` times after one warm-up.

    ``setup`` maps some of the keys to a callable run, untimed, before each of their runs.
    """
    setup = setup or {}
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(rounds):
        for k, f in fns.items():
            if k in setup:
                setup[k]()
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _plain_backward(x, w, gy):
    g2 = gy.reshape(-1, gy.shape[-1])
    return g2 @ w, g2.T @ x.reshape(-1, x.shape[-1])


# ---------------------------------------------------------------------------
# CPU rows


def bench_backward(batch: int, rounds: int, layers=LAYERS, specs=SPECS, xp=None, timer=None) -> list:
    """Dense versus LBP-WHT backward rows (see docs/benchmarks.md)."""
    xp = np if xp is None else xp
    rows = []
    rng = np.random.default_rng(0)
    for grid, c_in, c_out in layers:
        length = grid[0] * grid[1]
        x = xp.asarray(rng.standard_normal((batch, length, c_in), dtype=np.float32))
        gy = xp.asarray(rng.standard_normal((batch, length, c_out), dtype=np.float32))
        w = xp.asarray((rng.standard_normal((c_out, c_in)) / np.sqrt(c_in)).astype(np.float32))
        fns = {"plain": partial(_plain_backward, x, w, gy), "dense": partial(lbpcore.dense_backward, x, w, gy)}
        for spec in specs:
            layer = lbpcore.LBPLinear(w, grid=grid, patch=8, bases=spec)
            layer.forward(x)
            fns[f"lbp {spec}"] = partial(lbpcore.lbp_backward, x, w, gy, grid=grid, patch=8, bases=spec)
            fns[f"layer {spec}"] = partial(layer.backward, gy)
        t = (timer or _interleaved)(fns, rounds)
        row = {"grid": list(grid), "batch": batch, "c_in": c_in, "c_out": c_out,
               "times_s": t, "dense_over_plain": t["dense"] / t["plain"], "specs": {}}
        for spec in specs:
            cost = lbpcore.backward_cost(tuple(x.shape), c_out, grid=grid, patch=8, bases=spec)
            sp = t["plain"] / t[f"lbp {spec}"]
            spl = t["plain"] / t[f"layer {spec}"]
            row["specs"][spec] = {
                "ideal_speedup": cost.ideal_speedup,
                "lbp_speedup": sp,
                "lbp_of_ideal": sp / cost.ideal_speedup,
                "layer_speedup": spl,
                "layer_of_ideal": spl / cost.ideal_speedup,
                "speedup_vs_dense_backward": t["dense"] / t[f"lbp {spec}"],
            }
        rows.append(row)
        del x, gy, w, layer, fns
        gc.collect()
    return rows


def bench_memory(batch: int, grid=(16, 16), c_in=768, c_out=3072, spec="lp_l1:6", extra_tokens=1) -> dict:
    """Saved bytes of the layer object and tracemalloc peaks of the two backward passes."""
    rng = np.random.default_rng(1)
    e = extra_tokens
    length = e + grid[0] * grid[1]
    x = rng.standard_normal((batch, length, c_in), dtype=np.float32)
    gy = rng.standard_normal((batch, length, c_out), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in), dtype=np.float32)
    cost = lbpcore.backward_cost(x.shape, c_out, grid=grid, patch=8, bases=spec, extra_tokens=e)
    lay = lbpcore.LBPLinear(w, grid=grid, patch=8, bases=spec, extra_tokens=e)
    lay.forward(x)
    saved = lay.saved_nbytes
    plan = lay.plan
    expected = batch * (plan.num_patches * plan.rank + e) * c_in * 4

    def peak(fn):
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        res = fn()
        p = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        del res
        return p

    p_dense = peak(lambda: lbpcore.dense_backward(x, w, gy))
    p_lbp = peak(lambda: lbpcore.lbp_backward(x, w, gy, grid=grid, patch=8, bases=spec, extra_tokens=e))
    p_layer = peak(lambda: lay.backward(gy))
    coef = batch * (plan.num_patches * plan.rank + e) * (c_in + c_out) * 4
    return {
        "batch": batch, "grid": list(grid), "c_in": c_in, "c_out": c_out, "spec": spec, "extra_tokens": e,
        "activation_bytes": int(x.nbytes),
        "layer_saved_bytes": int(saved),
        "layer_saved_expected_bytes": int(expected),
        "layer_saved_ratio": saved / x.nbytes,
        "r_over_n2": plan.rank / plan.patch ** 2,
        "cost_model_saved_bytes": int(cost.lbp_saved_bytes),
        "peak_dense_bytes": int(p_dense),
        "peak_lbp_bytes": int(p_lbp),
        "peak_layer_backward_bytes": int(p_layer),
        "coefficient_bytes": int(coef),
        "lbp_excess_bytes": int(p_lbp - p_dense),
        "lbp_excess_within_coefficients": bool(p_lbp - p_dense <= coef),
    }


def _radix2(x):
    """Plain NumPy radix-2 butterflies (natural order, in place on a copy)."""
    y = np.array(x, copy=True)
    n = y.shape[-1]
    h = 1
    while h < n:
        v = y.reshape(y.shape[:-1] + (n // (2 * h), 2, h))
        a = v[..., 0, :].copy()
        v[..., 0, :] += v[..., 1, :]
        np.subtract(a, v[..., 1, :], out=v[..., 1, :])
        h *= 2
    return y


def bench_wht(batched, singles, rounds: int) -> list:
    """fwht rows: GB/s of lbpcore (natural and sequency order) and of the anchors."""
    ffht = _ffht()
    rng = np.random.default_rng(2)
    rows = []
    for shape in [tuple(s) for s in batched] + [(n,) for n in singles]:
        n = shape[-1]
        x = rng.standard_normal(shape, dtype=np.float32)
        out = np.empty_like(x)
        buf = np.empty_like(x)
        fns = {
            "fwht natural": partial(lbpcore.fwht, x, ordering="natural", out=out),
            "fwht sequency": partial(lbpcore.fwht, x, out=out),
        }
        if ffht is not None:
            fns["ffht"] = partial(ffht.fht_, buf)  # in place: buf is refilled from x before each run
        if n <= 1024 and len(shape) == 2:
            hmat = lbpcore.walsh_matrix(n, ordering="natural", dtype=np.float32)
            fns["dense"] = partial(np.matmul, x, hmat, out=out)
        t = _interleaved(fns, rounds, setup={"ffht": partial(np.copyto, buf, x)})
        r2 = _interleaved({"radix2": partial(_radix2, x)}, max(1, min(rounds, 3)))["radix2"]
        t["radix2"] = r2
        gbs = {k: x.nbytes / v / 1e9 for k, v in t.items()}
        row = {"shape": list(shape), "n": n, "times_s": t, "gb_s": gbs,
               "radix2_over_fwht": r2 / t["fwht natural"]}
        if "ffht" in t:
            row["fwht_over_ffht"] = t["fwht natural"] / t["ffht"]
            row["fwht_sequency_over_ffht"] = t["fwht sequency"] / t["ffht"]
        if "dense" in t:
            row["fwht_over_dense"] = t["fwht natural"] / t["dense"]
            row["fwht_sequency_over_dense"] = t["fwht sequency"] / t["dense"]
        rows.append(row)
    return rows


def bench_overhead(sizes=(16, 256, 1024), calls=2000) -> list:
    """Microseconds per call of fwht on one short vector (median of batches of calls)."""
    rows = []
    for n in sizes:
        x = np.ones(n, dtype=np.float32)
        out = np.empty_like(x)
        res = {}
        for label, fn in (("fwht", partial(lbpcore.fwht, x)), ("fwht out=", partial(lbpcore.fwht, x, out=out))):
            fn()
            per = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(calls // 5):
                    fn()
                per.append((time.perf_counter() - t0) / (calls // 5) * 1e6)
            res[label] = statistics.median(per)
        rows.append({"n": n, "us_per_call": res})
    return rows


# ---------------------------------------------------------------------------
# GPU rows


def bench_gpu(batch: int, rounds: int) -> dict:
    """The backward layers and a ``2**24`` transform with CuPy (imported here only)."""
    import cupy as cp  # noqa: PLC0415 - CuPy is optional, imported for --device gpu only
    from cupyx.profiler import benchmark  # noqa: PLC0415 - as above

    def timer(fns, n_repeat):
        out = {}
        for k, f in fns.items():
            r = benchmark(f, n_repeat=max(3, n_repeat), n_warmup=2, name=k)  # partials have no __name__
            out[k] = float(np.median(r.gpu_times[0]))
        return out

    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    info = {"name": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
            "cupy": cp.__version__, "total_memory": int(props["totalGlobalMem"])}
    rows = bench_backward(batch, rounds, xp=cp, timer=timer)
    x = cp.asarray(np.random.default_rng(3).standard_normal((4096, 4096), dtype=np.float32))
    y = cp.empty_like(x)
    t = timer({"copy": lambda: cp.copyto(y, x), "fwht natural": lambda: lbpcore.fwht(x, ordering="natural"),
               "fwht sequency": lambda: lbpcore.fwht(x)}, rounds)
    copy_bw = 2 * x.nbytes / t["copy"] / 1e9
    wht = {"shape": [4096, 4096], "times_s": t, "copy_gb_s": copy_bw,
           "fwht_gb_s": {k: 2 * x.nbytes / v / 1e9 for k, v in t.items() if k != "copy"}}
    wht["fwht_of_copy_bandwidth"] = wht["fwht_gb_s"]["fwht natural"] / copy_bw
    wht["fwht_sequency_of_copy_bandwidth"] = wht["fwht_gb_s"]["fwht sequency"] / copy_bw
    return {"gpu": info, "backward": rows, "wht": [wht]}


# ---------------------------------------------------------------------------
# driver


def _targets(res: dict) -> list:
    out = []

    def add(name, value, target, ok):
        out.append({"name": name, "value": value, "target": target, "met": bool(ok)})

    gpu = res.get("device") == "gpu"
    for row in res.get("backward", []):
        tag = f"{row['grid'][0]}x{row['grid'][1]} {row['c_in']}->{row['c_out']}"
        if not gpu:
            add(f"dense/plain {tag}", row["dense_over_plain"], f"<= {TARGETS['dense_over_plain_max']}",
                row["dense_over_plain"] <= TARGETS["dense_over_plain_max"])
        for spec, d in row["specs"].items():
            goal = TARGETS.get(f"gpu_lbp_of_ideal_{spec}" if gpu else f"lbp_of_ideal_{spec}", 0.5)
            add(f"lbp {spec} of ideal {tag}", d["lbp_of_ideal"], f">= {goal}", d["lbp_of_ideal"] >= goal)
            layer_goal = TARGETS.get(f"gpu_layer_of_ideal_{spec}") if gpu else None
            if layer_goal is not None:
                add(f"layer {spec} of ideal {tag}", d["layer_of_ideal"], f">= {layer_goal}",
                    d["layer_of_ideal"] >= layer_goal)
    for row in res.get("wht", []):
        if gpu:
            g = TARGETS["gpu_fwht_of_copy_bandwidth"]
            add("gpu fwht of copy bandwidth", row["fwht_of_copy_bandwidth"], f">= {g}",
                row["fwht_of_copy_bandwidth"] >= g)
            continue
        tag = "x".join(str(s) for s in row["shape"])
        if "fwht_over_ffht" in row:
            single = len(row["shape"]) == 1
            g = TARGETS["fwht_over_ffht_single_max" if single else "fwht_over_ffht_batched_max"]
            add(f"fwht/ffht {tag}", row["fwht_over_ffht"], f"<= {g}", row["fwht_over_ffht"] <= g)
        if "fwht_over_dense" in row and row["n"] <= 64:
            g = TARGETS["fwht_over_dense_max_n_le_64"]
            add(f"fwht/dense {tag}", row["fwht_over_dense"], f"<= {g}", row["fwht_over_dense"] <= g)
        g = TARGETS["radix2_over_fwht_min"]
        add(f"radix2/fwht {tag}", row["radix2_over_fwht"], f">= {g}", row["radix2_over_fwht"] >= g)
    for row in res.get("overhead", []):
        if row["n"] <= 1024:
            v = row["us_per_call"]["fwht"]
            add(f"overhead n={row['n']} (us)", v, f"< {TARGETS['overhead_us_max']}", v < TARGETS["overhead_us_max"])
    for row in res.get("torch", []):
        tag = f"{row['grid'][0]}x{row['grid'][1]} {row['c_in']}->{row['c_out']}"
        for spec, d in row["specs"].items():
            goal = None if gpu else TARGETS.get(f"torch_lbp_of_ideal_{spec}")  # the issue sets a CPU target only
            if goal is not None:
                add(f"torch LBPLinear {spec} of ideal {tag}", d["of_ideal"], f">= {goal}", d["of_ideal"] >= goal)
    mem = res.get("memory")
    if mem:
        add("layer saved / activation", mem["layer_saved_ratio"], "= (P r + e) / L",
            mem["layer_saved_bytes"] == mem["layer_saved_expected_bytes"])
        add("lbp peak - dense peak (bytes)", mem["lbp_excess_bytes"], f"<= {mem['coefficient_bytes']}",
            mem["lbp_excess_within_coefficients"])
    return out


def run_bench(quick: bool = False, device: str = "cpu", json_path=None, *, tiny: bool = False,
              stream=None) -> dict:
    """Run the benchmark matrix, print the table and optionally write JSON.

    Parameters
    ----------
    quick : bool
        Smaller batches and fewer rounds (under a minute on two cores).
    device : {"cpu", "gpu"}
        NumPy on the CPU, or CuPy (imported only here) on the current GPU.
    json_path : str or path, optional
        Where to write the results as JSON (checked before the benchmark runs;
        written atomically, missing directories created).
    tiny : bool
        Internal: minimal sizes for the test suite (seconds; numbers meaningless).
    stream : file, optional
        Where to print the table (default ``sys.stdout``).

    Returns
    -------
    dict
        ``machine``, ``settings``, ``backward``, ``memory``, ``wht``, ``overhead``
        (CPU) or ``gpu``, ``backward``, ``wht`` (GPU); ``torch`` (the rows of
        :func:`analysis.bench_torch.bench_torch`, when PyTorch is installed, with
        a CUDA device for ``"gpu"``); and ``targets`` (each with value, target and
        whether it was met).

    Examples
    --------
    >>> import io
    >>> from analysis.bench import run_bench
    >>> res = run_bench(tiny=True, stream=io.StringIO())  # seconds; the numbers mean nothing
    >>> res["device"], res["backward"][0]["specs"]["lp_l1:6"]["ideal_speedup"] == 64 / 21
    ('cpu', True)
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if json_path is not None:
        json_path = check_output_file(json_path)  # fail before the run, not after it
    stream = sys.stdout if stream is None else stream
    t0 = time.perf_counter()
    if tiny:
        batch, rounds, gbatch = 2, 1, 4
        batched, singles, over_calls = [(64, 16), (64, 256)], [1 << 12], 50
        layers = (((16, 16), 32, 64), ((14, 14), 64, 32))
    elif quick:
        batch, rounds, gbatch = 16, 3, 64
        batched, singles, over_calls = [(1024, 16), (1024, 64), (1024, 1024), (1024, 4096)], [1 << 16, 1 << 20], 1000
        layers = LAYERS
    else:
        batch, rounds, gbatch = 64, 7, 256
        batched = [(4096, n) for n in (16, 32, 64, 256, 1024, 4096)]
        singles, over_calls = [1 << 16, 1 << 20, 1 << 22], 4000
        layers = LAYERS
    res = {"device": device, "machine": machine_info(device),
           "settings": {"quick": bool(quick), "tiny": bool(tiny), "batch": batch if device == "cpu" else gbatch,
                        "rounds": rounds, "dtype": "float32"}}
    torch_layers = layers[:2]  # the ViT-B MLP shapes, 768 <-> 3072 on the 16x16 grid
    if device == "gpu":
        res.update(bench_gpu(gbatch, rounds))
        if torch_available("gpu"):
            res["torch"] = bench_torch(batch, rounds, torch_layers, device="gpu")
    else:
        res["backward"] = bench_backward(batch, rounds, layers=layers)
        res["memory"] = bench_memory(batch, c_in=layers[0][1], c_out=layers[0][2], grid=layers[0][0])
        res["wht"] = bench_wht(batched, singles, rounds)
        res["overhead"] = bench_overhead(calls=over_calls)
        if torch_available("cpu"):
            res["torch"] = bench_torch(batch, rounds, torch_layers)
    res["targets"] = _targets(res)
    res["elapsed_s"] = time.perf_counter() - t0
    print(format_table(res), file=stream)
    if json_path is not None:
        with created_directory(json_path.parent):
            write_json(json_path, res)
    return res


def _ms(seconds):
    return f"{seconds * 1e3:.1f}"


def _backward_table(rows):
    """One line per layer and selection; the layer's own columns only on its first line."""
    headers = ["layer", "plain", "dense", "d/p", "spec", "lbp", "layer", "ideal", "lbp x", "of id.", "layer x",
               "of id."]
    table = []
    for row in rows:
        t = row["times_s"]
        left = [f"{row['grid'][0]}x{row['grid'][1]} {row['c_in']}->{row['c_out']}", _ms(t["plain"]),
                _ms(t["dense"]), f"{row['dense_over_plain']:.2f}"]
        for spec, d in row["specs"].items():
            table.append(left + [spec, _ms(t["lbp " + spec]), _ms(t["layer " + spec])]
                         + [f"{d[k]:.2f}" for k in ("ideal_speedup", "lbp_speedup", "lbp_of_ideal", "layer_speedup",
                                                     "layer_of_ideal")])
            left = ["", "", "", ""]
    return text_table(headers, table, align="lrrrlrrrrrrr")


def _wht_table(rows):
    """GB/s of each transform and their time ratios per shape ("-" where an anchor is missing)."""
    columns = {"natural": ("gb_s", "fwht natural"), "sequency": ("gb_s", "fwht sequency"), "ffht": ("gb_s", "ffht"),
               "dense": ("gb_s", "dense"), "radix2": ("gb_s", "radix2"), "nat/ffht": (None, "fwht_over_ffht"),
               "seq/ffht": (None, "fwht_sequency_over_ffht"), "nat/dense": (None, "fwht_over_dense"),
               "radix2/nat": (None, "radix2_over_fwht")}
    table = []
    for row in rows:
        cells = ["x".join(map(str, row["shape"]))]
        for part, key in columns.values():
            values = row[part] if part else row
            cells.append(f"{values[key]:.2f}" if key in values else "-")
        table.append(cells)
    return text_table(["shape", *columns], table)


def format_table(res: dict) -> str:
    """Plain-text tables of a :func:`run_bench` result.

    Parameters
    ----------
    res : dict
        The result of :func:`run_bench`.

    Returns
    -------
    str

    Examples
    --------
    >>> import io
    >>> from analysis.bench import format_table, run_bench
    >>> res = run_bench(tiny=True, stream=io.StringIO())
    >>> format_table(res).splitlines()[0].startswith("machine:")
    True
    """
    m = res["machine"]
    lines = []
    blas = m.get("blas")
    if isinstance(blas, list):
        blas = ", ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads, "
                         f"{b.get('architecture')})" for b in blas) or "none found"
    lines.append(f"machine: {m['platform']} | {m['processor']} | {m['cpu_count']} CPUs | numpy {m['numpy']}")
    lines.append(f"BLAS: {blas} | FFHT: {'yes' if m.get('ffht') else 'not installed'}")
    if res.get("gpu"):
        g = res["gpu"]
        lines.append(f"GPU: {g['name']} | cupy {g['cupy']}")
    s = res["settings"]
    lines.append(f"settings: batch {s['batch']}, {s['rounds']} rounds (median), float32")
    lines.append("")
    lines.append("backward (ms; speed-up = plain / time; 'of ideal' = speed-up / cost-model ideal)")
    lines.append(_backward_table(res.get("backward", [])))
    if res.get("torch"):
        lines.append("")
        lines.append("PyTorch backward (ms; speed-up = nn.Linear / LBPLinear; 'of ideal' = speed-up / ideal)")
        lines.append(torch_table(res["torch"]))
    mem = res.get("memory")
    if mem:
        lines.append("")
        lines.append(f"memory ({mem['spec']}, batch {mem['batch']}, {mem['extra_tokens']} extra token): "
                     f"layer saves {mem['layer_saved_bytes'] / 2**20:.1f} MiB = {mem['layer_saved_ratio']:.4f} of "
                     f"the activation (r/n^2 = {mem['r_over_n2']:.4f}); peak temporary: dense "
                     f"{mem['peak_dense_bytes'] / 2**20:.1f} MiB, lbp {mem['peak_lbp_bytes'] / 2**20:.1f} MiB "
                     f"(excess {mem['lbp_excess_bytes'] / 2**20:.1f} MiB vs coefficients "
                     f"{mem['coefficient_bytes'] / 2**20:.1f} MiB), layer backward "
                     f"{mem['peak_layer_backward_bytes'] / 2**20:.1f} MiB")
    if res.get("wht"):
        lines.append("")
        if res.get("device") == "gpu":
            for row in res["wht"]:
                lines.append(f"fwht {row['shape']}: copy {row['copy_gb_s']:.0f} GB/s (read+write), fwht natural "
                             f"{row['fwht_gb_s']['fwht natural']:.0f} GB/s = {row['fwht_of_copy_bandwidth']:.2f} of "
                             f"copy, sequency {row['fwht_gb_s']['fwht sequency']:.0f} GB/s")
        else:
            lines.append("fwht float32 (GB/s = nbytes / time; ratios are time ratios)")
            lines.append(_wht_table(res["wht"]))
    if res.get("overhead"):
        lines.append("")
        lines.append("overhead per call: " + ", ".join(
            f"n={r['n']}: {r['us_per_call']['fwht']:.1f} us ({r['us_per_call']['fwht out=']:.1f} with out=)"
            for r in res["overhead"]))
    if res.get("targets"):
        lines.append("")
        lines.append("targets")
        for t in res["targets"]:
            v = t["value"]
            vs = f"{v:.3g}" if isinstance(v, float) else str(v)
            lines.append(f"  [{'met' if t['met'] else 'MISS'}] {t['name']}: {vs} ({t['target']})")
    lines.append(f"elapsed {res.get('elapsed_s', 0):.1f} s")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--quick``, ``--json``, ``--device`` (and the hidden ``--tiny``) to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser

    Returns
    -------
    argparse.ArgumentParser
        ``parser``.

    Examples
    --------
    >>> import argparse
    >>> from analysis.bench import add_arguments
    >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["--quick", "--json", "b.json"])
    >>> args.quick, args.json, args.device
    (True, 'b.json', 'cpu')
    """
    parser.add_argument("--quick", action="store_true", help="smaller batches, fewer rounds (under a minute)")
    parser.add_argument("--json", metavar="FILE", type=path_option, help="also write the results as JSON")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="cpu (NumPy) or gpu (CuPy)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    models = parser.add_argument_group("whole models (lbp bench --model; needs PyTorch)")
    models.add_argument("--model", action="append", choices=BENCH_MODELS, metavar="NAME",
                        help=f"time a training step of this replica dense and converted (repeatable): "
                             f"{', '.join(BENCH_MODELS)}")
    models.add_argument("--batch", action="append", type=_positive, metavar="B",
                        help="batch size of --model (repeatable; default 8 and 32)")
    models.add_argument("--rounds", type=_positive, default=3, metavar="N",
                        help="timed rounds of --model after a warm-up (default 3; medians)")
    models.add_argument("--bases", default="lp_l1:6", metavar="SPEC", help="selection of --model (default lp_l1:6)")
    models.add_argument("--threads", type=_positive, metavar="N", help="torch.set_num_threads for --model")
    models.add_argument("--channels-last", action="store_true",
                        help="run --model in torch.channels_last memory (maps reach the kernels in place)")
    models.add_argument("--per-layer", action="store_true", help="also time each converted layer of --model alone")
    return parser


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def main(argv=None) -> int:
    """``lbp bench [--quick] [--json FILE] [--device cpu|gpu]``; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 when ``--device gpu`` cannot import CuPy.

    Examples
    --------
    >>> from analysis.bench import main
    >>> main(["--quick", "--json", "bench.json"])  # doctest: +SKIP
    0
    """
    parser = add_arguments(argparse.ArgumentParser(prog="lbp bench", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    if args.model:
        if not torch_available(args.device):
            print("lbp bench: --model needs PyTorch (pip install 'lbpcore[torch]')"
                  + (" with a CUDA device" if args.device == "gpu" else ""), file=sys.stderr)
            return 2
        try:
            lbpcore.make_plan((8, 8), 8, args.bases)
        except ValueError as exc:
            parser.error(f"--bases: {exc}")
        run_model_bench(list(dict.fromkeys(args.model)), tuple(args.batch or (8, 32)), device=args.device,
                        json_path=args.json, machine=machine_info(args.device), rounds=args.rounds,
                        bases=args.bases, threads=args.threads, channels_last=args.channels_last,
                        per_layer=args.per_layer)
        return 0
    try:
        run_bench(quick=args.quick, device=args.device, json_path=args.json, tiny=args.tiny)
    except ImportError as exc:
        print(f"lbp bench: {exc} (--device gpu needs CuPy and a CUDA device)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
