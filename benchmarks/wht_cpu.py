"""Interleaved timing of ``lbpcore.fwht`` against FFHT on the CPU.

Runs ``fwht`` (natural and sequency order, into an existing ``out``) and
``ffht.fht_`` (in place, refilled from the input before each run) round after
round in one process, and prints per shape the median time of each and the
median and spread (25th-75th percentile) of the per-round time ratios
``fwht / ffht``, which are less sensitive than the times to load from other
processes.

Usage::

    python benchmarks/wht_cpu.py [--rounds 31] [--threads 1] [--json out.json]

``--threads 1`` sets ``OPENBLAS_NUM_THREADS=1`` (before NumPy is imported) and
limits lbpcore's own thread pool to one worker, so that the comparison with the
single-threaded FFHT is like for like.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

SHAPES = [(4096, 1024), (16, 65536), (4096, 256), (4096, 4096), (1 << 20,), (1 << 22,)]


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--threads", type=int, default=0, help="1: single-threaded BLAS and lbpcore pool")
    p.add_argument("--shapes", default="", help="e.g. '4096x1024,16x65536,1048576'")
    p.add_argument("--json", default="")
    p.add_argument("--clock", choices=("wall", "thread"), default="wall",
                   help="thread: CPU time of the calling thread (only meaningful with --threads 1)")
    return p.parse_args()


def _quantile(v, q):
    v = sorted(v)
    i = q * (len(v) - 1)
    lo = int(i)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (i - lo)


def main():
    """Time the shapes and print one row each."""
    args = _parse()
    if args.threads:
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np  # noqa: PLC0415 - after the thread settings

    import lbpcore  # noqa: PLC0415
    from lbpcore import _blas  # noqa: PLC0415

    if args.threads:
        _blas._workers = lambda: args.threads  # noqa: SLF001 - the library pool, for this measurement only
    import ffht  # noqa: PLC0415

    shapes = SHAPES
    if args.shapes:
        shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    rng = np.random.default_rng(0)
    rows = []
    print(f"{platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | numpy {np.__version__} | "
          f"threads {args.threads or 'default'} | rounds {args.rounds} | clock {args.clock}")
    print(f"{'shape':>12} {'nat ms':>8} {'seq ms':>8} {'ffht ms':>8} {'nat/ffht':>9} {'(IQR)':>13} "
          f"{'seq/ffht':>9} {'(IQR)':>13} {'min nat':>8} {'min seq':>8}")
    for shape in shapes:
        x = rng.standard_normal(shape, dtype=np.float32)
        out = np.empty_like(x)
        buf = np.empty_like(x)
        fns = {
            "nat": lambda x=x, out=out: lbpcore.fwht(x, ordering="natural", out=out),
            "seq": lambda x=x, out=out: lbpcore.fwht(x, out=out),
            "ffht": lambda buf=buf: ffht.fht_(buf),  # every row, one thread
        }
        clock = time.perf_counter if args.clock == "wall" else time.thread_time
        times = {k: [] for k in fns}
        for f in fns.values():  # warm-up
            np.copyto(buf, x)
            f()
        for _ in range(args.rounds):
            for k, f in fns.items():
                if k == "ffht":
                    np.copyto(buf, x)
                t0 = clock()
                f()
                times[k].append(clock() - t0)
        r_nat = [a / b for a, b in zip(times["nat"], times["ffht"], strict=True)]
        r_seq = [a / b for a, b in zip(times["seq"], times["ffht"], strict=True)]
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        row = {"shape": list(shape), "ms": med,
               "nat_over_ffht": statistics.median(r_nat),
               "nat_iqr": [_quantile(r_nat, 0.25), _quantile(r_nat, 0.75)],
               "seq_over_ffht": statistics.median(r_seq),
               "seq_iqr": [_quantile(r_seq, 0.25), _quantile(r_seq, 0.75)],
               "min_nat_over_ffht": min(times["nat"]) / min(times["ffht"]),
               "min_seq_over_ffht": min(times["seq"]) / min(times["ffht"])}
        rows.append(row)
        name = "x".join(map(str, shape))
        print(f"{name:>12} {med['nat']:8.2f} {med['seq']:8.2f} {med['ffht']:8.2f} {row['nat_over_ffht']:9.2f} "
              f"({row['nat_iqr'][0]:5.2f}-{row['nat_iqr'][1]:5.2f}) {row['seq_over_ffht']:9.2f} "
              f"({row['seq_iqr'][0]:5.2f}-{row['seq_iqr'][1]:5.2f}) {row['min_nat_over_ffht']:8.2f} "
              f"{row['min_seq_over_ffht']:8.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "rounds": args.rounds, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
