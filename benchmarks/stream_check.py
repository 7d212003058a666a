"""Check ``lbp spectrum`` over a sharded dataset larger than its memory budget (issue 11, "done when").

Writes a dataset of ViT-B-sized float32 activations ``(B, 197, 768)`` shard by
shard, then runs, each in a fresh process:

1. ``lbp spectrum DATA --memory BUDGET`` (streamed with Dask), recording the peak
   resident memory of the process (``ru_maxrss``) and the throughput it prints;
2. the same command on two one-item shards with the same budget, streamed the
   same way: the fixed overhead (interpreter, NumPy, Dask, matplotlib, the
   plots), which does not grow with the data;
3. the spectrum of the whole dataset in memory (one chunk, a budget larger than
   the data) to compare the numbers;

then, in this process, the throughput (GB/s, median of rounds run interleaved)
of the in-memory path on data that fits (four shards; with the default BLAS
threads and with one), of the streamed path on the same data and of the
streamed path on the whole dataset.

Usage: ``python benchmarks/stream_check.py [--gb 1.2] [--budget 256MB] [--dir DIR]``.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from analysis.budget import parse_memory
from analysis.shards import save_shards
from analysis.sources import BatchSource, open_source
from analysis.spectrum import energy_maps
from analysis.threads import blas_limit

ITEM = (197, 768)  # ViT-B tokens (class token + 14x14) x channels


def lbp(*argv):
    """Run ``lbp`` in a fresh process: (stderr, seconds, peak RSS in bytes of that process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "analysis", *map(str, argv)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"lbp {' '.join(map(str, argv))} failed:\n{run.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    if peak <= before * 1024:
        peak = None  # ru_maxrss is the largest child so far: this one was not larger
    return run.stderr, seconds, peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.2, help="dataset size in GB (default 1.2)")
    ap.add_argument("--budget", default="256MB", help="--memory of the streamed run (default 256MB)")
    ap.add_argument("--dir", default=None, help="where to write the dataset (default a temporary directory)")
    args = ap.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="lbp-stream-"))
    item_bytes = 4 * ITEM[0] * ITEM[1]
    items = int(args.gb * 1e9 // item_bytes)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((64,) + ITEM, dtype=np.float32)

    def chunks():  # smooth-ish activations, never all in memory
        for start in range(0, items, 64):
            b = min(64, items - start)
            yield base[:b] * np.float32(1 + start / items) + np.float32(start % 7)

    data = root / "data"
    if not data.exists():
        save_shards(data, {"x": chunks()}, shard_size="64MB")
    x = data / "x"
    shards = sorted(x.iterdir())
    common = ["--grid", "14x14", "--extra-tokens", "1"]
    out = {"dataset_bytes": items * item_bytes, "items": items, "shards": len(shards),
           "budget": parse_memory(args.budget)}

    # the order matters for ru_maxrss (largest child so far): small processes first
    small = root / "small"  # two shards of one item: streamed (two chunks) through the same code, tiny data
    small.mkdir(exist_ok=True)
    for i in range(2):
        np.save(small / f"{i}.npy", np.load(shards[0], mmap_mode="r")[i:i + 1])
    err, _, out["fixed_overhead_rss"] = lbp("spectrum", small, *common, "--memory", args.budget,
                                            "--out", root / "o_small")
    assert "2 chunks" in err, err
    err, seconds, out["streamed_peak_rss"] = lbp("spectrum", x, *common, "--memory", args.budget,
                                                 "--out", root / "o_stream")
    out["streamed_summary"] = err.strip().splitlines()[-1]
    out["streamed_seconds"] = seconds
    _, _, _ = lbp("spectrum", x, *common, "--memory", "64GB", "--out", root / "o_memory")
    streamed = json.loads((root / "o_stream" / "spectrum.json").read_text())
    whole = json.loads((root / "o_memory" / "spectrum.json").read_text())
    a, b = np.array(streamed["energy_map"]), np.array(whole["energy_map"])
    out["max_rel_diff_vs_in_memory"] = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    out["energy_kept"] = [streamed["energy_kept"], whole["energy_kept"]]
    out.update(throughput(x, shards, args.budget))
    print(json.dumps(out, indent=2))


def throughput(x, shards, budget, rounds=3):
    """GB/s of the spectrum in this process, interleaved round by round (median): in memory on data that
    fits, streamed on the same data, and streamed on the whole dataset."""
    fits = BatchSource("fits", open_source(x).shards[:4], "shards")  # 4 shards: 4 chunks at least, streamed
    array = fits.read()
    kw = dict(grid=(14, 14), extra_tokens=1)
    def one_blas_thread():
        with blas_limit(1):
            return energy_maps(array, **kw)

    runs = {"in_memory_fits": lambda: energy_maps(array, **kw),
            "in_memory_fits_one_blas_thread": one_blas_thread,
            "streamed_fits": lambda: energy_maps(fits, memory=budget, **kw),
            "streamed_all": lambda: energy_maps(x, memory=budget, **kw)}
    sizes = {k: array.nbytes for k in runs} | {"streamed_all": open_source(x).nbytes}
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, f in runs.items():
            start = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - start)
    return {f"{k}_gb_per_s": sizes[k] / 1e9 / float(np.median(t)) for k, t in times.items()} | {
        "fits_bytes": array.nbytes, "rounds": rounds}


if __name__ == "__main__":
    main()
