"""Fast Walsh-Hadamard transforms: lbpcore.fwht / ifwht / fwht2 / ifwht2 / walsh_matrix.

Oracles: Sylvester's recursion and a sign-change sort (``oracles.walsh_oracle``),
``scipy.linalg.hadamard`` and ``sympy.discrete.transforms.fwht``; the transform
is checked against the dense product ``scale * M @ x`` as scipy.fft's tests check
against a naive DFT.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from oracles import NORMS, ORDERINGS, bit_reverse, fwht_oracle, norm_scale, sign_changes, sylvester, walsh_oracle
from sympy.discrete.transforms import fwht as sympy_fwht
from tolerances import FLOAT_DTYPES, assert_allclose_dtype, tol

import lbpcore

POW2 = [1, 2, 4, 8, 16, 32, 64, 128, 256]

# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------


@st.composite
def arrays_with_axis(draw, max_log2=7, max_ndim=3, dtypes=FLOAT_DTYPES):
    """A small float array whose length along a drawn axis is a power of two."""
    ndim = draw(st.integers(1, max_ndim))
    axis = draw(st.integers(-ndim, ndim - 1))
    shape = [draw(st.integers(1, 3)) for _ in range(ndim)]
    shape[axis] = 2 ** draw(st.integers(0, max_log2))
    dtype = draw(st.sampled_from(dtypes))
    x = draw(
        hnp.arrays(
            dtype,
            tuple(shape),
            elements=st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32),
        )
    )
    return x, axis


@st.composite
def arrays_2d_axes(draw, max_log2=5, dtypes=FLOAT_DTYPES):
    ndim = draw(st.integers(2, 4))
    axes = draw(st.lists(st.integers(-ndim, ndim - 1), min_size=2, max_size=2, unique_by=lambda a: a % ndim))
    shape = [draw(st.integers(1, 3)) for _ in range(ndim)]
    for a in axes:
        shape[a] = 2 ** draw(st.integers(0, max_log2))
    dtype = draw(st.sampled_from(dtypes))
    x = draw(
        hnp.arrays(dtype, tuple(shape), elements=st.floats(-10, 10, allow_nan=False, width=32))
    )
    return x, tuple(axes)


orderings = st.sampled_from(ORDERINGS)
norms = st.sampled_from(NORMS)

# --------------------------------------------------------------------------
# walsh_matrix against the definitions
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", POW2)
def test_walsh_natural_equals_scipy_hadamard(n):
    m = lbpcore.walsh_matrix(n, ordering="natural")
    np.testing.assert_array_equal(m, scipy.linalg.hadamard(n))
    np.testing.assert_array_equal(m, sylvester(n))


@pytest.mark.parametrize("n", POW2)
def test_walsh_sequency_row_s_has_s_sign_changes(n):
    m = np.asarray(lbpcore.walsh_matrix(n, ordering="sequency"))
    assert [sign_changes(row) for row in m] == list(range(n))
    # and it is a row permutation of the natural matrix
    nat = {tuple(r) for r in scipy.linalg.hadamard(n).tolist()}
    assert {tuple(r) for r in m.astype(int).tolist()} == nat
    np.testing.assert_array_equal(m[0], np.ones(n))  # DC row


@pytest.mark.parametrize("n", POW2)
def test_walsh_dyadic_is_bit_reversed_natural(n):
    m = lbpcore.walsh_matrix(n, ordering="dyadic")
    nat = scipy.linalg.hadamard(n)
    bits = n.bit_length() - 1
    expected = nat[[bit_reverse(s, bits) for s in range(n)]]
    np.testing.assert_array_equal(m, expected)


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("n", POW2)
def test_walsh_symmetric_and_orthogonal(n, ordering):
    m = np.asarray(lbpcore.walsh_matrix(n, ordering=ordering))
    np.testing.assert_array_equal(m, m.T)
    np.testing.assert_array_equal(m @ m.T, n * np.eye(n))
    assert set(np.unique(m).tolist()) <= {-1.0, 1.0}


def test_walsh_sequency_small_explicit():
    # Written out by hand: rows of H_4 by sign changes 0, 1, 2, 3.
    expected = np.array([[1, 1, 1, 1], [1, 1, -1, -1], [1, -1, -1, 1], [1, -1, 1, -1]])
    np.testing.assert_array_equal(lbpcore.walsh_matrix(4), expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_walsh_matrix_dtype(dtype):
    m = lbpcore.walsh_matrix(8, dtype=dtype)
    assert m.dtype == dtype
    assert lbpcore.walsh_matrix(8).dtype == np.float64


def test_walsh_matrix_returns_fresh_writable_copy():
    m = lbpcore.walsh_matrix(4)
    m[0, 0] = 99.0  # must not poison a cache
    assert lbpcore.walsh_matrix(4)[0, 0] == 1.0


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_sequency_permutation_maps_to_natural_rows(n, ordering):
    perm = lbpcore.sequency_permutation(n, ordering)
    np.testing.assert_array_equal(
        lbpcore.walsh_matrix(n, ordering=ordering), scipy.linalg.hadamard(n)[perm]
    )
    assert sorted(perm.tolist()) == list(range(n))


# --------------------------------------------------------------------------
# fwht against the dense oracle
# --------------------------------------------------------------------------


@given(arrays_with_axis(), orderings, norms)
def test_fwht_matches_dense_oracle(xa, ordering, norm):
    x, axis = xa
    y = lbpcore.fwht(x, axis=axis, ordering=ordering, norm=norm)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert_allclose_dtype(y, fwht_oracle(x, axis, ordering, norm), dtype=x.dtype, scale=10 * math.sqrt(x.shape[axis]))


@given(arrays_with_axis(), orderings, norms)
def test_ifwht_matches_dense_oracle(xa, ordering, norm):
    x, axis = xa
    y = lbpcore.ifwht(x, axis=axis, ordering=ordering, norm=norm)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert_allclose_dtype(
        y, fwht_oracle(x, axis, ordering, norm, inverse=True), dtype=x.dtype, scale=10 * math.sqrt(x.shape[axis])
    )


@pytest.mark.parametrize("n", [128, 256, 1024])
def test_fwht_large_lengths_multiblock(n, rng):
    """Lengths above the internal dense-block size (64) use a factored transform."""
    x = rng.standard_normal((2, n))
    for ordering in ORDERINGS:
        y = lbpcore.fwht(x, ordering=ordering)
        m = walsh_oracle(n, ordering).astype(np.float64)
        np.testing.assert_allclose(y, x @ m.T, rtol=1e-12, atol=1e-12 * math.sqrt(n))
        np.testing.assert_allclose(lbpcore.ifwht(y, ordering=ordering), x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.sum(y**2, axis=-1), n * np.sum(x**2, axis=-1), rtol=1e-12)


@pytest.mark.parametrize("n", [2**13, 2**14])
def test_fwht_very_long_natural_columns(n):
    """For a delta at k the natural transform is column k: (-1)^popcount(k & j)."""
    for k in (0, 1, n // 2 + 3, n - 1):
        e = np.zeros(n)
        e[k] = 1.0
        j = np.arange(n)
        expected = np.array([(-1) ** bin(k & int(v)).count("1") for v in j], dtype=float)
        np.testing.assert_array_equal(lbpcore.fwht(e, ordering="natural"), expected)
        seq = lbpcore.fwht(e, ordering="sequency")
        # sequency row k ... as a column: entry s is natural entry at the permuted index
        perm = lbpcore.sequency_permutation(n)
        np.testing.assert_array_equal(seq, expected[perm])


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32])
def test_fwht_natural_agrees_with_sympy(n, rng):
    sympy_transforms = pytest.importorskip("sympy.discrete.transforms")
    for _ in range(3):
        v = rng.integers(-20, 21, size=n)
        expected = np.array([int(t) for t in sympy_transforms.fwht([int(a) for a in v])], dtype=np.float64)
        y = lbpcore.fwht(v, ordering="natural")  # integer input: promoted to float64
        assert y.dtype == np.float64
        np.testing.assert_array_equal(y, expected)
        # and sympy's inverse undoes ours
        back = sympy_transforms.ifwht([int(t) for t in expected])
        np.testing.assert_array_equal(np.array([float(t) for t in back]), v.astype(float))


@given(
    st.integers(0, 5).flatmap(
        lambda m: st.lists(st.integers(-1000, 1000), min_size=2**m, max_size=2**m)
    )
)
@settings(max_examples=20)
def test_fwht_natural_agrees_with_sympy_property(v):
    expected = np.array([int(t) for t in sympy_fwht(v)], dtype=np.float64)
    np.testing.assert_array_equal(lbpcore.fwht(np.array(v, dtype=np.int64), ordering="natural"), expected)


# --------------------------------------------------------------------------
# algebraic properties
# --------------------------------------------------------------------------


@given(arrays_with_axis(), orderings, norms)
def test_ifwht_inverts_fwht(xa, ordering, norm):
    x, axis = xa
    n = x.shape[axis]
    y = lbpcore.fwht(x, axis=axis, ordering=ordering, norm=norm)
    assert_allclose_dtype(lbpcore.ifwht(y, axis=axis, ordering=ordering, norm=norm), x, scale=10 * math.sqrt(n))
    z = lbpcore.ifwht(x, axis=axis, ordering=ordering, norm=norm)
    assert_allclose_dtype(lbpcore.fwht(z, axis=axis, ordering=ordering, norm=norm), x, scale=10 * math.sqrt(n))


@given(arrays_with_axis(), orderings)
def test_ortho_preserves_norm(xa, ordering):
    x, axis = xa
    y = lbpcore.fwht(x, axis=axis, ordering=ordering, norm="ortho")
    x64 = x.astype(np.float64)
    rtol = tol(x.dtype)[0] * 10
    np.testing.assert_allclose(
        np.sum(y.astype(np.float64) ** 2, axis=axis), np.sum(x64**2, axis=axis), rtol=rtol,
        atol=rtol * 100 * x.shape[axis],
    )


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("n", [1, 2, 8, 32, 128])
def test_ortho_matrix_is_orthogonal_and_self_inverse(n, ordering):
    q = lbpcore.fwht(np.eye(n), axis=0, ordering=ordering, norm="ortho")
    np.testing.assert_allclose(q @ q.T, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(q, q.T, atol=0)
    np.testing.assert_allclose(
        lbpcore.ifwht(np.eye(n), axis=0, ordering=ordering, norm="ortho"), q, atol=1e-15
    )


@given(arrays_with_axis(dtypes=(np.float64,)), orderings, norms, st.floats(-3, 3), st.floats(-3, 3))
def test_fwht_is_linear(xa, ordering, norm, a, b):
    x, axis = xa
    y = np.flip(x).copy()
    lhs = lbpcore.fwht(a * x + b * y, axis=axis, ordering=ordering, norm=norm)
    rhs = a * lbpcore.fwht(x, axis=axis, ordering=ordering, norm=norm) + b * lbpcore.fwht(
        y, axis=axis, ordering=ordering, norm=norm
    )
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-11 * x.shape[axis] * 10)


@given(arrays_with_axis(dtypes=(np.float64,)), orderings)
def test_norm_modes_differ_by_the_documented_scale(xa, ordering):
    x, axis = xa
    n = x.shape[axis]
    b = lbpcore.fwht(x, axis=axis, ordering=ordering, norm="backward")
    np.testing.assert_allclose(
        lbpcore.fwht(x, axis=axis, ordering=ordering, norm="forward"), b / n, rtol=1e-14, atol=1e-14
    )
    np.testing.assert_allclose(
        lbpcore.fwht(x, axis=axis, ordering=ordering, norm="ortho"), b / math.sqrt(n), rtol=1e-14, atol=1e-14
    )
    np.testing.assert_allclose(lbpcore.ifwht(x, axis=axis, ordering=ordering), b / n, rtol=1e-14, atol=1e-14)
    assert norm_scale(n, "backward") == 1.0


@given(arrays_2d_axes(), orderings, norms)
def test_fwht2_is_1d_along_each_axis(xa, ordering, norm):
    x, axes = xa
    y = lbpcore.fwht2(x, axes=axes, ordering=ordering, norm=norm)
    assert y.shape == x.shape and y.dtype == x.dtype
    kw = dict(ordering=ordering, norm=norm)
    one_then_other = lbpcore.fwht(lbpcore.fwht(x, axis=axes[0], **kw), axis=axes[1], **kw)
    other_then_one = lbpcore.fwht(lbpcore.fwht(x, axis=axes[1], **kw), axis=axes[0], **kw)
    scale = 10 * math.sqrt(x.shape[axes[0]] * x.shape[axes[1]])
    assert_allclose_dtype(y, one_then_other, dtype=x.dtype, scale=scale)
    assert_allclose_dtype(y, other_then_one, dtype=x.dtype, scale=scale)
    oracle = fwht_oracle(fwht_oracle(x, axes[0], ordering, norm), axes[1], ordering, norm)
    assert_allclose_dtype(y, oracle, dtype=x.dtype, scale=scale)


@given(arrays_2d_axes(), orderings, norms)
def test_ifwht2_inverts_fwht2(xa, ordering, norm):
    x, axes = xa
    y = lbpcore.fwht2(x, axes=axes, ordering=ordering, norm=norm)
    scale = 10 * math.sqrt(x.shape[axes[0]] * x.shape[axes[1]])
    assert_allclose_dtype(lbpcore.ifwht2(y, axes=axes, ordering=ordering, norm=norm), x, scale=scale)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_fwht2_block_is_M_Z_MT(n, rng):
    z = rng.standard_normal((n, n))
    m = walsh_oracle(n, "sequency").astype(float)
    np.testing.assert_allclose(lbpcore.fwht2(z), m @ z @ m.T, rtol=1e-12, atol=1e-12 * n)
    # coefficient (i, j) is <outer(w_i, w_j), Z>
    i, j = n // 2, n - 1
    np.testing.assert_allclose(lbpcore.fwht2(z)[i, j], np.sum(np.outer(m[i], m[j]) * z), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# dtypes, layouts, special values
# --------------------------------------------------------------------------


@pytest.mark.parametrize("func", [lbpcore.fwht, lbpcore.ifwht, lbpcore.fwht2, lbpcore.ifwht2])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_transform_keeps_float_dtype(func, dtype, rng):
    x = rng.standard_normal((4, 8)).astype(dtype)
    assert func(x).dtype == dtype


@pytest.mark.parametrize("func", [lbpcore.fwht, lbpcore.ifwht, lbpcore.fwht2, lbpcore.ifwht2])
@pytest.mark.parametrize("int_dtype", [np.int8, np.int32, np.int64, np.uint16])
def test_integer_input_promotes_to_float64(func, int_dtype):
    x = np.arange(16, dtype=int_dtype).reshape(4, 4)
    y = func(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, func(x.astype(np.float64)), rtol=0, atol=0)


def test_fwht_does_not_modify_input_and_accepts_strided_views(rng):
    base = rng.standard_normal((6, 16))
    view = base[::2, ::2]  # (3, 8), non-contiguous
    keep = base.copy()
    y = lbpcore.fwht(view)
    np.testing.assert_array_equal(base, keep)
    np.testing.assert_allclose(y, fwht_oracle(np.ascontiguousarray(view)), rtol=1e-12, atol=1e-12)
    yt = lbpcore.fwht(view.T, axis=0)  # Fortran-ordered view
    np.testing.assert_allclose(yt, fwht_oracle(view.T, 0), rtol=1e-12, atol=1e-12)


def test_fwht_length_one_is_identity_up_to_scale():
    x = np.array([[3.0], [-2.0]])
    for norm in NORMS:
        np.testing.assert_array_equal(lbpcore.fwht(x, norm=norm), x)
        np.testing.assert_array_equal(lbpcore.ifwht(x, norm=norm), x)


@pytest.mark.parametrize("func", [lbpcore.fwht, lbpcore.ifwht])
def test_nan_and_inf_propagate_to_every_output(func):
    x = np.arange(8.0)
    x[3] = np.nan
    assert np.all(np.isnan(func(x)))
    x = np.arange(8.0)
    x[5] = np.inf
    y = func(x)
    assert np.all(np.isinf(y))  # +-inf with finite others: never NaN, never finite


def test_fwht_docstring_examples():
    np.testing.assert_array_equal(lbpcore.fwht(np.array([1.0, 0.0, 0.0, 0.0])), [1, 1, 1, 1])
    np.testing.assert_array_equal(lbpcore.fwht(np.array([1.0, 2.0, 3.0, 4.0]), ordering="natural"), [10, -2, -4, 0])
    np.testing.assert_array_equal(lbpcore.fwht2(np.ones((2, 2))), [[4, 0], [0, 0]])
