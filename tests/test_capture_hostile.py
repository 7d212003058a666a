"""Captures on hostile inputs (issue 19, item 3): damaged files, odd layers and names, failing steps, kills.

``analysis.capture`` / ``analysis.capture_writer`` / ``lbp report --capture``:
a damaged file is a :class:`~analysis.io.DataError` naming it (CLI: exit 1,
one line), never other numbers; layers whose arrays disagree or hold NaN/inf
are refused naming the array; an all-zero gradient is skipped with its reason,
not scored as perfect; any layer name survives a ``.npz`` and a name that
cannot be a directory is refused before a sharded capture is written; a
``step()`` that raises leaves no hook; a save killed with SIGKILL leaves the
previous file or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import cli
from analysis.capture import FIELDS, Capture, CapturedLayer, capture, load_capture
from analysis.capture_writer import CaptureWriter
from analysis.io import DataError

ROOT = Path(__file__).resolve().parents[1]
GRID = (4, 4)
RNG = np.random.default_rng(19)


def _arrays(c_in=3, c_out=4, tokens=16, b=2, rng=RNG):
    return {"x": rng.standard_normal((b, tokens, c_in)), "weight": rng.standard_normal((c_out, c_in)),
            "grad_y": rng.standard_normal((b, tokens, c_out))}


def _capture(layers, grid=GRID):
    return Capture({n: CapturedLayer.from_arrays(n, a, grid=grid) for n, a in layers.items()}, grid=grid,
                   extra_tokens=0)


def _read_all(path):
    """Every array of every layer of the capture at ``path``, read (and checked) now."""
    cap = load_capture(path)
    return {n: {f: np.asarray(getattr(cap[n], f)) for f in FIELDS} for n in cap}


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[n][f], b[n][f]) for n in a for f in FIELDS)


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(autouse=True)
def _cli_env(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("LBP_DEBUG", raising=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small two-layer capture file, its bytes and its arrays."""
    rng = np.random.default_rng(3)
    path = _capture({"blocks.0.fc1": _arrays(rng=rng), "blocks.0.fc2": _arrays(4, 3, rng=rng)}).save(
        tmp_path_factory.mktemp("cap") / "c.npz")
    return path, path.read_bytes(), _read_all(path)


# --------------------------------------------------------------------------
# truncated and bit-flipped files: a DataError naming the file, or the very same arrays
# --------------------------------------------------------------------------


@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_a_truncated_capture_is_a_data_error(small, tmp_path_factory, cut):
    path, raw, _ = small
    bad = tmp_path_factory.mktemp("t") / "c.npz"
    bad.write_bytes(raw[:int(cut * len(raw))])
    with pytest.raises(DataError, match=r"c\.npz"):
        _read_all(bad)


@given(where=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7))
def test_a_flipped_bit_is_a_data_error_or_changes_nothing(small, tmp_path_factory, where, bit):
    """A flip in the data is caught by the members' CRC-32; one in unused header bytes changes nothing read."""
    path, raw, want = small
    b = bytearray(raw)
    b[int(where * len(raw))] ^= 1 << bit
    bad = tmp_path_factory.mktemp("f") / "c.npz"
    bad.write_bytes(bytes(b))
    try:
        got = _read_all(bad)
    except DataError as exc:
        assert "c.npz" in str(exc) and "\n" not in str(exc)
    else:
        assert _same(got, want)


def _flag_offsets(raw):
    """Offsets of the general-purpose flag of every local (PK\\3\\4, +6) and central (PK\\1\\2, +8) zip header."""
    out = []
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = raw.find(sig)
        while i >= 0:
            out.append(i + off)
            i = raw.find(sig, i + 1)
    return out


@pytest.mark.parametrize("which", ["first central header", "last central header"])
def test_the_encrypted_flag_is_a_data_error(small, tmp_path, capsys, which):
    """Was: zipfile's RuntimeError ('is encrypted, password required'), a traceback from ``lbp``."""
    path, raw, _ = small
    offsets = _flag_offsets(raw)
    assert len(offsets) == 2 * (2 * 3 + 2)  # 2 layers of 3 arrays, grid, extra_tokens: local and central headers
    offset = offsets[len(offsets) // 2] if which == "first central header" else offsets[-1]  # zipfile reads these
    b = bytearray(raw)
    struct.pack_into("<H", b, offset, struct.unpack_from("<H", b, offset)[0] | 1)
    bad = tmp_path / "c.npz"
    bad.write_bytes(bytes(b))
    with pytest.raises(DataError, match=r"c\.npz.*encrypted"):
        _read_all(bad)
    rc, _, err = run(["report", "--capture", bad, "--quick", "--quiet", "--out", tmp_path / "o"], capsys)
    assert rc == 1 and err.startswith("lbp: error: ") and err.count("\n") == 1 and "c.npz" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_report_on_a_truncated_capture_is_one_line(small, tmp_path, capsys, cut):
    path, raw, _ = small
    (tmp_path / "c.npz").write_bytes(raw[:int(cut * len(raw))])
    rc, _, err = run(["report", "--capture", tmp_path / "c.npz", "--quick", "--quiet", "--out", tmp_path / "o"],
                     capsys)
    assert rc == 1 and err.startswith("lbp: error: ") and err.count("\n") == 1 and "c.npz" in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------
# layers whose arrays do not fit together, NaN/inf, all-zero data
# --------------------------------------------------------------------------

MISMATCHED = {
    "grad_y channels are not weight rows": (lambda a: a.update(grad_y=a["grad_y"][..., :3]), "grad_y must have shape"),
    "weight columns are not x channels": (lambda a: a.update(weight=np.ones((4, 5))), r"C_in = weight.shape\[1\] = 5"),
    "batch of grad_y is not that of x": (lambda a: a.update(grad_y=np.ones((3, 16, 4))), "grad_y must have shape"),
    "tokens of grad_y are not those of x": (lambda a: a.update(grad_y=np.ones((2, 9, 4))), "grad_y must have shape"),
    "a 3-d weight": (lambda a: a.update(weight=np.ones((4, 3, 1))), r"weight must have shape \(C_out, C_in\)"),
    "NaN in grad_y": (lambda a: a["grad_y"].__setitem__((0, 0, 0), np.nan), r"'blocks.0.fc1/grad_y' has 1 non-finite"),
    "inf in grad_y": (lambda a: a["grad_y"].__setitem__((1, 2, 3), np.inf), r"'blocks.0.fc1/grad_y' has 1 non-finite"),
    "-inf in x": (lambda a: a["x"].__setitem__((0, 0, 0), -np.inf), r"'blocks.0.fc1/x' has 1 non-finite"),
    "NaN in weight": (lambda a: a["weight"].__setitem__((0, 0), np.nan), r"'blocks.0.fc1/weight' has 1 non-finite"),
}


@pytest.mark.parametrize("case", list(MISMATCHED))
def test_mismatched_or_non_finite_layers_are_one_line_errors(case, tmp_path, capsys):
    damage, needle = MISMATCHED[case]
    a = _arrays()
    damage(a)
    path = _capture({"blocks.0.fc1": a, "ok": _arrays()}).save(tmp_path / "c.npz")
    rc, _, err = run(["report", "--capture", path, "--quick", "--quiet", "--out", tmp_path / "o"], capsys)
    assert rc == 1 and err.startswith("lbp: error: ") and err.count("\n") == 1, err
    assert re.search(needle, err) and "blocks.0.fc1" in err, err  # was: the shape, not the layer
    assert not (tmp_path / "o").exists()
    rc, _, err = run(["error", path, "--layer", "blocks.0.fc1", "--patch", "4", "--bases", "lp_l1:2", "--out",
                      tmp_path / "o"], capsys)
    assert rc == 1 and err.startswith("lbp: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("which", ["grad_y", "x", "weight"])
def test_an_all_zero_layer_is_skipped_not_scored_perfect(which, tmp_path, capsys):
    """Was: a layer with zero gradients reported 100 % energy kept and errors of 0; alone, matplotlib's 'Data
    cannot be log-scaled' as the error."""
    zero = _arrays()
    zero[which] = np.zeros_like(zero[which])
    path = _capture({"dead": zero, "live": _arrays()}).save(tmp_path / "c.npz")
    rc, _, err = run(["report", "--capture", path, "--quick", "--quiet", "--out", tmp_path / "o"], capsys)
    assert rc == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["capture"]["measured"] == ["live"] and [r["layer"] for r in res["layers"]] == ["live"]
    assert res["capture"]["skipped"] == [{"layer": "dead", "reason": res["capture"]["skipped"][0]["reason"]}]
    assert f"its {which} is all zero" in res["capture"]["skipped"][0]["reason"]
    assert "`dead` (its" in (tmp_path / "o" / "index.md").read_text()
    alone = _capture({"dead": zero}).save(tmp_path / "alone.npz")
    rc, _, err = run(["report", "--capture", alone, "--quick", "--quiet", "--out", tmp_path / "a"], capsys)
    assert rc == 1 and err.count("\n") == 1 and f"dead: its {which} is all zero" in err, err
    assert "log-scaled" not in err and not (tmp_path / "a").exists()


def test_an_all_zero_sharded_layer_is_skipped(tmp_path, capsys):
    pytest.importorskip("dask")
    zero = _arrays()
    zero["grad_y"][:] = 0.0
    with CaptureWriter(tmp_path / "cap", shard_size="200B") as w:
        w.add(_capture({"dead": zero, "live": _arrays()}))
    rc, _, err = run(["report", "--capture", tmp_path / "cap", "--quick", "--quiet", "--out", tmp_path / "o"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "o" / "results.json").read_text())["capture"]["measured"] == ["live"]


# --------------------------------------------------------------------------
# odd layer names
# --------------------------------------------------------------------------

NAMES = ["blocks.0.mlp.fc1", "a/b", "a/b/c.d", "ünï.cödé", "名前", "x" * 300, "a b", "-rf", "..", "a/../b", "",
         "/abs", "a\\b", "grid", "extra_tokens", "fc/x", "fc/weight"]
DIRECTORY_NAMES = {"blocks.0.mlp.fc1", "a/b", "a/b/c.d", "ünï.cödé", "名前", "a b", "-rf", "grid", "extra_tokens",
                   "fc/x", "fc/weight"}


@pytest.mark.parametrize("name", NAMES, ids=lambda n: repr(n[:24]))
def test_any_layer_name_survives_a_npz(name, tmp_path):
    a = _arrays()
    path = _capture({name: a, "other": _arrays()}).save(tmp_path / "c.npz")
    got = _read_all(path)
    assert list(got) == [name, "other"]
    assert all(np.array_equal(got[name][f], a[f]) for f in FIELDS)


@pytest.mark.parametrize("name", [n for n in NAMES if len(n) < 256], ids=lambda n: repr(n[:24]))
def test_a_sharded_capture_takes_directory_names_and_refuses_the_others_before_writing(name, tmp_path):
    """Was: 'a\\b' written as the directory a/b, a capture whose manifest names a layer it then cannot find."""
    a = _arrays()
    cap = _capture({"first": _arrays(), name: a})
    if name in DIRECTORY_NAMES:
        with CaptureWriter(tmp_path / "cap") as w:
            w.add(cap)
        got = load_capture(tmp_path / "cap")
        assert list(got) == ["first", name]
        assert np.array_equal(np.asarray(got[name].x), a["x"]) and np.array_equal(got[name].weight, a["weight"])
    else:
        with pytest.raises(ValueError, match=r"^layer name .* cannot name a directory of a sharded capture"), \
                CaptureWriter(tmp_path / "cap") as w:
            w.add(cap)
        assert list(tmp_path.iterdir()) == []  # nothing written, no temporary directory left


def test_a_name_too_long_for_the_file_system_leaves_nothing(tmp_path):
    with pytest.raises(OSError, match="too long"), CaptureWriter(tmp_path / "cap") as w:
        w.add(_capture({"first": _arrays(), "x" * 300: _arrays()}))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# step() that raises, or whose loss does not reach a layer
# --------------------------------------------------------------------------


@pytest.fixture
def model(torch_single_thread):
    nn = torch_single_thread.nn
    torch_single_thread.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))


class Boom(Exception):
    pass


@pytest.mark.parametrize("when", ["before the forward", "after the forward", "after the backward"])
def test_a_step_that_raises_propagates_and_leaves_no_hook(model, torch_single_thread, when):
    torch = torch_single_thread
    x = torch.randn(2, 16, 3)

    def step():
        if when == "before the forward":
            raise Boom(when)
        loss = model(x).square().sum()
        if when == "after the backward":
            loss.backward()
        raise Boom(when)

    with pytest.raises(Boom, match=when):
        capture(model, step, "*", grid=GRID)
    assert all(not m._forward_hooks for m in model.modules())
    cap = capture(model, lambda: model(x).square().sum().backward(), "*", grid=GRID)  # the model still works
    assert list(cap) == ["0", "2"] and cap["2"].grad_y.shape == (2, 16, 2)


@pytest.mark.parametrize("how", ["no backward", "backward of another tensor", "a detached layer"])
def test_a_step_whose_loss_does_not_reach_a_layer_names_it(model, torch_single_thread, how):
    torch = torch_single_thread
    x = torch.randn(2, 16, 3)

    def step():
        if how == "no backward":
            model(x)
        elif how == "backward of another tensor":
            model(x)
            torch.ones(1, requires_grad=True).sum().backward()
        else:
            model[2](model[1](model[0](x)).detach()).sum().backward()

    with pytest.raises(ValueError, match="no gradient reached the output of layer '0'"):
        capture(model, step, "*", grid=GRID)
    assert all(not m._forward_hooks for m in model.modules())


def test_non_finite_gradients_are_captured_and_refused_when_read(model, torch_single_thread, tmp_path, capsys):
    """A step whose loss is inf: capture records what the layers saw; the file is refused naming the array."""
    torch = torch_single_thread
    x = torch.randn(2, 16, 3)
    cap = capture(model, lambda: (model(x).sum() * float("inf")).backward(), "*", grid=GRID)
    assert not np.isfinite(cap["2"].grad_y).all()
    path = cap.save(tmp_path / "inf.npz")
    rc, _, err = run(["report", "--capture", path, "--quick", "--quiet", "--out", tmp_path / "o"], capsys)
    assert rc == 1 and "grad_y' has" in err and "non-finite" in err and err.count("\n") == 1, err


# --------------------------------------------------------------------------
# SIGKILL during save: the previous capture or the new one, never half of one
# --------------------------------------------------------------------------

CHILD = """\
import sys, time
import numpy as np
from analysis import capture as capmod
from analysis.capture import Capture, CapturedLayer
from analysis.capture_writer import CaptureWriter
from analysis import shards
out, kind = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(int(sys.argv[3]))
layers = {f"blocks.{i}.fc": {"x": rng.standard_normal((4, 256, 64)), "weight": rng.standard_normal((32, 64)),
                             "grad_y": rng.standard_normal((4, 256, 32))} for i in range(3)}
cap = Capture({n: CapturedLayer.from_arrays(n, a, grid=(16, 16)) for n, a in layers.items()}, grid=(16, 16),
              extra_tokens=0)
def slowed(real):
    def f(*a, **k):
        sys.stderr.write("writing\\n"); sys.stderr.flush()
        time.sleep(0.02)
        return real(*a, **k)
    return f
if kind == "npz":
    capmod._write_member = slowed(capmod._write_member)
    cap.save(out)
else:
    shards.atomic_write_bytes = slowed(shards.atomic_write_bytes)
    with CaptureWriter(out, shard_size="64kB", overwrite=True) as w:
        w.add(cap)
print("saved")
"""


def _child(tmp_path, out, kind, seed):
    (tmp_path / "child.py").write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(out), kind, str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _expected(tmp_path, seed):
    """The arrays the child saves (the same seeded draws)."""
    rng = np.random.default_rng(seed)
    return {f"blocks.{i}.fc": {"x": rng.standard_normal((4, 256, 64)), "weight": rng.standard_normal((32, 64)),
                               "grad_y": rng.standard_normal((4, 256, 32))} for i in range(3)}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("kind", "seed"), [("npz", 0), ("npz", 1), ("npz", 2), ("shards", 3)])
def test_sigkill_during_save_leaves_the_previous_capture_or_the_new_one(kind, seed, tmp_path):
    out = tmp_path / ("c.npz" if kind == "npz" else "cap")
    previous = None
    if kind == "npz":  # a previous capture at the destination, which must survive byte for byte
        _capture({"old": _arrays()}).save(out)
        previous = out.read_bytes()
    proc = _child(tmp_path, out, kind, seed)
    first = proc.stderr.readline()
    assert first == "writing\n", first + proc.stderr.read()
    # 9 members of 20 ms (npz), or about 40 shards (sharded): the kill lands inside the writing
    time.sleep(float(np.random.default_rng(seed).uniform(0.0, 0.15)))
    proc.send_signal(signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=60)
    if out.exists() and (kind == "shards" or out.read_bytes() != previous):
        assert _same(_read_all(out), _expected(tmp_path, seed))  # the complete new capture
    elif kind == "npz":
        assert out.read_bytes() == previous  # the previous one, intact
    assert "saved" not in stdout or out.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("child.py", out.name)]
    assert all(n.startswith(f".{out.name}.") for n in leftovers), leftovers  # hidden temporaries only
    for n in leftovers:  # which no reader mistakes for a capture
        with pytest.raises(DataError):
            _read_all(tmp_path / n)
