"""The ``lbp`` command through :func:`analysis.cli.main`: outputs, exit codes, no partial files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import analysis._outdir
import analysis.bench
import analysis.io
import lbpcore
from analysis import cli

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _agg(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("LBP_DEBUG", raising=False)


@pytest.fixture
def layer(tmp_path):
    """A small linear layer on a 12x12 grid (reflect-padded to 16x16 at patch 8) with one class token."""
    rng = np.random.default_rng(7)
    b, h, w, e, c_in, c_out = 2, 12, 12, 1, 5, 6
    u = np.linspace(0.0, 1.0, e + h * w)
    smooth = np.sin(3.0 * u)[None, :, None]
    x = smooth + 0.3 * rng.standard_normal((b, e + h * w, c_in))
    grad_y = smooth + 0.3 * rng.standard_normal((b, e + h * w, c_out))
    weight = rng.standard_normal((c_out, c_in))
    path = tmp_path / "layer.npz"
    np.savez(path, x=x, weight=weight, grad_y=grad_y)
    return {"path": path, "x": x, "weight": weight, "grad_y": grad_y, "grid": (h, w), "e": e}


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def files_in(d):
    d = Path(d)
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --------------------------------------------------------------------------
# lbp spectrum
# --------------------------------------------------------------------------


def test_spectrum_npy_tokens(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 64, 4))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    rc, stdout, err = run(["spectrum", tmp_path / "x.npy", "--grid", "8x8", "--out", out], capsys)
    assert rc == 0, err
    assert files_in(out) == ["energy_curve.png", "spectrum.json", "spectrum.png"]
    d = json.loads((out / "spectrum.json").read_text())
    assert d["patch"] == 8 and d["grid"] == [8, 8]
    emap = np.array(d["energy_map"])
    assert emap.shape == (8, 8)
    # divisible grid: Parseval, total energy is ||x||^2 and the map sums to n^2 times it
    assert d["total_energy"] == pytest.approx(float((x**2).sum()), rel=1e-12)
    assert emap.sum() == pytest.approx(64 * d["total_energy"], rel=1e-12)
    kept = emap[lbpcore.select_bases(8, "lp_l1:6").mask].sum() / emap.sum()
    assert d["energy_kept"] == pytest.approx(kept, rel=1e-12)
    assert {"lp_l1", "lp_linf", "energy", "random"} <= set(d["curves"])
    assert (out / "spectrum.png").read_bytes()[:8] == PNG
    assert (out / "energy_curve.png").read_bytes()[:8] == PNG
    assert "lp_l1:6" in stdout


def test_spectrum_npz_key_extra_tokens_and_padding(layer, tmp_path, capsys):
    out = tmp_path / "o"
    rc, _, err = run(["spectrum", layer["path"], "--key", "grad_y", "--grid", "12x12", "--extra-tokens", "1",
                      "--patch", "4", "--out", out], capsys)
    assert rc == 0, err
    d = json.loads((out / "spectrum.json").read_text())
    assert np.array(d["energy_map"]).shape == (4, 4)
    # 12x12 is divisible by 4: the class token is excluded from the energy
    assert d["total_energy"] == pytest.approx(float((layer["grad_y"][:, 1:] ** 2).sum()), rel=1e-12)


def test_spectrum_nchw_and_energy_spec(tmp_path, capsys):
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
    np.save(tmp_path / "maps.npy", x)
    out = tmp_path / "o"
    rc, _, err = run(["spectrum", tmp_path / "maps.npy", "--grid", "8x8", "--layout", "nchw", "--patch", "4",
                      "--bases", "energy_l2:3", "--out", out], capsys)
    assert rc == 0, err
    d = json.loads((out / "spectrum.json").read_text())
    emap = np.array(d["energy_map"])
    assert d["rank"] == 3
    assert d["energy_kept"] == pytest.approx(np.sort(emap.ravel())[-3:].sum() / emap.sum(), rel=1e-12)


# --------------------------------------------------------------------------
# lbp error
# --------------------------------------------------------------------------


def test_error_json_and_table(layer, tmp_path, capsys):
    out = tmp_path / "o"
    rc, stdout, err = run(["error", layer["path"], "--grid", "12x12", "--extra-tokens", "1", "--bases", "lp_l1:3",
                           "--out", out], capsys)
    assert rc == 0, err
    assert files_in(out) == ["error.json"]
    d = json.loads((out / "error.json").read_text())
    assert d["rank"] == 6
    for part in ("grad_x", "grad_weight"):
        assert set(d[part]) >= {"rel_error", "cosine"}
    assert set(d["baselines"]) == {"klt", "dct", "svd", "random"}
    for g in d["baselines"].values():
        assert set(g["grad_x"]) >= {"rel_error", "cosine"} and set(g["grad_weight"]) >= {"rel_error", "cosine"}
    # the LBP numbers are those of lbpcore itself
    kw = {"grid": (12, 12), "patch": 8, "bases": "lp_l1:3", "extra_tokens": 1}
    approx = lbpcore.lbp_backward(layer["x"], layer["weight"], layer["grad_y"], **kw)
    exact = lbpcore.dense_backward(layer["x"], layer["weight"], layer["grad_y"])
    for part in ("grad_x", "grad_weight"):
        a, b = getattr(approx, part), getattr(exact, part)
        assert d[part]["rel_error"] == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(b), rel=1e-9)
        assert d[part]["cosine"] == pytest.approx(np.vdot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-9)
    lines = stdout.splitlines()
    assert lines[0].split()[:2] == ["method", "rank"]
    assert any(line.startswith("LBP-WHT lp_l1:3") for line in lines)
    assert sum(line.split()[0] in ("klt", "dct", "svd", "random") for line in lines[2:]) == 4


def test_error_no_baselines(layer, tmp_path, capsys):
    rc, _, err = run(["error", layer["path"], "--grid", "12x12", "--extra-tokens", "1", "--bases", "lp_linf:8",
                      "--baselines", "none", "--out", tmp_path / "o"], capsys)
    assert rc == 0, err
    d = json.loads((tmp_path / "o" / "error.json").read_text())
    assert d["baselines"] == {}
    # 12x12 padded to 16x16 by reflection: even every basis is not exact on the grid, but close
    assert d["rank"] == 64 and d["grad_weight"]["cosine"] > 0.9


# --------------------------------------------------------------------------
# bad data: exit 1, one line, nothing written
# --------------------------------------------------------------------------


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


BAD_CASES = {
    "missing file": lambda d, L: (["error", d / "nope.npz"], "no such file"),
    "missing key": lambda d, L: (["error", _npz(d / "k.npz", x=L["x"], weight=L["weight"])], "grad_y"),
    "wrong grid": lambda d, L: (["error", L["path"], "--grid", "11x12"], "tokens"),
    "wrong extra tokens": lambda d, L: (["error", L["path"], "--extra-tokens", "0"], "tokens"),
    "nan": lambda d, L: (["error", _npz(d / "n.npz", x=L["x"], weight=L["weight"],
                                       grad_y=np.where(np.arange(L["grad_y"].size).reshape(L["grad_y"].shape) == 5,
                                                       np.nan, L["grad_y"]))], "non-finite"),
    "inf": lambda d, L: (["error", _npz(d / "i.npz", x=np.full_like(L["x"], np.inf), weight=L["weight"],
                                       grad_y=L["grad_y"])], "non-finite"),
    "weight mismatch": lambda d, L: (["error", _npz(d / "w.npz", x=L["x"], weight=L["weight"].T,
                                                    grad_y=L["grad_y"])], "weight"),
    "not npz": lambda d, L: (["error", d / "x.txt"], "npz"),
    "garbage npz": lambda d, L: (["error", d / "garbage.npz"], "cannot read"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_error_bad_data(case, layer, tmp_path, capsys):
    (tmp_path / "x.txt").write_text("not an array")
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    argv, needle = BAD_CASES[case](tmp_path, layer)
    defaults = {"--grid": "12x12", "--extra-tokens": "1", "--bases": "lp_l1:6"}
    for opt, val in defaults.items():
        if opt not in argv:
            argv += [opt, val]
    out = tmp_path / "out"
    rc, stdout, err = run(argv + ["--out", out], capsys)
    assert rc == 1
    assert err.startswith("lbp: error: ") and err.count("\n") == 1, err
    assert needle in err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing file", "missing key", "ambiguous npz", "wrong grid", "nan", "nchw grid"])
def test_spectrum_bad_data(case, layer, tmp_path, capsys):
    gy = layer["grad_y"]
    bad = gy.copy()
    bad[1, 3, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "maps.npy", np.ones((1, 2, 8, 8)))
    argv = {
        "missing file": [tmp_path / "nope.npy", "--grid", "12x12"],
        "missing key": [layer["path"], "--key", "grad_x", "--grid", "12x12", "--extra-tokens", "1"],
        "ambiguous npz": [layer["path"], "--grid", "12x12", "--extra-tokens", "1"],
        "wrong grid": [layer["path"], "--key", "x", "--grid", "12x13", "--extra-tokens", "1"],
        "nan": [tmp_path / "nan.npy", "--grid", "12x12", "--extra-tokens", "1"],
        "nchw grid": [tmp_path / "maps.npy", "--grid", "8x4", "--layout", "nchw"],
    }[case]
    out = tmp_path / "out"
    rc, _, err = run(["spectrum", *argv, "--out", out], capsys)
    assert rc == 1, err
    assert err.startswith("lbp: error: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_failed_run_keeps_existing_output_and_adds_nothing(layer, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "error.json").write_text("previous")
    np.savez(tmp_path / "bad.npz", x=layer["x"], weight=layer["weight"], grad_y=layer["grad_y"][:, :-1])
    rc, _, _ = run(["error", tmp_path / "bad.npz", "--grid", "12x12", "--extra-tokens", "1", "--bases", "lp_l1:6",
                    "--out", out], capsys)
    assert rc == 1
    assert files_in(out) == ["error.json"]
    assert (out / "error.json").read_text() == "previous"


def test_write_failure_removes_the_files_of_this_run(tmp_path, capsys, monkeypatch):
    """A failure while writing the second file: a failed run adds nothing, not even its directory."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1, 64, 2)))
    real = analysis._outdir._write_file
    calls = []

    def flaky(path, data, mode):
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(path))
        return real(path, data, mode)

    monkeypatch.setattr(analysis._outdir, "_write_file", flaky)
    out = tmp_path / "out"
    rc, _, err = run(["spectrum", tmp_path / "x.npy", "--grid", "8x8", "--out", out], capsys)
    assert rc == 1 and "No space left on device" in err and err.count("\n") == 1
    assert len(calls) == 2
    assert not out.exists()  # the directory this run created is gone too
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]  # and no temporary file anywhere


def test_output_path_is_a_file(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones((1, 64, 1)))
    (tmp_path / "taken").write_text("")
    rc, _, err = run(["spectrum", tmp_path / "x.npy", "--grid", "8x8", "--out", tmp_path / "taken"], capsys)
    assert rc == 1 and "not a directory" in err


# --------------------------------------------------------------------------
# usage errors: exit 2
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["spectrum", "x.npy", "--grid", "8by8", "--out", "o"],
        ["spectrum", "x.npy", "--grid", "0x8", "--out", "o"],
        ["spectrum", "x.npy", "--grid", "8x8"],  # no --out
        ["spectrum", "x.npy", "--grid", "8x8", "--patch", "6", "--out", "o"],
        ["spectrum", "x.npy", "--grid", "8x8", "--layout", "nhwc", "--out", "o"],
        ["spectrum", "x.npy", "--grid", "8x8", "--extra-tokens", "-1", "--out", "o"],
        ["spectrum", "x.npy", "--grid", "8x8", "--layout", "nchw", "--extra-tokens", "1", "--out", "o"],
        ["error", "l.npz", "--grid", "8x8", "--out", "o"],  # no --bases
        ["error", "l.npz", "--grid", "8x8", "--bases", "lp_l1:0", "--out", "o"],
        ["error", "l.npz", "--grid", "8x8", "--bases", "band:3", "--out", "o"],
        ["error", "l.npz", "--grid", "8x8", "--bases", "energy_l2:65", "--out", "o"],
        ["error", "l.npz", "--grid", "8x8", "--bases", "lp_l1:6", "--baselines", "pca", "--out", "o"],
        ["bench", "--device", "tpu"],
        ["report", "--bogus"],
    ],
)
def test_usage_errors_exit_2(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(argv, capsys)
    assert rc == 2
    assert "usage: lbp" in err
    assert not (tmp_path / "o").exists()


def test_help_exits_0(capsys):
    rc, out, _ = run(["--help"], capsys)
    assert rc == 0 and "report" in out and "spectrum" in out and "error" in out and "bench" in out
    rc, out, _ = run(["error", "--help"], capsys)
    assert rc == 0 and "--baselines" in out


def test_parse_grid():
    assert cli.parse_grid("14x14") == (14, 14)
    assert cli.parse_grid(" 7 X 9 ") == (7, 9)
    assert cli.parse_grid("3,5") == (3, 5)
    for bad in ("14", "14x", "ax3", "-1x4", "0x3", "1.5x2"):
        with pytest.raises(Exception, match="grid"):
            cli.parse_grid(bad)


# --------------------------------------------------------------------------
# lbp bench: delegated to analysis.bench.main
# --------------------------------------------------------------------------


def test_bench_delegates_to_analysis_bench(monkeypatch, capsys, tmp_path):
    """``lbp bench ARGS`` calls ``analysis.bench.main(ARGS)`` and returns its status."""
    seen = []
    monkeypatch.setattr(analysis.bench, "main", lambda argv=None: seen.append(list(argv)) or 0)
    rc, _, _ = run(["bench", "--quick", "--json", tmp_path / "b.json", "--device", "cpu"], capsys)
    assert rc == 0
    assert seen == [["--quick", "--json", str(tmp_path / "b.json"), "--device", "cpu"]]
    monkeypatch.setattr(analysis.bench, "main", lambda argv=None: 3)
    assert run(["bench"], capsys)[0] == 3


def test_bench_options_are_those_of_analysis_bench(monkeypatch, capsys):
    """``lbp bench`` takes analysis.bench's own options (add_arguments) and passes them on unchanged."""
    seen = []
    monkeypatch.setattr(analysis.bench, "main", lambda argv=None: seen.append(list(argv)) or 0)
    assert run(["bench", "--device", "gpu", "--quick"], capsys)[0] == 0
    assert seen == [["--device", "gpu", "--quick"]]
    assert run(["bench", "--device", "tpu"], capsys)[0] == 2


def test_bench_runs_through_the_command_line(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc, stdout, _ = run(["bench", "--tiny", "--json", out], capsys)  # the benchmark's test-sized run
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["device"] == "cpu" and "backward" in d
    assert stdout.strip()


# --------------------------------------------------------------------------
# the console entry point
# --------------------------------------------------------------------------


def test_python_dash_m_reports_bad_data_without_traceback(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    env.pop("LBP_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "spectrum", str(tmp_path / "missing.npy"), "--grid", "4x4",
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("lbp: error: ") and proc.stderr.count("\n") == 1
    assert "missing.npy" in proc.stderr
    assert proc.stdout == ""
