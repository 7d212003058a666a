"""Streamed spectra and gradient errors (analysis.stream) against one in-memory pass.

A sharded dataset several times larger than the chunks gives the same numbers
as the in-memory functions (1e-12 relative in float64), on the local threaded
scheduler and on a real ``dask.distributed.LocalCluster`` with two worker
processes; the resident memory of the streamed path stays within its budget;
and ``analysis`` works without Dask installed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from analysis.errors import gradient_errors, rank_sweep
from analysis.shards import save_shards
from analysis.spectrum import energy_curves, energy_maps
from analysis.stream import reduce_batches

ROOT = Path(__file__).resolve().parents[1]
GRID, E = (14, 14), 1
#: Budgets that cut the 80-item dataset below into about 10 to 30 chunks (the working memory per item is measured).
SPECTRUM_BUDGET, ERRORS_BUDGET = "3MB", "4MB"


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    """A linear layer's x, weight and grad_y (float32), and the same as a dataset of shards."""
    rng = np.random.default_rng(11)
    b, c_in, c_out = 80, 12, 8
    smooth = np.sin(np.linspace(0.0, 3.0, E + GRID[0] * GRID[1]))[None, :, None]
    x = (smooth + 0.5 * rng.standard_normal((b, E + 196, c_in))).astype(np.float32)
    grad_y = (smooth + 0.5 * rng.standard_normal((b, E + 196, c_out))).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in))
    path = tmp_path_factory.mktemp("stream") / "layer"
    save_shards(path, {"x": (x[i:i + 7] for i in range(0, b, 7)),  # shard boundaries differ between x and grad_y
                       "grad_y": (grad_y[i:i + 5] for i in range(0, b, 5)), "weight": weight})
    return {"x": x, "grad_y": grad_y, "weight": weight, "path": path}


def chunk_counts(stderr):
    return [int(n) for n in re.findall(r"\((\d+) chunks? of at most", stderr)]


def assert_reports_equal(a, b):
    assert (a.rank, a.bases, a.num_patches, list(a.methods)) == (b.rank, b.bases, b.num_patches, list(b.methods))
    assert a.selection.indices.tolist() == b.selection.indices.tolist()
    for name, m in a.methods.items():
        other = b.methods[name]
        assert m.info == other.info
        for part in ("grad_x", "grad_weight", "projection"):
            for key, value in getattr(m, part).items():
                # 1e-12 relative; values at the level of rounding (exact methods) are compared absolutely
                assert getattr(other, part)[key] == pytest.approx(value, rel=1e-12, abs=1e-13), (name, part, key)


# --------------------------------------------------------------------------
# the engine


def test_reduce_batches_sums_and_plans():
    x = np.arange(300_000.0).reshape(100_000, 3)
    sums, info = reduce_batches([x, x[:, :1]], lambda a, b: {"s": a.sum(axis=0), "n": len(b)}, memory="5MB")
    assert sums["s"].tolist() == x.sum(axis=0).tolist() and float(sums["n"]) == 100_000
    assert info.chunks > 1 and info.engine == "threads" and info.nbytes == 100_000 * 4 * 8
    sums, info = reduce_batches([x], lambda a: {"s": a.sum()}, memory="1GB")
    assert info.chunks == 1 and info.engine == "in memory" and float(sums["s"]) == x.sum()
    with pytest.raises(ValueError, match="disagree on the batch size: 100000 and 99999"):
        reduce_batches([x, x[1:]], lambda a, b: {})  # 100000 and 99999
    with pytest.raises(ValueError, match="the batch is empty"):
        reduce_batches([x[:0]], lambda a: {})
    with pytest.raises(ValueError, match="memory budget 1 MB is too small"):
        reduce_batches([x], lambda a: {"s": np.ones(1000)}, memory="1MB")


# --------------------------------------------------------------------------
# streamed == in memory, threaded scheduler


@pytest.mark.parametrize("per", [None, "channel", "patch"])
def test_streamed_spectrum_equals_in_memory(layer, per, capsys):
    ref = energy_maps(layer["x"], grid=GRID, extra_tokens=E, per=per)
    got = energy_maps(layer["path"] / "x", grid=GRID, extra_tokens=E, per=per, memory=SPECTRUM_BUDGET, progress=True)
    assert min(chunk_counts(capsys.readouterr().err)) >= 4
    np.testing.assert_allclose(got.l2, ref.l2, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got.l1, ref.l1, rtol=1e-12, atol=0)
    assert (got.batch, got.count, got.grid, got.per) == (ref.batch, ref.count, ref.grid, ref.per)
    assert got.total_energy == pytest.approx(ref.total_energy, rel=1e-12)
    for policy, rows in energy_curves(ref).items():
        for a, b in zip(rows, energy_curves(got)[policy], strict=True):
            assert b["kept"] == pytest.approx(a["kept"], rel=1e-12)


def test_streamed_spectrum_of_dask_and_nchw(layer):
    da = pytest.importorskip("dask.array")
    maps = np.random.default_rng(2).standard_normal((24, 3, 12, 10))  # float64, padded with zeros to 16x16
    ref = energy_maps(maps, patch=8, pad="zero", layout="nchw")
    got = energy_maps(da.from_array(maps, chunks=(5, 3, 12, 10)), patch=8, pad="zero", layout="nchw", memory="2MB")
    np.testing.assert_allclose(got.l2, ref.l2, rtol=1e-12, atol=0)
    assert got.grid == (12, 10) and got.batch == 24


@pytest.mark.parametrize("bases", ["lp_l1:3", "energy_l2:10", "energy_l1:6"])
def test_streamed_errors_equal_in_memory(layer, bases, capsys):
    ref = gradient_errors(layer["x"], layer["weight"], layer["grad_y"], grid=GRID, patch=8, bases=bases,
                          extra_tokens=E, seed=4)
    got = gradient_errors(layer["path"] / "x", layer["weight"], layer["path"] / "grad_y", grid=GRID, patch=8,
                          bases=bases, extra_tokens=E, seed=4, memory=ERRORS_BUDGET, progress=True)
    counts = chunk_counts(capsys.readouterr().err)
    assert len(counts) == 2 and min(counts) >= 4  # calibration pass (KLT, energy spec), then the errors
    assert_reports_equal(ref, got)


def test_streamed_errors_near_the_float64_limit(layer):
    """Values near 1e300: both paths scale by powers of two (exact), so both are finite and equal."""
    x, gy = layer["x"][:24].astype(np.float64) * 1e300, layer["grad_y"][:24].astype(np.float64) * 1e-300
    ref = gradient_errors(x, layer["weight"] * 1e200, gy, grid=GRID, bases="lp_l1:3", extra_tokens=E)
    got = gradient_errors(x, layer["weight"] * 1e200, gy, grid=GRID, bases="lp_l1:3", extra_tokens=E,
                          memory=ERRORS_BUDGET)
    assert all(np.isfinite(v) for m in got.methods.values() for v in m.grad_weight.values())
    assert_reports_equal(ref, got)


def test_streamed_rank_sweep_equals_in_memory(layer):
    ref = rank_sweep(layer["x"], layer["weight"], layer["grad_y"], grid=GRID, patch=8, ks=[2, 5], extra_tokens=E,
                     seed=1, progress=False)
    got = rank_sweep(layer["path"] / "x", layer["weight"], layer["path"] / "grad_y", grid=GRID, patch=8,
                     ks=(k for k in (2, 5)), extra_tokens=E, seed=1, memory=ERRORS_BUDGET, progress=False)
    assert len(got) == 2
    for a, b in zip(ref, got, strict=True):
        assert_reports_equal(a, b)


def test_streamed_errors_nchw_from_dask_arrays():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(5)
    x, gy, w = rng.standard_normal((12, 4, 8, 8)), rng.standard_normal((12, 3, 8, 8)), rng.standard_normal((3, 4))
    ref = gradient_errors(x, w, gy, patch=4, bases="lp_l1:2", layout="nchw", baselines=("dct", "svd"))
    got = gradient_errors(da.from_array(x, chunks=4), w, da.from_array(gy, chunks=3), patch=4, bases="lp_l1:2",
                          layout="nchw", baselines=("dct", "svd"), memory="2.5MB")
    assert_reports_equal(ref, got)


# --------------------------------------------------------------------------
# a real cluster: two worker processes on the loopback interface


@pytest.mark.slow
def test_local_cluster_gives_the_same_numbers(layer, capsys):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        spectrum = energy_maps(layer["path"] / "x", grid=GRID, extra_tokens=E, memory=SPECTRUM_BUDGET,
                               scheduler=cluster.scheduler_address, progress=True)
        errors = gradient_errors(layer["path"] / "x", layer["weight"], layer["path"] / "grad_y", grid=GRID,
                                 bases="energy_l2:10", extra_tokens=E, memory=ERRORS_BUDGET, scheduler=client)
        assert len(client.nthreads()) == 2
    err = capsys.readouterr().err
    assert "cluster tcp://127.0.0.1:" in err and min(chunk_counts(err)) >= 4
    ref = energy_maps(layer["x"], grid=GRID, extra_tokens=E)
    np.testing.assert_allclose(spectrum.l2, ref.l2, rtol=1e-12, atol=0)
    np.testing.assert_allclose(spectrum.l1, ref.l1, rtol=1e-12, atol=0)
    assert_reports_equal(gradient_errors(layer["x"], layer["weight"], layer["grad_y"], grid=GRID,
                                         bases="energy_l2:10", extra_tokens=E), errors)


def test_unreachable_scheduler():
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ConnectionError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        energy_maps(np.ones((2, 64, 1)), grid=(8, 8), scheduler="tcp://127.0.0.1:9")


# --------------------------------------------------------------------------
# resident memory of the streamed path, measured in a fresh process

MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from analysis.errors import gradient_errors, rank_sweep
    from analysis.sources import BatchSource, open_source
    from analysis.spectrum import energy_maps

    def status(key):  # bytes, from /proc/self/status
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

    def reset_peak():  # VmHWM := VmRSS (Linux 4.0+), then the baseline
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return status("VmRSS:")

    path, budget = sys.argv[1], int(sys.argv[2])
    x, gy = open_source(path, "x"), open_source(path, "grad_y")
    w = open_source(path, "weight").read()
    first = lambda s: BatchSource("warm-up", s.shards[:1], "shards")
    kw = dict(grid=(14, 14), extra_tokens=1, memory=budget)
    energy_maps(first(x), **kw)  # warm up: imports, thread pools, caches
    gradient_errors(first(x), w, first(gy), baselines=("dct", "svd"), **kw)
    out = {"data": x.nbytes}
    base = reset_peak()
    spectrum = energy_maps(x, **kw)
    out["spectrum"] = status("VmHWM:") - base
    base = reset_peak()
    errors = gradient_errors(x, w, gy, baselines=("dct", "svd"), **kw)
    out["errors"] = status("VmHWM:") - base
    ref = energy_maps(x.read(), grid=(14, 14), extra_tokens=1)  # in memory: 4 times the budget and more
    out["spectrum_rel"] = float(np.max(np.abs(spectrum.l2 - ref.l2)) / np.max(ref.l2))
    print(json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure peak memory")
def test_streamed_peak_memory_stays_within_budget(tmp_path):
    pytest.importorskip("dask")
    budget = 12 * 2**20
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal((16, 197, 96), dtype=np.float32) for _ in range(2)]  # reused: 58 MB of x
    save_shards(tmp_path / "big", {"x": (chunks[i % 2] for i in range(48)),
                                   "grad_y": (chunks[i % 2][..., :64] for i in range(48)),
                                   "weight": rng.standard_normal((64, 96))}, shard_size="8MB")
    script = tmp_path / "measure.py"
    script.write_text(MEMORY_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "big"), str(budget)], capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["data"] >= 4 * budget
    assert out["spectrum"] <= budget, out  # the fixed overhead (interpreter, imports) is in the baseline
    assert out["errors"] <= budget, out
    assert out["spectrum_rel"] < 1e-12, out


# --------------------------------------------------------------------------
# without Dask

NO_DASK = textwrap.dedent("""
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("dask", "distributed", "zarr"):
                raise ImportError(f"blocked: {name}")

    sys.meta_path.insert(0, Block())
    import numpy as np
    import analysis
    from analysis.cli import main

    x = np.random.default_rng(0).standard_normal((400, 64, 32))
    assert analysis.energy_maps(x, grid=(8, 8)).batch == 400
    assert analysis.energy_maps(x, grid=(8, 8), memory="1GB").batch == 400  # one chunk: no Dask needed
    analysis.gradient_errors(x[:20], np.ones((2, 32)), x[:20, :, :2], grid=(8, 8), patch=4, bases="lp_l1:2")
    try:
        analysis.energy_maps(x, grid=(8, 8), memory="3MB")
    except ImportError as exc:
        print("ImportError:", exc)
    np.save(sys.argv[1] + "/x.npy", x)
    print("rc", main(["spectrum", sys.argv[1] + "/x.npy", "--grid", "8x8", "--out", sys.argv[1] + "/out"]))
    print("rc", main(["spectrum", sys.argv[1] + "/x.npy", "--grid", "8x8", "--out", sys.argv[1] + "/o2",
                      "--memory", "3MB"]))
    assert not any(m.partition(".")[0] in ("dask", "distributed", "zarr") for m in sys.modules)
""")


def test_analysis_works_without_dask(tmp_path):
    run = subprocess.run([sys.executable, "-c", NO_DASK, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert "streaming them needs Dask: pip install 'lbpcore[dask]'" in run.stdout
    assert run.stdout.count("rc 0") == 1 and run.stdout.count("rc 1") == 1
    assert "lbp: error: the batch needs" in run.stderr and not (tmp_path / "o2").exists()
