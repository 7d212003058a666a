"""The ``lbp`` command on hostile files and options (issue 13, item 4).

Every data problem is exit 1 with one line naming the file and the problem;
every usage problem exit 2 naming the option; the output is checked before
anything is computed; ``lbp error`` on finite data near the ends of the
float64 range gives finite numbers; Ctrl-C at any moment is ``lbp:
interrupted``, exit 130, no traceback.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import analysis.errors
import analysis.report
import analysis.spectrum
from analysis import _entry, cli
from analysis.io import DataError, load_array

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(13)


@pytest.fixture(autouse=True)
def _agg(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("LBP_DEBUG", raising=False)


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _npy_bytes(a, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, a)
    else:
        np.lib.format.write_array(buf, a, version=version)
    return buf.getvalue()


def _header_only(shape, descr="<f8", tail=b""):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + tail


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


X = RNG.standard_normal((2, 64, 3))
W = RNG.standard_normal((4, 3))
GY = RNG.standard_normal((2, 64, 4))

# --------------------------------------------------------------------------
# files read defensively: (file name, bytes or builder, expected words)
# --------------------------------------------------------------------------

BAD_NPY = {
    "text named .npy": (b"hello, world\n", "not a .npy array"),
    "empty file": (b"", "not a .npy array"),
    "magic only": (b"\x93NUMPY", "not a .npy array"),
    "garbage version": (b"\x93NUMPY garbage\n", "unsupported .npy format version"),
    "header of terabytes": (_header_only((1 << 20, 1 << 20, 64), tail=b"\0" * 64), "truncated"),
    "truncated data": (_npy_bytes(np.ones(1000))[:-100], "truncated"),
    "negative dimension": (_header_only((-4, 2)), "negative"),
    "malformed header": (b"\x93NUMPY\x01\x00\x10\x00{'descr': <f8}   \n", "malformed"),
    "object dtype": (None, "pickles are never loaded"),
    "complex dtype": (_npy_bytes(np.ones(4, dtype=complex)), "dtype complex128"),
    "string dtype": (_npy_bytes(np.array(["a", "b"])), "dtype <U1"),
    "structured dtype": (_npy_bytes(np.zeros(2, dtype=[("a", "f8"), ("b", "i4")])), "expected a real numeric"),
    "nan": (_npy_bytes(np.array([1.0, np.nan])), "non-finite"),
}


def _object_npy():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("case", list(BAD_NPY))
def test_bad_npy_files_are_one_line_data_errors(case, tmp_path, capsys):
    data, needle = BAD_NPY[case]
    path = tmp_path / "x.npy"
    path.write_bytes(_object_npy() if data is None else data)
    with pytest.raises(DataError, match=r"x\.npy") as info:
        load_array(path)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert "allow_pickle" not in str(info.value)
    rc, _, err = run(["spectrum", path, "--grid", "8x8", "--out", tmp_path / "o"], capsys)
    assert rc == 1 and err.startswith("lbp: error: ") and err.count("\n") == 1 and "x.npy" in err
    assert not (tmp_path / "o").exists()


def test_header_beyond_memory_is_refused_before_reading(tmp_path, monkeypatch):
    from lbpcore import _validation  # noqa: PLC0415 - the memory bound, patched for this test

    np.save(tmp_path / "x.npy", np.ones((64, 64)))
    monkeypatch.setattr(_validation, "memory_limit", lambda: 1024)
    with pytest.raises(DataError, match=r"x\.npy: .*more than the 1024 bytes of memory"):
        load_array(tmp_path / "x.npy")
    assert load_array(tmp_path / "x.npy", mmap=True).shape == (64, 64)  # a memory map is not loaded


GOOD_NPY = {
    "big-endian": np.arange(6.0).reshape(2, 3).astype(">f8"),
    "fortran order": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "bool": np.array([True, False]),
    "uint8": np.arange(4, dtype=np.uint8),
    "float16": np.ones(3, dtype=np.float16),
    "empty": np.zeros((0, 3)),
}


@pytest.mark.parametrize("case", list(GOOD_NPY))
@pytest.mark.parametrize("version", [None, (2, 0), (3, 0)])
def test_unusual_but_valid_npy_files_load(case, version, tmp_path):
    a = GOOD_NPY[case]
    (tmp_path / "x.npy").write_bytes(_npy_bytes(a, version))
    got = load_array(tmp_path / "x.npy")
    np.testing.assert_array_equal(got, a)
    assert got.dtype == a.dtype


BAD_NPZ = {
    "text member": ({"x.npy": "not an array", "weight.npy": "w", "grad_y.npy": "g"}, "member 'x.npy': not a .npy"),
    "bytes member": ({"x.npy": b"\x00\x01\x02" * 50, "weight.npy": _npy_bytes(W), "grad_y.npy": _npy_bytes(GY)},
                     "member 'x.npy': not a .npy"),
    "plain-named text member": ({"x": "text", "weight.npy": _npy_bytes(W), "grad_y.npy": _npy_bytes(GY)},
                                "member 'x': not a .npy"),
    "member of terabytes": ({"x.npy": _header_only((1 << 30, 1 << 20)), "weight.npy": _npy_bytes(W),
                             "grad_y.npy": _npy_bytes(GY)}, "truncated"),
    "object member": ({"x.npy": None, "weight.npy": _npy_bytes(W), "grad_y.npy": _npy_bytes(GY)}, "pickles"),
    "missing member": ({"x.npy": _npy_bytes(X), "weight.npy": _npy_bytes(W)}, "no array 'grad_y'"),
    "empty archive": ({}, "no array 'x'"),
    "not a zip": (b"PK\x03\x04 this is not a zip archive", "cannot read as .npz"),
    "zip of a directory": ({"x/": "", "weight.npy": _npy_bytes(W), "grad_y.npy": _npy_bytes(GY)}, "no array 'x'"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz_archives_are_one_line_data_errors(case, tmp_path, capsys):
    members, needle = BAD_NPZ[case]
    path = tmp_path / "layer.npz"
    if isinstance(members, bytes):
        path.write_bytes(members)
    else:
        _zip(path, {k: _object_npy() if v is None else v for k, v in members.items()})
    rc, _, err = run(["error", path, "--grid", "8x8", "--bases", "lp_l1:3", "--out", tmp_path / "o"], capsys)
    assert rc == 1, err
    assert err.startswith("lbp: error: ") and err.count("\n") == 1 and "layer.npz" in err and needle in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_a_big_endian_layer_is_not_refused(tmp_path, capsys):
    np.savez(tmp_path / "l.npz", x=X.astype(">f8"), weight=W, grad_y=GY.astype(">f8"))
    rc, out, err = run(["error", tmp_path / "l.npz", "--grid", "8x8", "--bases", "lp_l1:3", "--baselines", "dct",
                        "--out", tmp_path / "o"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "o" / "error.json").read_text())["rank"] == 6


# --------------------------------------------------------------------------
# empty data and data near the ends of the float64 range
# --------------------------------------------------------------------------

EMPTY = {
    "spectrum, no channels": (["spectrum", "x.npy"], {"x.npy": np.zeros((2, 64, 0))}, "no channels"),
    "spectrum, empty batch": (["spectrum", "x.npy"], {"x.npy": np.zeros((0, 64, 3))}, "empty batch"),
    "error, no input channels": (["error", "l.npz", "--bases", "lp_l1:3"],
                                 {"l.npz": dict(x=np.zeros((2, 64, 0)), weight=np.zeros((4, 0)), grad_y=GY)},
                                 "x is empty"),
    "error, no output channels": (["error", "l.npz", "--bases", "lp_l1:3"],
                                  {"l.npz": dict(x=X, weight=np.zeros((0, 3)), grad_y=np.zeros((2, 64, 0)))},
                                  "weight is empty"),
    "error, empty batch": (["error", "l.npz", "--bases", "lp_l1:3"],
                           {"l.npz": dict(x=np.zeros((0, 64, 3)), weight=W, grad_y=np.zeros((0, 64, 4)))},
                           "x is empty"),
}


@pytest.mark.parametrize("case", list(EMPTY))
def test_empty_data_is_a_data_error_not_a_perfect_score(case, tmp_path, capsys):
    argv, files, needle = EMPTY[case]
    for name, data in files.items():
        if name.endswith(".npz"):
            np.savez(tmp_path / name, **data)
        else:
            np.save(tmp_path / name, data)
    argv = [tmp_path / a if a in files else a for a in argv]
    rc, out, err = run(argv + ["--grid", "8x8", "--out", tmp_path / "o"], capsys)
    assert rc == 1 and needle in err and err.count("\n") == 1, err
    assert "100.00%" not in out and not (tmp_path / "o").exists()


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1.7e308 / 64])
def test_error_near_the_ends_of_the_range_gives_the_numbers_of_unit_scale(scale, tmp_path, capsys):
    np.savez(tmp_path / "unit.npz", x=X, weight=W, grad_y=GY)
    np.savez(tmp_path / "far.npz", x=X * scale, weight=W, grad_y=GY * scale)
    args = ["--grid", "8x8", "--bases", "lp_l1:3", "--baselines", "dct,klt,svd,random"]
    rc, table, err = run(["error", tmp_path / "far.npz", *args, "--out", tmp_path / "far"], capsys)
    assert rc == 0, err
    assert "null" not in (tmp_path / "far" / "error.json").read_text()
    assert run(["error", tmp_path / "unit.npz", *args, "--out", tmp_path / "unit"], capsys)[0] == 0
    far, unit = (json.loads((tmp_path / d / "error.json").read_text()) for d in ("far", "unit"))
    for method in ("lbp", "dct", "klt", "svd", "random"):
        a = far["report"]["lbp"] if method == "lbp" else far["baselines"][method]
        b = unit["report"]["lbp"] if method == "lbp" else unit["baselines"][method]
        for part in ("grad_x", "grad_weight"):
            for metric in ("rel_error", "cosine"):
                assert a[part][metric] == pytest.approx(b[part][metric], rel=1e-9, abs=1e-12)


def test_spectrum_whose_energy_overflows_is_a_clear_data_error(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.full((1, 64, 2), 1e300))
    rc, _, err = run(["spectrum", tmp_path / "x.npy", "--grid", "8x8", "--out", tmp_path / "o"], capsys)
    assert rc == 1 and "overflows float64" in err and "x.npy" in err and err.count("\n") == 1


# --------------------------------------------------------------------------
# usage problems: exit 2 naming the option; outputs checked before computing
# --------------------------------------------------------------------------

USAGE = {
    "seed -1": (["error", "l.npz", "--grid", "8x8", "--bases", "lp_l1:3", "--seed", "-1", "--out", "o"], "--seed"),
    "seed text": (["error", "l.npz", "--grid", "8x8", "--bases", "lp_l1:3", "--seed", "x", "--out", "o"], "--seed"),
    "out empty": (["spectrum", "x.npy", "--grid", "8x8", "--out", ""], "--out"),
    "out blank": (["spectrum", "x.npy", "--grid", "8x8", "--out", "  "], "--out"),
    "report out empty": (["report", "--quick", "--out", ""], "--out"),
    "json empty": (["bench", "--json", ""], "--json"),
    "patch 2**20": (["spectrum", "x.npy", "--grid", "8x8", "--patch", "1048576", "--out", "o"], "--patch"),
    "patch 2**40": (["error", "l.npz", "--grid", "8x8", "--bases", "lp_l1:3", "--patch", str(2**40), "--out", "o"],
                    "--patch"),
    "patch 4096, zero pad": (["spectrum", "x.npy", "--grid", "8x8", "--patch", "4096", "--pad", "zero", "--out", "o"],
                             "--patch"),
    "patch 16 on 4x4": (["spectrum", "x.npy", "--grid", "4x4", "--patch", "16", "--pad", "zero", "--out", "o"],
                        "--patch"),
    "grid 0": (["spectrum", "x.npy", "--grid", "0x8", "--out", "o"], "--grid"),
    "extra tokens -1": (["spectrum", "x.npy", "--grid", "8x8", "--extra-tokens", "-1", "--out", "o"],
                        "--extra-tokens"),
}


@pytest.mark.parametrize("case", list(USAGE))
def test_usage_problems_exit_2_naming_the_option(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, option = USAGE[case]
    rc, _, err = run(argv, capsys)
    assert rc == 2, err
    assert option in err.splitlines()[-1], err
    assert listing_of(tmp_path) == []


def listing_of(d):
    return sorted(p.name for p in Path(d).iterdir())


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if any command starts computing."""

    def computed(*args, **kwargs):
        raise AssertionError("the command computed before checking its output")

    monkeypatch.setattr(analysis.spectrum, "SpectrumAccumulator", computed)
    monkeypatch.setattr(analysis.errors, "_Problem", computed)
    monkeypatch.setattr(analysis.report, "run_workload", computed)
    monkeypatch.setattr(analysis.bench, "bench_backward", computed)


OUTPUTS = {
    "out is a file": lambda d: d / "taken",
    "out below a file": lambda d: d / "taken" / "o",
    "out with a sub-directory": lambda d: d / "busy",
    "out is the current directory": lambda d: Path("."),
    "out in /proc": lambda d: Path("/proc/lbp-out"),
    "out far below /proc": lambda d: Path("/proc/a/b/c"),
}


@pytest.mark.parametrize("case", list(OUTPUTS))
@pytest.mark.parametrize("command", ["spectrum", "error", "report"])
def test_outputs_are_checked_before_computing(case, command, tmp_path, capsys, monkeypatch, no_compute):
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "l.npz", x=X, weight=W, grad_y=GY)
    (tmp_path / "taken").write_text("")
    (tmp_path / "busy" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    out = OUTPUTS[case](tmp_path)
    argv = {"spectrum": ["spectrum", "x.npy", "--grid", "8x8"],
            "error": ["error", "l.npz", "--grid", "8x8", "--bases", "lp_l1:3"],
            "report": ["report", "--quick", "--quiet"]}[command]
    rc, _, err = run(argv + ["--out", out], capsys)
    assert rc == 1, err
    assert err.startswith("lbp: error: ") and err.count("\n") == 1
    assert listing_of(tmp_path) == ["busy", "l.npz", "taken", "x.npy"]


@pytest.mark.parametrize("target", ["dir", "/proc/b.json", "/proc/x/y/b.json"])
def test_bench_json_is_checked_before_the_benchmark(target, tmp_path, capsys, no_compute):
    path = tmp_path if target == "dir" else target
    rc, _, err = run(["bench", "--tiny", "--json", path], capsys)
    assert rc == 1 and err.count("\n") == 1, err
    assert listing_of(tmp_path) == []


# --------------------------------------------------------------------------
# Ctrl-C: "lbp: interrupted", exit 130, no traceback
# --------------------------------------------------------------------------


def test_the_entry_point_turns_ctrl_c_into_exit_130(monkeypatch, capsys):
    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", interrupted)
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert _entry.main(["report"]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err == "lbp: interrupted\n"


def _env():
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    env.pop("LBP_DEBUG", None)
    return env


@pytest.mark.parametrize("module", ["numpy", "lbpcore", "analysis.spectrum", "matplotlib"])
def test_ctrl_c_during_the_imports_is_caught(module, tmp_path):
    """A KeyboardInterrupt raised by the import of ``module`` (deterministic: an import hook raises it)."""
    np.save(tmp_path / "x.npy", X)
    hook = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def hooked(name, *a, **k):\n"
        f"    if name.rsplit('.', 1)[-1] == {module.rsplit('.', 1)[-1]!r}:\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = hooked\n"
        "from analysis._entry import console\n"
        "raise SystemExit(console())\n"
    )
    proc = subprocess.run([sys.executable, "-c", hook, "spectrum", str(tmp_path / "x.npy"), "--grid", "8x8",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "lbp: interrupted\n"
    assert listing_of(tmp_path) == ["x.npy"]


def _wait_for_numpy(proc, timeout=60.0):
    """Wait until the child has started loading NumPy (its imports are under way), via /proc."""
    maps = Path(f"/proc/{proc.pid}/maps")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if "_multiarray_umath" in maps.read_text():
                return
        except OSError:
            return
        time.sleep(0.002)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the child's imports")
@pytest.mark.parametrize("trial", range(4))
def test_ctrl_c_at_a_random_moment_of_a_real_run(trial, tmp_path):
    """SIGINT at a random moment after the imports began: 130 and one line, or a finished run; never a traceback."""
    rng = np.random.default_rng(trial)
    np.save(tmp_path / "x.npy", RNG.standard_normal((4, 256, 8)))
    proc = subprocess.Popen([sys.executable, "-m", "analysis", "spectrum", str(tmp_path / "x.npy"), "--grid", "16x16",
                             "--out", str(tmp_path / "o")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    _wait_for_numpy(proc)
    time.sleep(float(rng.uniform(0.0, 1.5)))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    files = listing_of(tmp_path / "o") if (tmp_path / "o").exists() else []
    if proc.returncode == 130:
        assert err == "lbp: interrupted\n"
    else:
        # the run had finished (a Ctrl-C that a library swallowed, e.g. matplotlib while it imports its optional
        # toolkits), or was exiting when the signal came: the interpreter, past its handlers, then dies of it
        # quietly (-SIGINT, which a shell reports as 130 too)
        assert proc.returncode in (0, -signal.SIGINT), (proc.returncode, err)
        assert "wrote" in out and files, (proc.returncode, out, err)
    assert files in ([], ["energy_curve.png", "spectrum.json", "spectrum.png"])
    assert listing_of(tmp_path) in (["x.npy"], ["o", "x.npy"])  # no temporary directory left
