"""lbpcore.testing: the public reference implementations and assertions.

Each reference is compared with the suite's own independent definitions
(tests/oracles.py) and with scipy; assert_close must reject wrong answers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import (
    NORMS,
    ORDERINGS,
    basis_images_oracle,
    dense_backward_oracle,
    fwht_oracle,
    lbp_backward_oracle,
    lp_l1_oracle,
    pad_oracle,
    patch_projector_oracle,
    reflect_ok,
    walsh_oracle,
)

import lbpcore.testing as lt

# --------------------------------------------------------------------------
# assert_close / default_tolerance
# --------------------------------------------------------------------------


def test_default_tolerance_values():
    assert lt.default_tolerance(np.float32) == (2e-4, 1e-5)
    assert lt.default_tolerance(np.float64) == (1e-10, 1e-12)
    assert lt.default_tolerance(np.dtype("float32")) == (2e-4, 1e-5)
    r32, a32 = lt.default_tolerance(np.float32)
    r64, a64 = lt.default_tolerance(np.float64)
    assert r32 > r64 and a32 > a64


def test_assert_close_accepts_right_answers():
    lt.assert_close(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    lt.assert_close(np.float32([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7]))
    lt.assert_close(np.array([1e6, 1.0]), np.array([1e6, 1.0 + 1e-7]))  # atol scales with max|desired|
    lt.assert_close(np.array([1.0, 2.0]), np.array([1.1, 2.2]), rtol=0.2)


@pytest.mark.parametrize(
    "actual,desired",
    [
        (np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-6])),  # float64: 5e-7 relative is too much
        (np.float32([1.0, 2.0]), np.array([1.0, 2.01])),
        (np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0])),  # shapes
        (np.ones((2, 1)), np.ones((1, 2))),  # broadcastable but different shapes
        (np.array([np.nan]), np.array([1.0])),
        (np.array([1.0]), np.array([np.nan])),
        (np.array([np.inf]), np.array([-np.inf])),
        (np.zeros(3), np.array([0.0, 0.0, 1e-9])),
    ],
)
def test_assert_close_rejects_wrong_answers(actual, desired):
    with pytest.raises(AssertionError):
        lt.assert_close(actual, desired)


def test_assert_close_explicit_tolerances_and_message():
    with pytest.raises(AssertionError, match="my context"):
        lt.assert_close(np.array([1.0]), np.array([1.5]), rtol=0.1, atol=0.0, err_msg="my context")
    lt.assert_close(np.array([1.0]), np.array([1.5]), rtol=0.5, atol=0.0)


def test_assert_close_nan_matches_nan():
    lt.assert_close(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))


# --------------------------------------------------------------------------
# references against independent definitions
# --------------------------------------------------------------------------


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 64])
def test_walsh_matrix_reference(n, ordering):
    m = lt.walsh_matrix_reference(n, ordering)
    assert m.dtype == np.int64
    np.testing.assert_array_equal(m, walsh_oracle(n, ordering))
    if ordering == "natural":
        np.testing.assert_array_equal(m, scipy.linalg.hadamard(n))


def test_walsh_matrix_reference_errors():
    with pytest.raises(ValueError, match=r"\bn\b"):
        lt.walsh_matrix_reference(6)
    with pytest.raises(ValueError, match=r"ordering"):
        lt.walsh_matrix_reference(4, "walsh")


@given(
    st.integers(0, 5), st.integers(0, 2), st.sampled_from(ORDERINGS), st.sampled_from(NORMS), st.booleans(),
    st.integers(0, 2**31),
)
@settings(max_examples=30)
def test_fwht_reference(log2n, axis, ordering, norm, inverse, seed):
    shape = [2, 3, 2]
    shape[axis] = 2**log2n
    x = np.random.default_rng(seed).standard_normal(shape)
    got = lt.fwht_reference(x, axis=axis, ordering=ordering, norm=norm, inverse=inverse)
    np.testing.assert_allclose(got, fwht_oracle(x, axis, ordering, norm, inverse=inverse), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_basis_image_reference(n):
    for i in range(n):
        for j in range(n):
            np.testing.assert_array_equal(lt.basis_image_reference(n, i, j), basis_images_oracle(n, [(i, j)])[0])


@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 2, 4, 8]),
       st.sampled_from(["reflect", "zero", "none"]))
def test_pad_grid_reference(h, w, n, pad):
    z = np.arange(2 * h * w, dtype=float).reshape(2, h, w)
    divisible = h % n == 0 and w % n == 0
    if pad == "none" and not divisible:
        with pytest.raises(ValueError):
            lt.pad_grid_reference(z, n, pad)
        return
    if pad == "reflect" and not reflect_ok((h, w), n):
        pad = "zero"
    np.testing.assert_array_equal(lt.pad_grid_reference(z, n, pad), pad_oracle(z, (1, 2), n, pad))


@pytest.mark.parametrize(
    "shape,n,indices", [((4, 4), 4, [(0, 0)]), ((8, 4), 4, lp_l1_oracle(4, 3)), ((4, 8), 2, [(1, 0), (1, 1)])]
)
def test_projector_matrix(shape, n, indices):
    p = lt.projector_matrix(shape, n, indices)
    np.testing.assert_allclose(p, p.T, atol=1e-14)
    np.testing.assert_allclose(p @ p, p, atol=1e-13)
    # block structure: kron of patch grid with the per-patch projector, on a patch-major ordering
    hh, ww = shape
    blk = patch_projector_oracle(n, indices)
    idx = np.arange(hh * ww).reshape(hh // n, n, ww // n, n).transpose(0, 2, 1, 3).reshape(-1)
    expected = np.kron(np.eye((hh // n) * (ww // n)), blk)
    np.testing.assert_allclose(p[np.ix_(idx, idx)], expected, atol=1e-14)
    with pytest.raises(ValueError):
        lt.projector_matrix((6, 4), 4, indices)


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4), st.sampled_from(["tokens", "nchw"]),
       st.booleans(), st.integers(0, 2**31))
@settings(max_examples=25)
def test_dense_backward_reference(b, L, cin, cout, layout, has_bias, seed):
    rng = np.random.default_rng(seed)
    if layout == "tokens":
        x, gy = rng.standard_normal((b, L, cin)), rng.standard_normal((b, L, cout))
    else:
        x, gy = rng.standard_normal((b, cin, L, 2)), rng.standard_normal((b, cout, L, 2))
    wt = rng.standard_normal((cout, cin))
    got = lt.dense_backward_reference(x, wt, gy, layout=layout, bias=np.zeros(cout) if has_bias else None)
    want = dense_backward_oracle(x, wt, gy, layout=layout, bias=has_bias)
    for g, w_ in zip(got, want, strict=True):
        if w_ is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, w_, rtol=1e-12, atol=1e-12)


@given(st.sampled_from([1, 2, 4, 8]), st.integers(1, 10), st.integers(1, 10), st.integers(0, 2),
       st.sampled_from(["reflect", "zero"]), st.sampled_from(["tokens", "nchw"]), st.integers(0, 2**31))
@settings(max_examples=25)
def test_lbp_backward_reference(n, h, w, e, pad, layout, seed):
    if pad == "reflect" and not reflect_ok((h, w), n):
        pad = "zero"
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 2 * n + 1))
    indices = lp_l1_oracle(n, k)
    if layout == "nchw":
        e = 0
        x, gy = rng.standard_normal((2, 3, h, w)), rng.standard_normal((2, 2, h, w))
    else:
        x, gy = rng.standard_normal((2, e + h * w, 3)), rng.standard_normal((2, e + h * w, 2))
    wt = rng.standard_normal((2, 3))
    got = lt.lbp_backward_reference(x, wt, gy, grid=(h, w), patch=n, indices=indices, pad=pad, extra_tokens=e,
                                    layout=layout, bias=np.zeros(2))
    want = lbp_backward_oracle(x, wt, gy, grid=(h, w), n=n, indices=indices, pad=pad, extra_tokens=e,
                               layout=layout, bias=True)
    for g, w_ in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w_, rtol=1e-11, atol=1e-11)


def test_to_numpy_round_trips():
    a = np.arange(3.0)
    assert lt.to_numpy(a) is a
    xs = pytest.importorskip("array_api_strict")
    for dev in (None, xs.Device("device1")):
        arr = xs.asarray(a) if dev is None else xs.asarray(a, device=dev)
        np.testing.assert_array_equal(lt.to_numpy(arr), a)


def test_testing_module_does_not_import_hypothesis():
    code = "import sys, lbpcore.testing; print('hypothesis' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"
