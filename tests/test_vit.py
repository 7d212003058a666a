"""The NumPy vision transformer of :mod:`analysis.vit` and the real-image batches of :mod:`analysis.images`.

* every operation's manual backward against central finite differences (float64);
* the whole network's parameter (and input) gradients against directional
  finite differences, with and without a class token, for both GELU forms;
* LBP-WHT on every token layer with every basis of a divisible grid gives the
  exact gradients; with a low-pass selection the errors are positive, reported
  per parameter and layer, and propagate only toward the input;
* the cost columns agree with :func:`lbpcore.backward_cost`; the report is JSON;
* :func:`image_batch` is deterministic and made of crops of matplotlib's sample pictures.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import lbpcore
from analysis import vit
from analysis.images import DEFAULT_SAMPLE_IMAGES, ImageBatch, area_resize, image_batch, sample_images
from analysis.vit import LBPSetting, TinyViT, ViTConfig, capture_linear_io, gradient_fidelity

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

EPS = 1e-6


def numerical_grad(f, x, eps=EPS):
    """Central differences of the scalar ``f()`` with respect to every entry of ``x`` (modified in place)."""
    g = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def assert_grad_close(analytic, numeric, rtol=1e-6, atol=1e-8, name=""):
    analytic = np.asarray(analytic, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(numeric))))
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol * scale, err_msg=name)


def tiny_config(**kw):
    base = dict(image_size=8, patch_size=2, dim=8, depth=2, heads=2, mlp_ratio=2, num_classes=3,
                dtype="float64", seed=3)
    base.update(kw)
    return ViTConfig(**base)


def perturbed_model(cfg, seed=1):
    """A model whose LayerNorm, bias and embedding parameters are all visibly non-trivial."""
    model = TinyViT(cfg)
    rng = np.random.default_rng(seed)
    for k, v in model.params.items():
        if v.ndim == 1 or k in ("pos_embed", "cls_token"):
            model.params[k] = v + 0.3 * rng.standard_normal(v.shape)
    return model


@pytest.fixture(scope="module")
def tiny_batch():
    return image_batch(batch=3, size=8, seed=5, dtype=np.float64)


# --------------------------------------------------------------------------
# operations: backward vs finite differences
# --------------------------------------------------------------------------


def test_layernorm_backward(rng):
    x = rng.standard_normal((2, 3, 5))
    gamma = rng.standard_normal(5)
    beta = rng.standard_normal(5)
    r = rng.standard_normal((2, 3, 5))

    def f():
        return float(np.sum(vit.layernorm_forward(x, gamma, beta, 1e-5)[0] * r))

    y, cache = vit.layernorm_forward(x, gamma, beta, 1e-5)
    np.testing.assert_allclose(((y - beta) / gamma).mean(axis=-1), 0, atol=1e-12)
    gx, gg, gb = vit.layernorm_backward(r, cache)
    assert_grad_close(gx, numerical_grad(f, x), name="x")
    assert_grad_close(gg, numerical_grad(f, gamma), name="gamma")
    assert_grad_close(gb, numerical_grad(f, beta), name="beta")


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_backward(rng, approximate):
    x = rng.standard_normal((3, 7)) * 2
    r = rng.standard_normal((3, 7))

    def f():
        return float(np.sum(vit.gelu_forward(x, approximate)[0] * r))

    y, cache = vit.gelu_forward(x, approximate)
    assert_grad_close(vit.gelu_backward(r, cache), numerical_grad(f, x))
    # both forms are GELU: x * Phi(x) to within the tanh approximation's error
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel()]).reshape(x.shape)
    np.testing.assert_allclose(y, exact, atol=1e-3 if approximate == "tanh" else 1e-15)


def test_gelu_float32_dtype():
    y, cache = vit.gelu_forward(np.linspace(-3, 3, 7, dtype=np.float32))
    assert y.dtype == np.float32
    assert vit.gelu_backward(np.ones(7, np.float32), cache).dtype == np.float32
    with pytest.raises(ValueError, match="approximate"):
        vit.gelu_forward(np.ones(2), "erf")


def test_attention_backward(rng):
    qkv = rng.standard_normal((2, 5, 12))
    r = rng.standard_normal((2, 5, 4))

    def f():
        return float(np.sum(vit.attention_forward(qkv, 2)[0] * r))

    out, cache = vit.attention_forward(qkv, 2)
    a = cache[3]
    np.testing.assert_allclose(a.sum(axis=-1), 1.0, atol=1e-14)
    # head 1 equals an independent single-head computation on its channels
    q, k, v = qkv[0, :, 2:4], qkv[0, :, 6:8], qkv[0, :, 10:12]
    s = q @ k.T / math.sqrt(2)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out[0, :, 2:4], p @ v, atol=1e-14)
    assert_grad_close(vit.attention_backward(r, cache), numerical_grad(f, qkv))
    with pytest.raises(ValueError, match="heads"):
        vit.attention_forward(qkv, 5)


def test_softmax_cross_entropy_backward(rng):
    logits = rng.standard_normal((4, 3)) * 3
    labels = np.array([0, 2, 1, 2])

    def f():
        return vit.softmax_cross_entropy_forward(logits, labels)[0]

    loss, cache = vit.softmax_cross_entropy_forward(logits, labels)
    manual = np.mean([np.log(np.exp(z).sum()) - z[t] for z, t in zip(logits, labels, strict=True)])
    assert loss == pytest.approx(manual, rel=1e-13)
    assert_grad_close(vit.softmax_cross_entropy_backward(1.0, cache), numerical_grad(f, logits))
    assert_grad_close(vit.softmax_cross_entropy_backward(2.5, cache), 2.5 * numerical_grad(f, logits))
    # huge logits stay finite
    big, _ = vit.softmax_cross_entropy_forward(np.array([[1000.0, 0.0]]), np.array([1]))
    assert big == pytest.approx(1000.0)
    with pytest.raises(ValueError, match="labels"):
        vit.softmax_cross_entropy_forward(logits, np.array([0, 1, 2, 3]))


@pytest.mark.parametrize(("start", "stop"), [(0, None), (1, None), (0, 1)])
def test_mean_pool_backward(rng, start, stop):
    x = rng.standard_normal((2, 5, 3))
    r = rng.standard_normal((2, 3))

    def f():
        return float(np.sum(vit.mean_pool_forward(x, start, stop)[0] * r))

    out, cache = vit.mean_pool_forward(x, start, stop)
    np.testing.assert_allclose(out, x[:, start:stop].mean(axis=1))
    assert_grad_close(vit.mean_pool_backward(r, cache), numerical_grad(f, x))


def test_patch_embed_backward(rng):
    images = rng.standard_normal((2, 3, 8, 4))
    w = rng.standard_normal((5, 12))
    b = rng.standard_normal(5)
    r = rng.standard_normal((2, 8, 5))

    def f():
        return float(np.sum(vit.patch_embed_forward(images, w, b, 2)[0] * r))

    tokens, cache = vit.patch_embed_forward(images, w, b, 2)
    assert cache.grid == (4, 2)
    # token (row 1, col 1) is the 2x2 pixel patch at rows 2-3, columns 2-3, flattened (c, u, v)
    np.testing.assert_allclose(tokens[0, 3], w @ images[0, :, 2:4, 2:4].ravel() + b, atol=1e-14)
    gi, gw, gb = vit.patch_embed_backward(r, cache)
    assert_grad_close(gi, numerical_grad(f, images), name="images")
    assert_grad_close(gw, numerical_grad(f, w), name="weight")
    assert_grad_close(gb, numerical_grad(f, b), name="bias")
    with pytest.raises(ValueError, match="patch"):
        vit.patchify_forward(images, 3)


def test_embeddings_residual_linear_backward(rng):
    x = rng.standard_normal((2, 4, 3))
    tok = rng.standard_normal(3)
    pos = rng.standard_normal((5, 3))
    w = rng.standard_normal((2, 3))
    b = rng.standard_normal(2)
    r = rng.standard_normal((2, 5, 2))

    def f():
        h, _ = vit.cls_token_forward(x, tok)
        h, _ = vit.pos_embed_forward(h, pos)
        y, _ = vit.linear_forward(h, w, b)
        y, _ = vit.residual_forward(y, 2 * y)
        return float(np.sum(y * r))

    h1, c1 = vit.cls_token_forward(x, tok)
    h2, c2 = vit.pos_embed_forward(h1, pos)
    y, c3 = vit.linear_forward(h2, w, b)
    g, g2 = vit.residual_backward(r)
    g = g + 2 * g2
    gh, gw, gb = vit.linear_backward(g, c3)
    gh, gpos = vit.pos_embed_backward(gh, c2)
    gx, gtok = vit.cls_token_backward(gh, c1)
    for name, a, p in [("x", gx, x), ("tok", gtok, tok), ("pos", gpos, pos), ("w", gw, w), ("b", gb, b)]:
        assert_grad_close(a, numerical_grad(f, p), name=name)
    with pytest.raises(ValueError, match="pos"):
        vit.pos_embed_forward(x, pos)


# --------------------------------------------------------------------------
# whole network vs finite differences
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"class_token": True, "pool": "cls"},
        {"class_token": True, "pool": "mean", "gelu": "none", "depth": 1},
    ],
    ids=["mean-pool", "cls-token", "cls-meanpool-erf"],
)
def test_network_gradients_directional(tiny_batch, kw):
    images, labels = tiny_batch
    model = perturbed_model(tiny_config(**kw))
    loss, cache = model.forward(images, labels)
    res = model.backward(cache)
    assert list(res.grads) == list(model.params)
    rng = np.random.default_rng(7)
    for name, p in model.params.items():
        assert res.grads[name].shape == p.shape and res.grads[name].dtype == np.float64
        v = rng.standard_normal(p.shape)
        orig = p.copy()
        model.params[name] = orig + EPS * v
        lp = model.loss(images, labels)
        model.params[name] = orig - EPS * v
        lm = model.loss(images, labels)
        model.params[name] = orig
        fd = (lp - lm) / (2 * EPS)
        an = float(np.sum(res.grads[name] * v))
        assert an == pytest.approx(fd, rel=1e-6, abs=1e-9), name
    # and the input gradient
    v = rng.standard_normal(images.shape)
    fd = (model.loss(images + EPS * v, labels) - model.loss(images - EPS * v, labels)) / (2 * EPS)
    assert float(np.sum(res.grad_images * v)) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_network_gradients_entrywise(tiny_batch):
    """A few individual entries of every parameter gradient."""
    images, labels = tiny_batch
    model = perturbed_model(tiny_config(depth=1))
    grads = model.loss_and_grads(images, labels)[1]
    rng = np.random.default_rng(11)
    for name, p in model.params.items():
        flat = p.reshape(-1)
        for i in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + EPS
            lp = model.loss(images, labels)
            flat[i] = old - EPS
            lm = model.loss(images, labels)
            flat[i] = old
            assert grads[name].reshape(-1)[i] == pytest.approx((lp - lm) / (2 * EPS), rel=1e-5, abs=1e-9), (name, i)


# --------------------------------------------------------------------------
# LBP-WHT through the network
# --------------------------------------------------------------------------


@pytest.mark.parametrize("class_token", [False, True])
def test_full_basis_lbp_is_exact(tiny_batch, class_token):
    images, labels = tiny_batch
    kw = {"class_token": True, "pool": "cls"} if class_token else {}
    model = perturbed_model(tiny_config(**kw))
    _, cache = model.forward(images, labels)
    exact = model.backward(cache)
    full = model.backward(cache, lbp="all", patch=4, bases="lp_l1:7")  # 4x4 grid, every basis of n = 4
    assert sorted(full.lbp) == sorted(model.token_layers)
    for name in model.params:
        np.testing.assert_allclose(full.grads[name], exact.grads[name], rtol=1e-11, atol=1e-13, err_msg=name)
    rep = gradient_fidelity(model, images, labels, "all", patch=4, bases="lp_l1:7")
    assert rep.max_rel_error < 1e-11
    assert all(lr.method == "lbp" for lr in rep.layers[:-1]) and rep.layers[-1].method == "dense"
    for lr in rep.layers[:-1]:
        assert lr.rank == 16 and lr.grad_y_energy_kept == pytest.approx(1.0, abs=1e-12)
        assert lr.local_weight_rel_error < 1e-12


def test_lowpass_lbp_errors_reported_per_layer(tiny_batch):
    images, labels = tiny_batch
    model = perturbed_model(tiny_config())
    rep = gradient_fidelity(model, images, labels, "all", patch=4, bases="lp_l1:3")
    errs = rep.errors()
    assert list(errs) == list(model.params)
    # nothing is approximated after the last block: final norm and head exact
    for name in ("norm.weight", "norm.bias", "head.weight", "head.bias"):
        assert errs[name] == 0.0
    # the last fc2's bias sees the exact grad_y; its weight only its own projection
    assert errs["blocks.1.mlp.fc2.bias"] == 0.0
    last = {lr.name: lr for lr in rep.layers}["blocks.1.mlp.fc2"]
    assert last.weight_rel_error == pytest.approx(last.local_weight_rel_error, rel=1e-10)
    # every LBP layer and everything before the last one is approximate
    for lr in rep.layers[:-1]:
        assert lr.method == "lbp" and lr.bases == "lp_l1:3" and lr.rank == 6 and lr.patch == 4
        assert lr.weight_rel_error > 1e-4, lr.name
        assert 0 < lr.grad_y_energy_kept < 1
        assert 0 < lr.weight_cosine < 1
    for pe in rep.parameters:
        if pe.layer not in ("norm", "head", "blocks.1.mlp.fc2"):
            assert pe.rel_error > 1e-6, pe.name
        assert pe.cosine is None or -1 <= pe.cosine <= 1 + 1e-12
    assert rep.max_rel_error == max(errs.values())
    text = rep.table()
    assert "blocks.0.attn.qkv.weight" in text and "lbp lp_l1:3/4" in text


def test_single_lbp_layer_error_propagates_toward_input(tiny_batch):
    images, labels = tiny_batch
    model = perturbed_model(tiny_config())
    rep = gradient_fidelity(model, images, labels, {"blocks.1.attn.proj": "lp_l1:2"}, patch=4)
    errs = rep.errors()
    order = list(model.params)
    cut = order.index("blocks.1.attn.proj.weight")
    for name in order[cut + 2 :]:  # after proj (forward order): exact
        assert errs[name] == 0.0, name
    assert errs["blocks.1.attn.proj.bias"] == 0.0
    assert errs["blocks.1.attn.proj.weight"] > 0
    for name in order[:cut]:
        assert errs[name] > 0, name
    methods = {lr.name: lr.method for lr in rep.layers}
    assert [n for n, m in methods.items() if m == "lbp"] == ["blocks.1.attn.proj"]
    assert rep.lbp == {"blocks.1.attn.proj": {"bases": "lp_l1:2", "indices": [[0, 0], [0, 1], [1, 0]],
                                              "rank": 3, "patch": 4, "pad": "reflect"}}


def test_costs_match_backward_cost_and_json():
    images, labels = image_batch(batch=3, size=16, seed=5, dtype=np.float64)
    model = TinyViT(tiny_config(image_size=16, patch_size=2))  # 8x8 grid: 4 patches of 4x4
    rep = gradient_fidelity(model, images, labels, ["patch_embed", "blocks.*.mlp.fc1"], patch=4, bases="lp_l1:4")
    b = 3
    total_dense = total_used = 0
    for lr in rep.layers:
        info = model.layers[lr.name]
        if lr.name == "head":
            assert lr.dense_flops == 4 * b * info.in_features * info.out_features
        else:
            assert lr.dense_flops == 4 * b * 64 * info.in_features * info.out_features
        if lr.method == "lbp":
            cost = lbpcore.backward_cost((b, 64, info.in_features), info.out_features, grid=(8, 8), patch=4,
                                         bases="lp_l1:4", itemsize=8)
            assert lr.backward_flops == cost.lbp_flops and lr.gemm_flops == cost.lbp_gemm_flops
            assert lr.projection_flops == cost.projection_flops
            assert lr.ideal_speedup == pytest.approx(64 / (4 * 10))
        else:
            assert lr.backward_flops == lr.gemm_flops == lr.dense_flops and lr.projection_flops == 0
            assert lr.local_weight_rel_error is None and lr.grad_y_energy_kept is None
        assert lr.flops_saved == lr.dense_flops - lr.backward_flops
        total_dense += lr.dense_flops
        total_used += lr.backward_flops
    assert [lr.name for lr in rep.layers if lr.method == "lbp"] == ["patch_embed", "blocks.0.mlp.fc1",
                                                                    "blocks.1.mlp.fc1"]
    assert rep.dense_linear_flops == total_dense and rep.lbp_linear_flops == total_used
    assert rep.attention_flops == 2 * 8 * b * 64**2 * 8
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert d["config"]["depth"] == 2 and len(d["parameters"]) == len(model.params)
    assert d["linear_flops_saved_fraction"] == pytest.approx(1 - total_used / total_dense)


@pytest.mark.parametrize("pad", ["reflect", "zero"])
def test_lbp_on_padded_grid(pad):
    """A 6x6 token grid with 4x4 patches is padded to 8x8; calibrated energy bases work too."""
    images, labels = image_batch(batch=2, size=12, seed=2, dtype=np.float64)
    model = perturbed_model(tiny_config(image_size=12, depth=1, class_token=True))
    io = capture_linear_io(model, images, labels)
    t = io["blocks.0.mlp.fc1"]
    energy = lbpcore.select_bases(4, "energy_l2:5", calibration=t.grad_y, grid=t.grid, extra_tokens=1, pad=pad)
    rep = gradient_fidelity(model, images, labels, {"all": "lp_l1:3", "blocks.0.mlp.fc1": energy}, patch=4, pad=pad)
    fc1 = {lr.name: lr for lr in rep.layers}["blocks.0.mlp.fc1"]
    assert fc1.bases == "energy_l2:5" and fc1.rank == 5 and fc1.grid == (6, 6) and fc1.extra_tokens == 1
    assert all(math.isfinite(pe.rel_error) and pe.rel_error < 10 for pe in rep.parameters)
    assert rep.lbp["patch_embed"]["pad"] == pad
    json.dumps(rep.to_dict(), allow_nan=False)


def test_capture_linear_io(tiny_batch):
    images, labels = tiny_batch
    model = perturbed_model(tiny_config(class_token=True, pool="cls"))
    io = capture_linear_io(model, images, labels)
    assert list(io) == list(model.linear_layers)
    grads = model.loss_and_grads(images, labels)[1]
    for name, t in io.items():
        info = model.layers[name]
        assert t.grid == info.grid and t.extra_tokens == info.extra_tokens
        assert t.weight is model.params[name + ".weight"]
        g = lbpcore.dense_backward(t.x, t.weight, t.grad_y)
        np.testing.assert_allclose(g.grad_weight, grads[name + ".weight"], rtol=1e-13, atol=1e-15)
        if name == "head":
            assert t.x.shape == (3, 8) and t.grad_y.shape == (3, 3)
        elif name == "patch_embed":
            assert t.x.shape == (3, 16, 12) and t.extra_tokens == 0
        else:
            assert t.x.shape[:2] == (3, 17) and t.extra_tokens == 1
        json.dumps(t.to_dict())


def test_resolve_lbp_selection():
    model = TinyViT(tiny_config())
    assert model.resolve_lbp(None) == {} and model.resolve_lbp([]) == {}
    assert list(model.resolve_lbp("all")) == list(model.token_layers)
    assert "head" not in model.token_layers and len(model.token_layers) == 1 + 4 * 2
    sel = model.resolve_lbp({"*": "lp_l1:3", "blocks.1.*": {"bases": "lp_l1:2", "patch": 2}}, patch=4)
    assert sel["blocks.0.attn.qkv"] == LBPSetting("lp_l1:3", 4)
    assert sel["blocks.1.mlp.fc2"] == LBPSetting("lp_l1:2", 2)
    assert sel["patch_embed"].patch == 4
    sel = model.resolve_lbp({"blocks.0.mlp.fc1": [(0, 0), (1, 1)]}, patch=4)
    assert sel["blocks.0.mlp.fc1"].spec == "explicit" and sel["blocks.0.mlp.fc1"].basis.rank == 2
    sel = model.resolve_lbp("blocks.?.attn.proj", patch=4, bases=lbpcore.select_bases(4, "lp_linf:2"))
    assert list(sel) == ["blocks.0.attn.proj", "blocks.1.attn.proj"] and sel["blocks.0.attn.proj"].spec == "lp_linf:2"
    with pytest.raises(ValueError, match="head"):
        model.resolve_lbp(["head"])
    with pytest.raises(ValueError, match="matches no"):
        model.resolve_lbp(["blocks.9.mlp.fc1"])
    with pytest.raises(ValueError, match="unknown keys"):
        model.resolve_lbp({"all": {"rank": 3}})
    with pytest.raises(ValueError):
        model.resolve_lbp("all", patch=6)
    with pytest.raises(ValueError):
        model.resolve_lbp({"all": "lp_l1:x"})


def test_backward_fns_hook_replaces_a_layer_backward(tiny_batch):
    images, labels = tiny_batch
    model = perturbed_model(tiny_config())
    _, cache = model.forward(images, labels)
    exact = model.backward(cache)
    seen = []

    def exact_fn(grad_y, linear_cache, info):
        seen.append(info.name)
        return vit.linear_backward(grad_y, linear_cache)

    hooked = model.backward(cache, backward_fns={"blocks.1.mlp.fc1": exact_fn, "head": exact_fn})
    assert seen == ["head", "blocks.1.mlp.fc1"]
    for name in model.params:
        np.testing.assert_array_equal(hooked.grads[name], exact.grads[name], err_msg=name)

    def zero_fn(grad_y, linear_cache, info):
        return vit.linear_backward(np.zeros_like(grad_y), linear_cache)

    zeroed = model.backward(cache, backward_fns={"blocks.1.mlp.fc2": zero_fn})
    assert not np.any(zeroed.grads["blocks.1.mlp.fc2.weight"])
    assert np.array_equal(zeroed.grads["head.weight"], exact.grads["head.weight"])
    with pytest.raises(ValueError, match="both"):
        model.backward(cache, lbp="blocks.1.mlp.fc1", patch=4, backward_fns={"blocks.1.mlp.fc1": exact_fn})
    with pytest.raises(ValueError, match="not linear layers"):
        model.backward(cache, backward_fns={"blocks.1.norm1": exact_fn})


@pytest.mark.parametrize("stop_at", [0, 1, 2])
def test_backward_stop_at_keeps_the_top_gradients(tiny_batch, stop_at):
    images, labels = tiny_batch
    model = perturbed_model(tiny_config())
    _, cache = model.forward(images, labels)
    exact = model.backward(cache)
    top = model.backward(cache, stop_at=stop_at)
    assert top.grad_images is None
    expect = [k for k in model.params if k.startswith(("norm.", "head.")) or
              any(k.startswith(f"blocks.{i}.") for i in range(stop_at, 2))]
    assert list(top.grads) == expect
    for name in expect:
        np.testing.assert_array_equal(top.grads[name], exact.grads[name], err_msg=name)
    with pytest.raises(ValueError, match="stop_at"):
        model.backward(cache, stop_at=3)


def test_config_and_params_validation():
    with pytest.raises(ValueError, match="patch_size"):
        ViTConfig(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="heads"):
        ViTConfig(dim=10, heads=4)
    with pytest.raises(ValueError, match="class_token"):
        ViTConfig(pool="cls")
    with pytest.raises(ValueError, match="dtype"):
        ViTConfig(dtype="float16")
    cfg = tiny_config()
    a, b = TinyViT(cfg), TinyViT(cfg)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)  # seeded
    assert not np.array_equal(a.params["head.weight"], TinyViT(tiny_config(seed=4)).params["head.weight"])
    c = TinyViT(cfg, params=a.params)
    assert c.params.keys() == a.params.keys()
    with pytest.raises(ValueError, match="keys"):
        TinyViT(cfg, params={"head.weight": a.params["head.weight"]})
    bad = dict(a.params, **{"head.bias": np.zeros(7)})
    with pytest.raises(ValueError, match="head.bias"):
        TinyViT(cfg, params=bad)
    with pytest.raises(ValueError, match="images"):
        a.forward(np.zeros((1, 3, 6, 6)))
    _, cache = a.forward(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="grad_logits"):
        a.backward(cache)
    res = a.backward(cache, grad_logits=np.ones((2, 3)))
    assert res.grads["head.bias"].tolist() == [2.0, 2.0, 2.0]


def test_default_config_float32_runs():
    cfg = ViTConfig(depth=1)
    assert cfg.grid == (16, 16) and cfg.dim == 64 and cfg.num_classes == 3
    images, labels = image_batch()
    model = TinyViT(cfg)
    loss, cache = model.forward(images, labels)
    assert math.isfinite(loss) and cache.logits.dtype == np.float32
    res = model.backward(cache, lbp={"blocks.0.mlp.fc1": "lp_l1:6"})  # default patch 8 on the 16x16 grid
    assert all(g.dtype == np.float32 and np.all(np.isfinite(g)) for g in res.grads.values())
    assert res.lbp["blocks.0.mlp.fc1"].basis.rank == 21


# --------------------------------------------------------------------------
# real images
# --------------------------------------------------------------------------


def test_sample_images_are_real_pictures():
    imgs = sample_images()
    assert "grace_hopper.jpg" in imgs
    g = imgs["grace_hopper.jpg"]
    assert g.shape == (600, 512, 3) and g.dtype == np.float64
    assert 0.0 <= g.min() and g.max() <= 1.0 and g.std() > 0.1
    # a photograph: neighbouring pixels are strongly correlated, unlike noise
    gray = g.mean(axis=2)
    corr = np.corrcoef(gray[:, :-1].ravel(), gray[:, 1:].ravel())[0, 1]
    assert corr > 0.9
    for a in imgs.values():
        assert a.ndim == 3 and a.shape[2] == 3 and not a.flags.writeable
    assert set(imgs) <= set(DEFAULT_SAMPLE_IMAGES)
    only = sample_images(["no_such_picture.png", "grace_hopper.jpg"])
    assert list(only) == ["grace_hopper.jpg"]
    with pytest.raises(FileNotFoundError):
        sample_images(["no_such_picture.png", "grace_hopper.jpg"], missing="raise")
    with pytest.raises(FileNotFoundError):
        sample_images(["no_such_picture.png"])


def test_image_batch_deterministic_and_normalized():
    b1 = image_batch(batch=6, size=32, seed=3)
    b2 = image_batch(batch=6, size=32, seed=3)
    assert isinstance(b1, ImageBatch)
    images, labels = b1
    assert images.shape == (6, 3, 32, 32) and images.dtype == np.float32
    assert labels.dtype == np.int64 and labels.shape == (6,)
    np.testing.assert_array_equal(images, b2.images)
    np.testing.assert_array_equal(labels, b2.labels)
    assert b1.crops == b2.crops
    assert not np.array_equal(images, image_batch(batch=6, size=32, seed=4).images)
    np.testing.assert_allclose(images.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(images.std(axis=(0, 2, 3)), 1, atol=1e-5)
    # balanced classes: every picture used equally often
    assert np.bincount(labels, minlength=b1.num_classes).tolist() == [6 // b1.num_classes] * b1.num_classes
    assert image_batch(batch=2, size=8, dtype=np.float64).images.dtype == np.float64


def test_image_batch_crops_come_from_the_pictures():
    batch = image_batch(batch=5, size=24, seed=9, dtype=np.float64)
    pics = sample_images(batch.names)
    assert batch.names[0] == "grace_hopper.jpg"
    for img, label, crop in zip(batch.images, batch.labels, batch.crops, strict=True):
        pic = pics[batch.names[label]]
        assert crop["source"] == label
        top, left, side = crop["top"], crop["left"], crop["side"]
        assert 0 <= top and top + side <= pic.shape[0] and 0 <= left and left + side <= pic.shape[1]
        assert side >= round(0.25 * min(pic.shape[:2])) - 1
        want = area_resize(pic[top : top + side, left : left + side], 24)
        if crop["flipped"]:
            want = want[:, ::-1]
        want = (want - batch.mean) / batch.std
        np.testing.assert_allclose(img, want.transpose(2, 0, 1), atol=1e-12)
    assert any(c["flipped"] for c in image_batch(batch=8, seed=0).crops)
    assert not any(c["flipped"] for c in image_batch(batch=8, size=16, flip=False).crops)
    with pytest.raises(ValueError):
        image_batch(batch=0)
    with pytest.raises(ValueError):
        image_batch(scale=(0.5, 0.2))
    with pytest.raises(ValueError):
        image_batch(dtype=np.int32)


def test_area_resize():
    a = np.arange(36.0).reshape(6, 6)
    np.testing.assert_allclose(area_resize(a, 3), a.reshape(3, 2, 3, 2).mean(axis=(1, 3)))
    np.testing.assert_allclose(area_resize(a, 6), a)
    np.testing.assert_allclose(area_resize(np.full((7, 5, 3), 0.25), (4, 9)), 0.25)
    # non-integer factor: total mass preserved (each output pixel an average over equal areas)
    r = np.random.default_rng(0).random((10, 7))
    assert area_resize(r, (4, 3)).mean() == pytest.approx(r.mean(), rel=1e-12)
    assert area_resize(r, (3, 2)).shape == (3, 2)
    with pytest.raises(ValueError):
        area_resize(r, 0)
