"""PyTorch tensors through the array-API code path (CPU), against NumPy.

PyTorch is not a test dependency (it is large); these tests skip cleanly without it.
"""

from __future__ import annotations

import numpy as np
import pytest

import lbpcore
from lbpcore.testing import assert_close

torch = pytest.importorskip("torch")


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _check(got, want):
    assert isinstance(got, torch.Tensor), type(got)
    assert got.dtype == _t(want).dtype
    assert_close(got.numpy(), want)


def test_torch_transforms(dtype):
    x = np.random.default_rng(0).standard_normal((3, 16, 8)).astype(dtype)
    for ordering in ("natural", "sequency", "dyadic"):
        _check(lbpcore.fwht(_t(x), axis=1, ordering=ordering), lbpcore.fwht(x, axis=1, ordering=ordering))
        _check(lbpcore.ifwht2(_t(x), norm="ortho", ordering=ordering),
               lbpcore.ifwht2(x, norm="ortho", ordering=ordering))


@pytest.mark.parametrize("layout", ["tokens", "nchw"])
def test_torch_linear_backward(dtype, layout):
    rng = np.random.default_rng(1)
    if layout == "tokens":
        x = rng.standard_normal((2, 1 + 14 * 14, 6)).astype(dtype)
        g = rng.standard_normal((2, 1 + 14 * 14, 5)).astype(dtype)
        kw = dict(grid=(14, 14), extra_tokens=1)
    else:
        x = rng.standard_normal((2, 6, 7, 9)).astype(dtype)
        g = rng.standard_normal((2, 5, 7, 9)).astype(dtype)
        kw = dict(patch=4, bases="lp_l1:3")
    w = rng.standard_normal((5, 6)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    _check(lbpcore.linear(_t(x), _t(w), _t(b), layout=layout), lbpcore.linear(x, w, b, layout=layout))
    for got, want in zip(lbpcore.dense_backward(_t(x), _t(w), _t(g), bias=_t(b), layout=layout),
                         lbpcore.dense_backward(x, w, g, bias=b, layout=layout), strict=True):
        _check(got, want)
    for got, want in zip(lbpcore.lbp_backward(_t(x), _t(w), _t(g), bias=_t(b), layout=layout, **kw),
                         lbpcore.lbp_backward(x, w, g, bias=b, layout=layout, **kw), strict=True):
        _check(got, want)
    _check(lbpcore.project(_t(x), layout=layout, **kw), lbpcore.project(x, layout=layout, **kw))
    _check(lbpcore.apply_projector(_t(x), layout=layout, **kw), lbpcore.apply_projector(x, layout=layout, **kw))


def test_torch_lbplinear_saved_nbytes(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 64, 4)).astype(dtype)
    w = rng.standard_normal((3, 4)).astype(dtype)
    layers = [lbpcore.LBPLinear(a, grid=(8, 8), patch=8, bases="lp_l1:2") for a in (_t(w), w)]
    layers[0].forward(_t(x))
    layers[1].forward(x)
    assert layers[0].saved_nbytes == layers[1].saved_nbytes > 0
