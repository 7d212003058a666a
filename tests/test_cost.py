"""Cost model (SPEC section 5): lbpcore.backward_cost."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracles import lp_l1_oracle

import lbpcore


def test_paper_example_16x16_patch8_lp_l1_6():
    c = lbpcore.backward_cost((64, 256, 768), 3072, grid=(16, 16), patch=8, bases="lp_l1:6")
    assert (c.patches, c.rank, c.patch) == (4, 21, 8)
    assert c.dense_flops == 4 * 64 * 256 * 768 * 3072
    assert c.lbp_gemm_flops == 4 * 64 * 4 * 21 * 768 * 3072
    assert Fraction(c.ideal_speedup).limit_denominator(1000) == Fraction(64, 21)
    assert math.isclose(c.ideal_speedup, 64 / 21, rel_tol=1e-15)
    assert c.lbp_flops == c.lbp_gemm_flops + c.projection_flops
    assert 0 < c.projection_flops < c.lbp_gemm_flops


@st.composite
def cost_problems(draw):
    n = draw(st.sampled_from([1, 2, 4, 8, 16]))
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    e = draw(st.integers(0, 3))
    b = draw(st.integers(1, 8))
    cin = draw(st.integers(1, 64))
    cout = draw(st.integers(1, 64))
    k = draw(st.integers(1, 2 * n))
    itemsize = draw(st.sampled_from([2, 4, 8]))
    return n, (h, w), e, b, cin, cout, k, itemsize


@given(cost_problems())
def test_flop_and_byte_formulas(p):
    n, (h, w), e, b, cin, cout, k, itemsize = p
    L = e + h * w
    c = lbpcore.backward_cost((b, L, cin), cout, grid=(h, w), patch=n, bases=f"lp_l1:{k}", pad="zero",
                              extra_tokens=e, itemsize=itemsize)
    P = math.ceil(h / n) * math.ceil(w / n)
    r = len(lp_l1_oracle(n, k))
    assert (c.patches, c.rank) == (P, r)
    assert (c.batch, c.tokens, c.grid_tokens, c.extra_tokens) == (b, L, h * w, e)
    assert (c.in_features, c.out_features) == (cin, cout)
    assert c.dense_flops == 4 * b * L * cin * cout
    # GEMMs on coefficients plus the extra tokens' dense part
    assert c.lbp_gemm_flops == 4 * b * P * r * cin * cout + 4 * b * e * cin * cout
    assert c.lbp_flops == c.lbp_gemm_flops + c.projection_flops
    assert math.isclose(c.ideal_speedup, c.dense_flops / c.lbp_gemm_flops, rel_tol=1e-15)
    if e == 0:
        assert math.isclose(c.ideal_speedup, L / (P * r), rel_tol=1e-15)
    assert math.isclose(c.flop_speedup, c.dense_flops / c.lbp_flops, rel_tol=1e-15)
    assert c.activation_bytes == b * L * cin * itemsize
    assert c.lbp_saved_bytes == b * (P * r + e) * cin * itemsize
    assert math.isclose(c.memory_ratio, c.lbp_saved_bytes / c.activation_bytes)
    assert c.projection_flops >= 0


@pytest.mark.parametrize("n,k", [(8, 6), (8, 3), (4, 2), (16, 5), (2, 1)])
def test_divisible_grid_ratios(n, k):
    """Divisible grids: speed-up n^2 / r and memory ratio r / n^2."""
    r = len(lp_l1_oracle(n, k))
    c = lbpcore.backward_cost((2, 4 * n * n, 8), 16, grid=(2 * n, 2 * n), patch=n, bases=f"lp_l1:{k}")
    assert math.isclose(c.ideal_speedup, n * n / r, rel_tol=1e-15)
    assert math.isclose(c.memory_ratio, r / (n * n), rel_tol=1e-15)


def test_nchw_matches_tokens():
    a = lbpcore.backward_cost((2, 32, 14, 14), 64, patch=8, bases="lp_l1:6", layout="nchw")
    b = lbpcore.backward_cost((2, 196, 32), 64, grid=(14, 14), patch=8, bases="lp_l1:6")
    assert a.to_dict() == b.to_dict()
    assert a.patches == 4 and a.dense_flops == 4 * 2 * 196 * 32 * 64


def test_memory_ratio_agrees_with_lbplinear(rng):
    layer = lbpcore.LBPLinear(rng.standard_normal((5, 6)).astype(np.float32), grid=(14, 14), patch=8,
                              bases="lp_l1:6", extra_tokens=1)
    layer.forward(rng.standard_normal((2, 197, 6)).astype(np.float32))
    c = lbpcore.backward_cost((2, 197, 6), 5, grid=(14, 14), patch=8, bases="lp_l1:6", extra_tokens=1, itemsize=4)
    assert layer.saved_nbytes == c.lbp_saved_bytes


def test_to_dict_is_json_serializable():
    c = lbpcore.backward_cost((1, 64, 4), 4, grid=(8, 8), patch=8, bases="lp_l1:2")
    d = json.loads(json.dumps(c.to_dict()))
    assert d["dense_flops"] == c.dense_flops and "memory_ratio" in d


def test_projection_flops_scale_with_channels():
    a = lbpcore.backward_cost((1, 256, 8), 8, grid=(16, 16), patch=8, bases="lp_l1:6")
    b = lbpcore.backward_cost((1, 256, 16), 16, grid=(16, 16), patch=8, bases="lp_l1:6")
    assert b.projection_flops == 2 * a.projection_flops
    assert b.lbp_gemm_flops == 4 * a.lbp_gemm_flops


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(x_shape=(2, 65, 4), grid=(8, 8)), r"x_shape|\bL\b"),
        (dict(x_shape=(2, 64, 4)), r"grid"),
        (dict(x_shape=(2, 64), grid=(8, 8)), r"x_shape"),
        (dict(x_shape=(2, 0, 4), grid=(8, 8)), r"x_shape"),
        (dict(x_shape=(2, 64, 4), grid=(8, 8), extra_tokens=-1), r"extra_tokens"),
        (dict(x_shape=(2, 64, 4), grid=(8, 8), patch=6), r"patch"),
        (dict(x_shape=(2, 64, 4), grid=(8, 8), layout="nhwc"), r"layout"),
        (dict(x_shape=(2, 4, 8, 8), layout="nchw", extra_tokens=1), r"extra_tokens"),
        (dict(x_shape=(2, 4, 8, 8), layout="nchw", grid=(4, 16)), r"grid"),
        (dict(x_shape=(2, 64, 4), grid=(8, 8), bases="lp_l1:0"), r"spec"),
        (dict(x_shape=(2, 64, 4), grid=(8, 8), itemsize=0), r"itemsize"),
    ],
)
def test_backward_cost_errors(kwargs, pattern):
    out = kwargs.pop("out_features", 4)
    with pytest.raises(ValueError, match=pattern):
        lbpcore.backward_cost(kwargs.pop("x_shape"), out, **kwargs)


def test_backward_cost_bad_out_features():
    with pytest.raises(ValueError, match=r"out_features"):
        lbpcore.backward_cost((1, 64, 4), -1, grid=(8, 8))
