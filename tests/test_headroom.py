"""Numerical range of the LBP-WHT backward (issue 13, item 3; docs: method page, "Numerical range").

With the coefficients in the orthonormal basis (divided by ``n``, exactly), the
full-basis LBP-WHT backward is finite wherever the dense one's bounds times ``n``
are: activations and gradients near ``1e307`` (float64, ``n = 8``), where the
unnormalized coefficients (``n**2`` larger) overflow.
"""

from __future__ import annotations

import numpy as np
import pytest

import lbpcore

FMAX = np.finfo(np.float64).max


def _near_constant(rng, shape, scale):
    """Smooth data of magnitude ``scale``: the worst case for the (0, 0) coefficient, ``n**2 * scale``."""
    return scale * (1.0 + 0.01 * rng.standard_normal(shape))


CASES = [  # (grid, patch, extra tokens, layout, bases)
    ((8, 8), 8, 0, "tokens", "lp_linf:8"),
    ((16, 8), 8, 1, "tokens", "lp_linf:8"),
    ((8, 8), 8, 0, "nchw", "lp_linf:8"),
    ((16, 16), 16, 0, "tokens", "lp_linf:16"),
    ((8, 8), 8, 0, "tokens", "lp_l1:6"),
]


@pytest.mark.parametrize("grid,n,e,layout,bases", CASES)
@pytest.mark.parametrize("big", ["x", "grad_y"])
def test_lbp_backward_is_finite_near_1e307(grid, n, e, layout, bases, big):
    rng = np.random.default_rng(307)
    h, w = grid
    shape = lambda c: (1, e + h * w, c) if layout == "tokens" else (1, c, h, w)  # noqa: E731
    scale = 1.0e307 if n == 8 else 0.5e307  # below FMAX / n: the documented bound
    x = _near_constant(rng, shape(3), scale) if big == "x" else rng.standard_normal(shape(3))
    gy = _near_constant(rng, shape(2), scale) if big == "grad_y" else 0.1 * rng.standard_normal(shape(2))
    weight = 0.25 * rng.standard_normal((2, 3))  # n * max|grad_y| * sum|W| stays below FMAX
    kw = dict(grid=grid, patch=n, bases=bases, extra_tokens=e, layout=layout)
    # the test is discriminating: the unnormalized coefficients of the big tensor overflow
    with np.errstate(all="ignore"):
        assert not np.all(np.isfinite(lbpcore.project(x if big == "x" else gy, **kw)))
    dense = lbpcore.dense_backward(x, weight, gy, layout=layout)
    assert np.all(np.isfinite(dense.grad_x)) and np.all(np.isfinite(dense.grad_weight))
    got = lbpcore.lbp_backward(x, weight, gy, **kw)
    assert np.all(np.isfinite(got.grad_x)) and np.all(np.isfinite(got.grad_weight))
    layer = lbpcore.LBPLinear(weight, **kw)
    layer.forward(x)
    again = layer.backward(gy)
    np.testing.assert_array_equal(again.grad_x, got.grad_x)
    np.testing.assert_array_equal(again.grad_weight, got.grad_weight)
    if bases.startswith("lp_linf"):  # the full basis on a divisible grid: the dense gradients
        for part in ("grad_x", "grad_weight"):
            a, b = getattr(got, part), getattr(dense, part)
            np.testing.assert_allclose(a / scale, b / scale, rtol=1e-10, atol=1e-10 * np.abs(b / scale).max())


def test_float32_near_1e37():
    rng = np.random.default_rng(37)
    x = _near_constant(rng, (2, 64, 4), 1.0e37).astype(np.float32)
    gy = (0.1 * rng.standard_normal((2, 64, 3))).astype(np.float32)
    weight = (0.25 * rng.standard_normal((3, 4))).astype(np.float32)
    with np.errstate(all="ignore"):
        assert not np.all(np.isfinite(lbpcore.project(x, grid=(8, 8), bases="lp_linf:8")))
    got = lbpcore.lbp_backward(x, weight, gy, grid=(8, 8), bases="lp_linf:8")
    dense = lbpcore.dense_backward(x, weight, gy)
    assert np.all(np.isfinite(got.grad_weight)) and np.all(np.isfinite(got.grad_x))
    np.testing.assert_allclose(got.grad_weight / 1e37, dense.grad_weight / 1e37, rtol=1e-3, atol=1e-3)


def test_headroom_on_another_namespace():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(5)
    x = xps.asarray(_near_constant(rng, (1, 64, 2), 1.0e307))
    gy = xps.asarray(0.1 * rng.standard_normal((1, 64, 2)))
    weight = xps.asarray(0.25 * rng.standard_normal((2, 2)))
    got = lbpcore.lbp_backward(x, weight, gy, grid=(8, 8), bases="lp_linf:8")
    assert bool(xps.all(xps.isfinite(got.grad_weight))) and bool(xps.all(xps.isfinite(got.grad_x)))


def test_reconstruct_scales_in_its_first_stage():
    """reconstruct(project(x)) of data near the top of the range: the unnormalized sums would overflow."""
    rng = np.random.default_rng(3)
    x = _near_constant(rng, (1, 64, 2), 2.0e306)  # coefficients up to 64 * 2e306 = 1.3e308: finite
    coef = lbpcore.project(x, grid=(8, 8), bases="lp_linf:8")
    assert np.all(np.isfinite(coef))
    back = lbpcore.reconstruct(coef, grid=(8, 8), bases="lp_linf:8")
    assert np.all(np.isfinite(back))
    np.testing.assert_allclose(back / 2e306, x / 2e306, rtol=1e-12)


def test_documented_bound_is_fmax_over_n():
    assert 2.2e307 < FMAX / 8 < 2.3e307
    assert np.finfo(np.float32).max / 8 == pytest.approx(4.25e37, rel=0.01)
