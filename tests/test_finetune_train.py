"""The training loop: the full basis reproduces dense training, determinism, budgets and gradient checks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from analysis.finetune import TrainConfig, batch_indices, build_plan, evaluate, train
from analysis.metrics import relative_error
from analysis.vit import TinyViT, ViTConfig

CFG = ViTConfig(image_size=16, patch_size=2, in_chans=1, dim=8, depth=2, heads=2, mlp_ratio=2, num_classes=3,
                dtype="float64", seed=2)


def toy_task(n=48, n_test=24, seed=0):
    """Three classes of smooth random images (class = which third of the image is bright), float64."""
    rng = np.random.default_rng(seed)

    def make(m):
        y = rng.integers(0, 3, m)
        x = 0.3 * rng.standard_normal((m, 1, 16, 16))
        for i, c in enumerate(y):
            x[i, 0, :, 5 * c:5 * c + 6] += 1.0
        return x, y

    (xt, yt), (xs, ys) = make(n), make(n_test)
    return SimpleNamespace(train_images=xt, train_labels=yt, test_images=xs, test_labels=ys)


def run(spec, *, steps=6, seed=0, optimizer="adamw", check_every=0, task=None, **plan_kw):
    model = TinyViT(CFG)
    cfg = TrainConfig(steps=steps, batch_size=8, optimizer=optimizer, lr=5e-3, warmup=2, eval_every=3,
                      check_every=check_every, seed=seed)
    res = train(model, build_plan(spec, model, batch=8, **plan_kw), task or toy_task(), cfg)
    return model, res


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_full_basis_reproduces_dense_training(optimizer):
    dense, rd = run("dense", optimizer=optimizer)
    full, rf = run("lp_linf:8", optimizer=optimizer)  # 8 x 8 grid, patch 8: every basis, no padding
    for k in dense.params:
        assert relative_error(full.params[k], dense.params[k]) < 1e-10, k
    np.testing.assert_allclose(rf.loss_curve, rd.loss_curve, rtol=1e-10)
    assert rf.test_accuracy_curve == rd.test_accuracy_curve
    moved = relative_error(dense.params["blocks.0.mlp.fc1.weight"], TinyViT(CFG).params["blocks.0.mlp.fc1.weight"])
    assert moved > 1e-3  # the parameters did change


def test_low_rank_training_differs_and_checks_are_recorded():
    model, res = run("lp_l1:2", check_every=2)
    assert res.checks.steps == [0, 2, 4]
    layers = set(res.checks.rel_error) - {"all"}
    assert layers == set(model.layers)
    for name in model.token_layers:
        assert all(0 < e < 1 for e in res.checks.energy_kept[name])
    assert all(e > 0.01 for e in res.checks.rel_error["all"])
    assert res.checks.rel_error["head"] == [0.0, 0.0, 0.0]  # nothing above the head is approximated
    _, full = run("lp_linf:8", check_every=2)
    assert max(full.checks.rel_error["all"]) < 1e-12 and min(full.checks.cosine["all"]) > 1 - 1e-12
    assert all(e == pytest.approx(1.0, abs=1e-12) for v in full.checks.energy_kept.values() for e in v)
    dense_model, _ = run("dense")
    assert relative_error(model.params["blocks.0.mlp.fc1.weight"], dense_model.params["blocks.0.mlp.fc1.weight"]) > 1e-6


def test_determinism_under_a_seed():
    for spec in ("dense", "random:5", "lp_l1:3"):
        a, ra = run(spec, seed=3)
        b, rb = run(spec, seed=3)
        assert ra.loss_curve == rb.loss_curve and ra.test_accuracy_curve == rb.test_accuracy_curve
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
    _, rc = run("dense", seed=4)
    assert rc.loss_curve != ra.loss_curve


def test_budget_trains_only_the_top():
    init = TinyViT(CFG).params
    model, res = run("budget:1", check_every=3)
    for k, v in model.params.items():
        changed = not np.array_equal(v, init[k])
        assert changed == k.startswith(("blocks.1.", "norm.", "head.")), k
    assert res.checks.rel_error["all"] == [0.0, 0.0] and res.checks.energy_kept == {}
    assert len(res.backward_seconds) == 6 and all(t > 0 for t in res.backward_seconds)


def test_batches_evaluate_and_config():
    idx = batch_indices(10, 4, 5, seed=1)
    assert idx.shape == (5, 4)
    assert sorted(idx.ravel()[:10].tolist()) == list(range(10)) and sorted(idx.ravel()[10:].tolist()) != []
    np.testing.assert_array_equal(idx, batch_indices(10, 4, 5, seed=1))
    task = toy_task()
    model = TinyViT(CFG)
    loss, acc = evaluate(model, task.test_images, task.test_labels, batch_size=5)
    full_loss, full_cache = model.forward(task.test_images, task.test_labels)
    assert loss == pytest.approx(full_loss, rel=1e-12)
    assert acc == np.mean(np.argmax(full_cache.logits, 1) == task.test_labels)
    for bad in (dict(steps=0), dict(batch_size=1.5), dict(check_every=-1), dict(optimizer="adam"), dict(lr=-1.0)):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_divergence_is_reported():
    task = toy_task()
    task.train_images = task.train_images * np.nan
    with pytest.raises(FloatingPointError, match="loss"):
        run("dense", task=task)
