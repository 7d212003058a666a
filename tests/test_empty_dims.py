"""Empty dimensions give empty results of the right shape, as NumPy does (issue 13, item 2).

Property tests draw random shapes with zero-length axes and compare with what
NumPy itself gives for the same computation (``numpy.fft`` for the transforms,
``matmul``/``einsum`` sums for the layers): the same shape, the same dtype, and
zeros where NumPy sums over nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lbpcore

SIDES = st.sampled_from([0, 0, 1, 2, 3, 4, 8])
POW2 = st.sampled_from([1, 2, 4, 8, 16])


# --------------------------------------------------------------------------
# transforms: numpy.fft's behaviour on empty arrays
# --------------------------------------------------------------------------


@given(data=st.data(), ndim=st.integers(1, 4), ordering=st.sampled_from(["sequency", "natural", "dyadic"]),
       norm=st.sampled_from(["backward", "ortho", "forward"]), dtype=st.sampled_from([np.float32, np.float64]),
       inverse=st.booleans())
def test_fwht_on_empty_arrays_matches_numpy_fft(data, ndim, ordering, norm, dtype, inverse):
    axis = data.draw(st.integers(-ndim, ndim - 1))
    shape = [data.draw(SIDES) for _ in range(ndim)]
    shape[axis] = data.draw(st.sampled_from([0, 1, 2, 4, 8]))
    x = np.zeros(shape, dtype=dtype)
    func = lbpcore.ifwht if inverse else lbpcore.fwht
    try:
        want = np.fft.fft(x, axis=axis)
    except ValueError:  # numpy.fft refuses a zero-length transform axis
        with pytest.raises(ValueError, match=r"length of x along axis"):
            func(x, axis=axis, ordering=ordering, norm=norm)
        return
    got = func(x, axis=axis, ordering=ordering, norm=norm)
    assert got.shape == want.shape and got.dtype == x.dtype
    np.testing.assert_array_equal(got, want.real)  # all zeros, or empty


@given(data=st.data(), ndim=st.integers(2, 4), inverse=st.booleans())
def test_fwht2_on_empty_arrays_matches_numpy_fft2(data, ndim, inverse):
    a0 = data.draw(st.integers(0, ndim - 1))
    a1 = data.draw(st.integers(0, ndim - 1).filter(lambda a: a != a0))
    shape = [data.draw(SIDES) for _ in range(ndim)]
    shape[a0], shape[a1] = data.draw(POW2), data.draw(POW2)
    x = np.zeros(shape)
    want = np.fft.fft2(x, axes=(a0, a1))
    got = (lbpcore.ifwht2 if inverse else lbpcore.fwht2)(x, axes=(a0, a1))
    assert got.shape == want.shape and got.dtype == x.dtype


def test_fwht_out_on_an_empty_array():
    x = np.zeros((0, 8))
    out = np.empty_like(x)
    assert lbpcore.fwht(x, out=out) is out


def test_transforms_of_empty_arrays_on_another_namespace():
    xps = pytest.importorskip("array_api_strict")
    for shape, axes in (((0, 4, 4), (-2, -1)), ((4, 0, 8), (0, 2)), ((4, 8, 0), (0, 1))):
        assert lbpcore.fwht2(xps.zeros(shape, dtype=xps.float64), axes=axes).shape == shape
    assert lbpcore.fwht(xps.zeros((0, 16), dtype=xps.float32)).shape == (0, 16)


# --------------------------------------------------------------------------
# linear layers: NumPy's sums over empty axes
# --------------------------------------------------------------------------


def _numpy_layer(x, weight, grad_y, bias, layout):
    """The dense layer written with NumPy's own products (which handle empty axes)."""
    if layout == "nchw":
        x = np.moveaxis(x, 1, -1)
        grad_y = np.moveaxis(grad_y, 1, -1)
    rows = math.prod(x.shape[:-1])
    x2, g2 = x.reshape(rows, x.shape[-1]), grad_y.reshape(rows, grad_y.shape[-1])
    y = x @ weight.T + (0 if bias is None else bias)
    gx = grad_y @ weight
    gw = g2.T @ x2
    gb = None if bias is None else g2.sum(axis=0)
    if layout == "nchw":
        y, gx = np.moveaxis(y, -1, 1), np.moveaxis(gx, -1, 1)
    return y, gx, gw, gb


@given(lead=st.lists(SIDES, min_size=0, max_size=3), c_in=SIDES, c_out=SIDES, with_bias=st.booleans(),
       layout=st.sampled_from(["tokens", "nchw"]))
def test_dense_layer_with_empty_axes_matches_numpy(lead, c_in, c_out, with_bias, layout):
    if layout == "nchw":
        lead = (lead + [2, 2, 2])[:3]
        xs, gs = (lead[0], c_in, lead[1], lead[2]), (lead[0], c_out, lead[1], lead[2])
    else:
        xs, gs = (*lead, c_in), (*lead, c_out)
    rng = np.random.default_rng(math.prod(xs) + 7 * c_out)
    x, gy = rng.standard_normal(xs), rng.standard_normal(gs)
    w = rng.standard_normal((c_out, c_in))
    bias = rng.standard_normal(c_out) if with_bias else None
    y, gx, gw, gb = _numpy_layer(x, w, gy, bias, layout)
    got_y = lbpcore.linear(x, w, bias, layout=layout)
    got = lbpcore.dense_backward(x, w, gy, bias=bias, layout=layout)
    assert got_y.shape == y.shape and got.grad_x.shape == gx.shape and got.grad_weight.shape == gw.shape
    np.testing.assert_allclose(got_y, y, atol=1e-12)
    np.testing.assert_allclose(got.grad_x, gx, atol=1e-12)
    np.testing.assert_allclose(got.grad_weight, gw, atol=1e-12)
    if with_bias:
        assert got.grad_bias.shape == (c_out,)
        np.testing.assert_allclose(got.grad_bias, gb, atol=1e-12)
    else:
        assert got.grad_bias is None


@given(b=st.sampled_from([0, 1, 2]), c_in=st.sampled_from([0, 1, 3]), c_out=st.sampled_from([0, 2]),
       grid=st.sampled_from([(8, 8), (6, 10), (3, 5)]), patch=st.sampled_from([2, 4]),
       e=st.sampled_from([0, 1]), layout=st.sampled_from(["tokens", "nchw"]), with_bias=st.booleans())
def test_lbp_backward_with_empty_axes(b, c_in, c_out, grid, patch, e, layout, with_bias):
    """An empty batch or channel axis: gradients of the right shapes; where NumPy sums over nothing, zeros."""
    if b * c_in * c_out:  # not empty: nothing to test here
        b = 0
    e = e if layout == "tokens" else 0
    h, w = grid
    if layout == "tokens":
        xs, gs = (b, e + h * w, c_in), (b, e + h * w, c_out)
    else:
        xs, gs = (b, c_in, h, w), (b, c_out, h, w)
    rng = np.random.default_rng(b + 3 * c_in + 5 * c_out)
    x, gy, wt = rng.standard_normal(xs), rng.standard_normal(gs), rng.standard_normal((c_out, c_in))
    bias = np.ones(c_out) if with_bias else None
    kw = dict(grid=grid, patch=patch, bases="lp_l1:2", pad="zero", extra_tokens=e, layout=layout)
    got = lbpcore.lbp_backward(x, wt, gy, bias=bias, **kw)
    dense = lbpcore.dense_backward(x, wt, gy, bias=bias, layout=layout)
    assert got.grad_x.shape == x.shape and got.grad_weight.shape == (c_out, c_in)
    if b == 0 or c_out == 0:  # every product sums over nothing
        np.testing.assert_array_equal(got.grad_weight, np.zeros((c_out, c_in)))
        np.testing.assert_array_equal(got.grad_x, np.zeros(x.shape))
    if with_bias:
        np.testing.assert_array_equal(got.grad_bias, dense.grad_bias)
    layer = lbpcore.LBPLinear(wt, bias, **kw)
    assert layer.forward(x).shape == gy.shape
    assert layer.saved_nbytes == 0 or b * c_in
    again = layer.backward(gy)
    np.testing.assert_array_equal(again.grad_x, got.grad_x)
    np.testing.assert_array_equal(again.grad_weight, got.grad_weight)


@given(b=st.sampled_from([0, 2]), c=st.sampled_from([0, 3]), grid=st.sampled_from([(8, 8), (5, 7)]),
       patch=st.sampled_from([2, 4, 8]), e=st.sampled_from([0, 2]), layout=st.sampled_from(["tokens", "nchw"]))
def test_projections_with_empty_axes(b, c, grid, patch, e, layout):
    if b * c:
        c = 0
    e = e if layout == "tokens" else 0
    h, w = grid
    x = np.ones((b, e + h * w, c) if layout == "tokens" else (b, c, h, w))
    kw = dict(grid=grid, patch=patch, bases="lp_l1:2", pad="zero", layout=layout)
    plan = lbpcore.make_plan(grid, patch, "lp_l1:2", pad="zero")
    coef = lbpcore.project(x, extra_tokens=e, **kw)
    assert coef.shape == ((b, plan.num_patches, plan.rank, c) if layout == "tokens"
                          else (b, c, plan.num_patches, plan.rank))
    back = lbpcore.reconstruct(coef, **kw)
    assert back.shape == ((b, h * w, c) if layout == "tokens" else (b, c, h, w))
    assert lbpcore.apply_projector(x, extra_tokens=e, **kw).shape == x.shape


def test_empty_axes_on_another_namespace():
    xps = pytest.importorskip("array_api_strict")
    x = xps.zeros((0, 65, 3), dtype=xps.float64)
    gy = xps.zeros((0, 65, 2), dtype=xps.float64)
    wt = xps.ones((2, 3), dtype=xps.float64)
    kw = dict(grid=(8, 8), patch=4, bases="lp_l1:3", extra_tokens=1)
    g = lbpcore.lbp_backward(x, wt, gy, bias=xps.zeros((2,), dtype=xps.float64), **kw)
    assert g.grad_x.shape == (0, 65, 3) and g.grad_weight.shape == (2, 3) and g.grad_bias.shape == (2,)
    assert lbpcore.project(x, **kw).shape == (0, 4, 6, 3)
    assert lbpcore.apply_projector(x, **kw).shape == (0, 65, 3)
    maps = xps.zeros((2, 0, 8, 8), dtype=xps.float32)
    assert lbpcore.project(maps, patch=4, bases="lp_l1:2", layout="nchw").shape == (2, 0, 4, 3)


def test_empty_calibration_scores_every_basis_zero():
    """Energy on no data: every score is 0, so the ties keep the low-pass order."""
    got = lbpcore.select_bases(8, "energy_l2:6", calibration=np.zeros((0, 64, 3)), grid=(8, 8))
    assert got.indices.tolist() == lbpcore.select_bases(8, "lp_l1:3").indices.tolist()


@pytest.mark.parametrize("shape,c_out,layout", [((0, 64, 3), 4, "tokens"), ((2, 64, 0), 4, "tokens"),
                                                 ((2, 64, 3), 0, "tokens"), ((0, 3, 8, 8), 2, "nchw")])
def test_backward_cost_with_empty_axes(shape, c_out, layout):
    cost = lbpcore.backward_cost(shape, c_out, grid=(8, 8) if layout == "tokens" else None, layout=layout)
    assert cost.dense_flops == 0 and cost.lbp_gemm_flops == 0
    assert math.isnan(cost.ideal_speedup)
    d = cost.to_dict()
    assert d["batch"] == shape[0]
