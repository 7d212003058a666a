"""Optimizers and the learning-rate schedule: hand-computed steps, and PyTorch as an independent oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.finetune import SGD, AdamW, Schedule, make_optimizer


def test_adamw_two_hand_computed_steps():
    lr, wd, b1, b2, eps = 0.1, 0.01, 0.9, 0.999, 1e-8
    p = {"w": np.array([1.0, -2.0])}
    opt = AdamW(p, lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    g1, g2 = np.array([0.5, 0.1]), np.array([-0.2, 0.3])
    assert opt.step({"w": g1}) == lr
    # step 1: decay, then m_hat = g, v_hat = g^2: the update is lr g / (|g| + eps)
    w1 = np.array([1.0, -2.0]) * (1 - lr * wd) - lr * g1 / (np.abs(g1) + eps)
    np.testing.assert_allclose(p["w"], w1, rtol=0, atol=1e-15)
    opt.step({"w": g2})
    m = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v = b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
    w2 = w1 * (1 - lr * wd) - lr * (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + eps)
    np.testing.assert_allclose(p["w"], w2, rtol=0, atol=1e-15)
    # by hand, to six digits: w[0] = 0.899 * 0.999 - 0.1 * m_hat / sqrt(v_hat)
    assert p["w"][0] == pytest.approx(0.8981010 - 0.1 * (0.025 / 0.19) / math.sqrt(0.00028975 / 0.001999), abs=1e-6)


def test_sgd_momentum_weight_decay_and_nesterov_by_hand():
    p = {"w": np.array([2.0])}
    opt = SGD(p, 0.1, momentum=0.9, weight_decay=0.5)
    opt.step({"w": np.array([1.0])})  # g = 1 + 0.5 * 2 = 2; buf = 2; w = 2 - 0.2
    assert p["w"][0] == pytest.approx(1.8, abs=1e-15)
    opt.step({"w": np.array([1.0])})  # g = 1 + 0.9 = 1.9; buf = 1.8 + 1.9 = 3.7; w = 1.8 - 0.37
    assert p["w"][0] == pytest.approx(1.43, abs=1e-15)
    q = {"w": np.array([0.0])}
    nes = SGD(q, 1.0, momentum=0.5, nesterov=True)
    nes.step({"w": np.array([1.0])})  # buf = 1; step g + mu buf = 1.5
    nes.step({"w": np.array([1.0])})  # buf = 1.5; step 1 + 0.75 = 1.75
    assert q["w"][0] == pytest.approx(-3.25, abs=1e-15)
    plain = {"w": np.array([1.0])}
    SGD(plain, 0.5, momentum=0.0).step({"w": np.array([4.0])})
    assert plain["w"][0] == -1.0


def test_weight_decay_only_on_the_decay_set():
    p = {"w": np.ones(2), "b": np.ones(2)}
    opt = AdamW(p, 0.1, weight_decay=1.0, decay=["w", "not-a-param"])
    opt.step({"w": np.zeros(2), "b": np.zeros(2), "extra": np.ones(5)})  # zero gradients: only the decay moves
    np.testing.assert_allclose(p["w"], 0.9)
    np.testing.assert_array_equal(p["b"], 1.0)
    assert opt.decay == {"w"}


def test_optimizer_errors():
    p = {"w": np.ones(2)}
    with pytest.raises(ValueError, match="no gradient"):
        SGD(p, 0.1).step({})
    with pytest.raises(ValueError, match="shape"):
        SGD(p, 0.1).step({"w": np.ones(3)})
    with pytest.raises(ValueError, match="betas"):
        AdamW(p, 0.1, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="momentum"):
        SGD(p, 0.1, momentum=1.0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, 0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="weight_decay"):
        SGD(p, 0.1, weight_decay=-1.0)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("adam", p, 0.1)


def test_schedule_shapes():
    s = Schedule(1.0, warmup=4, total=10)
    lrs = [s(t) for t in range(10)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-15) and all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    assert lrs[4 + 2] == pytest.approx(0.5)  # halfway through the six decay steps
    lin = Schedule(2.0, total=4, decay="linear", min_ratio=0.5)
    assert [lin(t) for t in range(4)] == [1.75, 1.5, 1.25, 1.0]
    assert Schedule(0.3, warmup=2, decay="constant")(50) == 0.3
    assert s(1000) == pytest.approx(0.0, abs=1e-15)  # past the end: stays at the minimum
    for bad in (dict(lr=0.0), dict(lr=1.0, warmup=-1), dict(lr=1.0, decay="step"), dict(lr=1.0),
                dict(lr=1.0, total=5, min_ratio=2.0)):
        with pytest.raises(ValueError):
            Schedule(**bad)


@pytest.mark.parametrize("kind", ["adamw", "sgd", "sgd-nesterov"])
def test_matches_torch_optim(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = {"w": (3, 4), "b": (4,)}
    init = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(6)]
    sched = Schedule(0.05, warmup=2, total=6)
    ours = {k: v.copy() for k, v in init.items()}
    tp = [torch.tensor(init[k], dtype=torch.float64, requires_grad=True) for k in shapes]
    if kind == "adamw":
        opt = AdamW(ours, sched, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)
        topt = torch.optim.AdamW(tp, lr=0.05, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)
    else:
        nesterov = kind == "sgd-nesterov"
        opt = SGD(ours, sched, momentum=0.7, nesterov=nesterov, weight_decay=0.1)
        topt = torch.optim.SGD(tp, lr=0.05, momentum=0.7, nesterov=nesterov, weight_decay=0.1)
    tsched = torch.optim.lr_scheduler.LambdaLR(topt, lambda t: sched(t) / 0.05)
    for g in grads:
        opt.step(g)
        for t, k in zip(tp, shapes, strict=True):
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        topt.step()
        tsched.step()
    for t, k in zip(tp, shapes, strict=True):
        np.testing.assert_allclose(ours[k], t.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=k)
