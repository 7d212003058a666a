"""``lbp bench`` runs and writes valid JSON (no timing assertions: CI machines are noisy)."""

from __future__ import annotations

import json

import pytest

from analysis import bench
from analysis.cli import main
from analysis.machine import machine_info


def test_bench_tiny_writes_valid_json(tmp_path, capsys):
    path = tmp_path / "sub" / "bench.json"
    assert bench.main(["--tiny", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "backward" in out and "fwht" in out and "targets" in out
    res = json.loads(path.read_text())
    for key in ("device", "machine", "settings", "backward", "memory", "wht", "overhead", "targets", "elapsed_s"):
        assert key in res, key
    assert res["device"] == "cpu"
    for key in ("platform", "cpu_count", "numpy", "blas", "ffht"):
        assert key in res["machine"], key
    row = res["backward"][0]
    assert {"plain", "dense", "lbp lp_l1:6", "layer lp_l1:6", "lbp lp_l1:3"} <= set(row["times_s"])
    spec = row["specs"]["lp_l1:6"]
    assert spec["ideal_speedup"] == pytest.approx(64 / 21)
    assert spec["lbp_of_ideal"] == pytest.approx(spec["lbp_speedup"] / spec["ideal_speedup"])
    assert res["memory"]["layer_saved_bytes"] == res["memory"]["layer_saved_expected_bytes"]
    w = res["wht"][0]
    assert w["gb_s"]["fwht natural"] > 0 and "radix2" in w["gb_s"]
    assert all({"name", "value", "target", "met"} <= set(t) for t in res["targets"])


def test_bench_run_bench_returns_dict(capsys):
    res = bench.run_bench(tiny=True)
    assert isinstance(res, dict) and res["settings"]["tiny"] is True
    assert "machine:" in capsys.readouterr().out


def test_bench_rejects_unknown_device():
    with pytest.raises(ValueError, match="device"):
        bench.run_bench(device="tpu", tiny=True)


@pytest.mark.slow
def test_bench_quick_cli(tmp_path):
    path = tmp_path / "quick.json"
    assert main(["bench", "--quick", "--json", str(path)]) == 0
    res = json.loads(path.read_text())
    assert res["settings"]["quick"] is True and len(res["backward"]) == 3


def test_bench_torch_rows(capsys):
    pytest.importorskip("torch")
    res = bench.run_bench(tiny=True)
    row = res["torch"][0]
    assert row["device"] == "cpu" and row["engine"] == "numpy"
    assert {"nn.Linear", "LBPLinear lp_l1:6", "LBPLinear lp_l1:3"} == set(row["times_s"])
    spec = row["specs"]["lp_l1:6"]
    assert spec["of_ideal"] == pytest.approx(spec["speedup"] / spec["ideal_speedup"])
    assert any(t["name"].startswith("torch LBPLinear lp_l1:6 of ideal") for t in res["targets"])
    assert "PyTorch backward" in capsys.readouterr().out


def test_bench_model_rows(tmp_path, capsys):
    """``lbp bench --model``: the row's structure and its accounting (not its timings)."""
    torch = pytest.importorskip("torch")
    from analysis.bench_models import run_model_bench  # noqa: PLC0415 - needs PyTorch

    path = tmp_path / "models.json"
    before = torch.get_num_threads()
    res = run_model_bench(["efficientformer_l1"], [2], rounds=1, json_path=path, threads=1,
                          size_overrides=dict(depths=(1, 1, 1, 2), widths=(8, 8, 16, 16), img_size=128))
    assert "efficientformer_l1" in capsys.readouterr().out and json.loads(path.read_text()) == json.loads(
        json.dumps(res))
    row = res["models"][0]
    assert row["converted_layers"] == 2 * 4 + 4  # fc1, fc2 of four 2d blocks; qkv, proj, fc1, fc2 of the 1d block
    assert row["threads"] == 1 and torch.get_num_threads() == before
    for key in ("dense", "converted"):
        assert row[key]["step_s"] == pytest.approx(row[key]["forward_s"] + row[key]["backward_s"])
    # the ideal keeps the dense forward and scales only the converted layers' share of the backward
    assert row["ideal"]["step_s"] == pytest.approx(row["dense"]["forward_s"] + row["ideal"]["backward_s"])
    assert 0 < row["ideal"]["backward_s"] < row["dense"]["backward_s"]
    assert row["speedup"]["step"] == pytest.approx(row["dense"]["step_s"] / row["converted"]["step_s"])
    # a converted layer saves its input's coefficients (21 of 64 bases at most), not the input
    assert 0 < row["converted"]["saved_bytes"] < row["dense"]["saved_bytes"]
    assert sum(len(lay["names"]) for lay in row["layers"]) == row["converted_layers"]
    # 21 coefficient rows of lp_l1:6 for the 32x32..8x8 maps' 64 tokens per patch; 21 for 16 tokens (4x4 grid)
    assert sorted({round(lay["flop_ratio"], 4) for lay in row["layers"]}) == [round(21 / 64, 4), round(21 / 16, 4)]


def test_bench_model_cli_errors(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--model", "resnet50"])
    assert "invalid choice: 'resnet50'" in capsys.readouterr().err
    pytest.importorskip("torch")
    with pytest.raises(SystemExit):
        bench.main(["--model", "vit_s16", "--bases", "lp_l1:0"])
    assert "--bases:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--model", "vit_s16", "--batch", "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err


def test_machine_info_records_which_projection_kernel_runs_and_where(monkeypatch):
    from lbpcore._patches import _compiled  # noqa: PLC0415

    monkeypatch.setattr(_compiled, "available", lambda: False)
    info = machine_info()
    assert info["projection_kernel"] == "cache-blocked (NumPy)"
    if "torch_kernel_threads" in info:  # PyTorch already loaded: without the compiled kernel there is no team
        assert info["torch_kernel_threads"] == "lbpcore's pool"
    pytest.importorskip("numba")
    monkeypatch.setattr(_compiled, "available", lambda: True)
    assert machine_info()["projection_kernel"].startswith("compiled (Numba ")
    pytest.importorskip("torch")
    from lbpcore.torch import _bridge  # noqa: PLC0415

    monkeypatch.setattr(_bridge, "torch_openmp", lambda: ("/lib/libgomp.so.1", None))
    assert machine_info()["torch_kernel_threads"] == "PyTorch's OpenMP team (/lib/libgomp.so.1)"
    monkeypatch.setattr(_bridge, "torch_openmp", lambda: None)
    assert machine_info()["torch_kernel_threads"] == "lbpcore's pool"
