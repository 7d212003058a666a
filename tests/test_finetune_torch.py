"""The PyTorch fine-tuning engine: cross-engine agreement with the NumPy engine, and compare_methods on a user model.

The cross-engine tests train the NumPy :class:`~analysis.vit.TinyViT` and its
PyTorch port from the same initial weights on the same batches in float64: two
independent implementations of every operation (manual backward against
autograd, NumPy AdamW against :class:`torch.optim.AdamW`) checking each other.
Tolerances (tests/tolerances.py): per-step gradients, teacher-forced at the
NumPy dense trajectory's weights, agree to :func:`backprop_rtol` over all 10
linear layers; whole loss curves agree to the perturbation-measured
:func:`trajectory_bound` (the per-step bound injected at every step of the NumPy
run), which the measured differences sit far below; the issue's round 1e-9 is
not asserted, as no a-priori bound derives it (the measured differences are
printed with ``-s``).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from test_finetune_train import CFG, _Perturbed, toy_task  # noqa: E402
from tolerances import backprop_rtol, trajectory_bound  # noqa: E402
from torch import nn  # noqa: E402

from analysis import cli  # noqa: E402
from analysis.baselines import dct_basis, random_basis  # noqa: E402
from analysis.errors import subspace_backward  # noqa: E402
from analysis.finetune import (  # noqa: E402  # noqa: E402
    FinetuneConfig,
    TrainConfig,
    batch_indices,
    build_plan,
    compare_methods,
    make_optimizer,
    torch_digits,
    train,
)
from analysis.finetune.figures import FIGURES  # noqa: E402
from analysis.finetune.torch_engine import train_torch  # noqa: E402
from analysis.finetune.torch_model import TorchViT  # noqa: E402
from analysis.finetune.torch_plan import SubspaceLinear, build_torch_plan  # noqa: E402
from analysis.metrics import relative_error  # noqa: E402
from analysis.vit import TinyViT, ViTConfig  # noqa: E402

STEPS = 10
#: All linear layers of the toy (patch_embed, 2 x 4 per block, head): two implementations of each differ by rounding.
ALL_LAYERS = 2 + 4 * CFG.depth
#: Rows summed by the largest products: B * L = 8 * 64 grid tokens.
INNER = 8 * CFG.num_tokens


def _train_cfg(optimizer="adamw"):
    return TrainConfig(steps=STEPS, batch_size=8, optimizer=optimizer, lr=5e-3, warmup=2, eval_every=5, seed=0)


def _torch_run(spec, task, optimizer="adamw"):
    model = TorchViT(CFG)
    sample = torch.as_tensor(task.train_images[:8])
    plan = build_torch_plan(spec, model, sample, include=list(TinyViT(CFG).token_layers), grid=CFG.grid,
                            patch=8, pad="none")
    plan.apply(model)
    res = train_torch(model, plan, (task.train_images, task.train_labels), (task.test_images, task.test_labels),
                      _train_cfg(optimizer))
    return model, res


def _numpy_run(spec, task, optimizer="adamw"):
    model = TinyViT(CFG)
    return model, train(model, build_plan(spec, model, batch=8), task, _train_cfg(optimizer))


def test_port_has_the_numpy_layout_and_forward():
    task = toy_task()
    numpy_model, torch_model = TinyViT(CFG), TorchViT(CFG)
    params = torch_model.numpy_params()
    assert list(params) == list(numpy_model.params)
    for k, v in numpy_model.params.items():
        np.testing.assert_array_equal(params[k], v)
    logits = torch_model(torch.as_tensor(task.test_images)).detach().numpy()
    np.testing.assert_allclose(logits, numpy_model.predict(task.test_images), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="names"):
        TorchViT(CFG, params={"head.weight": params["head.weight"]})
    bad = dict(params, **{"head.bias": np.zeros(7)})
    with pytest.raises(ValueError, match="shape"):
        TorchViT(CFG, params=bad)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_per_step_gradients_agree_across_engines(optimizer):
    """Teacher-forced on the NumPy dense trajectory: torch dense and full-basis gradients at the same weights."""
    task = toy_task()
    model = TinyViT(CFG)
    dense, full = TorchViT(CFG), TorchViT(CFG)
    sample = torch.as_tensor(task.train_images[:8])
    build_torch_plan("lp_linf:8", full, sample, include=list(TinyViT(CFG).token_layers), grid=CFG.grid, patch=8,
                     pad="none").apply(full)
    assert type(full.blocks[0].mlp.fc1).__name__ == "LBPLinear" and full.head.__class__ is nn.Linear
    cfg = _train_cfg(optimizer)
    decay = [k for k, v in model.params.items() if k.endswith(".weight") and v.ndim == 2]
    opt = make_optimizer(optimizer, model.params, cfg.schedule(), weight_decay=cfg.weight_decay, decay=decay)
    bound = backprop_rtol(ALL_LAYERS, INNER)
    worst = 0.0
    for idx in batch_indices(task.train_labels.size, 8, STEPS, 0):
        x, y = task.train_images[idx], task.train_labels[idx]
        loss, grads = model.loss_and_grads(x, y)
        for tm in (dense, full):
            tm.load_numpy(model.params)
            tl = nn.functional.cross_entropy(tm(torch.as_tensor(x)), torch.as_tensor(y))
            tm.zero_grad()
            tl.backward()
            assert abs(tl.item() - loss) <= bound * abs(loss)
            tg = {k: p.grad.numpy() for k, p in tm.named_parameters()}
            for k, g in grads.items():
                e = relative_error(tg[k], g)
                worst = max(worst, e)
                assert e <= bound, (k, e, bound)
        opt.step(grads)
    print(f"\ncross-engine per-step gradients ({optimizer}): worst relative error {worst:.2e}, bound {bound:.2e}")


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_loss_curves_agree_across_engines(optimizer):
    """Whole runs, dense and the full basis, torch against NumPy, within the measured trajectory bound."""
    task = toy_task()
    np_dense, r_np_dense = _numpy_run("dense", task, optimizer)
    _, r_np_full = _numpy_run("lp_linf:8", task, optimizer)
    t_dense, r_t_dense = _torch_run("dense", task, optimizer)
    t_full, r_t_full = _torch_run("lp_linf:8", task, optimizer)
    keys = list(np_dense.params)
    n = sum(v.size for v in np_dense.params.values())
    rho = backprop_rtol(ALL_LAYERS, INNER)
    ref = np.asarray(r_np_dense.loss_curve)
    ref_params = np.concatenate([np_dense.params[k].ravel() for k in keys])
    loss_devs, param_devs = [], []
    for seed in range(3):
        model = TinyViT(CFG)
        res = train(model, _Perturbed(build_plan("dense", model, batch=8), rho, seed), task, _train_cfg(optimizer))
        loss_devs.append(float(np.linalg.norm(np.asarray(res.loss_curve) - ref)))
        param_devs.append(float(np.linalg.norm(np.concatenate([model.params[k].ravel() for k in keys]) - ref_params)))
    assert min(param_devs) > 0
    loss_bound = trajectory_bound(loss_devs, n, STEPS)
    param_bound = trajectory_bound(param_devs, n, STEPS)
    diffs = {}
    for name, np_res, t_res, t_model in (("dense", r_np_dense, r_t_dense, t_dense),
                                         ("full basis", r_np_full, r_t_full, t_full)):
        d = np.asarray(t_res.loss_curve) - np.asarray(np_res.loss_curve)
        diffs[name] = float(np.max(np.abs(d)))
        assert np.linalg.norm(d) <= loss_bound, (name, np.linalg.norm(d), loss_bound)
        flat = np.concatenate([t_model.numpy_params()[k].ravel() for k in keys])
        assert np.linalg.norm(flat - ref_params) <= param_bound
        assert t_res.test_accuracy_curve == np_res.test_accuracy_curve
    # the check has teeth: 15 of the 64 bases dropped move the torch curve far past the bound
    _, r_near = _torch_run("lp_linf:7", task, optimizer)
    assert np.linalg.norm(np.asarray(r_near.loss_curve) - ref) > 10 * loss_bound
    print(f"\ncross-engine loss curves ({optimizer}, {STEPS} steps): max |diff| dense {diffs['dense']:.1e}, "
          f"full basis {diffs['full basis']:.1e}; measured bound (2-norm) {loss_bound:.1e}")


@pytest.mark.parametrize("kind", ["dct", "random"])
def test_subspace_layer_matches_the_numpy_oracle(kind):
    """SubspaceLinear's gradients against analysis.errors.subspace_backward (an independent NumPy implementation)."""
    # Tolerance: both paths sum at most 2 * 65 rows plus a 16-term projection of O(1) float64 products:
    # gamma_k |A||B| with k ~ 150 is ~2e-14 times sqrt(k)-larger magnitudes than the entries; 1e-12 leaves margin.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1 + 64, 6))
    gy = rng.standard_normal((2, 1 + 64, 5))
    dense = nn.Linear(6, 5).double()
    q = dct_basis(4, 5) if kind == "dct" else random_basis(4, 5, 3)
    layer = SubspaceLinear(dense, q, (8, 8), 1)
    xt = torch.tensor(x, requires_grad=True)
    y = layer(xt)
    torch.testing.assert_close(y, dense(xt))
    y.backward(torch.tensor(gy))
    ref = subspace_backward(x, dense.weight.detach().numpy(), gy, q, grid=(8, 8), pad="none", extra_tokens=1)
    np.testing.assert_allclose(xt.grad.numpy(), ref.grad_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dense.weight.grad.numpy(), ref.grad_weight, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dense.bias.grad.numpy(), gy.sum(axis=(0, 1)), rtol=1e-12)  # the bias is exact
    assert layer.to_dense() is dense


# --------------------------------------------------------------------------- a user-defined model


class _Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x):
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm(x))))


class UserNet(nn.Module):
    """A class token, a conv stem, two MLP blocks on a 8 x 8 grid, a head on the mean token."""

    def __init__(self, dim=8, classes=3):
        super().__init__()
        self.stem = nn.Conv2d(1, dim, 2, stride=2)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(_Block(dim), _Block(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, images):
        x = self.stem(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


def _model_fn(seed):
    torch.manual_seed(100 + seed)
    return UserNet().double()


def test_compare_methods_trains_a_user_model_and_writes_the_report(tmp_path):
    task = toy_task()
    train_set = (task.train_images, task.train_labels)
    test_batches = [(task.test_images[:12], task.test_labels[:12]), (task.test_images[12:], task.test_labels[12:])]
    methods = ["lp_l1:2", "dense", "lp_linf:4", "energy_l2:4", "dct:4", "random:4", "budget:1"]
    res = compare_methods(_model_fn, train_set, test_batches, methods=methods, include="blocks.*", extra_tokens=1,
                          patch=4, steps=6, batch_size=8, seeds=2, lr=5e-3, check_every=3, out=tmp_path / "out")
    names = [m["name"] for m in res["methods"]]
    assert names == ["dense", "lp_l1:2", "lp_linf:4", "energy_l2:4", "dct:4", "random:4", "budget:1"]
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [m["name"] for m in on_disk["methods"]] == names and on_disk["engine"] == "torch"
    assert res["setup"]["grids"] == {f"blocks.{i}.fc{j}": [8, 8] for i in range(2) for j in (1, 2)}
    text = (tmp_path / "out" / "index.md").read_text(encoding="utf-8")
    by = {m["name"]: m for m in res["methods"]}
    for m in res["methods"]:
        assert len(m["test_accuracy"]) == 2 and len(m["loss_curve"][0]) == 6
        assert f"{m['backward_mflops']:.1f}" in text and m["label"] in text
        assert all(t > 0 for t in m["backward_seconds_per_step"])
    # the full basis is exact: dense training to rounding, gradients and energy kept exact along training
    assert max(by["lp_linf:4"]["param_distance_to_dense"]) < 1e-10
    assert max(e for s in by["lp_linf:4"]["gradient_checks"]["rel_error"]["all"] for e in s) < 1e-12
    for spec in ("lp_l1:2", "energy_l2:4", "dct:4", "random:4"):
        m = by[spec]
        assert m["approximated_layers"] == list(res["setup"]["grids"])
        kept = [e for layer in m["gradient_checks"]["energy_kept"].values() for s in layer for e in s]
        assert kept and all(0 < e < 1 for e in kept), spec
        assert min(m["param_distance_to_dense"]) > 1e-6, spec
    assert by["energy_l2:4"]["rank"] == 4 and by["dct:4"]["rank"] == 4
    budget = by["budget:1"]
    assert budget["adapted_layers"] == ["blocks.1.fc1", "blocks.1.fc2", "head"]
    assert budget["trained_parameters"] == 3 * 2 + 2 + 2  # blocks.1 (norm, fc1, fc2), norm, head: weight and bias
    assert budget["backward_mflops"] < by["dense"]["backward_mflops"]
    assert res["summary"]["dense"]["name"] == "dense"


def test_compare_methods_rejects_bad_input():
    task = toy_task()
    data = (task.train_images, task.train_labels)
    kw = dict(include="blocks.*", extra_tokens=1, patch=4, steps=2, batch_size=8)
    with pytest.raises(ValueError, match="unknown method"):
        compare_methods(_model_fn, data, data, methods=["dense", "svd:3"], **kw)
    with pytest.raises(ValueError, match="distinct"):
        compare_methods(_model_fn, data, data, methods=["dense", "dense"], **kw)
    with pytest.raises(ValueError, match="matches no"):
        compare_methods(_model_fn, data, data, methods=["dense"], **dict(kw, include="nothing.*"))
    with pytest.raises(ValueError, match="not a square"):
        compare_methods(_model_fn, data, data, methods=["lp_l1:2"], **dict(kw, extra_tokens=0))
    with pytest.raises(ValueError, match="divisible"):
        compare_methods(_model_fn, data, data, methods=["dct:3"], **dict(kw, patch=16))
    with pytest.raises(ValueError, match="block container"):
        compare_methods(_model_fn, data, data, methods=["budget:1"], blocks="layers", **kw)
    with pytest.raises(ValueError, match="gave out"):
        compare_methods(_model_fn, [], data, methods=["dense"], **kw)


# --------------------------------------------------------------------------- lbp finetune --engine torch


def test_cli_engine_torch_writes_the_same_output_set(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("LBP_DEBUG", raising=False)
    tiny = ViTConfig(image_size=8, patch_size=1, in_chans=1, dim=8, depth=1, heads=2, mlp_ratio=2, num_classes=5)

    real = torch_digits.quick_torch_config

    def quick(config):  # the real preset with a tinier model and fewer steps
        cfg = real(config)
        return replace(cfg, model=tiny, pretrain=TrainConfig(steps=3, batch_size=16, eval_every=3),
                       adapt=TrainConfig(steps=4, batch_size=16, eval_every=2, check_every=2))

    monkeypatch.setattr(torch_digits, "quick_torch_config", quick)
    monkeypatch.setattr(FinetuneConfig, "full", classmethod(lambda cls: replace(quick(cls()), seeds=2)))
    out, cache = tmp_path / "out", tmp_path / "cache"
    rc = cli.main(["finetune", "--engine", "torch", "--quick", "--quiet", "--out", str(out), "--cache-dir", str(cache)])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted([*FIGURES, "index.md", "results.json"])
    res = json.loads((out / "results.json").read_text())
    assert res["engine"] == "torch" and res["setup"]["engine"] == "torch"
    assert [m["name"] for m in res["methods"]] == list(torch_digits.QUICK_TORCH_METHODS)
    assert res["pretrain"]["cache"] == "built" and res["summary"]["headline"] in stdout
    text = (out / "index.md").read_text(encoding="utf-8")
    assert "`TorchViT`" in text and "| full BP |" in text
    full = next(m for m in res["methods"] if m["name"] == "lp_linf:8")
    assert full["param_distance_to_dense"][0] < 1e-4  # float32: exact up to rounding
    rc = cli.main(["finetune", "--engine", "torch", "--seeds", "2", "--steps", "3", "--quiet", "--out", str(out),
                   "--cache-dir", str(cache)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["setup"]["seeds"] == [0, 1] and len(res["methods"][0]["loss_curve"][0]) == 3


def test_cli_engine_torch_needs_pytorch(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    rc = cli.main(["finetune", "--engine", "torch", "--quick", "--out", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert rc == 1 and "needs PyTorch" in err and "--engine numpy" in err
    assert not (tmp_path / "o").exists()
    assert cli.main(["finetune", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "--device needs --engine torch" in capsys.readouterr().err
    assert cli.main(["finetune", "--engine", "jax"]) == 2
    assert "--engine" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_engine_torch_quick_preset(tmp_path, capsys):
    """The real ``lbp finetune --engine torch --quick`` (CI runs it too: seconds to a minute on 2 cores)."""
    pytest.importorskip("sklearn")

    out = tmp_path / "out"
    rc = cli.main(["finetune", "--engine", "torch", "--quick", "--quiet", "--out", str(out), "--cache-dir",
                   str(tmp_path / "cache")])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    full = next(m for m in res["methods"] if m["name"] == "lp_linf:8")
    assert full["test_accuracy"] == res["methods"][0]["test_accuracy"]


def test_cli_scale_study_quick(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from analysis.finetune import scale_study  # noqa: PLC0415 - imports the study only here

    monkeypatch.setenv("MPLBACKEND", "Agg")
    tiny = dict(scale_study.QUICK_GRID, steps=(3,), methods=("dense", "lp_l1:4", "dct:10"), pretrain_steps=3,
                padding=dict(scale_study.QUICK_GRID["padding"], steps=3, methods=("dense", "lp_linf:8")))
    monkeypatch.setattr(scale_study, "QUICK_GRID", tiny)
    out = tmp_path / "study"
    rc = cli.main(["finetune", "--study", "scale", "--quick", "--quiet", "--out", str(out), "--cache-dir",
                   str(tmp_path / "c")])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["fig_gap_energy.png", "index.md", "results.json"]
    res = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in res["rows"]] == ["lp_l1:4", "dct:10"]
    assert all(r["width"] == 16 and r["steps"] == 3 and 0 < r["energy_kept"] < 1 for r in res["rows"])
    full = [r for r in res["padding"] if r["method"] == "lp_linf:8"]
    assert [r["pad"] for r in full] == ["reflect", "zero"] and full[1]["gap_points"] == 0.0  # zero padding: exact
    text = (out / "index.md").read_text(encoding="utf-8")
    assert "| 16 | 1 | 3 | `lp_l1:4` |" in text and f"wrote {out / 'index.md'}" in stdout


def test_importing_the_packages_never_imports_torch():
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = ("import sys, lbpcore, analysis, analysis.finetune, analysis.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@settings(max_examples=15, deadline=None)
@given(h=st.sampled_from([4, 8]), w=st.sampled_from([4, 8, 12]), n=st.sampled_from([2, 4]),
       rank_frac=st.floats(0.05, 1.0), e=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_subspace_layer_matches_the_oracle_on_any_grid(h, w, n, rank_frac, e, seed):
    """Property: on any divisible grid, rank and extra tokens, the torch subspace backward is the NumPy one."""
    # up to 2 * 98 rows and a 16-term projection: the bound of the test above, scaled by the larger sums
    rng = np.random.default_rng(seed)
    r = max(1, round(rank_frac * n * n))
    q = random_basis(n, r, seed)
    x, gy = rng.standard_normal((2, e + h * w, 3)), rng.standard_normal((2, e + h * w, 4))
    dense = nn.Linear(3, 4).double()
    xt = torch.tensor(x, requires_grad=True)
    SubspaceLinear(dense, q, (h, w), e)(xt).backward(torch.tensor(gy))
    ref = subspace_backward(x, dense.weight.detach().numpy(), gy, q, grid=(h, w), pad="none", extra_tokens=e)
    np.testing.assert_allclose(xt.grad.numpy(), ref.grad_x, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(dense.weight.grad.numpy(), ref.grad_weight, rtol=1e-11, atol=1e-11)
