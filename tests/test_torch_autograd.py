"""``lbpcore.torch.lbp_linear`` under PyTorch autograd: golden vectors, exactness, gradcheck, inputs.

PyTorch is optional: every test here skips cleanly without it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from test_golden import LAYOUT_PARAMS, _case, _layouts, assert_rel

import lbpcore
import lbpcore.testing as lt

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.usefixtures("torch_single_thread")
from torch_models import grads_of, random_layer  # noqa: E402

from lbpcore.torch import _bridge, lbp_linear  # noqa: E402 - after the importorskip


def _leaf(a, requires_grad=True):
    return torch.tensor(a, requires_grad=requires_grad)


def _run(x, w, b, gy, **kw):
    """``lbp_linear`` forward and backward; returns ``(y, grad_x, grad_weight, grad_bias)`` as NumPy."""
    xt, wt = _leaf(x), _leaf(w)
    bt = None if b is None else _leaf(b)
    y = lbp_linear(xt, wt, bt, **kw)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy()


# ---------------------------------------------------------------------------
# golden vectors (float64, both layouts, extra tokens, with and without bias)


@pytest.mark.parametrize("name,which", LAYOUT_PARAMS)
def test_golden_through_autograd(name, which):
    c = _case(name)
    layout, x, gy, gx_expected, y_expected, kw = _layouts(c)[which]
    y, gx, gw, gb = _run(x, c["weight"], c["bias"], gy, patch=c["n"], bases=f"lp_l1:{c['k']}", layout=layout, **kw)
    assert_rel(y, y_expected, "y")
    assert_rel(gx, gx_expected, "grad_x")
    assert_rel(gw, c["grad_weight"], "grad_weight")
    if c["bias"] is None:
        assert gb is None
    else:
        assert_rel(gb, c["grad_bias"], "grad_bias")


def test_golden_cases_cover_extra_tokens_and_no_bias():
    cases = [_case(f"case{i:02d}") for i in range(9)]
    assert any(c["e"] > 0 for c in cases) and any(c["bias"] is None for c in cases)


# ---------------------------------------------------------------------------
# exactness: the full basis on a divisible grid is the dense layer


@pytest.mark.parametrize("layout", ["tokens", "nchw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_full_basis_equals_f_linear(layout, dtype):
    e = 1 if layout == "tokens" else 0
    x, w, b, gy = random_layer(layout, dtype, (8, 16), 6, 5, extra_tokens=e)
    kw = dict(grid=(8, 16), extra_tokens=1) if layout == "tokens" else {}

    if layout == "tokens":
        dense = grads_of(F.linear, (x, w, b), gy)
    else:
        dense = grads_of(lambda a, wt, bt: F.conv2d(a, wt[:, :, None, None], bt), (x, w, b), gy)
    lbp = grads_of(lambda a, wt, bt: lbp_linear(a, wt, bt, patch=8, bases="lp_linf:8", pad="none", layout=layout,
                                                **kw), (x, w, b), gy)
    rtol, atol = (1e-5, 1e-4) if dtype == torch.float32 else (1e-12, 1e-11)
    for got, want, what in zip(lbp, dense, ("y", "grad_x", "grad_weight", "grad_bias"), strict=True):
        assert got.dtype == dtype, what
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=what)


def test_forward_is_f_linear_bit_for_bit():
    x = torch.randn(2, 3, 64, 8, requires_grad=True)  # two leading batch dimensions
    w, b = torch.randn(4, 8, requires_grad=True), torch.randn(4, requires_grad=True)
    assert torch.equal(lbp_linear(x, w, b, grid=(8, 8)), F.linear(x, w, b))
    with torch.no_grad():
        assert torch.equal(lbp_linear(x, w, b, grid=(8, 8)), F.linear(x, w, b))


# ---------------------------------------------------------------------------
# gradcheck on the projected problem


def _projector(grid, patch, spec, e):
    """``P`` on ``e`` extra tokens (identity) and a divisible grid, as a float64 tensor ``(L, L)``."""
    h, w = grid
    p = lt.projector_matrix((h, w), patch, lbpcore.select_bases(patch, spec).indices)
    full = np.eye(e + h * w)
    full[e:, e:] = p
    return torch.tensor(full)


@pytest.mark.parametrize("layout", ["tokens", "nchw"])
def test_gradcheck_on_the_projected_problem(layout):
    """``x -> lbp_linear(P x, W, b)`` has the exact gradients ``P grad_y W`` and ``grad_y^T P x``
    (``P = P^T = P^2``), which LBP-WHT computes: gradcheck holds on that problem."""
    grid, patch, spec = (4, 8), 4, "lp_l1:2"
    e = 1 if layout == "tokens" else 0
    proj = _projector(grid, patch, spec, e)
    g = torch.Generator().manual_seed(3)
    if layout == "tokens":
        x = torch.randn(2, e + 32, 3, dtype=torch.float64, generator=g, requires_grad=True)

        def fn(x, w, b):
            return lbp_linear(proj @ x, w, b, grid=grid, patch=patch, bases=spec, extra_tokens=e)
    else:
        x = torch.randn(2, 3, *grid, dtype=torch.float64, generator=g, requires_grad=True)

        def fn(x, w, b):
            px = (x.flatten(2) @ proj.T).reshape(x.shape)
            return lbp_linear(px, w, b, patch=patch, bases=spec, layout="nchw")
    w = torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_gradcheck_fails_on_the_plain_problem():
    """Without the projection LBP-WHT is an approximation: gradcheck must see it (the check can fail)."""
    x = torch.randn(1, 16, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert not torch.autograd.gradcheck(lambda x, w: lbp_linear(x, w, grid=(4, 4), patch=4, bases="lp_l1:1"),
                                        (x, w), raise_exception=False)


# ---------------------------------------------------------------------------
# which gradients are computed, and what is saved


@pytest.mark.parametrize("need", [(True, True, True), (True, False, False), (False, True, False),
                                  (False, False, True), (False, True, True)])
def test_needs_input_grad_combinations(need):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 1 + 64, 5))
    w = rng.standard_normal((3, 5))
    b = rng.standard_normal(3)
    gy = rng.standard_normal((2, 65, 3))
    kw = dict(grid=(8, 8), patch=4, bases="lp_l1:3", extra_tokens=1)
    ref = lbpcore.lbp_backward(x, w, gy, bias=b, **kw)
    leaves = [_leaf(a, r) for a, r in zip((x, w, b), need, strict=True)]
    lbp_linear(*leaves, **kw).backward(torch.tensor(gy))
    for leaf, want, r in zip(leaves, ref, need, strict=True):
        if r:
            lt.assert_close(leaf.grad.numpy(), want)
        else:
            assert leaf.grad is None


def _saved_bytes(fn, params):
    """Bytes of the tensors autograd saves while ``fn()`` runs, those on the memory of ``params`` excluded."""
    sizes = []
    skip = {p.untyped_storage().data_ptr() for p in params}

    def pack(t):
        if t.untyped_storage().data_ptr() not in skip:  # activations, not the weight (or a view of it)
            sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes), out


@pytest.mark.parametrize(("e", "spec"), [(0, "lp_l1:6"), (1, "lp_l1:3")])
def test_saved_tensors_are_the_projected_input(e, spec):
    """Saved activation bytes of an LBP-WHT layer: ``(P r + e) / L`` of the dense layer's."""
    grid, c_in = (14, 14), 16
    x = torch.randn(3, e + 196, c_in)
    lin = torch.nn.Linear(c_in, 8)
    x_dense = torch.nn.GELU()(x.requires_grad_())  # a non-leaf input, as inside a network
    dense, _ = _saved_bytes(lambda: lin(x_dense), lin.parameters())
    lbp, y = _saved_bytes(lambda: lbp_linear(x_dense, lin.weight, lin.bias, grid=grid, bases=spec, extra_tokens=e),
                          lin.parameters())
    plan = lbpcore.make_plan(grid, 8, spec)
    assert dense == x.numel() * 4
    assert lbp == 3 * (plan.num_patches * plan.rank + e) * c_in * 4
    assert lbp / dense == pytest.approx((plan.num_patches * plan.rank + e) / (e + 196))
    y.sum().backward()  # the saved coefficients are what the backward uses


def test_nothing_projected_without_autograd(monkeypatch):
    calls = []
    monkeypatch.setattr("lbpcore.torch._bridge._saved_coefficients", lambda *a: calls.append(a))
    x, w = torch.randn(1, 16, 2), torch.randn(3, 2)
    lbp_linear(x, w, grid=(4, 4), patch=4)  # nothing requires grad
    with torch.no_grad():
        lbp_linear(x, w.requires_grad_(), grid=(4, 4), patch=4)
    assert not calls


# ---------------------------------------------------------------------------
# memory layout and engines


def test_cpu_tensors_share_memory_with_the_kernels():
    t = torch.randn(2, 16, 3)
    a = _bridge.as_array(t, _bridge.engine(t))
    assert isinstance(a, np.ndarray) and a.ctypes.data == t.data_ptr()
    back = _bridge.as_tensor(a)
    assert back.data_ptr() == t.data_ptr()


@pytest.mark.parametrize("case", ["sliced", "transposed", "expanded grad"])
def test_non_contiguous_tensors_are_copied_not_rejected(case):
    """Decision: a tensor that is not contiguous is copied once (nn.Linear accepts them too)."""
    rng = np.random.default_rng(5)
    kw = dict(grid=(8, 8), patch=4, bases="lp_l1:3")
    base = rng.standard_normal((2, 65, 5))
    w = rng.standard_normal((3, 5))
    if case == "sliced":
        xt = _leaf(base)[:, 1:]  # drops a class token: a strided view
    elif case == "transposed":
        xt = _leaf(np.ascontiguousarray(base[:, 1:].transpose(0, 2, 1))).transpose(1, 2)
    else:
        xt = _leaf(base[:, 1:])
    assert xt.is_contiguous() == (case == "expanded grad")
    wt = _leaf(w)
    y = lbp_linear(xt, wt, **kw)
    y.sum().backward() if case == "expanded grad" else y.backward(torch.ones_like(y))  # y.sum(): stride-0 grad
    ref = lbpcore.lbp_backward(base[:, 1:], w, np.ones((2, 64, 3)), **kw)
    lt.assert_close(wt.grad.numpy(), ref.grad_weight)


def test_torch_engine_matches_numpy_engine(monkeypatch):
    """The path of CUDA tensors without CuPy (lbpcore's array-API code on the tensors), forced on the CPU."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 1 + 100, 4))
    w = rng.standard_normal((3, 4))
    gy = rng.standard_normal((2, 101, 3))
    kw = dict(grid=(10, 10), patch=4, bases="lp_l1:3", extra_tokens=1)
    want = _run(x, w, None, gy, **kw)
    monkeypatch.setattr(_bridge, "engine", lambda t: "torch")
    got = _run(x, w, None, gy, **kw)
    for a, b in zip(got[:3], want[:3], strict=True):
        lt.assert_close(a, b)


# ---------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    (dict(dtype=torch.float16), TypeError, "half precision"),
    (dict(dtype=torch.bfloat16), TypeError, "float32 and float64 only"),
    (dict(tokens=65), ValueError, r"L=65 tokens but extra_tokens \+ h\*w = 0 \+ 8\*8 = 64"),
    (dict(grid=(3, 0)), ValueError, "grid must be a pair"),
    (dict(c_in=4), ValueError, r"C_in = weight.shape\[1\] = 5"),
    (dict(patch=6), ValueError, "power of two"),
    (dict(layout="nhwc"), ValueError, "layout must be one of"),
    (dict(weight_dtype=torch.float64), TypeError, "dtype of x"),
])
def test_bad_inputs(kwargs, error, match):
    dtype = kwargs.get("dtype", torch.float32)
    x = torch.randn(2, kwargs.get("tokens", 64), kwargs.get("c_in", 5)).to(dtype).requires_grad_()
    w = torch.randn(3, 5).to(kwargs.get("weight_dtype", dtype))
    with pytest.raises(error, match=match):
        lbp_linear(x, w, grid=kwargs.get("grid", (8, 8)), patch=kwargs.get("patch", 8),
                   layout=kwargs.get("layout", "tokens"))


def test_non_tensor_input():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        lbp_linear(np.ones((1, 4, 2)), torch.ones(3, 2), grid=(2, 2), patch=2)


def test_importing_lbpcore_does_not_import_torch():
    code = ("import sys, lbpcore, lbpcore.testing, analysis, analysis.cli, analysis.capture, analysis.report; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
