"""The backward products of converted layers (lbpcore.torch._products) against float64 products.

Both engines (oneDNN's 1x1 convolution on channels-last views and torch.mm)
compute exact products rounded in the input dtype: each entry must lie within
the componentwise bound gamma_k |A||B| of the float64 product (k terms per
entry), whatever order the kernel sums in.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tolerances import U32, U64, gamma  # noqa: E402

from lbpcore.torch import products_engine  # noqa: E402
from lbpcore.torch._products import PRODUCTS, grad_weight_product, gs_times_weight  # noqa: E402

U = {torch.float32: U32, torch.float64: U64}
SHAPES = [(1, 1, 1), (7, 3, 5), (200, 48, 192), (513, 96, 31)]


@pytest.fixture(params=["mm", "auto"])
def engine(request):
    before = products_engine(request.param)
    yield request.param
    products_engine(before)


def _check(actual, a, b, dtype):
    a64, b64 = a.double().numpy(), b.double().numpy()
    bound = gamma(a64.shape[1], U[dtype]) * (np.abs(a64) @ np.abs(b64))
    diff = np.abs(actual.double().numpy() - a64 @ b64)
    assert actual.dtype == dtype
    assert np.all(diff <= bound), float(np.max(diff / np.where(bound > 0, bound, np.inf)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("rows", "c_out", "c_in"), SHAPES)
def test_products_within_componentwise_bound(engine, dtype, rows, c_out, c_in):
    g = torch.Generator().manual_seed(rows)
    gs = torch.randn(rows, c_out, generator=g, dtype=dtype)
    xs = torch.randn(rows, c_in, generator=g, dtype=dtype)
    w = torch.randn(c_out, c_in, generator=g, dtype=dtype)
    gw = grad_weight_product(gs, xs)
    gx = gs_times_weight(gs, w)
    assert gw.shape == (c_out, c_in) and gx.shape == (rows, c_in)
    _check(gw, gs.t(), xs, dtype)
    _check(gx, gs, w, dtype)


def test_onednn_result_is_a_view_of_the_convolution():
    # float32 on the CPU takes oneDNN ("auto"): the (R, C_in) result must be a view of the
    # channels-last output (a copy would mean the convolution returned another memory format)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("PyTorch built without oneDNN")
    gx = gs_times_weight(torch.randn(300, 40), torch.randn(40, 24))
    assert gx._is_view() and gx.is_contiguous() and gx.shape == (300, 24)


@pytest.mark.parametrize("rows", [0, 4])
def test_empty_products(engine, rows):
    gs, xs = torch.randn(rows, 3), torch.randn(rows, 0)
    assert grad_weight_product(gs, xs).shape == (3, 0)
    if rows == 0:  # a sum of no terms
        assert torch.equal(grad_weight_product(gs, torch.randn(0, 2)), torch.zeros(3, 2))
    assert gs_times_weight(gs, torch.randn(3, 0)).shape == (rows, 0)


def test_bad_engine_is_named():
    with pytest.raises(ValueError, match="engine must be one of"):
        products_engine("blas")
    assert products_engine() in PRODUCTS
