"""Converted replicas of timm's architectures: the full basis reproduces every dense parameter gradient.

The replicas (:mod:`analysis.torch_models`) have timm's module names and token
layouts: class and distillation tokens (ViT, DeiT), NCHW stages next to token
blocks (EfficientFormer), windowed attention next to channels-last MLPs (Swin),
channels-last MLPs between depthwise convolutions (ConvNeXt).  With every basis
of every patch and zero padding, LBP-WHT is the dense backward exactly (SPEC
section 5), so the converted model's gradients must equal the dense model's to
rounding, whatever the grids and layouts; a non-full selection must not.
PyTorch is optional: every test here skips cleanly without it.
"""

from __future__ import annotations

import copy

import pytest
from tolerances import backprop_rtol

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("torch_single_thread")

from analysis.torch_models import MODELS, build  # noqa: E402 - after the importorskip
from lbpcore.torch import LBPConv2d, LBPLinear, convert  # noqa: E402

#: Small versions of each architecture (the structure, layer names, layouts and
#: grid kinds of the full models, widths and depths cut for speed), the input
#: image size and the layers converted.  The grids: ViT/DeiT 10x10 tokens behind
#: 1/2 extra tokens (padded to 16x16: 4 patches); EfficientFormer maps of 32,
#: 16, 8, 4 pixels and 4x4 tokens; Swin 7x7 windows of attention and 14x14,
#: 7x7 channels-last MLP maps, a (B, 7, 7, 4C) merge; ConvNeXt 16x16 and 8x8 maps.
SMALL = {
    "vit_s16": (dict(img_size=160, embed_dim=16, depth=2, num_heads=2, num_classes=5), 160),
    "deit_s_distilled": (dict(img_size=160, embed_dim=16, depth=2, num_heads=2, num_classes=5), 160),
    "efficientformer_l1": (dict(depths=(1, 1, 1, 2), widths=(8, 8, 16, 16), img_size=128, num_classes=5), 128),
    "swin_t": (dict(img_size=56, embed_dim=8, depths=(2, 2), num_heads=(1, 2), num_classes=5), 56),
    "convnext_t": (dict(depths=(1, 1), dims=(8, 16), num_classes=5), 64),
}

FULL = dict(patch=8, bases="lp_linf:8", pad="zero")  # all 64 bases: LBP-WHT is the dense backward


def _pair(name, seed=0, channels_last=False):
    """The dense replica, a deep copy, and a float64 batch of two images."""
    kwargs, size = SMALL[name]
    torch.manual_seed(seed)
    dense = build(name, **kwargs).double()
    images = torch.randn(2, 3, size, size, dtype=torch.float64)
    if channels_last:
        dense = dense.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    return dense, copy.deepcopy(dense), images


def _grads(model, images):
    """Every parameter gradient of ``sum(logits * fixed weights)`` by name."""
    model.zero_grad(set_to_none=True)
    logits = model(images)
    weights = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).reshape(logits.shape)
    (logits * weights).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _rtol(converted, images):
    """:func:`tolerances.backprop_rtol` for the converted layers, their longest sum read off one forward pass."""
    inner = [0]

    def hook(module, inputs, output):
        x = inputs[0]
        c = x.shape[1] if isinstance(module, LBPConv2d) else x.shape[-1]
        inner[0] = max(inner[0], x.numel() // c, c, module.weight.shape[0])

    layers = _converted_layers(converted)
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        converted(images)
    for h in handles:
        h.remove()
    return backprop_rtol(len(layers), inner[0])


def _rel(a, b):
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def _assert_same_grads(converted, dense, images, rtol):
    """Every gradient within ``rtol`` (normwise); those that vanish in exact arithmetic vanish in both.

    The bias of a layer followed by a batch norm in training mode has a zero
    gradient (the norm removes the mean): both models leave rounding noise
    there, which is compared with the largest gradient instead (below ``rtol``
    of it, which the noise of a sum of ``k`` products, ``k u`` of its terms, is).
    """
    want = _grads(dense, images)
    got = _grads(converted, images)
    assert got.keys() == want.keys()
    top = max(float(g.norm()) for g in want.values())
    zero = [n for n, g in want.items() if float(g.norm()) <= rtol * top]
    for n in zero:
        assert float(got[n].norm()) <= rtol * top, (n, float(got[n].norm()), top)
    errors = {n: _rel(got[n], want[n]) for n in want if n not in zero}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= rtol, (worst, errors[worst], rtol)
    return errors


def _converted_layers(model):
    return [m for m in model.modules() if isinstance(m, (LBPLinear, LBPConv2d))]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_full_basis_reproduces_every_dense_gradient(name):
    dense, converted, images = _pair(name)
    names = convert(converted, MODELS[name].include, grid="auto", extra_tokens=MODELS[name].extra_tokens, **FULL)
    assert names and len(_converted_layers(converted)) == len(names)
    _assert_same_grads(converted, dense, images, _rtol(converted, images))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_reduced_basis_does_not(name):
    """The tolerance above is tight enough to see LBP-WHT's approximation (the test can fail)."""
    dense, converted, images = _pair(name)
    convert(converted, MODELS[name].include, grid="auto", extra_tokens=MODELS[name].extra_tokens, patch=8,
            bases="lp_l1:2", pad="zero")
    want, got = _grads(dense, images), _grads(converted, images)
    assert max(_rel(got[n], want[n]) for n in want) > 1e3 * _rtol(converted, images)


def test_pattern_dicts_give_each_layer_its_grid():
    """Swin's windows and maps written out per layer, the same gradients as with "auto"."""
    dense, converted, images = _pair("swin_t")
    grid = {"layers.*.attn.*": (7, 7), "layers.0.blocks.*.mlp.*": (14, 14), "*": (7, 7)}
    names = convert(converted, "layers.*", grid=grid, **FULL)
    layers = dict(converted.named_modules())
    assert layers["layers.0.blocks.0.attn.qkv"].grid == (7, 7)
    assert layers["layers.0.blocks.1.mlp.fc1"].grid == (14, 14)
    assert layers["layers.1.downsample.reduction"].grid == (7, 7)
    assert "layers.1.downsample.reduction" in names
    _assert_same_grads(converted, dense, images, _rtol(converted, images))


def test_extra_tokens_by_pattern():
    dense, converted, images = _pair("deit_s_distilled")
    convert(converted, "blocks.*", grid={"*": "auto"}, extra_tokens={"blocks.*": 2}, **FULL)
    _assert_same_grads(converted, dense, images, _rtol(converted, images))


@pytest.mark.parametrize("name", ["efficientformer_l1", "convnext_t"])
def test_channels_last_models(name):
    """A model in ``torch.channels_last`` memory: its maps reach the kernels in place, the gradients agree."""
    dense, converted, images = _pair(name, channels_last=True)
    convert(converted, MODELS[name].include, **FULL)
    _assert_same_grads(converted, dense, images, _rtol(converted, images))


def test_auto_names_the_layer_and_shape_of_a_non_square_grid():
    _, converted, images = _pair("vit_s16")
    convert(converted, "blocks.*", **FULL)  # no extra_tokens: 1 + 10*10 = 101 tokens is not a square
    with pytest.raises(ValueError, match=r"^blocks\.0\.attn\.qkv: grid='auto' needs x of shape \(2, 101, 16\) .* "
                                         r"101 - 0 = 101 is not a square"):
        converted(images)


def test_a_fixed_grid_that_fits_no_layer_fails_with_its_name():
    _, converted, images = _pair("swin_t")
    convert(converted, "layers.*", grid=(14, 14), **FULL)
    with pytest.raises(ValueError, match=r"^layers\.0\.blocks\.0\.attn\.qkv: x has L=49 tokens but extra_tokens"):
        converted(images)


def test_auto_rejects_extra_tokens_on_maps():
    _, converted, images = _pair("convnext_t")
    convert(converted, "stages.*", extra_tokens=1, **FULL)
    with pytest.raises(ValueError, match=r"^stages\.0\.blocks\.0\.mlp\.fc1: x of shape \(2, 16, 16, 8\) is a "
                                         r"\(B, H, W, C\) map: extra_tokens must be 0"):
        converted(images)


@pytest.mark.parametrize(("grid", "error", "match"), [
    ("square", ValueError, "grid must be 'auto', a pair"),
    ((0, 4), ValueError, "grid must be a pair"),
    ({}, ValueError, "needs at least one 'pattern': value entry"),
    ({3: (4, 4)}, ValueError, "keys must be glob patterns"),
    ({"*": (4, 4.5)}, TypeError, r"grid\['\*'\]\[1\] must be an integer"),
])
def test_bad_grid_settings(grid, error, match):
    model = build("vit_s16", **SMALL["vit_s16"][0])
    with pytest.raises(error, match=match):
        convert(model, "blocks.*", grid=grid)
    assert not _converted_layers(model)
