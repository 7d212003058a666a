"""Linear layer: linear / dense_backward / lbp_backward / LBPLinear (SPEC sections 1 and 5)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import (
    PATCHES,
    dense_backward_oracle,
    draw_grid_and_pad,
    lbp_backward_oracle,
    lp_l1_oracle,
    nchw_from_tokens,
    pad_oracle,
    tokens_from_nchw,
)
from tolerances import assert_allclose_dtype, assert_product_close

import lbpcore
import lbpcore.testing as lt

# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------


@st.composite
def layer_configs(draw, dtypes=(np.float64,), divisible=None, layouts=("tokens", "nchw"), max_side=18):
    """Random linear layer problem on a token grid.

    Returns a dict with x, weight, grad_y, bias (or None), grid, n, spec,
    indices, pad, e, layout.
    """
    n = draw(st.sampled_from(PATCHES))
    h, w, pad = draw_grid_and_pad(draw, st, n, divisible, max_side)
    k = draw(st.integers(1, 2 * n))
    if draw(st.booleans()):
        spec, indices = f"lp_l1:{k}", lp_l1_oracle(n, k)
    else:
        indices = draw(
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=6, unique=True)
        )
        spec = indices
    layout = draw(st.sampled_from(layouts))
    e = draw(st.integers(0, 2)) if layout == "tokens" else 0
    b = draw(st.integers(1, 2))
    cin = draw(st.integers(1, 4))
    cout = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(dtypes))
    has_bias = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    if layout == "tokens":
        x = rng.standard_normal((b, e + h * w, cin))
        gy = rng.standard_normal((b, e + h * w, cout))
    else:
        x = rng.standard_normal((b, cin, h, w))
        gy = rng.standard_normal((b, cout, h, w))
    weight = rng.standard_normal((cout, cin))
    bias = rng.standard_normal(cout) if has_bias else None
    cast = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    return dict(
        x=cast(x), weight=cast(weight), grad_y=cast(gy), bias=cast(bias), grid=(h, w), n=n, spec=spec,
        indices=indices, pad=pad, e=e, layout=layout, dtype=np.dtype(dtype),
    )


def run_lbp(c, **over):
    kw = dict(
        grid=c["grid"], patch=c["n"], bases=c["spec"], pad=c["pad"], extra_tokens=c["e"], layout=c["layout"],
        bias=c["bias"],
    )
    kw.update(over)
    return lbpcore.lbp_backward(c["x"], c["weight"], c["grad_y"], **kw)


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_tokens_and_nchw(dtype, rng):
    x = rng.standard_normal((2, 12, 5)).astype(dtype)
    wt = rng.standard_normal((3, 5)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    y = lbpcore.linear(x, wt, b)
    assert y.dtype == dtype
    assert_allclose_dtype(y, x.astype(float) @ wt.T.astype(float) + b, dtype=dtype, scale=10)
    y0 = lbpcore.linear(x, wt)
    assert_allclose_dtype(y0, x.astype(float) @ wt.T.astype(float), dtype=dtype, scale=10)
    maps = nchw_from_tokens(x, (3, 4))
    ym = lbpcore.linear(maps, wt, b, layout="nchw")
    assert ym.shape == (2, 3, 3, 4)
    assert_allclose_dtype(ym, np.einsum("bihw,oi->bohw", maps.astype(float), wt.astype(float)) + b[:, None, None],
                          dtype=dtype, scale=10)


# --------------------------------------------------------------------------
# dense backward: finite differences and the adjoint (dot-product) test
# --------------------------------------------------------------------------


def _loss(x, wt, b, r, layout):
    return float(np.sum(lbpcore.linear(x, wt, b, layout=layout) * r))


@pytest.mark.parametrize("layout", ["tokens", "nchw"])
def test_dense_backward_central_finite_differences(layout, rng):
    if layout == "tokens":
        x = rng.standard_normal((2, 3, 4))
        r = rng.standard_normal((2, 3, 3))
    else:
        x = rng.standard_normal((2, 4, 2, 3))
        r = rng.standard_normal((2, 3, 2, 3))
    wt = rng.standard_normal((3, 4))
    b = rng.standard_normal(3)
    g = lbpcore.dense_backward(x, wt, r, bias=b, layout=layout)
    eps = 1e-6

    def fd(arr, name):
        out = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += eps
            minus[idx] -= eps
            args = {"x": x, "w": wt, "b": b}
            args[name] = plus
            fp = _loss(args["x"], args["w"], args["b"], r, layout)
            args[name] = minus
            fm = _loss(args["x"], args["w"], args["b"], r, layout)
            out[idx] = (fp - fm) / (2 * eps)
        return out

    np.testing.assert_allclose(g.grad_x, fd(x, "x"), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.grad_weight, fd(wt, "w"), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.grad_bias, fd(b, "b"), rtol=1e-6, atol=1e-8)


@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**31),
       st.sampled_from(["tokens", "nchw"]))
@settings(max_examples=30)
def test_dense_backward_adjoint_dot_product(b, L, cin, cout, seed, layout):
    """<J dv, gy> == <dv, J^T gy> for perturbations of x and of W."""
    rng = np.random.default_rng(seed)
    if layout == "tokens":
        x, dx = rng.standard_normal((2, b, L, cin))
        gy = rng.standard_normal((b, L, cout))
    else:
        x, dx = rng.standard_normal((2, b, cin, L, 2))
        gy = rng.standard_normal((b, cout, L, 2))
    wt, dw = rng.standard_normal((2, cout, cin))
    g = lbpcore.dense_backward(x, wt, gy, layout=layout)
    lhs_x = np.sum(lbpcore.linear(dx, wt, layout=layout) * gy)
    np.testing.assert_allclose(lhs_x, np.sum(dx * g.grad_x), rtol=1e-12, atol=1e-12)
    lhs_w = np.sum(lbpcore.linear(x, dw, layout=layout) * gy)
    np.testing.assert_allclose(lhs_w, np.sum(dw * g.grad_weight), rtol=1e-12, atol=1e-12)
    assert g.grad_bias is None


@given(layer_configs(dtypes=(np.float32, np.float64)))
@settings(max_examples=25)
def test_dense_backward_matches_oracles(c):
    g = lbpcore.dense_backward(c["x"], c["weight"], c["grad_y"], bias=c["bias"], layout=c["layout"])
    ref = dense_backward_oracle(c["x"], c["weight"], c["grad_y"], layout=c["layout"], bias=c["bias"] is not None)
    ref2 = lt.dense_backward_reference(c["x"], c["weight"], c["grad_y"], layout=c["layout"], bias=c["bias"])
    scale = 10.0 * c["x"].shape[0] * (c["x"].size / c["x"].shape[0]) ** 0.5
    for got, want, want2 in zip(g, ref, ref2, strict=True):
        if want is None:
            assert got is None and want2 is None
            continue
        assert got.dtype == c["dtype"] and got.shape == want.shape
        assert_allclose_dtype(got, want, dtype=c["dtype"], scale=scale)
        np.testing.assert_allclose(want2, want, rtol=1e-12, atol=1e-12 * scale)


def test_dense_backward_any_leading_token_shape(rng):
    x = rng.standard_normal((2, 3, 4, 5))  # extra leading axis
    wt = rng.standard_normal((6, 5))
    gy = rng.standard_normal((2, 3, 4, 6))
    g = lbpcore.dense_backward(x, wt, gy)
    assert_product_close(g.grad_x, gy, wt)
    assert_product_close(g.grad_weight, gy.reshape(-1, 6).T, x.reshape(-1, 5))


# --------------------------------------------------------------------------
# LBP backward
# --------------------------------------------------------------------------


@given(layer_configs())
@settings(max_examples=40)
def test_lbp_backward_matches_both_references(c):
    g = run_lbp(c)
    grid = c["grid"]
    mine = lbp_backward_oracle(
        c["x"], c["weight"], c["grad_y"], grid=grid, n=c["n"], indices=c["indices"], pad=c["pad"],
        extra_tokens=c["e"], layout=c["layout"], bias=c["bias"] is not None,
    )
    theirs = lt.lbp_backward_reference(
        c["x"], c["weight"], c["grad_y"], grid=grid, patch=c["n"], indices=c["indices"], pad=c["pad"],
        extra_tokens=c["e"], layout=c["layout"], bias=c["bias"],
    )
    for name, got, want, want2 in zip(("grad_x", "grad_weight", "grad_bias"), g, mine, theirs, strict=True):
        if want is None:
            assert got is None and want2 is None, name
            continue
        assert got.shape == want.shape and got.dtype == np.float64, name
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11 * scale, err_msg=name)
        np.testing.assert_allclose(want2, want, rtol=1e-10, atol=1e-11 * scale, err_msg=name)


@given(layer_configs(dtypes=(np.float32, np.float64)))
@settings(max_examples=15)
def test_backward_does_not_modify_inputs(c):
    keep = {k: c[k].copy() for k in ("x", "weight", "grad_y")}
    run_lbp(c)
    lbpcore.dense_backward(c["x"], c["weight"], c["grad_y"], layout=c["layout"])
    for k, v in keep.items():
        np.testing.assert_array_equal(c[k], v, err_msg=k)


@given(layer_configs(layouts=("tokens",)))
@settings(max_examples=30)
def test_lbp_backward_projector_identities(c):
    """grad_x = crop(P pad gy) @ W; grad_W = (P pad gy).T pad x = pad(gy).T (P pad x)."""
    g = run_lbp(c)
    kw = dict(grid=c["grid"], patch=c["n"], bases=c["spec"], pad=c["pad"], extra_tokens=c["e"])
    pgy = lbpcore.apply_projector(c["grad_y"], **kw)  # extra tokens pass through
    np.testing.assert_allclose(g.grad_x, pgy @ c["weight"], rtol=1e-10, atol=1e-10)
    # grad_W symmetric forms on the padded grid (P = P.T)
    h, w = c["grid"]
    e, n, pad = c["e"], c["n"], c["pad"]
    b = c["x"].shape[0]
    xpad = pad_oracle(c["x"][:, e:].reshape(b, h, w, -1), (1, 2), n, pad)
    gpad = pad_oracle(c["grad_y"][:, e:].reshape(b, h, w, -1), (1, 2), n, pad)
    hp, wp = xpad.shape[1:3]
    xpad_t, gpad_t = xpad.reshape(b, hp * wp, -1), gpad.reshape(b, hp * wp, -1)
    kw_pad = dict(grid=(hp, wp), patch=n, bases=c["spec"], pad="none")
    p_g = lbpcore.apply_projector(gpad_t, **kw_pad)
    p_x = lbpcore.apply_projector(xpad_t, **kw_pad)
    extra = np.einsum("blo,bli->oi", c["grad_y"][:, :e], c["x"][:, :e])
    form1 = np.einsum("blo,bli->oi", p_g, xpad_t) + extra
    form2 = np.einsum("blo,bli->oi", gpad_t, p_x) + extra
    scale = max(1.0, float(np.max(np.abs(form1))))
    np.testing.assert_allclose(g.grad_weight, form1, rtol=1e-10, atol=1e-11 * scale)
    np.testing.assert_allclose(form2, form1, rtol=1e-10, atol=1e-11 * scale)


@given(layer_configs(divisible=True))
@settings(max_examples=25)
def test_lbp_full_basis_equals_dense_on_divisible_grids(c):
    n = c["n"]
    g = run_lbp(c, bases=f"lp_linf:{n}")
    d = lbpcore.dense_backward(c["x"], c["weight"], c["grad_y"], bias=c["bias"], layout=c["layout"])
    for got, want in zip(g, d, strict=True):
        if want is None:
            assert got is None
            continue
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11 * max(1.0, float(np.max(np.abs(want)))))


@given(layer_configs(divisible=False))
@settings(max_examples=25)
def test_lbp_full_basis_on_padded_grids(c):
    """Full basis: grad_x is always dense; grad_W is dense with zero padding."""
    n = c["n"]
    d = lbpcore.dense_backward(c["x"], c["weight"], c["grad_y"], bias=c["bias"], layout=c["layout"])
    g = run_lbp(c, bases=f"lp_linf:{n}")
    np.testing.assert_allclose(g.grad_x, d.grad_x, rtol=1e-10, atol=1e-10)
    gz = run_lbp(c, bases=f"lp_linf:{n}", pad="zero")
    np.testing.assert_allclose(gz.grad_weight, d.grad_weight, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gz.grad_x, d.grad_x, rtol=1e-10, atol=1e-10)


@given(layer_configs())
@settings(max_examples=20)
def test_lbp_grad_bias_is_exact(c):
    g = run_lbp(c, bias=np.zeros(c["weight"].shape[0]))
    axes = (0, 1) if c["layout"] == "tokens" else (0, 2, 3)
    np.testing.assert_allclose(g.grad_bias, c["grad_y"].sum(axis=axes), rtol=1e-12, atol=1e-12)


@given(layer_configs(layouts=("tokens",)))
@settings(max_examples=20)
def test_lbp_extra_tokens_are_exact(c):
    e = c["e"]
    g = run_lbp(c)
    np.testing.assert_allclose(g.grad_x[:, :e], c["grad_y"][:, :e] @ c["weight"], rtol=1e-12, atol=1e-12)
    # the grid part does not depend on the extra tokens' values
    c2 = dict(c)
    x2 = c["x"].copy()
    x2[:, :e] = 0.0
    gy2 = c["grad_y"].copy()
    gy2[:, :e] = 0.0
    c2["x"], c2["grad_y"] = x2, gy2
    g2 = run_lbp(c2)
    np.testing.assert_allclose(g2.grad_x[:, e:], g.grad_x[:, e:], rtol=1e-12, atol=1e-12)
    extra_w = np.einsum("blo,bli->oi", c["grad_y"][:, :e], c["x"][:, :e])
    np.testing.assert_allclose(g.grad_weight - g2.grad_weight, extra_w, rtol=1e-10, atol=1e-10)


@given(layer_configs(layouts=("tokens",)))
@settings(max_examples=20)
def test_lbp_nchw_layout_equals_tokens_layout(c):
    e = c["e"]
    x, gy = c["x"][:, e:], c["grad_y"][:, e:]
    a = lbpcore.lbp_backward(x, c["weight"], gy, grid=c["grid"], patch=c["n"], bases=c["spec"], pad=c["pad"])
    b = lbpcore.lbp_backward(
        nchw_from_tokens(x, c["grid"]), c["weight"], nchw_from_tokens(gy, c["grid"]), patch=c["n"],
        bases=c["spec"], pad=c["pad"], layout="nchw",
    )
    np.testing.assert_allclose(tokens_from_nchw(b.grad_x), a.grad_x, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(b.grad_weight, a.grad_weight, rtol=1e-10, atol=1e-10)


@given(layer_configs(dtypes=(np.float32,)))
@settings(max_examples=30)
def test_lbp_float32_close_to_float64(c):
    """float32 results agree with the float64 computation on the same (float32-
    representable) inputs to rtol 2e-5 and atol 2e-5 * max|result|: every output
    is a sum of at most a few thousand O(1) products, so float32 rounding stays
    around 1e-6 relative to the largest magnitude. The dtype is kept."""
    g32 = run_lbp(c)
    c64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in c.items()}
    g64 = run_lbp(c64)
    for got, want in zip(g32, g64, strict=True):
        if want is None:
            assert got is None
            continue
        assert got.dtype == np.float32
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=2e-5, atol=2e-5 * scale)


@pytest.mark.parametrize("int_dtype", [np.int16, np.int64])
def test_lbp_integer_inputs_promote_to_float64(int_dtype, rng):
    x = rng.integers(-3, 4, size=(1, 49, 3)).astype(int_dtype)
    wt = rng.integers(-3, 4, size=(2, 3)).astype(int_dtype)
    gy = rng.integers(-3, 4, size=(1, 49, 2)).astype(int_dtype)
    g = lbpcore.lbp_backward(x, wt, gy, grid=(7, 7), patch=4, bases="lp_l1:2")
    assert g.grad_x.dtype == np.float64 and g.grad_weight.dtype == np.float64
    f = lbpcore.lbp_backward(x.astype(float), wt.astype(float), gy.astype(float), grid=(7, 7), patch=4, bases="lp_l1:2")
    np.testing.assert_array_equal(g.grad_x, f.grad_x)
    d = lbpcore.dense_backward(x, wt, gy)
    assert d.grad_x.dtype == np.float64
    assert lbpcore.linear(x, wt).dtype == np.float64


def test_lbp_nan_in_grad_y_gives_nan_not_exception(rng):
    x = rng.standard_normal((1, 64, 3))
    wt = rng.standard_normal((2, 3))
    gy = rng.standard_normal((1, 64, 2))
    gy[0, 9, 1] = np.nan
    g = lbpcore.lbp_backward(x, wt, gy, grid=(8, 8), patch=4, bases="lp_l1:3", bias=np.zeros(2))
    assert np.isnan(g.grad_weight[1]).all()
    assert np.isnan(g.grad_x[0, 9]).all()
    assert np.isnan(g.grad_bias[1]) and np.isfinite(g.grad_bias[0])
    d = lbpcore.dense_backward(x, wt, gy)
    assert np.isnan(d.grad_weight[1]).all() and np.isnan(d.grad_x[0, 9]).all()
    gy[0, 9, 1] = np.inf
    with np.errstate(invalid="ignore"):  # inf - inf inside the products: NumPy warns
        g = lbpcore.lbp_backward(x, wt, gy, grid=(8, 8), patch=4, bases="lp_l1:3")
    assert not np.isfinite(g.grad_weight[1]).any()


def test_lbp_docstring_example():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 5))
    w = rng.standard_normal((3, 5))
    gy = rng.standard_normal((2, 64, 3))
    full = lbpcore.lbp_backward(x, w, gy, grid=(8, 8), patch=8, bases="lp_linf:8")
    # 128 products per entry, after a projection and before a reconstruction of 8 * 8 terms each
    assert_product_close(full.grad_weight, gy.reshape(-1, 3).T, x.reshape(-1, 5), terms=128 + 2 * 64)


def test_lbp_low_rank_actually_changes_the_gradient(rng):
    """Guard against an implementation that silently returns dense gradients."""
    x = rng.standard_normal((1, 64, 3))
    wt = rng.standard_normal((2, 3))
    gy = rng.standard_normal((1, 64, 2))
    g = lbpcore.lbp_backward(x, wt, gy, grid=(8, 8), patch=8, bases="lp_l1:2")
    d = lbpcore.dense_backward(x, wt, gy)
    assert np.max(np.abs(g.grad_x - d.grad_x)) > 1e-2


def test_gradients_unpack_and_fields(rng):
    x = rng.standard_normal((1, 16, 2))
    wt = rng.standard_normal((3, 2))
    gy = rng.standard_normal((1, 16, 3))
    g = lbpcore.lbp_backward(x, wt, gy, grid=(4, 4), patch=4, bases="lp_l1:2")
    gx, gw, gb = g
    assert gx is g.grad_x and gw is g.grad_weight and gb is None
    assert isinstance(g, lbpcore.Gradients)


# --------------------------------------------------------------------------
# LBPLinear
# --------------------------------------------------------------------------


@given(layer_configs(dtypes=(np.float32, np.float64)))
@settings(max_examples=30)
def test_lbplinear_forward_backward_equals_functions(c):
    layer = lbpcore.LBPLinear(
        c["weight"], c["bias"], grid=c["grid"] if c["layout"] == "tokens" else None, patch=c["n"], bases=c["spec"],
        pad=c["pad"], extra_tokens=c["e"], layout=c["layout"],
    )
    y = layer.forward(c["x"])
    assert y.dtype == c["dtype"]
    np.testing.assert_array_equal(y, lbpcore.linear(c["x"], c["weight"], c["bias"], layout=c["layout"]))
    g = layer.backward(c["grad_y"])
    f = run_lbp(c)
    for got, want in zip(g, f, strict=True):
        if want is None:
            assert got is None
            continue
        assert got.dtype == c["dtype"]
        rtol, atol = (1e-12, 1e-12) if c["dtype"] == np.float64 else (1e-5, 1e-5)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * max(1.0, float(np.max(np.abs(want)))))


@pytest.mark.parametrize(
    "grid,n,spec,e,dtype",
    [
        ((16, 16), 8, "lp_l1:6", 0, np.float32),
        ((16, 16), 8, "lp_l1:6", 1, np.float64),
        ((8, 16), 4, "lp_linf:2", 3, np.float32),
        ((4, 4), 2, [(0, 0)], 0, np.float64),
        ((8, 8), 8, "lp_l1:100", 2, np.float32),
    ],
)
def test_lbplinear_saved_nbytes(grid, n, spec, e, dtype, rng):
    b, cin = 2, 6
    h, w = grid
    r = lbpcore.select_bases(n, spec).rank
    layer = lbpcore.LBPLinear(rng.standard_normal((4, cin)).astype(dtype), grid=grid, patch=n, bases=spec,
                              extra_tokens=e)
    assert layer.saved_nbytes == 0
    x = rng.standard_normal((b, e + h * w, cin)).astype(dtype)
    layer.forward(x)
    itemsize = np.dtype(dtype).itemsize
    grid_bytes = b * h * w * cin * itemsize
    expected = grid_bytes * r / n**2 + b * e * cin * itemsize
    assert layer.saved_nbytes == expected
    assert layer.basis.rank == r


def test_lbplinear_does_not_keep_x_alive(rng):
    layer = lbpcore.LBPLinear(rng.standard_normal((3, 4)), grid=(8, 8), patch=8, bases="lp_l1:2", extra_tokens=1)

    class Arr(np.ndarray):
        pass

    x = rng.standard_normal((1, 65, 4)).view(Arr)
    ref = weakref.ref(x)
    layer.forward(x)
    del x
    gc.collect()
    assert ref() is None, "LBPLinear kept the full activation alive"


def test_lbplinear_backward_before_forward_raises(rng):
    layer = lbpcore.LBPLinear(rng.standard_normal((3, 4)), grid=(4, 4), patch=4)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.zeros((1, 16, 3)))


def test_lbplinear_backward_shape_mismatch(rng):
    layer = lbpcore.LBPLinear(rng.standard_normal((3, 4)), grid=(4, 4), patch=4)
    layer.forward(rng.standard_normal((2, 16, 4)))
    with pytest.raises(ValueError, match="grad_y"):
        layer.backward(np.zeros((1, 16, 3)))
