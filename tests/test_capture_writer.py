"""Sharded captures: analysis.capture_writer writes steps shard by shard; load_capture and the commands stream them.

The commands must give the same numbers on a sharded capture (streamed within
``--memory``) as on the same layers saved as one ``.npz`` (in memory).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from analysis import cli
from analysis.capture import MANIFEST, Capture, CapturedLayer, load_capture
from analysis.capture_writer import CaptureWriter
from analysis.sources import BatchSource

pytest.importorskip("dask")
GRID, E = (8, 8), 1


def step_capture(rng, weights, b=6):
    """One step's capture of two token layers and a 1x1 convolution, with fixed weights."""
    arrays = {
        "blocks.0.fc1": {"x": rng.standard_normal((b, E + 64, 6)), "grad_y": rng.standard_normal((b, E + 64, 8))},
        "blocks.0.fc2": {"x": rng.standard_normal((b, E + 64, 8)), "grad_y": rng.standard_normal((b, E + 64, 6))},
        "conv": {"x": rng.standard_normal((b, 6, 6, 10)), "grad_y": rng.standard_normal((b, 4, 6, 10))},
    }
    layers = {n: CapturedLayer.from_arrays(n, {**a, "weight": weights[n]}, grid=GRID, extra_tokens=E)
              for n, a in arrays.items()}
    return Capture(layers, grid=GRID, extra_tokens=E)


@pytest.fixture
def steps(rng):
    weights = {"blocks.0.fc1": rng.standard_normal((8, 6)), "blocks.0.fc2": rng.standard_normal((6, 8)),
               "conv": rng.standard_normal((4, 6))}
    return [step_capture(rng, weights) for _ in range(4)]


def concatenated(steps):
    """The steps as one in-memory capture (what a single big step would have recorded)."""
    first = steps[0]
    layers = {}
    for name, layer in first.layers.items():
        arrays = {f: np.concatenate([np.asarray(getattr(s[name], f)) for s in steps]) for f in ("x", "grad_y")}
        arrays["weight"] = layer.weight
        layers[name] = CapturedLayer.from_arrays(name, arrays, grid=first.grid, extra_tokens=first.extra_tokens)
    return Capture(layers, first.grid, first.extra_tokens)


def write_steps(path, steps, shard_size="30kB"):
    with CaptureWriter(path, shard_size=shard_size) as writer:
        for s in steps:
            writer.add(s)
    concatenated(steps).save(path.with_suffix(".npz"))
    return path


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_writer_round_trip(steps, tmp_path):
    with CaptureWriter(tmp_path / "cap", shard_size="8kB") as writer:
        for s in steps:
            writer.add(s)
    back = load_capture(tmp_path / "cap")
    whole = concatenated(steps)
    assert list(back) == list(whole) and back.grid == GRID and back.extra_tokens == E
    assert json.loads((tmp_path / "cap" / MANIFEST).read_text())["steps"] == 4
    for name in whole:
        a, b = whole[name], back[name]
        assert isinstance(b.x, BatchSource) and len(b.x.shards) > 4  # shard by shard: 8 kB shards
        assert (a.layout, a.shapes, a.grid, a.extra_tokens) == (b.layout, b.shapes, b.grid, b.extra_tokens)
        for f in ("x", "weight", "grad_y"):
            np.testing.assert_array_equal(np.asarray(getattr(b, f)), getattr(a, f))
    # a loaded sharded capture can be written again, shard by shard
    with CaptureWriter(tmp_path / "copy") as writer:
        writer.add(back)
    np.testing.assert_array_equal(np.asarray(load_capture(tmp_path / "copy")["conv"].grad_y), whole["conv"].grad_y)


def test_writer_refuses_inconsistent_steps(steps, rng, tmp_path):
    other = step_capture(rng, {n: rng.standard_normal(np.shape(steps[0][n].weight)) for n in steps[0]})
    with pytest.raises(ValueError, match="the weight of layer 'blocks.0.fc1' changed at step 1"), \
            CaptureWriter(tmp_path / "cap") as writer:
        writer.add(steps[0])
        writer.add(other)
    fewer = Capture({"conv": steps[1]["conv"]}, GRID, E)
    with pytest.raises(ValueError, match="step 1 captured layers"), CaptureWriter(tmp_path / "cap") as writer:
        writer.add(steps[0])
        writer.add(fewer)
    assert os.listdir(tmp_path) == []  # nothing left behind
    (tmp_path / "partial").mkdir()
    with pytest.raises(Exception, match="without capture.json"):
        load_capture(tmp_path / "partial")


def test_report_on_a_sharded_capture_equals_the_npz(steps, tmp_path, capsys):
    write_steps(tmp_path / "cap", steps)
    reports = {}
    for name, source, extra in (("npz", tmp_path / "cap.npz", []), ("shards", tmp_path / "cap", ["--memory", "3MB"])):
        rc, _, err = run(["report", "--capture", source, "--quick", "--quiet", *extra, "--out", tmp_path / name],
                         capsys)
        assert rc == 0, err
        reports[name] = json.loads((tmp_path / name / "results.json").read_text())
    a, b = reports["npz"], reports["shards"]
    assert [r["layer"] for r in a["layers"]] == [r["layer"] for r in b["layers"]] == list(steps[0])
    for ra, rb in zip(a["layers"], b["layers"], strict=True):
        for key in ("energy_kept_x", "energy_kept_grad_y"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-12)
        for method, m in ra["local"].items():
            for part in ("grad_x", "grad_weight"):
                for k, v in m[part].items():
                    assert rb["local"][method][part][k] == pytest.approx(v, rel=1e-12, abs=1e-13), (method, part, k)
    for pa, pb in zip(a["rank_sweep"]["points"], b["rank_sweep"]["points"], strict=True):
        assert pb["lbp"]["grad_weight"]["rel_error"] == pytest.approx(pa["lbp"]["grad_weight"]["rel_error"], rel=1e-12)


def test_spectrum_and_error_of_a_sharded_layer(steps, tmp_path, capsys):
    write_steps(tmp_path / "cap", steps)
    got = {}
    for name, source in (("npz", tmp_path / "cap.npz"), ("shards", tmp_path / "cap")):
        rc, _, err = run(["spectrum", source, "--layer", "blocks.0.fc1", "--memory", "2MB",
                          "--out", tmp_path / f"s_{name}"], capsys)
        assert rc == 0, err
        rc, _, err = run(["error", source, "--layer", "blocks.0.fc2", "--bases", "lp_l1:3", "--memory", "3MB",
                          "--out", tmp_path / f"e_{name}"], capsys)
        assert rc == 0, err
        got[name] = (json.loads((tmp_path / f"s_{name}" / "spectrum.json").read_text()),
                     json.loads((tmp_path / f"e_{name}" / "error.json").read_text()))
    (sa, ea), (sb, eb) = got["npz"], got["shards"]
    np.testing.assert_allclose(sb["energy_map"], sa["energy_map"], rtol=1e-12)
    assert sb["source"]["format"] == "shards" and sa["source"]["format"] == "npz"
    for method in ea["baselines"]:
        assert eb["baselines"][method]["grad_weight"]["rel_error"] == pytest.approx(
            ea["baselines"][method]["grad_weight"]["rel_error"], rel=1e-12)


def test_capture_of_a_torch_model_over_steps(tmp_path, torch_single_thread):
    torch = torch_single_thread
    from analysis.capture import capture  # noqa: PLC0415 - the recording needs PyTorch

    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))
    batches = [torch.randn(3, E + 64, 6) for _ in range(3)]
    caps = [capture(model, lambda b=b: model(b).square().sum().backward(), "*", grid=GRID, extra_tokens=E)
            for b in batches]
    with CaptureWriter(tmp_path / "cap") as writer:
        for c in caps:
            writer.add(c)
    back = load_capture(tmp_path / "cap")
    assert back["0"].shapes["x"] == (9, E + 64, 6) and back["2"].shapes["grad_y"] == (9, E + 64, 4)
    np.testing.assert_array_equal(np.asarray(back["0"].x), np.concatenate([b.numpy() for b in batches]))
