"""Backward methods: parsing, binding to a model, the hook into TinyViT.backward, and their costs."""

from __future__ import annotations

import numpy as np
import pytest

import lbpcore
from analysis.baselines import walsh_basis
from analysis.finetune import build_plan, layer_flops, parse_method
from analysis.vit import TinyViT, ViTConfig


def small_model(**kw):
    base = dict(image_size=16, patch_size=1, in_chans=1, dim=8, depth=2, heads=2, mlp_ratio=2, num_classes=3,
                dtype="float64", seed=1)
    base.update(kw)
    return TinyViT(ViTConfig(**base))


def batch(model, b=2, seed=0):
    rng = np.random.default_rng(seed)
    cfg = model.config
    return rng.standard_normal((b, cfg.in_chans, cfg.image_size, cfg.image_size)), rng.integers(0, 3, b)


def test_parse_method():
    assert parse_method("dense").kind == "dense"
    assert parse_method(" LP_L1:6 ").name == "lp_l1:6" and parse_method("lp_l1:6").rank == 21
    assert parse_method("lp_linf:8").rank == 64 and parse_method("lp_l1:20").rank == 64  # clipped
    m = parse_method("energy_l2:10")
    assert (m.kind, m.bases, m.rank) == ("lbp", "energy_l2:10", 10)
    assert parse_method("random:5", patch=4).to_dict()["subspace"] == "random"
    assert parse_method("budget:0").blocks == 0 and parse_method("budget:2").label == "last 2 blocks + head"
    assert parse_method(m) is m
    for bad in ("", "dense:1", "lp_l1", "lp_l1:0", "dct:65", "random:0", "svd:3", "energy_l2:65", "budget:x"):
        with pytest.raises(ValueError):
            parse_method(bad)


def test_dense_and_lbp_plans():
    model = small_model()
    dense = build_plan("dense", model, batch=2)
    assert dense.approximated == () and dense.stop_at is None
    assert dense.trainable == tuple(model.params) and dense.fraction_of_dense == 1.0
    assert dense.dense_mflops == pytest.approx(sum(dense.flops.values()) / 1e6)
    lbp = build_plan("lp_l1:3", model, batch=2, layers="blocks.*.mlp.*")
    assert lbp.approximated == ("blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2")
    assert lbp.adapted == tuple(model.layers) and lbp.lbp["blocks.1.mlp.fc2"].pad == "none"
    assert lbp.flops["blocks.0.attn.qkv"] == lbp.dense_flops["blocks.0.attn.qkv"]
    fc1 = model.layers["blocks.0.mlp.fc1"]
    cost = lbpcore.backward_cost((2, 256, 8), 16, grid=(16, 16), patch=8, bases="lp_l1:3", pad="none")
    assert lbp.flops["blocks.0.mlp.fc1"] == cost.lbp_flops == layer_flops(fc1, 2, 256, basis=lbpcore.select_bases(
        8, "lp_l1:3"))
    assert dense.flops["blocks.0.mlp.fc1"] == cost.dense_flops
    assert dense.flops["head"] == 4 * 2 * 8 * 3
    np.testing.assert_array_equal(lbp.projectors["blocks.0.mlp.fc1"], walsh_basis(8, "lp_l1:3"))
    full = build_plan("lp_linf:8", model, batch=2)
    assert full.fraction_of_dense > 1  # exact, and the projections come on top


def test_subspace_plans_reproduce_lbp_and_are_exact_at_full_rank():
    model = small_model()
    images, labels = batch(model)
    _, cache = model.forward(images, labels)
    exact = model.backward(cache)
    for spec in ("dct:64", "random:64"):
        plan = build_plan(spec, model, batch=2, seed=3)
        q = plan.projectors["blocks.1.mlp.fc1"]
        np.testing.assert_allclose(q @ q.T, np.eye(64), atol=1e-12)
        res = plan.backward(model, cache)
        assert set(res.grads) == set(model.params)
        for k in model.params:
            np.testing.assert_allclose(res.grads[k], exact.grads[k], rtol=1e-9, atol=1e-12, err_msg=f"{spec} {k}")
    low = build_plan("dct:6", model, batch=2)
    assert low.flops["blocks.0.mlp.fc1"] < low.dense_flops["blocks.0.mlp.fc1"] * 2
    r1, r2 = build_plan("random:4", model, batch=2, seed=0), build_plan("random:4", model, batch=2, seed=1)
    assert not np.allclose(r1.projectors["blocks.0.mlp.fc1"], r2.projectors["blocks.0.mlp.fc1"])
    assert not np.allclose(r1.projectors["blocks.0.mlp.fc1"], r1.projectors["blocks.0.mlp.fc2"])


def test_energy_plan_needs_calibration_and_picks_per_layer():
    model = small_model()
    with pytest.raises(ValueError, match="calibration"):
        build_plan("energy_l2:4", model, batch=2)
    images, labels = batch(model)
    captured = model.backward(model.forward(images, labels)[1], capture=True).captured
    calib = {k: captured[k].grad_y for k in model.token_layers}
    plan = build_plan("energy_l2:4", model, batch=2, calibration=calib)
    for name in model.token_layers:
        expect = lbpcore.select_bases(8, "energy_l2:4", calibration=calib[name], grid=(16, 16), pad="none")
        np.testing.assert_array_equal(plan.lbp[name].basis.indices, expect.indices)
        # on its calibration data it keeps at least the energy of the rank-4 low-pass selection
        info = model.layers[name]
        low = build_plan("lp_linf:2", model, batch=2)
        assert plan.energy_kept(name, calib[name], info) >= low.energy_kept(name, calib[name], info) - 1e-12


def test_budget_plan():
    model = small_model()
    plan = build_plan("budget:1", model, batch=2)
    assert plan.stop_at == 1 and plan.approximated == ()
    assert plan.adapted == ("blocks.1.attn.qkv", "blocks.1.attn.proj", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2", "head")
    assert all(k.startswith(("blocks.1.", "norm.", "head.")) for k in plan.trainable)
    assert plan.backward_mflops == pytest.approx(sum(plan.dense_flops[k] for k in plan.adapted) / 1e6)
    head_only = build_plan("budget:0", model, batch=2)
    assert head_only.trainable == ("norm.weight", "norm.bias", "head.weight", "head.bias")
    everything = build_plan("budget:2", model, batch=2)
    assert everything.stop_at == 0 and "patch_embed.weight" not in everything.trainable
    images, labels = batch(model)
    res = plan.backward(model, model.forward(images, labels)[1])
    assert sorted(res.grads) == sorted(plan.trainable) and res.grad_images is None
    with pytest.raises(ValueError, match="blocks"):
        build_plan("budget:3", model, batch=2)


def test_plan_rejects_padded_grids():
    with pytest.raises(ValueError, match="divisible"):
        build_plan("lp_l1:2", small_model(image_size=12), batch=2)
