"""``lbp spectrum`` and ``lbp error`` on shards, globs and Zarr stores, streamed within ``--memory``."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from analysis import cli
from analysis.shards import save_shards

pytest.importorskip("dask")


@pytest.fixture(autouse=True)
def _agg(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("LBP_DEBUG", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """80 items of a layer on a 12x12 grid with a class token: one .npz, and the same as shards."""
    rng = np.random.default_rng(21)
    x = (0.3 * rng.standard_normal((80, 145, 12)) + np.linspace(0, 1, 145)[None, :, None]).astype(np.float32)
    grad_y = rng.standard_normal((80, 145, 10)).astype(np.float32)
    weight = rng.standard_normal((10, 12))
    root = tmp_path_factory.mktemp("cli_stream")
    np.savez(root / "layer.npz", x=x, weight=weight, grad_y=grad_y)
    np.save(root / "x.npy", x)
    save_shards(root / "layer", {"x": (x[i:i + 9] for i in range(0, 80, 9)), "grad_y": grad_y, "weight": weight},
                shard_size="100kB")
    return {"root": root, "x": x}


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def same_numbers(a, b, path=""):
    """Assert two JSON documents are equal, floats to 1e-12 relative (1e-13 absolute for rounding-level values)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            same_numbers(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            same_numbers(u, v, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-12, abs=1e-13), path
    else:
        assert a == b, path


def test_spectrum_of_shards_equals_the_npy(data, tmp_path, capsys):
    root = data["root"]
    rc, out, err = run(["spectrum", root / "x.npy", "--grid", "12x12", "--extra-tokens", "1", "--out",
                        tmp_path / "ref"], capsys)
    assert rc == 0, err
    assert err == ""  # fits in memory: no summary
    for source in (root / "layer" / "x", str(root / "layer" / "x" / "*.npy"), root / "layer"):
        argv = ["spectrum", source, "--grid", "12x12", "--extra-tokens", "1", "--memory", "3MB",
                "--out", tmp_path / "got"]
        if source == root / "layer":
            argv += ["--key", "x"]
        rc, out, err = run(argv, capsys)
        assert rc == 0, err
        m = re.search(r"read (\S+ \S+) in \S+ s: (\S+) GB/s \((\d+) chunks of at most (\d+) items", err)
        assert m and int(m.group(3)) >= 4, err
        ref = json.loads((tmp_path / "ref" / "spectrum.json").read_text())
        got = json.loads((tmp_path / "got" / "spectrum.json").read_text())
        assert got["source"]["format"] == "shards" and got["source"]["shards"] == 9
        assert got["source"]["shape"] == ref["source"]["shape"] and got["source"]["dtype"] == "float32"
        for key in ("source",):
            ref.pop(key), got.pop(key)
        same_numbers(ref, got)


def test_spectrum_of_zarr(data, tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    store = zarr.open(str(tmp_path / "x.zarr"), mode="w", shape=data["x"].shape, chunks=(8, 145, 12),
                      dtype="float32")
    store[:] = data["x"]
    rc, _, err = run(["spectrum", tmp_path / "x.zarr", "--grid", "12x12", "--extra-tokens", "1", "--memory", "3MB",
                      "--out", tmp_path / "z"], capsys)
    assert rc == 0, err
    rc, _, err = run(["spectrum", data["root"] / "x.npy", "--grid", "12x12", "--extra-tokens", "1", "--out",
                      tmp_path / "ref"], capsys)
    got = json.loads((tmp_path / "z" / "spectrum.json").read_text())
    ref = json.loads((tmp_path / "ref" / "spectrum.json").read_text())
    assert got["source"]["format"] == "zarr"
    same_numbers(ref["energy_map"], got["energy_map"])


@pytest.mark.parametrize("bases", ["lp_l1:4", "energy_l2:12"])
def test_error_of_a_dataset_equals_the_npz(data, tmp_path, capsys, bases):
    root = data["root"]
    common = ["--grid", "12x12", "--extra-tokens", "1", "--bases", bases, "--seed", "3"]
    rc, out_ref, err = run(["error", root / "layer.npz", *common, "--out", tmp_path / "ref"], capsys)
    assert rc == 0, err
    rc, out, err = run(["error", root / "layer", *common, "--memory", "4MB", "--out", tmp_path / "got"], capsys)
    assert rc == 0, err
    assert min(int(n) for n in re.findall(r"\((\d+) chunks of at most", err)) >= 4
    ref = json.loads((tmp_path / "ref" / "error.json").read_text())
    got = json.loads((tmp_path / "got" / "error.json").read_text())
    ref.pop("source"), got.pop("source")
    same_numbers(ref, got)
    assert out.splitlines()[:2] == out_ref.splitlines()[:2]  # the same table


@pytest.mark.parametrize("problem,pattern", [
    ("shape", r"x/000003\.npy: shape \(9, 145, 11\) does not fit .*000000\.npy"),
    ("dtype", r"x/000003\.npy: dtype float64 differs from .*000000\.npy \(float32\)"),
    ("nan", r"x/000008\.npy( \(items \d+ to \d+\))? has 1 non-finite value"),
])
def test_bad_shards_fail_cleanly(data, tmp_path, capsys, problem, pattern):
    bad = tmp_path / "bad"
    save_shards(bad, {"x": (data["x"][i:i + 9] for i in range(0, 80, 9))})
    shard = bad / "x" / ("000008.npy" if problem == "nan" else "000003.npy")
    arr = np.load(shard)
    if problem == "shape":
        arr = arr[..., :11]
    elif problem == "dtype":
        arr = arr.astype(np.float64)
    else:
        arr[-1, 5, 2] = np.nan
    np.save(shard, arr)
    rc, out, err = run(["spectrum", bad / "x", "--grid", "12x12", "--extra-tokens", "1", "--memory", "3MB",
                        "--out", tmp_path / "out"], capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert lines[-1].startswith("lbp: error: ") and re.search(pattern, lines[-1]), err
    assert not (tmp_path / "out").exists()  # nothing written


def test_memory_and_scheduler_options(data, tmp_path, capsys, monkeypatch):
    root = data["root"]
    for bad in ("lots", "0", "-5MB"):
        rc, _, err = run(["spectrum", root / "x.npy", "--grid", "12x12", f"--memory={bad}", "--out", tmp_path],
                         capsys)
        assert rc == 2 and "--memory" in err and "memory size" in err
    rc, _, err = run(["spectrum", root / "x.npy", "--grid", "12x12", "--extra-tokens", "1", "--memory", "100kB",
                      "--out", tmp_path / "o"], capsys)
    assert rc == 1 and "memory budget 100 kB is too small" in err and not (tmp_path / "o").exists()
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.1.2.3:8786")
    args = cli.build_parser().parse_args(["spectrum", "x.npy", "--grid", "8x8", "--out", "o"])
    assert args.scheduler == "tcp://10.1.2.3:8786" and args.memory is None
    args = cli.build_parser().parse_args(["error", "d", "--grid", "8x8", "--bases", "lp_l1:2", "--out", "o",
                                          "--scheduler", "tcp://h:1", "--memory", "2GiB"])
    assert args.scheduler == "tcp://h:1" and args.memory == 2 * 2**30


def test_error_needs_an_archive_or_dataset(data, tmp_path, capsys):
    rc, _, err = run(["error", data["root"] / "x.npy", "--grid", "12x12", "--bases", "lp_l1:2", "--out", tmp_path],
                     capsys)
    assert rc == 1 and "expected a .npz archive, dataset directory or Zarr group" in err
    rc, _, err = run(["error", data["root"] / "layer" / "x", "--grid", "12x12", "--bases", "lp_l1:2", "--out",
                      tmp_path / "o"], capsys)
    assert rc == 1 and "no array 'x'" in err and not (tmp_path / "o").exists()
