"""Captures of models whose layers live on grids of their own (``grid="auto"`` and pattern dicts).

Swin's windowed attention sees ``(B * windows, 49, C)`` tokens while its MLPs
and patch merging see channels-last ``(B, H, W, C)`` maps at two resolutions:
one grid per capture cannot describe it.  Each captured layer carries its own
grid through the file formats and :meth:`Capture.with_grid`, and the captured
tensors are exactly what the converted layers computed their gradients from.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import lbpcore
import lbpcore.testing as lt
from analysis import cli
from analysis.capture import Capture, CapturedLayer, load_capture
from analysis.capture_writer import CaptureWriter

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("torch_single_thread")

from analysis.capture import capture  # noqa: E402 - after the importorskip
from analysis.torch_models import build  # noqa: E402
from lbpcore.torch import convert  # noqa: E402

SWIN = dict(img_size=56, embed_dim=8, depths=(2, 2), num_heads=(1, 2), num_classes=5)
#: What grid="auto" gives the converted layers of the small Swin (14x14 then 7x7 maps, 7x7 windows).
GRIDS = {"layers.0.blocks.0.attn.qkv": (7, 7), "layers.0.blocks.1.mlp.fc1": (14, 14),
         "layers.1.downsample.reduction": (7, 7), "layers.1.blocks.1.mlp.fc2": (7, 7)}


def _swin(seed=0):
    torch.manual_seed(seed)
    model = build("swin_t", **SWIN).double()
    images = torch.randn(2, 3, 56, 56, dtype=torch.float64)
    return model, images


def _step(model, images):
    return lambda: model(images).square().sum().backward()


@pytest.fixture(scope="module")
def swin_capture():
    model, images = _swin()
    return capture(model, _step(model, images), "layers.*", grid="auto")


def test_auto_grid_per_layer_and_channels_last_maps_as_tokens(swin_capture):
    for name, grid in GRIDS.items():
        assert swin_capture[name].grid == grid and swin_capture[name].on_grid, name
    assert swin_capture["layers.0.blocks.0.attn.qkv"].x.shape == (2 * 4, 49, 8)  # 4 windows per image
    assert swin_capture["layers.0.blocks.1.mlp.fc1"].x.shape == (2, 196, 8)  # (B, 14, 14, C) maps
    assert swin_capture["layers.1.downsample.reduction"].x.shape == (2, 49, 32)  # (B, 7, 7, 4C)
    assert swin_capture.grid is None  # no one grid serves every layer


def test_converted_swin_gradients_are_lbp_backward_of_the_captured_tensors():
    """The capture's layouts and grids are the bridge's: each converted layer's gradient, recomputed."""
    model, images = _swin()
    convert(model, "layers.*", grid="auto", bases="lp_l1:3", patch=8)  # reflect padding of the 7x7 grids
    cap = capture(model, _step(model, images), "layers.*", grid="auto")
    for name in GRIDS:
        layer, seen = model.get_submodule(name), cap[name]
        bias = None if layer.bias is None else layer.bias.detach().numpy()
        want = lbpcore.lbp_backward(seen.x, seen.weight, seen.grad_y, grid=seen.grid, patch=8, bases="lp_l1:3",
                                    bias=bias)
        lt.assert_close(layer.weight.grad.numpy(), want.grad_weight)


@pytest.mark.parametrize("sharded", [False, True])
def test_per_layer_grids_survive_the_files(swin_capture, tmp_path, sharded):
    if sharded:
        path = tmp_path / "cap"
        with CaptureWriter(path) as writer:
            writer.add(swin_capture)
            writer.add(swin_capture)
        manifest = json.loads((path / "capture.json").read_text())
        assert manifest["layer_grids"]["layers.0.blocks.1.mlp.fc1"] == [14, 14]
    else:
        path = swin_capture.save(tmp_path / "cap.npz")
    back = load_capture(path)
    assert {n: back[n].grid for n in GRIDS} == GRIDS
    assert all(back[n].extra_tokens == 0 for n in back)


def _tokens_capture(rng):
    def layer(name, length):
        arrays = {"x": rng.standard_normal((2, length, 3)), "weight": rng.standard_normal((4, 3)),
                  "grad_y": rng.standard_normal((2, length, 4))}
        return CapturedLayer.from_arrays(name, arrays)

    layers = {"attn.qkv": layer("attn.qkv", 49), "mlp.fc1": layer("mlp.fc1", 1 + 196), "head": layer("head", 10)}
    return Capture(layers, grid=None, extra_tokens=0)


def test_with_grid_auto_and_patterns(rng):
    cap = _tokens_capture(rng)
    auto = cap.with_grid("auto", {"mlp.*": 1, "*": 0})
    assert auto["attn.qkv"].grid == (7, 7) and auto["mlp.fc1"].grid == (14, 14)
    assert auto["head"].grid is None and not auto["head"].on_grid  # 10 tokens: no square grid
    assert "no token grid" in auto["head"].why_off_grid()
    mixed = cap.with_grid({"attn.*": (7, 7), "*": "auto"}, {"mlp.*": 1, "*": 0})
    assert [mixed[n].on_grid for n in mixed] == [True, True, False]
    with pytest.raises(ValueError, match=r"grid: no pattern matches layer 'mlp.fc1'"):
        cap.with_grid({"attn.*": (7, 7)})


def test_report_capture_takes_per_layer_grids(rng, tmp_path, capsys):
    path = _tokens_capture(rng).save(tmp_path / "cap.npz")
    out = tmp_path / "r"
    rc = cli.main(["report", "--capture", str(path), "--grid", "attn.*=7x7,*=auto", "--extra-tokens",
                   "mlp.*=1,*=0", "--quick", "--quiet", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["capture"]["measured"] == ["attn.qkv", "mlp.fc1"]


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--grid", "attn.*", "--grid must be HxW, 'auto' or PATTERN=HxW"),
    ("--grid", "*=7y7", "grid must look like HxW"),
    ("--grid", "a=7x7,,b=auto", "expected comma-separated PATTERN=HxW or PATTERN=auto entries, got ''"),
    ("--extra-tokens", "mlp.*=-1", "extra_tokens must be >= 0"),
    ("--extra-tokens", "mlp.*=", "expected comma-separated PATTERN=E entries"),
])
def test_bad_grid_settings_are_usage_errors(option, value, needle, tmp_path, capsys, rng):
    path = _tokens_capture(rng).save(tmp_path / "cap.npz")
    rc = cli.main(["report", "--capture", str(path), option, value, "--out", str(tmp_path / "r")])
    assert rc == 2 and needle in capsys.readouterr().err


def test_unmatched_pattern_is_one_line_error(tmp_path, capsys, rng):
    path = _tokens_capture(rng).save(tmp_path / "cap.npz")
    rc = cli.main(["report", "--capture", str(path), "--grid", "attn.*=7x7", "--quiet", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc != 0 and "no pattern matches layer 'mlp.fc1'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_captured_maps_are_the_layer_inputs_row_major():
    """``(B, H, W, C)`` maps are stored as ``(B, H*W, C)``: token ``i * W + j`` is pixel ``(i, j)``."""
    model, images = _swin()
    seen = {}
    fc1 = model.get_submodule("layers.0.blocks.1.mlp.fc1")
    fc1.register_forward_hook(lambda m, a, y: seen.update(x=a[0].detach().clone()))
    cap = capture(model, _step(model, images), "layers.0.blocks.1.mlp.fc1", grid="auto")
    assert seen["x"].shape == (2, 14, 14, 8)
    np.testing.assert_array_equal(cap["layers.0.blocks.1.mlp.fc1"].x[:, 3 * 14 + 5], seen["x"][:, 3, 5].numpy())
    np.testing.assert_array_equal(cap["layers.0.blocks.1.mlp.fc1"].x, seen["x"].reshape(2, 196, 8).numpy())
