"""The training loop: the full basis reproduces dense training, determinism, budgets and gradient checks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from tolerances import backprop_rtol, trajectory_bound

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


#: The toy's converted layers: 2 blocks x (qkv, proj, fc1, fc2), each summing B * (L + 1) = 8 * 65 rows in grad_W.
TOY_LAYERS, TOY_INNER = 2 * 4, 8 * 65


class _Both:
    """A plan that runs the dense and the full-basis backward on the same cache and trains with the dense one."""

    def __init__(self, dense, full):
        self.dense, self.full, self.errors = dense, full, []

    def __getattr__(self, name):
        return getattr(self.dense, name)

    def backward(self, model, cache, capture=False):
        rd = self.dense.backward(model, cache, capture=capture)
        rf = self.full.backward(model, cache, capture=capture)
        self.errors.append({k: relative_error(rf.grads[k], g) for k, g in rd.grads.items()})
        return rd


class _Perturbed:
    """A plan whose every gradient gets an isotropic random perturbation of normwise size ``rho * ||g||``."""

    def __init__(self, plan, rho, seed):
        self.plan, self.rho, self.rng = plan, rho, np.random.default_rng(seed)

    def __getattr__(self, name):
        return getattr(self.plan, name)

    def backward(self, model, cache, capture=False):
        res = self.plan.backward(model, cache, capture=capture)
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in res.grads.values()))
        n = sum(g.size for g in res.grads.values())
        for k, g in res.grads.items():
            res.grads[k] = g + (self.rho * norm / np.sqrt(n)) * self.rng.choice([-1.0, 1.0], size=g.shape)
        return res


def _flat(params, keys):
    return np.concatenate([np.ravel(params[k]) for k in keys])


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_full_basis_gradients_equal_dense_at_every_step(optimizer):
    """Teacher-forced: at every step of the dense trajectory, both backward paths agree to rounding."""
    model = TinyViT(CFG)
    both = _Both(build_plan("dense", model, batch=8), build_plan("lp_linf:8", model, batch=8))
    cfg = TrainConfig(steps=6, batch_size=8, optimizer=optimizer, lr=5e-3, warmup=2, eval_every=3, seed=0)
    train(model, both, toy_task(), cfg)
    bound = backprop_rtol(TOY_LAYERS, TOY_INNER)
    assert len(both.errors) == 6
    for step, errors in enumerate(both.errors):
        for k, e in errors.items():
            assert e <= bound, (step, k, e, bound)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_full_basis_reproduces_dense_training(optimizer):
    """Whole runs: the trajectories differ by at most what per-step rounding-sized errors can grow to.

    The bound is measured (:func:`tests.tolerances.trajectory_bound`): runs of the
    dense path perturbed at every step by the per-step bound ``backprop_rtol``
    show how this optimizer grows such differences over the run.
    """
    steps = 6
    dense, rd = run("dense", optimizer=optimizer, steps=steps)
    full, rf = run("lp_linf:8", optimizer=optimizer, steps=steps)  # 8 x 8 grid, patch 8: every basis, no padding
    keys = sorted(dense.params)
    n = sum(dense.params[k].size for k in keys)
    rho = backprop_rtol(TOY_LAYERS, TOY_INNER)
    ref, ref_loss = _flat(dense.params, keys), np.asarray(rd.loss_curve)
    devs, loss_devs = [], []
    for seed in range(3):
        model = TinyViT(CFG)
        cfg = TrainConfig(steps=steps, batch_size=8, optimizer=optimizer, lr=5e-3, warmup=2, eval_every=3, seed=0)
        res = train(model, _Perturbed(build_plan("dense", model, batch=8), rho, seed), toy_task(), cfg)
        devs.append(float(np.linalg.norm(_flat(model.params, keys) - ref)))
        loss_devs.append(float(np.linalg.norm(np.asarray(res.loss_curve) - ref_loss)))
    assert min(devs) > 0  # the perturbation reached the parameters
    param_bound = trajectory_bound(devs, n, steps)
    assert np.linalg.norm(_flat(full.params, keys) - ref) <= param_bound
    assert np.linalg.norm(np.asarray(rf.loss_curve) - ref_loss) <= trajectory_bound(loss_devs, n, steps)
    # the check has teeth: dropping 15 of the 64 bases moves the trajectory far past the bound
    near, _ = run("lp_linf:7", optimizer=optimizer, steps=steps)
    assert np.linalg.norm(_flat(near.params, keys) - ref) > 10 * param_bound
    assert rf.test_accuracy_curve == rd.test_accuracy_curve


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
