"""The PyTorch bridge (``lbpcore.torch``) on hostile inputs (issue 19, item 3).

Each case gives the right answer (with the full basis the gradients of the
dense ``nn.Linear`` / ``nn.Conv2d`` in float64, up to
:func:`tolerances.single_layer_rtol`) or a clear TypeError / ValueError:
dtypes the kernels do not have, autocast, non-contiguous and channels-last
memory (hypothesis), empty dimensions, several backward calls, ``no_grad`` and
eval mode, ``state_dict`` / ``deepcopy`` / pickle round trips, converting
twice, reverting a plain model, a module called twice in one forward pass.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tolerances import single_layer_rtol

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn
pytestmark = pytest.mark.usefixtures("torch_single_thread")

from lbpcore.torch import LBPConv2d, LBPLinear, convert, lbp_linear, revert  # noqa: E402 - after the importorskip

PATCH = 4
FULL = dict(patch=PATCH, bases=f"lp_linf:{PATCH}", pad="none")  # the full basis: LBP-WHT is the dense layer
F64 = torch.float64


def dense(x, weight, bias, layout):
    """The oracle: ``x @ weight.T + bias`` per token or per pixel (einsum, no code shared with the bridge)."""
    if layout == "tokens":
        y = torch.einsum("...lc,oc->...lo", x, weight)
        return y if bias is None else y + bias
    y = torch.einsum("bchw,oc->bohw", x, weight)
    return y if bias is None else y + bias[:, None, None]


def assert_normwise(got, want, rtol, what=""):
    """``||got - want|| <= rtol ||want||`` (Frobenius), and equal shapes and dtypes."""
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype, want.dtype)
    err = float(torch.linalg.vector_norm((got - want).double()))
    ref = float(torch.linalg.vector_norm(want.double()))
    assert err <= rtol * ref, f"{what}: normwise relative error {err / max(ref, 1e-300):.3g} > {rtol:.3g}"


def grads(fn, leaves, grad_y):
    """``[y, *grads]`` of ``y = fn(*fresh leaf copies)`` after ``y.backward(grad_y)``."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in leaves]
    y = fn(*leaves)
    y.backward(grad_y)
    return [y.detach()] + [None if t is None else t.grad for t in leaves]


def rtol_of(x_shape, c_out, layout, calls=1):
    """The bound for a layer on input ``x_shape``: ``grad_weight`` sums ``B L`` rows, ``grad_x`` ``C_out`` terms."""
    rows = int(np.prod(x_shape[:-1])) if layout == "tokens" else x_shape[0] * x_shape[2] * x_shape[3]
    return single_layer_rtol(calls * max(rows, c_out, 1), PATCH)


# --------------------------------------------------------------------------
# dtypes: float32 and float64 only, a TypeError naming the tensor and its dtype
# --------------------------------------------------------------------------

BAD_DTYPES = [torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64,
              torch.complex128]


def _call(how, dtype):
    x = torch.ones(2, 16, 3).to(dtype)
    w = torch.ones(5, 3).to(dtype)
    if how == "lbp_linear, weight requires grad":
        return lbp_linear(x, w.requires_grad_(dtype.is_floating_point or dtype.is_complex), grid=(4, 4), **FULL)
    if how == "lbp_linear, no autograd":
        return lbp_linear(x, w, grid=(4, 4), **FULL)
    if how == "LBPLinear":
        return LBPLinear(3, 5, grid=(4, 4), **FULL)(x)
    return LBPConv2d(3, 5, **FULL)(torch.ones(2, 3, 4, 4).to(dtype))


@pytest.mark.parametrize("how", ["lbp_linear, weight requires grad", "lbp_linear, no autograd", "LBPLinear",
                                 "LBPConv2d"])
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
def test_dtypes_without_kernels_are_type_errors_naming_x(how, dtype):
    with pytest.raises(TypeError, match=rf"^x has dtype {dtype}: .*float32 and float64 only") as info:
        _call(how, dtype)
    assert ("half precision" in str(info.value)) == (dtype in (torch.float16, torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64], ids=str)
def test_a_weight_of_another_dtype_is_named(dtype):
    with pytest.raises(TypeError, match=rf"^weight has dtype {dtype}"):
        lbp_linear(torch.ones(1, 16, 3), torch.ones(5, 3, dtype=dtype), grid=(4, 4), **FULL)
    with pytest.raises(TypeError, match=rf"^bias has dtype {dtype}"):
        lbp_linear(torch.ones(1, 16, 3), torch.ones(5, 3), torch.ones(5, dtype=dtype), grid=(4, 4), **FULL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("x_dtype", ["float32 input", "half input"])
def test_autocast_runs_the_layer_in_float32(dtype, x_dtype):
    """Under autocast the layer is one of its float32 ops (was: TypeError 'unsupported ScalarType BFloat16' from
    NumPy, or a dtype mismatch in torch.mm, in the backward)."""
    torch.manual_seed(0)
    layer = LBPLinear(3, 5, grid=(4, 4), patch=4, bases="lp_l1:2")
    base = torch.randn(2, 16, 3)
    x = (base if x_dtype == "float32 input" else base.to(dtype)).requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        y = layer(x)
    assert y.dtype == torch.float32
    gy = torch.randn(2, 16, 5)
    y.backward(gy)
    assert x.grad.dtype == x.dtype
    ref = LBPLinear.from_linear(nn.Linear(3, 5), grid=(4, 4), patch=4, bases="lp_l1:2")
    ref.weight, ref.bias = nn.Parameter(layer.weight.detach().clone()), nn.Parameter(layer.bias.detach().clone())
    x32 = x.detach().float().requires_grad_()
    y32 = ref(x32)
    y32.backward(gy)
    assert torch.equal(y, y32)  # the same float32 computation, autocast or not
    assert torch.equal(layer.weight.grad, ref.weight.grad)
    assert torch.equal(x.grad, x32.grad.to(x.dtype))


# --------------------------------------------------------------------------
# memory layouts: any strides, the dense gradients with the full basis
# --------------------------------------------------------------------------

TOKEN_VIEWS = ["contiguous", "transposed", "sliced", "expanded", "class token dropped"]
MAP_VIEWS = ["contiguous", "channels_last", "permuted", "sliced", "expanded"]


def _view(base, view, layout):
    """A view of ``base`` (the leaf) with the memory ``view`` and the logical shape the layer gets."""
    if view == "contiguous":
        return base
    if view == "expanded":  # stride 0 along the batch: the leaf has a batch of 1
        return base.expand(3, *base.shape[1:])
    if layout == "tokens":
        return {"transposed": lambda: base.transpose(-1, -2), "sliced": lambda: base[..., ::2],
                "class token dropped": lambda: base[..., 1:, :]}[view]()
    return {"channels_last": lambda: base, "permuted": lambda: base.permute(0, 3, 1, 2),
            "sliced": lambda: base[:, ::2]}[view]()


def _base(view, layout, b, grid, c_in, gen):
    """The leaf whose view ``_view`` gives ``(b, L, c_in)`` tokens or ``(b, c_in, h, w)`` maps."""
    h, w = grid
    b = 1 if view == "expanded" else b
    if layout == "tokens":
        shape = {"transposed": (b, c_in, h * w), "sliced": (b, h * w, 2 * c_in),
                 "class token dropped": (b, 1 + h * w, c_in)}.get(view, (b, h * w, c_in))
        return torch.randn(shape, generator=gen, dtype=F64)
    shape = {"permuted": (b, h, w, c_in), "sliced": (b, 2 * c_in, h, w)}.get(view, (b, c_in, h, w))
    t = torch.randn(shape, generator=gen, dtype=F64)
    return t.to(memory_format=torch.channels_last) if view == "channels_last" else t


@given(layout=st.sampled_from(["tokens", "nchw"]), data=st.data(), b=st.integers(1, 3),
       grid=st.tuples(st.sampled_from([4, 8]), st.sampled_from([4, 8, 12])), c_in=st.integers(1, 5),
       c_out=st.integers(1, 4), bias=st.booleans(), gy_view=st.sampled_from(["contiguous", "transposed", "expanded"]),
       seed=st.integers(0, 2**16))
def test_any_strides_give_the_dense_gradients(layout, data, b, grid, c_in, c_out, bias, gy_view, seed):
    view = data.draw(st.sampled_from(TOKEN_VIEWS if layout == "tokens" else MAP_VIEWS), label="view")
    gen = torch.Generator().manual_seed(seed)
    base = _base(view, layout, b, grid, c_in, gen)
    w = torch.randn(c_out, c_in, generator=gen, dtype=F64)
    bb = torch.randn(c_out, generator=gen, dtype=F64) if bias else None
    x = _view(base, view, layout)
    if view not in ("contiguous", "channels_last") and min(x.shape) > 1:  # size-1 axes may make a view contiguous
        assert not x.is_contiguous(), view
    out_shape = (*x.shape[:-1], c_out) if layout == "tokens" else (x.shape[0], c_out, *grid)
    if gy_view == "transposed":
        gy = torch.randn(tuple(reversed(out_shape)), generator=gen, dtype=F64).permute(
            *reversed(range(len(out_shape))))
    elif gy_view == "expanded":
        gy = torch.randn(out_shape[-1:], generator=gen, dtype=F64).expand(out_shape)
    else:
        gy = torch.randn(out_shape, generator=gen, dtype=F64)
    kw = dict(grid=grid, **FULL) if layout == "tokens" else dict(layout="nchw", **FULL)
    got = grads(lambda a, wt, bt: lbp_linear(_view(a, view, layout), wt, bt, **kw), (base, w, bb), gy)
    want = grads(lambda a, wt, bt: dense(_view(a, view, layout), wt, bt, layout), (base, w, bb), gy)
    rtol = rtol_of(tuple(x.shape), c_out, layout)
    for g, r, what in zip(got, want, ("y", "grad_x", "grad_weight", "grad_bias"), strict=True):
        if r is None:
            assert g is None, what
        else:
            assert_normwise(g, r, rtol, what)


def test_channels_last_maps_of_lbpconv2d_give_channels_last_grad_x():
    conv = nn.Conv2d(3, 5, 1).double()
    layer = LBPConv2d.from_conv(copy.deepcopy(conv), **FULL)
    x = torch.randn(2, 3, 8, 8, dtype=F64).to(memory_format=torch.channels_last)
    gy = torch.randn(2, 5, 8, 8, dtype=F64)
    got = grads(lambda a: layer(a), (x,), gy)
    want = grads(lambda a: conv(a), (x,), gy)
    rtol = rtol_of(tuple(x.shape), 5, "nchw")
    for g, r, what in zip(got, want, ("y", "grad_x"), strict=True):
        assert_normwise(g, r, rtol, what)
    assert got[1].is_contiguous(memory_format=torch.channels_last)
    assert_normwise(layer.weight.grad, conv.weight.grad, rtol, "grad_weight")


# --------------------------------------------------------------------------
# empty dimensions: empty results of the dense shapes, zeros where the sum is over nothing
# --------------------------------------------------------------------------

EMPTY = {  # name: (layout, x shape, C_out, lbp_linear keywords)
    "empty batch": ("tokens", (0, 16, 3), 5, dict(grid=(4, 4))),
    "empty batch, grid auto": ("tokens", (0, 16, 3), 5, {}),
    "empty leading dimension": ("tokens", (0, 2, 16, 3), 5, dict(grid=(4, 4))),
    "empty batch of maps": ("nchw", (0, 3, 4, 4), 5, {}),
    "empty batch of channels-last maps": ("tokens", (0, 4, 8, 3), 5, {}),
    "no input channel, channels-last maps": ("tokens", (2, 4, 8, 0), 5, {}),
    "no input channel": ("tokens", (2, 16, 0), 5, dict(grid=(4, 4))),  # was: RuntimeError 'cannot reshape'
    "no output channel": ("tokens", (2, 16, 3), 0, dict(grid=(4, 4))),  # was: RuntimeError in the backward
    "no input channel, maps": ("nchw", (2, 0, 4, 4), 5, {}),  # was: y of 0 channels (F.conv2d), then RuntimeError
    "no output channel, maps": ("nchw", (2, 3, 4, 4), 0, {}),
}


@pytest.mark.parametrize("case", list(EMPTY))
def test_empty_dimensions(case):
    layout, x_shape, c_out, kw = EMPTY[case]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(x_shape, generator=gen, dtype=F64)
    w = torch.randn(c_out, x_shape[-1] if layout == "tokens" else x_shape[1], generator=gen, dtype=F64)
    b = torch.randn(c_out, generator=gen, dtype=F64)
    out_shape = (*x_shape[:-1], c_out) if layout == "tokens" else (x_shape[0], c_out, *x_shape[2:])
    gy = torch.randn(out_shape, generator=gen, dtype=F64)
    got = grads(lambda a, wt, bt: lbp_linear(a, wt, bt, layout=layout, **FULL, **kw), (x, w, b), gy)
    want = grads(lambda a, wt, bt: dense(a, wt, bt, layout), (x, w, b), gy)
    for g, r, what in zip(got, want, ("y", "grad_x", "grad_weight", "grad_bias"), strict=True):
        assert g.shape == r.shape and g.dtype == r.dtype, (what, g.shape, r.shape)
        torch.testing.assert_close(g, r, rtol=single_layer_rtol(64, PATCH), atol=0, msg=what)  # zeros where empty


# --------------------------------------------------------------------------
# several backward calls: accumulation, retain_graph, no double backward
# --------------------------------------------------------------------------

LAYERS = {
    "LBPLinear": (lambda: nn.Linear(3, 5).double(), lambda m: LBPLinear.from_linear(m, grid=(4, 8), **FULL),
                  (2, 32, 3)),
    "LBPConv2d": (lambda: nn.Conv2d(3, 5, 1).double(), lambda m: LBPConv2d.from_conv(m, **FULL), (2, 3, 4, 8)),
}


def _pair(kind):
    """A dense layer and an LBP-WHT copy of it (separate parameters), and the input shape."""
    make, lbp, shape = LAYERS[kind]
    torch.manual_seed(2)
    d = make()
    return d, lbp(copy.deepcopy(d)), shape


def _param_grads(m):
    return [p.grad for p in m.parameters()]


@pytest.mark.parametrize("kind", list(LAYERS))
def test_gradients_accumulate_over_backward_calls(kind):
    d, lbp, shape = _pair(kind)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.randn(shape, generator=gen, dtype=F64)
        for m in (d, lbp):
            m(x).square().sum().backward()
    rtol = rtol_of(shape if kind == "LBPLinear" else shape, 5, "tokens" if kind == "LBPLinear" else "nchw", calls=3)
    for g, r in zip(_param_grads(lbp), _param_grads(d), strict=True):
        assert_normwise(g, r, rtol)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_retain_graph_backward_twice_doubles_the_gradients(kind):
    d, lbp, shape = _pair(kind)
    x = torch.randn(shape, dtype=F64, requires_grad=True)
    loss = lbp(x).square().sum()
    loss.backward(retain_graph=True)
    first = [g.clone() for g in _param_grads(lbp)] + [x.grad.clone()]
    loss.backward()  # the saved coefficients are still there
    for g, f in zip([*_param_grads(lbp), x.grad], first, strict=True):
        torch.testing.assert_close(g, 2 * f, rtol=4 * torch.finfo(F64).eps, atol=0)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()  # PyTorch's own message once the graph is freed
    d(x.detach()).square().sum().backward()
    assert_normwise(first[0], d.weight.grad, rtol_of(shape, 5, "tokens" if kind == "LBPLinear" else "nchw"))


def test_double_backward_is_refused_clearly():
    layer = LBPLinear(3, 5, grid=(4, 4), **FULL)
    y = layer(torch.randn(2, 16, 3))
    (g,) = torch.autograd.grad(y.square().sum(), layer.weight, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.sum().backward()


# --------------------------------------------------------------------------
# no_grad, inference_mode, eval mode
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_without_autograd_the_forward_is_dense_and_records_nothing(mode):
    d, lbp, shape = _pair("LBPLinear")
    x = torch.randn(shape, dtype=F64, requires_grad=True)
    with getattr(torch, mode)():
        y = lbp(x)
        assert torch.equal(y, d(x))
    assert y.grad_fn is None and not y.requires_grad
    with torch.no_grad(), pytest.raises(ValueError, match="L=33 tokens"):  # the input is still checked
        lbp(torch.randn(2, 33, 3, dtype=F64))


def test_eval_mode_keeps_the_lbp_backward_and_the_flag_survives_convert_and_revert():
    """eval() switches dropout and batch norm, not autograd: a converted layer still computes LBP-WHT."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 5), nn.Dropout(0.5), nn.Linear(5, 2)).double().eval()
    convert(model, "*", grid=(4, 4), patch=4, bases="lp_l1:2")
    assert not model[0].training and not model[2].training
    x = torch.randn(2, 16, 3, dtype=F64)
    model(x).square().sum().backward()
    reduced = model[0].weight.grad.clone()
    model.zero_grad()
    model.train()
    model[1].p = 0.0
    model(x).square().sum().backward()
    torch.testing.assert_close(model[0].weight.grad, reduced, rtol=0, atol=0)
    model.eval()
    revert(model)
    assert not model[0].training and type(model[0]) is nn.Linear


# --------------------------------------------------------------------------
# state_dict, deepcopy, pickle
# --------------------------------------------------------------------------


class Permute(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


def _model(seed=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), Permute(), nn.Conv2d(8, 4, 1)).double()


def _converted(seed=5):
    m = _model(seed)
    assert convert(m, "*", **FULL) == ["0", "2"]
    return m


X_MAPS = torch.randn(2, 8, 4, 3, generator=torch.Generator().manual_seed(6), dtype=F64)  # (B, H, W, C) maps


@pytest.mark.parametrize("direction", ["plain into converted", "converted into plain", "through torch.save"])
def test_state_dict_between_converted_and_plain_models(direction, tmp_path):
    src = _model(7) if direction == "plain into converted" else _converted(7)
    dst = _converted(8) if direction != "converted into plain" else _model(8)
    assert list(src.state_dict()) == list(dst.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    state = src.state_dict()
    if direction == "through torch.save":
        torch.save(state, tmp_path / "s.pt")
        state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert not dst.load_state_dict(state, strict=True).missing_keys
    with torch.no_grad():
        assert torch.equal(dst(X_MAPS), src(X_MAPS))
    if isinstance(dst[0], LBPLinear):  # the dense layers kept for revert see the loaded parameters
        revert(dst)
        assert torch.equal(dst[0].weight, src[0].weight) and type(dst[2]) is nn.Conv2d


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_of_a_converted_model_are_independent_and_revert(how, tmp_path):
    m = _converted()
    if how == "deepcopy":
        c = copy.deepcopy(m)
    elif how == "pickle":
        c = pickle.loads(pickle.dumps(m))
    else:
        torch.save(m, tmp_path / "m.pt")
        c = torch.load(tmp_path / "m.pt", weights_only=False)
    assert [type(c[i]) for i in (0, 2)] == [LBPLinear, LBPConv2d]
    assert (c[0].grid, c[0].patch, c[0].bases, c[0].layer_name) == (m[0].grid, m[0].patch, m[0].bases, "0")
    gy = torch.randn(2, 4, 8, 4, dtype=F64)
    m(X_MAPS).backward(gy)
    c(X_MAPS).backward(gy)
    for a, b in zip(m.parameters(), c.parameters(), strict=True):
        assert a is not b and torch.equal(a.grad, b.grad)
    with torch.no_grad():
        c[0].weight.add_(1.0)
    assert not torch.equal(c[0].weight, m[0].weight)
    assert revert(c) == ["0", "2"]
    assert c[0].weight is not m[0].weight and type(c[0]) is nn.Linear
    assert torch.equal(c[0].weight, m[0].weight + 1.0)  # the copy's own parameters, not the original's
    assert type(m[0]) is LBPLinear  # the original is untouched


# --------------------------------------------------------------------------
# converting twice, reverting a plain model
# --------------------------------------------------------------------------


def test_converting_twice_leaves_the_converted_layers_as_they_are():
    m = _converted()
    first = [m[0], m[2]]
    assert convert(m, "*", patch=2, bases="lp_l1:1") == []
    assert [m[0], m[2]] == first and m[0].patch == PATCH


def test_converting_the_rest_after_a_partial_conversion():
    m = _model()
    assert convert(m, "0", **FULL) == ["0"]
    layer = m[0]
    assert convert(m, "*", **FULL) == ["2"]
    assert m[0] is layer and type(m[2]) is LBPConv2d


@pytest.mark.parametrize("model", ["plain", "reverted", "no linear layer"])
def test_revert_of_a_model_without_converted_layers_is_a_no_op(model):
    m = {"plain": _model, "reverted": _converted, "no linear layer": lambda: nn.Sequential(nn.GELU())}[model]()
    if model == "reverted":
        revert(m)
    before = list(m.modules())
    assert revert(m) == []
    assert list(m.modules()) == before


# --------------------------------------------------------------------------
# a module called twice in one forward pass
# --------------------------------------------------------------------------


class Twice(nn.Module):
    """``fc(gelu(fc(x)))``: one module, two calls."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(F.gelu(self.fc(x)))


def _shared_models():
    torch.manual_seed(9)
    fc = nn.Linear(4, 4)
    conv = nn.Conv2d(4, 4, 1)
    return {
        "called twice in forward": (Twice().double(), (2, 16, 4), "tokens"),
        "one Linear at two places": (nn.Sequential(fc, nn.GELU(), fc).double(), (2, 16, 4), "tokens"),
        "one 1x1 Conv2d at two places": (nn.Sequential(conv, nn.GELU(), conv).double(), (2, 4, 4, 4), "nchw"),
    }


@pytest.mark.parametrize("case", list(_shared_models()))
def test_a_module_called_twice_has_the_dense_gradients(case):
    model, shape, layout = _shared_models()[case]
    ref = copy.deepcopy(model)
    names = convert(model, "*", **({"grid": (4, 4)} if layout == "tokens" else {}), **FULL)
    assert names and len({id(model.get_submodule(n)) for n in names}) == 1  # one converted layer
    x = torch.randn(shape, dtype=F64)
    model(x).square().sum().backward()
    ref(x).square().sum().backward()
    rtol = 4 * rtol_of(shape, 4, layout, calls=2)  # two calls, and the first call's grad_x passes the second's
    for g, r in zip(_param_grads(model), _param_grads(ref), strict=True):
        assert_normwise(g, r, rtol)
