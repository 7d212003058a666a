"""``analysis.capture``: recording layers of a PyTorch model, the ``.npz`` file, and the ``lbp`` commands on it.

Only the tests that record a model need PyTorch; the file format and the
commands are tested on captures built from NumPy arrays.
"""

from __future__ import annotations

import json
import tracemalloc
import zipfile

import numpy as np
import pytest

import lbpcore
from analysis import capture as capmod
from analysis import cli
from analysis.capture import Capture, CapturedLayer, load_capture
from analysis.errors import gradient_errors
from analysis.io import DataError

GRID, E = (8, 8), 1


def _arrays(rng, b=2, length=E + 64, c_in=6, c_out=4, maps=False):
    if maps:
        return {"x": rng.standard_normal((b, c_in, 6, 10)), "weight": rng.standard_normal((c_out, c_in)),
                "grad_y": rng.standard_normal((b, c_out, 6, 10))}
    return {"x": rng.standard_normal((b, length, c_in)), "weight": rng.standard_normal((c_out, c_in)),
            "grad_y": rng.standard_normal((b, length, c_out))}


@pytest.fixture
def cap(rng):
    layers = {"blocks.0.fc1": _arrays(rng), "blocks.0.fc2": _arrays(rng, c_in=4, c_out=6),
              "conv": _arrays(rng, maps=True), "head": {"x": rng.standard_normal((2, 6)),
                                                        "weight": rng.standard_normal((3, 6)),
                                                        "grad_y": rng.standard_normal((2, 3))}}
    return Capture({n: CapturedLayer.from_arrays(n, a, grid=GRID, extra_tokens=E) for n, a in layers.items()},
                   grid=GRID, extra_tokens=E)


@pytest.fixture
def saved(cap, tmp_path):
    return cap.save(tmp_path / "capture.npz")


# ---------------------------------------------------------------------------
# the file


def test_save_and_load_round_trip(cap, saved):
    with np.load(saved) as z:
        assert sorted(z.files) == sorted(["grid", "extra_tokens"] + [f"{n}/{f}" for n in cap for f in capmod.FIELDS])
    back = load_capture(saved)
    assert list(back) == list(cap) and back.grid == GRID and back.extra_tokens == E and back.source == str(saved)
    for name in cap:
        a, b = cap[name], back[name]
        assert (a.layout, a.shapes, a.grid, a.extra_tokens) == (b.layout, b.shapes, b.grid, b.extra_tokens)
        for f in capmod.FIELDS:
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert back["conv"].layout == "nchw" and back["conv"].grid == (6, 10) and back["conv"].extra_tokens == 0
    assert [back[n].on_grid for n in back] == [True, True, True, False]
    assert "no token axis" in back["head"].why_off_grid()


def test_arrays_load_only_when_used(saved, monkeypatch):
    reads = []
    real = capmod.load_array
    monkeypatch.setattr(capmod, "load_array", lambda path, key: reads.append(key) or real(path, key))
    back = load_capture(saved)
    assert reads == ["grid", "extra_tokens"]
    assert back["blocks.0.fc2"].weight.shape == (6, 4)
    assert reads[2:] == ["blocks.0.fc2/weight"]


def test_save_streams_one_array_at_a_time(tmp_path, rng):
    """Saving a capture read from a file holds one array in memory at a time (with NumPy's read buffer)."""
    big = {f"l{i}": _arrays(rng, b=8, c_in=256, c_out=256) for i in range(3)}  # 1 MiB per array
    Capture({n: CapturedLayer.from_arrays(n, a, grid=GRID, extra_tokens=E) for n, a in big.items()},
            grid=GRID, extra_tokens=E).save(tmp_path / "a.npz")
    del big
    back = load_capture(tmp_path / "a.npz")
    tracemalloc.start()
    back.save(tmp_path / "b.npz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    one = 8 * 65 * 256 * 8
    assert peak < 2.5 * one, peak  # all six large arrays: 6 * one
    assert zipfile.ZipFile(tmp_path / "b.npz").namelist() == zipfile.ZipFile(tmp_path / "a.npz").namelist()


def test_failed_save_leaves_nothing(cap, tmp_path, monkeypatch):
    calls = []
    real = capmod._write_member

    def boom(zf, key, array):
        calls.append(key)
        if len(calls) == 4:
            raise OSError("disk full")
        real(zf, key, array)

    monkeypatch.setattr(capmod, "_write_member", boom)
    with pytest.raises(OSError, match="disk full"):
        cap.save(tmp_path / "c.npz")
    assert list(tmp_path.iterdir()) == []


def test_with_grid(cap):
    moved = cap.with_grid((4, 16), 1)
    assert moved.grid == (4, 16) and moved["blocks.0.fc1"].grid == (4, 16) and moved["conv"].grid == (6, 10)
    assert not cap.with_grid(extra_tokens=0)["blocks.0.fc1"].on_grid
    with pytest.raises(ValueError, match="grid"):
        cap.with_grid((0, 4))


@pytest.mark.parametrize(("content", "match"), [
    (b"not a zip", "cannot read"),
    ({"x": np.ones(3)}, "holds no captured layer"),
    ({"fc/x": np.ones((1, 4, 2)), "fc/weight": np.ones((2, 2))}, "layer 'fc' lacks grad_y"),
    ({"fc/x": np.ones((1, 4, 2)), "fc/weight": np.ones((2, 2)), "fc/grad_y": np.ones((1, 4, 2)),
      "grid": np.array([4])}, "bad grid"),
])
def test_bad_capture_files(tmp_path, content, match):
    path = tmp_path / "bad.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)
    with pytest.raises(DataError, match=match):
        load_capture(path)


def test_missing_file_and_layer(saved, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_capture(tmp_path / "nope.npz")
    with pytest.raises(DataError, match=r"no layer 'fc3' \(it has: blocks.0.fc1, "):
        load_capture(saved)["fc3"]


# ---------------------------------------------------------------------------
# lbp spectrum / error / report on a capture


def _run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_spectrum_of_a_layer(saved, cap, tmp_path, capsys):
    rc, out, err = _run(["spectrum", saved, "--layer", "blocks.0.fc1", "--out", tmp_path / "s"], capsys)
    assert rc == 0, err
    d = json.loads((tmp_path / "s" / "spectrum.json").read_text())
    assert d["source"]["key"] == "blocks.0.fc1/grad_y" and d["grid"] == list(GRID)
    rc, _, err = _run(["spectrum", saved, "--key", "blocks.0.fc1/grad_y", "--grid", "8x8", "--extra-tokens", "1",
                       "--out", tmp_path / "k"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "k" / "spectrum.json").read_text())["energy_map"] == d["energy_map"]
    rc, _, err = _run(["spectrum", saved, "--layer", "conv", "--patch", "4", "--out", tmp_path / "c"], capsys)
    assert rc == 0, err  # maps: layout and grid from the capture


def test_error_of_a_layer(saved, cap, tmp_path, capsys):
    rc, out, err = _run(["error", saved, "--layer", "blocks.0.fc2", "--bases", "lp_l1:3", "--out", tmp_path / "e"],
                        capsys)
    assert rc == 0, err
    d = json.loads((tmp_path / "e" / "error.json").read_text())
    lay = cap["blocks.0.fc2"]
    want = gradient_errors(lay.x, lay.weight, lay.grad_y, grid=GRID, extra_tokens=E, bases="lp_l1:3")
    assert d["grad_weight"]["rel_error"] == pytest.approx(want.lbp.grad_weight["rel_error"], rel=1e-12)
    assert d["source"]["layer"] == "blocks.0.fc2" and d["extra_tokens"] == E


@pytest.mark.parametrize(("argv", "rc", "needle"), [
    (["spectrum", "{f}", "--layer", "blocks.0.fc1", "--key", "x"], 2, "not allowed with"),
    (["spectrum", "{f}", "--layer", "nope"], 1, "no layer 'nope'"),
    (["error", "{f}", "--layer", "head", "--bases", "lp_l1:3"], 1, "tokens"),
    (["error", "{f}", "--layer", "blocks.0.fc1", "--bases", "lp_l1:3", "--grid", "8x9"], 1, "tokens"),
    (["spectrum", "{x}"], 2, "--grid HxW is required"),
])
def test_bad_layer_commands(saved, tmp_path, capsys, argv, rc, needle):
    np.save(tmp_path / "x.npy", np.ones((1, 64, 2)))
    argv = [a.format(f=saved, x=tmp_path / "x.npy") for a in argv] + ["--out", tmp_path / "o"]
    got, _, err = _run(argv, capsys)
    assert got == rc and needle in err, err
    assert not (tmp_path / "o").exists()


def test_report_on_a_capture(saved, tmp_path, capsys):
    out = tmp_path / "r"
    rc, stdout, err = _run(["report", "--capture", saved, "--quick", "--quiet", "--out", out], capsys)
    assert rc == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["capture"]["measured"] == ["blocks.0.fc1", "blocks.0.fc2", "conv"]
    assert res["capture"]["skipped"] == [{"layer": "head", "reason": "its input (2, 6) has no token axis"}]
    assert res["end_to_end"] == {} and "attention" not in res["flops"]
    row = res["layers"][0]
    cost = lbpcore.backward_cost((2, 65, 6), 4, grid=GRID, extra_tokens=E)
    assert row["flops"]["dense"] == cost.dense_flops and row["flops"]["lbp"] == cost.lbp_flops
    text = (out / "index.md").read_text()
    assert text.startswith(f"# LBP-WHT report: layers captured from `{saved}`")
    assert "## End to end" not in text and "## Backward FLOPs" in text and "`head` (its input (2, 6)" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.md", "results.json", "fig_spectrum.png", "fig_energy_curves.png", "fig_error_curves.png",
         "fig_layers.png"])


def test_report_capture_options(saved, tmp_path, capsys):
    rc, _, err = _run(["report", "--capture", saved, "--grid", "4x16", "--quick", "--quiet", "--out",
                       tmp_path / "r"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "r" / "results.json").read_text())["capture"]["grid"] == [4, 16]
    rc, _, err = _run(["report", "--capture", saved, "--extra-tokens", "0", "--quiet", "--out", tmp_path / "n"],
                      capsys)
    assert rc == 0  # conv still fits: only the token layers are skipped
    rc, _, err = _run(["report", "--grid", "8x8", "--out", tmp_path / "g"], capsys)
    assert rc == 2 and "go with --capture" in err
    rc, _, err = _run(["report", "--capture", saved, "--subset", "x", "--out", tmp_path / "s"], capsys)
    assert rc == 2 and "--subset" in err
    assert not (tmp_path / "g").exists() and not (tmp_path / "s").exists()


def test_report_when_no_layer_fits(tmp_path, capsys, rng):
    path = Capture({"fc": CapturedLayer.from_arrays("fc", _arrays(rng))}, grid=None, extra_tokens=0).save(
        tmp_path / "nogrid.npz")
    rc, _, err = _run(["report", "--capture", path, "--quiet", "--out", tmp_path / "r"], capsys)
    assert rc == 1 and "no captured layer lies on the token grid" in err and "--grid HxW" in err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------
# recording a PyTorch model


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_capture_records_what_each_layer_sees(torch, torch_single_thread):
    from torch_models import loss_of, make_vit  # noqa: PLC0415 - needs PyTorch

    model, images, labels = make_vit()
    seen = {}
    fc1 = model.blocks[0].mlp.fc1
    fc1.register_forward_hook(lambda m, a, y: seen.update(x=a[0].detach().clone(), y=y))
    cap = capmod.capture(model, lambda: loss_of(model, images, labels).backward(), ["blocks.0.mlp.*", "head"],
                         grid=model.grid_size, extra_tokens=1)
    assert list(cap) == ["blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "head"]
    np.testing.assert_array_equal(cap["blocks.0.mlp.fc1"].x, seen["x"].numpy())
    np.testing.assert_array_equal(cap["blocks.0.mlp.fc1"].weight, fc1.weight.detach().numpy())
    assert cap["blocks.0.mlp.fc1"].grad_y.shape == (4, 65, 64) and cap["head"].x.shape == (4, 16)
    # grad_W of the dense backward, from the captured tensors, is the gradient autograd computed
    g = lbpcore.dense_backward(cap["blocks.0.mlp.fc1"].x, fc1.weight.detach().numpy(), cap["blocks.0.mlp.fc1"].grad_y)
    np.testing.assert_allclose(g.grad_weight, fc1.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert not fc1._forward_hooks or len(fc1._forward_hooks) == 1  # capture's own hook is gone


def test_capture_pointwise_conv_repeated_calls_and_half(torch, torch_single_thread):
    from torch import nn  # noqa: PLC0415 - needs PyTorch

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU(), nn.Linear(10, 2)).half()
    x = torch.randn(2, 3, 6, 10, dtype=torch.float16)

    def step():
        (model(x).float().square().sum() + model(x).float().sum()).backward()

    cap = capmod.capture(model, step, "*")
    conv = cap["0"]
    assert conv.layout == "nchw" and conv.x.shape == (4, 3, 6, 10) and conv.weight.shape == (4, 3)
    assert conv.x.dtype == np.float32 and conv.grad_y.shape == (4, 4, 6, 10)
    assert cap["2"].x.shape == (16, 6, 10)  # (B, C, H, W) tokens of a Linear over W: leading dims flattened


def test_capture_errors(torch, torch_single_thread):
    from torch import nn  # noqa: PLC0415 - needs PyTorch

    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    x = torch.randn(1, 4, 2)
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        capmod.capture(model, lambda: None, "fc*")
    with pytest.raises(ValueError, match="'1' was not called"):
        capmod.capture(model, lambda: model[0](x).sum().backward(), "*")
    with pytest.raises(ValueError, match="no gradient reached the output of layer '0'"):
        capmod.capture(model, lambda: model(x), "0")
    assert not model[0]._forward_hooks


def test_capture_to_report_end_to_end(torch, torch_single_thread, tmp_path, capsys):
    """A plain-PyTorch ViT: capture its MLP layers, save, and write the report from the file."""
    from torch_models import loss_of, make_vit  # noqa: PLC0415 - needs PyTorch

    model, images, labels = make_vit(dtype=torch.float32)
    cap = capmod.capture(model, lambda: loss_of(model, images, labels).backward(), "blocks.*.mlp.*",
                         grid=model.grid_size, extra_tokens=1)
    path = cap.save(tmp_path / "vit.npz")
    rc, stdout, err = _run(["report", "--capture", path, "--quick", "--quiet", "--out", tmp_path / "r"], capsys)
    assert rc == 0, err
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [r["layer"] for r in res["layers"]] == list(cap)
    for row in res["layers"]:
        assert 0 < row["energy_kept_grad_y"] <= 1 and row["local"]["lbp"]["grad_weight"]["rel_error"] >= 0
