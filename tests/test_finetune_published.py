"""The published methods of analysis.methods as fine-tuning methods (lbp finetune --methods wtacrs:0.3, ...)."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from tolerances import backprop_rtol

from analysis import cli
from analysis.finetune import FinetuneConfig, TrainConfig, build_plan, parse_method, train
from analysis.methods import get_method
from analysis.metrics import relative_error
from analysis.vit import TinyViT, ViTConfig

CFG = dict(image_size=16, patch_size=1, in_chans=1, dim=8, depth=2, heads=2, mlp_ratio=2, num_classes=3,
           dtype="float64", seed=1)

#: The model's token layers (patch embedding, 2 blocks x qkv, proj, fc1, fc2), each summing B * 16 * 16 rows.
LAYERS, INNER = 9, 2 * 256


def _forward(seed=0):
    model = TinyViT(ViTConfig(**CFG))
    rng = np.random.default_rng(seed)
    _, cache = model.forward(rng.standard_normal((2, 1, 16, 16)), rng.integers(0, 3, 2))
    return model, cache


def test_parse_published_specs():
    m = parse_method(" WTACRS:0.3 ")
    assert (m.kind, m.name, m.published, m.style_key) == ("published", "wtacrs:0.3", "wtacrs:0.3", "wtacrs")
    assert m.to_dict()["published"] == "wtacrs:0.3" and m.label == "wtacrs:0.3"
    assert parse_method("lbp:lp_l1:4") == parse_method("lp_l1:4")  # the LBP-WHT family is the lbp kind
    assert parse_method("hot").kind == "published"
    with pytest.raises(ValueError, match="rho"):
        parse_method("crs:1.5")
    with pytest.raises(ValueError, match="published method .*velora:G"):
        parse_method("svd:3")


@pytest.mark.parametrize("spec", ["crs:1", "wtacrs:1", "rad:1", "meprop:1", "calibrated:64", "hot:gx=fp,gw=fp,keep=1"])
def test_keep_everything_is_dense_backprop(spec):
    """Everything kept: every parameter gradient of the whole model is the dense one, to rounding."""
    model, cache = _forward()
    exact = model.backward(cache)
    res = build_plan(spec, model, batch=2).backward(model, cache)
    bound = backprop_rtol(LAYERS, INNER)
    for k, g in exact.grads.items():
        assert relative_error(res.grads[k], g) <= bound, (spec, k)


def test_published_plan_costs_and_layers():
    model, _ = _forward()
    plan = build_plan("meprop:0.25", model, batch=2, layers="blocks.*.mlp.*")
    assert plan.approximated == ("blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2")
    info = model.layers["blocks.0.mlp.fc1"]
    want = get_method("meprop:0.25").backward_flops((2, model.config.num_tokens, info.in_features),
                                                    info.out_features, grid=info.grid, patch=8,
                                                    extra_tokens=info.extra_tokens)
    assert plan.flops["blocks.0.mlp.fc1"] == want < plan.dense_flops["blocks.0.mlp.fc1"]
    assert plan.flops["blocks.0.attn.qkv"] == plan.dense_flops["blocks.0.attn.qkv"]  # not approximated
    assert plan.projectors == {}


def _toy_task(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 24)
    x = 0.3 * rng.standard_normal((24, 1, 16, 16))
    for i, c in enumerate(y):
        x[i, 0, :, 5 * c:5 * c + 6] += 1.0
    return SimpleNamespace(train_images=x, train_labels=y, test_images=x[:8], test_labels=y[:8])


@pytest.mark.parametrize("spec", ["wtacrs:0.3", "velora:4", "calibrated:6"])
def test_training_with_a_published_method_is_seeded_and_approximate(spec):
    cfg = TrainConfig(steps=3, batch_size=4, lr=5e-3, warmup=1, eval_every=3, check_every=1, seed=0)
    runs = []
    for _ in range(2):
        model = TinyViT(ViTConfig(**CFG))
        res = train(model, build_plan(spec, model, batch=4, seed=0, layers="blocks.*"), _toy_task(), cfg)
        runs.append((model, res))
    (a, ra), (b, rb) = runs
    assert ra.loss_curve == rb.loss_curve  # one generator per layer and seed; calibration on the first batch
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    errors = ra.checks.rel_error["all"]
    assert len(errors) == 3 and all(0 < e < 10 for e in errors)  # approximate, not broken
    assert ra.checks.energy_kept == {}  # no per-patch subspace to report


def test_lbp_finetune_takes_published_methods(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    tiny = replace(FinetuneConfig.quick(), methods=("dense",),
                   model=ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, mlp_ratio=2,
                                   num_classes=5),
                   pretrain=TrainConfig(steps=3, batch_size=16, eval_every=3),
                   adapt=TrainConfig(steps=2, batch_size=16, eval_every=2, check_every=2))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(FinetuneConfig, "quick", classmethod(lambda cls: tiny))
    out = tmp_path / "out"
    rc = cli.main(["finetune", "--quick", "--quiet", "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                   "--methods", "wtacrs:0.3,hot:keep=0.25,block=8,lp_l1:2"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in res["methods"]] == ["dense", "wtacrs:0.3", "hot:keep=0.25,block=8", "lp_l1:2"]
    assert all(m["backward_mflops"] > 0 for m in res["methods"])
    assert res["methods"][1]["published"] == "wtacrs:0.3"
    rc = cli.main(["finetune", "--quick", "--quiet", "--out", str(tmp_path / "bad"), "--methods", "svd:3"])
    _, err = capsys.readouterr()
    assert rc == 2 and "published method" in err and not (tmp_path / "bad").exists()
