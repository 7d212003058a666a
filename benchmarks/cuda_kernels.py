"""Time the fused CUDA kernels against device-to-device copies and write JSON.

Run from the repository root on a machine with CuPy and a CUDA device::

    python benchmarks/cuda_kernels.py --out gpu-out/cuda_kernels.json [--batch 256] [--rounds 20]

Sections of the JSON (times are medians of ``cupyx.profiler.benchmark`` GPU
times, in seconds):

* ``patches``: ``lbpcore._patches._cuda.project`` / ``reconstruct`` at ViT-B MLP
  shapes (batch 256, 16x16 and 14x14 grids with reflect padding, C = 768 and
  3072, float32, ``lp_l1:6`` and ``lp_l1:3``, patch 8), for the default and
  every instantiated channel width ``vec``; with the time of a copy of the
  same number of bytes (``copy_same_bytes_s``: a copy reads and writes
  ``(read + written) / 2`` bytes), of a copy of the input, and of the generic
  path (``lbpcore.project`` / ``reconstruct``), and the largest relative
  difference from the generic path.
* ``wht_rows``: ``lbpcore._wht._cuda.fwht_rows`` on ``(2**24 / n, n)`` float32
  for n = 256 .. 4096 in natural, sequency and dyadic order, against a copy
  and ``lbpcore.fwht`` (whatever it dispatches to).
* ``wht_long``: ``fwht_long`` on single vectors of ``2**22`` and ``2**24``.

``fraction_of_copy`` is the copy time of the same bytes over the kernel time
(1.0: the kernel moves its bytes as fast as a copy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _timer(rounds):
    from cupyx.profiler import benchmark  # noqa: PLC0415

    def t(fn):
        r = benchmark(fn, n_repeat=max(3, rounds), n_warmup=3)
        return float(np.median(r.gpu_times[0]))

    return t


def _copy_time(cp, t, nbytes):
    """Time of a device-to-device copy that reads and writes ``nbytes // 2`` bytes each."""
    n = max(1, int(nbytes) // 8)
    a = cp.empty(n, dtype=cp.float32)
    b = cp.empty_like(a)
    return t(lambda: cp.copyto(b, a))


def _rel(xp, a, b):
    """Largest absolute difference over the largest magnitude of ``b``, computed with ``xp`` (no transfer)."""
    a = xp.asarray(a).astype(xp.float64)
    b = xp.asarray(b).astype(xp.float64)
    return float(xp.max(xp.abs(a - b))) / max(1e-30, float(xp.max(xp.abs(b))))


def _host(a):
    from lbpcore.testing import to_numpy  # noqa: PLC0415

    return to_numpy(a)


def bench_patches(cp, t, batch, quick=False):
    """Projection and reconstruction rows (see the module docstring)."""
    from array_api_compat import array_namespace  # noqa: PLC0415

    import lbpcore  # noqa: PLC0415
    from lbpcore._patches import _cuda as cpk  # noqa: PLC0415
    from lbpcore._patches._direct import project_direct, reconstruct_direct  # noqa: PLC0415

    xp = array_namespace(cp.empty(1))
    rows = []
    rng = cp.random.default_rng(0)
    grids = ((16, 16),) if quick else ((16, 16), (14, 14))
    channels = (768,) if quick else (768, 3072)
    for grid in grids:
        h, w = grid
        for c in channels:
            x = rng.standard_normal((batch, h * w, c), dtype=cp.float32)
            y = cp.empty_like(x)
            t_copy_x = t(lambda x=x, y=y: cp.copyto(y, x))
            for spec in ("lp_l1:6", "lp_l1:3"):
                basis = lbpcore.select_bases(8, spec)
                idx = basis.indices
                r = basis.rank
                plan = lbpcore.make_plan(grid, 8, spec, "reflect")
                m = plan.num_patches * r
                coef = rng.standard_normal((batch, m, c), dtype=cp.float32)
                # the generic array-API strip kernel (what CuPy arrays took before the fused kernels;
                # lbpcore.project itself now dispatches to them)
                ref_p = project_direct(xp, x, plan, "tokens", 0, 1.0, None)
                ref_r = reconstruct_direct(xp, coef, plan, "tokens", None, 1.0)
                row = {"grid": list(grid), "C": c, "bases": spec, "rank": r, "batch": batch,
                       "copy_input_s": t_copy_x,
                       "generic_project_s": t(lambda x=x, pl=plan: project_direct(xp, x, pl, "tokens", 0, 1.0, None)),
                       "generic_reconstruct_s": t(lambda co=coef, pl=plan: reconstruct_direct(xp, co, pl, "tokens",
                                                                                              None, 1.0)),
                       "variants": []}
                vmax = cpk.channel_vector(8, r, np.float32, 16)
                for vec in [None] + [v for v in (1, 2, 4) if v <= vmax]:
                    def proj(vec=vec, x=x, grid=grid, idx=idx):
                        return cpk.project(x, grid, 8, "reflect", idx, _vec=vec)

                    def rec(vec=vec, coef=coef, grid=grid, idx=idx):
                        return cpk.reconstruct(coef, grid, 8, "reflect", idx, _vec=vec)

                    t0 = time.perf_counter()
                    out_p = proj()
                    out_r = rec()
                    cp.cuda.Device().synchronize()
                    first = time.perf_counter() - t0
                    bytes_p = x.nbytes + out_p.nbytes
                    bytes_r = coef.nbytes + out_r.nbytes
                    tp, tr = t(proj), t(rec)
                    cp_p, cp_r = _copy_time(cp, t, bytes_p), _copy_time(cp, t, bytes_r)
                    row["variants"].append({
                        "vec": "default" if vec is None else vec,
                        "first_call_s (compile)": first,
                        "project_s": tp, "project_bytes": int(bytes_p), "project_copy_same_bytes_s": cp_p,
                        "project_fraction_of_copy": cp_p / tp, "project_over_copy_input": tp / t_copy_x,
                        "project_speedup_vs_generic": row["generic_project_s"] / tp,
                        "project_max_rel_diff": _rel(cp, out_p, ref_p),
                        "reconstruct_s": tr, "reconstruct_bytes": int(bytes_r), "reconstruct_copy_same_bytes_s": cp_r,
                        "reconstruct_fraction_of_copy": cp_r / tr,
                        "reconstruct_speedup_vs_generic": row["generic_reconstruct_s"] / tr,
                        "reconstruct_max_rel_diff": _rel(cp, out_r, ref_r),
                    })
                rows.append(row)
                d = row["variants"][0]
                print(f"patches {grid} C={c} {spec}: project {d['project_s'] * 1e6:.0f} us "
                      f"({d['project_fraction_of_copy']:.2f} of copy, "
                      f"x{d['project_speedup_vs_generic']:.1f} vs generic), "
                      f"reconstruct {d['reconstruct_s'] * 1e6:.0f} us "
                      f"({d['reconstruct_fraction_of_copy']:.2f} of copy, "
                      f"x{d['reconstruct_speedup_vs_generic']:.1f}); widths "
                      + ", ".join(f"v{v['vec']}: {v['project_s'] * 1e6:.0f}/{v['reconstruct_s'] * 1e6:.0f} us"
                                  for v in row["variants"][1:]), flush=True)
                del coef, ref_p, ref_r
            del x, y
    return rows


def bench_wht(cp, t, quick=False):
    """Rows and long-vector transform rows (see the module docstring)."""
    import lbpcore  # noqa: PLC0415
    from lbpcore._wht import _cuda as cw  # noqa: PLC0415

    rng = cp.random.default_rng(1)
    total = 1 << 24
    rows_out, long_out = [], []
    for n in (256, 1024, 4096) if quick else (256, 512, 1024, 2048, 4096):
        x = rng.standard_normal((total // n, n), dtype=cp.float32)
        y = cp.empty_like(x)
        t_copy = t(lambda x=x, y=y: cp.copyto(y, x))
        row = {"n": n, "rows": total // n, "copy_s": t_copy, "copy_gb_s": 2 * x.nbytes / t_copy / 1e9}
        for ordering in ("natural", "sequency", "dyadic"):
            tk = t(lambda x=x, n=n, o=ordering: cw.fwht_rows(x, n, o, 1.0))
            row[f"{ordering}_s"] = tk
            row[f"{ordering}_fraction_of_copy"] = t_copy / tk
        row["lbpcore_fwht_sequency_s"] = t(lambda x=x: lbpcore.fwht(x))
        got = cw.fwht_rows(x[:4], n, "sequency", 1.0)
        row["max_rel_diff"] = _rel(np, _host(got), lbpcore.fwht(_host(x[:4]).astype(np.float64)))
        rows_out.append(row)
        print(f"wht rows n={n}: natural {row['natural_fraction_of_copy']:.2f}, sequency "
              f"{row['sequency_fraction_of_copy']:.2f}, dyadic {row['dyadic_fraction_of_copy']:.2f} of copy "
              f"({row['copy_gb_s']:.0f} GB/s); lbpcore.fwht {t_copy / row['lbpcore_fwht_sequency_s']:.2f}", flush=True)
        del x, y
    for logn in (22, 24):
        n = 1 << logn
        x = rng.standard_normal(n, dtype=cp.float32)
        y = cp.empty_like(x)
        t_copy = t(lambda x=x, y=y: cp.copyto(y, x))
        row = {"n": n, "copy_s": t_copy}
        for ordering in ("natural", "sequency", "dyadic"):
            tk = t(lambda x=x, n=n, o=ordering: cw.fwht_long(x, n, o, 1.0))
            row[f"{ordering}_s"] = tk
            row[f"{ordering}_fraction_of_copy"] = t_copy / tk
        row["lbpcore_fwht_sequency_s"] = t(lambda x=x: lbpcore.fwht(x))
        got = _host(cw.fwht_long(x, n, "sequency", 1.0))
        row["max_rel_diff"] = _rel(np, got, lbpcore.fwht(_host(x).astype(np.float64)))
        long_out.append(row)
        print(f"wht long 2**{logn}: natural {row['natural_fraction_of_copy']:.2f}, sequency "
              f"{row['sequency_fraction_of_copy']:.2f} of copy; lbpcore.fwht "
              f"{t_copy / row['lbpcore_fwht_sequency_s']:.2f}", flush=True)
        del x, y
    return rows_out, long_out


def main(argv=None) -> int:
    """Run the benchmarks and write the JSON.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status (0).
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="cuda_kernels.json", help="JSON file to write")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    ap.add_argument("--skip", choices=("patches", "wht"), action="append", default=[])
    args = ap.parse_args(argv)
    import cupy as cp  # noqa: PLC0415

    t = _timer(args.rounds)
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    res = {"device": name, "cupy": cp.__version__, "batch": args.batch, "rounds": args.rounds}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps(res, indent=1))

    if "wht" not in args.skip:
        res["wht_rows"], res["wht_long"] = bench_wht(cp, t, args.quick)
        save()
    if "patches" not in args.skip:
        res["patches"] = bench_patches(cp, t, args.batch, args.quick)
    save()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
