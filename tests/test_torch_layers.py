"""``LBPLinear``, ``LBPConv2d``, ``convert`` and ``revert`` on modules and on a small plain-PyTorch ViT."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import lbpcore
import lbpcore.testing as lt

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("torch_single_thread")
from torch import nn  # noqa: E402 - after the importorskip
from torch_models import loss_of, make_vit  # noqa: E402

from analysis.capture import capture  # noqa: E402
from lbpcore.torch import LBPConv2d, LBPLinear, convert, linear_layers, match_layers, revert  # noqa: E402

MLP = "blocks.*.mlp.*"


# ---------------------------------------------------------------------------
# layers built from existing ones


def test_lbplinear_shares_parameters_and_state_dict():
    dense = nn.Linear(6, 4)
    layer = LBPLinear.from_linear(dense, grid=(8, 8), patch=4, bases="lp_l1:3", extra_tokens=1)
    assert layer.weight is dense.weight and layer.bias is dense.bias
    assert list(layer.state_dict()) == list(dense.state_dict()) == ["weight", "bias"]
    assert not list(layer.children())  # the dense layer is not a submodule (no duplicate parameters)
    x = torch.randn(2, 65, 6, requires_grad=True)
    assert torch.equal(layer(x), dense(x))
    layer(x).sum().backward()
    assert dense.weight.grad is not None  # the same tensor


def test_lbplinear_from_scratch_and_without_bias():
    layer = LBPLinear(6, 4, bias=False, grid=(4, 4), patch=4, bases="lp_l1:2", dtype=torch.float64)
    x = torch.randn(3, 16, 6, dtype=torch.float64, requires_grad=True)
    layer(x).backward(torch.ones(3, 16, 4, dtype=torch.float64))
    want = lbpcore.lbp_backward(x.detach().numpy(), layer.weight.detach().numpy(), np.ones((3, 16, 4)),
                                grid=(4, 4), patch=4, bases="lp_l1:2")
    lt.assert_close(layer.weight.grad.numpy(), want.grad_weight)
    lt.assert_close(x.grad.numpy(), want.grad_x)
    assert type(layer.to_dense()) is nn.Linear and layer.to_dense().weight is layer.weight


def test_lbpconv2d_on_maps():
    conv = nn.Conv2d(5, 3, 1).double()
    layer = LBPConv2d.from_conv(conv, patch=4, bases="lp_l1:3")
    x = torch.randn(2, 5, 6, 10, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, conv(x))
    gy = torch.randn_like(y)
    y.backward(gy)
    w = conv.weight.detach().numpy()[:, :, 0, 0]
    want = lbpcore.lbp_backward(x.detach().numpy(), w, gy.numpy(), patch=4, bases="lp_l1:3", layout="nchw",
                                bias=conv.bias.detach().numpy())
    lt.assert_close(x.grad.numpy(), want.grad_x)
    lt.assert_close(conv.weight.grad.numpy()[:, :, 0, 0], want.grad_weight)
    lt.assert_close(conv.bias.grad.numpy(), want.grad_bias)


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1, stride=2), nn.Conv2d(4, 4, 1, groups=2),
                                  nn.Conv2d(4, 4, 1, padding=1)])
def test_from_conv_rejects_convolutions_that_are_not_pointwise(conv):
    with pytest.raises(TypeError, match="1x1 nn.Conv2d"):
        LBPConv2d.from_conv(conv)


def test_layer_errors_name_the_layer():
    model = nn.Sequential(nn.Linear(4, 4))
    convert(model, "0", grid=(4, 4), patch=4)
    with pytest.raises(ValueError, match=r"^0: x has L=17 tokens but extra_tokens \+ h\*w = 0 \+ 4\*4 = 16"):
        model(torch.randn(1, 17, 4, requires_grad=True))
    with pytest.raises(TypeError, match="^0: .*half precision"):
        model.half()(torch.randn(1, 16, 4, dtype=torch.float16))


# ---------------------------------------------------------------------------
# convert and revert


def test_convert_matches_patterns_and_reverts():
    model, images, labels = make_vit()
    names = convert(model, MLP, grid=model.grid_size, extra_tokens=1)
    assert names == ["blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]
    assert all(type(model.get_submodule(n)) is LBPLinear for n in names)
    assert type(model.blocks[0].attn.qkv) is nn.Linear
    assert convert(model, [MLP, "blocks.0.attn.*"], grid=model.grid_size, extra_tokens=1) == [
        "blocks.0.attn.qkv", "blocks.0.attn.proj"]  # converted layers are left as they are
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert revert(model) == ["blocks.0.attn.qkv", "blocks.0.attn.proj"] + names
    assert not any(isinstance(m, (LBPLinear, LBPConv2d)) for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_convert_pointwise_convs_and_shared_modules():
    shared = nn.Linear(4, 4)
    model = nn.ModuleDict({"a": shared, "b": shared, "conv": nn.Conv2d(4, 4, 1), "conv3": nn.Conv2d(4, 4, 3)})
    assert list(linear_layers(model)) == ["a", "b", "conv"]
    assert convert(model, "*", grid=(2, 2), patch=2) == ["a", "b", "conv"]
    assert model["a"] is model["b"] and isinstance(model["conv"], LBPConv2d)
    revert(model)
    assert model["a"] is model["b"] is shared


def test_multihead_attention_out_proj_is_not_a_layer():
    """nn.MultiheadAttention never calls its out_proj (it uses the weight): converting it would change nothing."""
    model = nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2, batch_first=True), "fc": nn.Linear(8, 8)})
    assert list(linear_layers(model)) == ["fc"]
    with pytest.raises(ValueError, match="it matches attn.out_proj: none of them a layer it calls"):
        convert(model, "attn.*", grid=(2, 2), patch=2)


@pytest.mark.parametrize(("include", "match"), [
    ("blocks.*.mlp.fc3", "matches no nn.Linear"),
    ("blocks.0.norm1", r"it matches blocks.0.norm1: none of them"),
    ([], "non-empty"),
])
def test_convert_patterns_that_match_nothing(include, match):
    model, _, _ = make_vit()
    with pytest.raises(ValueError, match=match):
        convert(model, include, grid=model.grid_size, extra_tokens=1)
    assert not any(isinstance(m, LBPLinear) for m in model.modules())


def test_convert_checks_the_setting_before_replacing():
    model, _, _ = make_vit()
    with pytest.raises(ValueError, match="power of two"):
        convert(model, MLP, grid=model.grid_size, patch=6)
    with pytest.raises(ValueError, match=r"grid: no pattern matches layer 'blocks.0.mlp.fc2'"):
        convert(model, MLP, grid={"*.fc1": (8, 8)})
    with pytest.raises(ValueError, match=r"extra_tokens\['\*'\] must be >= 0"):
        convert(model, MLP, extra_tokens={"*": -1})
    assert not any(isinstance(m, LBPLinear) for m in model.modules())


def test_wrong_grid_fails_in_the_forward_pass_with_the_layer_name():
    model, images, labels = make_vit()
    convert(model, MLP, grid=(8, 8))  # the class token is not declared
    with pytest.raises(ValueError, match=r"blocks.0.mlp.fc1: x has L=65 tokens but extra_tokens \+ h\*w = 0"):
        loss_of(model, images, labels).backward()


# ---------------------------------------------------------------------------
# a training step of a converted ViT


def test_converted_vit_training_step_equals_lbp_backward_on_captured_tensors():
    """convert the MLP layers, take one step: each converted layer's gradients are lbp_backward of what it saw."""
    model, images, labels = make_vit()
    dense_model = copy.deepcopy(model)
    convert(model, MLP, grid=model.grid_size, extra_tokens=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    cap = capture(model, lambda: loss_of(model, images, labels).backward(), "*", grid=model.grid_size, extra_tokens=1)
    assert torch.equal(model(images), dense_model(images))  # the forward pass is exact
    for name in match_layers(model, MLP):
        layer, seen = model.get_submodule(name), cap[name]
        want = lbpcore.lbp_backward(seen.x, seen.weight, seen.grad_y, grid=model.grid_size, extra_tokens=1,
                                    bias=layer.bias.detach().numpy())
        lt.assert_close(layer.weight.grad.numpy(), want.grad_weight)
        lt.assert_close(layer.bias.grad.numpy(), want.grad_bias)
    for name in ("blocks.1.attn.proj", "head"):  # dense layers get the exact gradient of what reached them
        layer, seen = model.get_submodule(name), cap[name]
        want = lbpcore.dense_backward(seen.x, seen.weight, seen.grad_y)
        lt.assert_close(layer.weight.grad.numpy(), want.grad_weight)
    # the LBP-WHT gradients of blocks.0.mlp.fc1 differ from the dense model's, but not by much (those of the
    # last block's MLP are exact: the loss reads only the class token there, an extra token)
    loss_of(dense_model, images, labels).backward()
    exact = dense_model.blocks[0].mlp.fc1.weight.grad
    approx = model.blocks[0].mlp.fc1.weight.grad
    rel = float((approx - exact).norm() / exact.norm())
    assert 1e-6 < rel < 0.5
    before = model.blocks[0].mlp.fc1.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.blocks[0].mlp.fc1.weight)
    revert(model)
    fc1 = model.blocks[0].mlp.fc1
    assert type(fc1) is nn.Linear
    torch.testing.assert_close(fc1.weight.detach(), before - 0.1 * fc1.weight.grad)  # the step went to the dense layer


def test_converted_vit_saves_the_projected_activations():
    """Saved-tensor bytes of a converted MLP layer: (P r + e) / L of the dense layer's."""
    model, images, labels = make_vit(dtype=torch.float32)
    fc1 = model.blocks[0].mlp.fc1
    sizes = {}

    def saved(m):
        out = []
        params = {p.untyped_storage().data_ptr() for p in m.parameters()}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                out.append(t.numel() * t.element_size())
            return t

        x = torch.randn(4, 65, 16, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(x)
        return sum(out)

    sizes["dense"] = saved(fc1)
    convert(model, "blocks.0.mlp.fc1", grid=model.grid_size, extra_tokens=1)
    sizes["lbp"] = saved(model.blocks[0].mlp.fc1)
    plan = lbpcore.make_plan(model.grid_size, 8, "lp_l1:6")
    assert sizes["dense"] == 4 * 65 * 16 * 4
    assert sizes["lbp"] / sizes["dense"] == (plan.num_patches * plan.rank + 1) / 65
