"""Hostile but realistic arguments: a right answer or a clear error naming the argument, never a silent wrong answer.

Classes covered (issue 13, item 1): ``None`` and NumPy's special arrays
(``np.matrix``, masked arrays, memory maps, big-endian data), the dtypes of
:func:`lbpcore.walsh_matrix`, basis sets built with the public constructor
(property test against :meth:`~lbpcore.BasisSet.from_indices`), and sizes that
cannot fit in memory (refused before anything is allocated).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lbpcore
from lbpcore import _validation

RNG = np.random.default_rng(13)
X = RNG.standard_normal((2, 64, 3))
W = RNG.standard_normal((4, 3))
GY = RNG.standard_normal((2, 64, 4))
B = RNG.standard_normal(4)
KW = {"grid": (8, 8), "patch": 4, "bases": "lp_l1:2"}

# --------------------------------------------------------------------------
# None for an array: a TypeError naming the argument
# --------------------------------------------------------------------------

NONE_CALLS = {
    "fwht x": (lambda: lbpcore.fwht(None), "x"),
    "ifwht x": (lambda: lbpcore.ifwht(None), "x"),
    "fwht2 x": (lambda: lbpcore.fwht2(None), "x"),
    "ifwht2 x": (lambda: lbpcore.ifwht2(None), "x"),
    "project x": (lambda: lbpcore.project(None, **KW), "x"),
    "apply_projector x": (lambda: lbpcore.apply_projector(None, **KW), "x"),
    "reconstruct coef": (lambda: lbpcore.reconstruct(None, **KW), "coef"),
    "linear x": (lambda: lbpcore.linear(None, W), "x"),
    "linear weight": (lambda: lbpcore.linear(X, None), "weight"),
    "dense x": (lambda: lbpcore.dense_backward(None, W, GY), "x"),
    "dense weight": (lambda: lbpcore.dense_backward(X, None, GY), "weight"),
    "dense grad_y": (lambda: lbpcore.dense_backward(X, W, None), "grad_y"),
    "lbp x": (lambda: lbpcore.lbp_backward(None, W, GY, **KW), "x"),
    "lbp weight": (lambda: lbpcore.lbp_backward(X, None, GY, **KW), "weight"),
    "lbp grad_y": (lambda: lbpcore.lbp_backward(X, W, None, **KW), "grad_y"),
    "layer weight": (lambda: lbpcore.LBPLinear(None, **KW), "weight"),
    "layer forward": (lambda: lbpcore.LBPLinear(W, **KW).forward(None), "x"),
    "calibration": (lambda: lbpcore.select_bases(4, "energy_l2:2", calibration=np.array(None)), "calibration"),
}


@pytest.mark.parametrize("case", list(NONE_CALLS))
def test_none_for_an_array_is_a_type_error_naming_it(case):
    call, name = NONE_CALLS[case]
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        call()


def test_none_grad_y_in_layer_backward():
    layer = lbpcore.LBPLinear(W, **KW)
    layer.forward(X)
    with pytest.raises(TypeError, match=r"\bgrad_y\b"):
        layer.backward(None)


# --------------------------------------------------------------------------
# NumPy's special arrays: plain results, or a clear refusal
# --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_inputs_give_plain_arrays_of_the_right_shapes():
    x2, gy2 = X[0, :, :], GY[0, :, :]  # (L, C): 2-D, as np.matrix must be
    got = lbpcore.dense_backward(np.matrix(x2), np.matrix(W), np.matrix(gy2), bias=np.matrix(B).A1)
    want = lbpcore.dense_backward(x2, W, gy2, bias=B)
    for g, w in zip(got, want, strict=True):
        assert type(g) is np.ndarray and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
    assert got.grad_bias.shape == (4,)  # was a (1, C_out) matrix
    assert type(lbpcore.linear(np.matrix(x2), np.matrix(W))) is np.ndarray
    assert type(lbpcore.fwht(np.matrix(np.ones((2, 4))))) is np.ndarray
    assert type(lbpcore.fwht2(np.matrix(np.ones((4, 4))))) is np.ndarray


@pytest.mark.parametrize("arg", ["x", "weight", "grad_y"])
def test_masked_arrays_are_refused_naming_the_argument(arg):
    arrays = {"x": X, "weight": W, "grad_y": GY}
    arrays[arg] = np.ma.masked_array(arrays[arg], mask=np.zeros(arrays[arg].shape, dtype=bool))
    with pytest.raises(TypeError, match=rf"\b{arg}\b.*masked"):
        lbpcore.lbp_backward(arrays["x"], arrays["weight"], arrays["grad_y"], **KW)
    with pytest.raises(TypeError, match=rf"\b{arg}\b.*masked"):
        lbpcore.dense_backward(arrays["x"], arrays["weight"], arrays["grad_y"])


def test_masked_transform_input_is_refused():
    with pytest.raises(TypeError, match=r"\bx\b.*masked"):
        lbpcore.fwht(np.ma.masked_array(np.ones(4), mask=[1, 0, 0, 0]))


def test_memmap_inputs_give_plain_arrays(tmp_path):
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64, shape=X.shape)
    mm[...] = X
    got = lbpcore.lbp_backward(mm, W, GY, **KW)
    want = lbpcore.lbp_backward(X, W, GY, **KW)
    assert type(got.grad_x) is np.ndarray
    np.testing.assert_array_equal(got.grad_x, want.grad_x)
    assert type(lbpcore.fwht(mm, axis=1)) is np.ndarray


@pytest.mark.parametrize("order", ["big x", "big weight", "big all", "big float32"])
def test_non_native_byte_order_is_normalized(order):
    dt = np.dtype(np.float64).newbyteorder(">" if np.little_endian else "<")
    x, w, gy = X, W, GY
    if order == "big float32":
        dt = np.dtype(np.float32).newbyteorder(">" if np.little_endian else "<")
        x, w, gy = (a.astype(np.float32) for a in (X, W, GY))
    if order in ("big x", "big all", "big float32"):
        x = x.astype(dt)
    if order in ("big weight", "big all", "big float32"):
        w = w.astype(dt)
    if order in ("big all", "big float32"):
        gy = gy.astype(dt)
    got = lbpcore.lbp_backward(x, w, gy, **KW)
    want = lbpcore.lbp_backward(*(np.asarray(a, dtype=a.dtype.newbyteorder("=")) for a in (x, w, gy)), **KW)
    assert got.grad_x.dtype.isnative and got.grad_x.dtype == want.grad_x.dtype
    np.testing.assert_array_equal(got.grad_weight, want.grad_weight)
    y = lbpcore.fwht(x, axis=1)
    assert y.dtype.isnative
    np.testing.assert_array_equal(y, lbpcore.fwht(np.asarray(x, dtype=x.dtype.newbyteorder("=")), axis=1))


# --------------------------------------------------------------------------
# walsh_matrix: dtypes that hold -1 and 1
# --------------------------------------------------------------------------

GOOD_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, "float32", "i2", "f8"]
BAD_DTYPES = [bool, np.bool_, np.uint8, np.uint16, np.uint32, np.uint64, "u1", np.complex64, np.complex128,
              object, "U4", "S2", "datetime64[s]", "not a dtype"]


@pytest.mark.parametrize("dtype", GOOD_DTYPES)
@pytest.mark.parametrize("ordering", ["sequency", "natural", "dyadic"])
def test_walsh_matrix_signed_and_floating_dtypes(dtype, ordering):
    m = lbpcore.walsh_matrix(8, ordering=ordering, dtype=dtype)
    assert m.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(m.astype(np.float64), lbpcore.walsh_matrix(8, ordering=ordering))
    assert set(np.unique(m).tolist()) == {-1, 1}


@pytest.mark.parametrize("dtype", BAD_DTYPES)
def test_walsh_matrix_refuses_dtypes_that_cannot_hold_minus_one(dtype):
    with pytest.raises(TypeError, match=r"\bdtype\b"):
        lbpcore.walsh_matrix(4, dtype=dtype)


def test_walsh_matrix_dtypes_of_another_namespace():
    xps = pytest.importorskip("array_api_strict")
    assert lbpcore.walsh_matrix(4, dtype=xps.int8, xp=xps).dtype == xps.int8
    for bad in (xps.uint8, xps.bool, xps.complex64):
        with pytest.raises(TypeError, match=r"\bdtype\b"):
            lbpcore.walsh_matrix(4, dtype=bad, xp=xps)


# --------------------------------------------------------------------------
# BasisSet: the public constructor checks like from_indices
# --------------------------------------------------------------------------


def _outcome(make):
    try:
        return ("ok", make())
    except (ValueError, TypeError) as exc:
        return (type(exc).__name__, str(exc))


@given(
    n=st.sampled_from([1, 2, 3, 4, 6, 8, 0, -4]),
    pairs=st.lists(st.tuples(st.integers(-3, 10), st.integers(-3, 10)), max_size=6),
)
def test_constructor_agrees_with_from_indices(n, pairs):
    """Random (often invalid) pair tuples: the constructor and from_indices accept and refuse the same sets."""
    ctor = _outcome(lambda: lbpcore.BasisSet(n, tuple(pairs)))
    built = _outcome(lambda: lbpcore.BasisSet.from_indices(n, pairs))
    assert ctor[0] == built[0], (ctor, built)
    if ctor[0] == "ok":
        assert ctor[1] == built[1]
        assert ctor[1].rank == len(pairs) == len(set(pairs))
        assert all(0 <= v < n for p in pairs for v in p)
    else:
        valid_n = n >= 1 and n & (n - 1) == 0
        assert (not valid_n) or not pairs or len(set(pairs)) < len(pairs) or any(
            not 0 <= v < n for p in pairs for v in p)


@pytest.mark.parametrize(
    "pairs,pattern",
    [
        (((0, 0), (0, 0)), r"\(0, 0\).*more than once"),
        (((-1, 0),), r"\(-1, 0\).*out of range"),
        (((9, 9),), r"\(9, 9\).*out of range"),
        ((), r"non-empty"),
        (((0.5, 1),), r"integers"),
        (((np.nan, 1),), r"integers"),
        (((np.inf, 1),), r"out of range"),
        (((2**70, 0),), r"integers"),  # beyond int64: NumPy makes it an object array
        (np.array([[2**64 - 1, 0]], dtype=np.uint64), r"out of range"),
        ((("a", 0),), r"integers"),
        (((0, 0, 0),), r"\(r, 2\)"),
    ],
)
def test_constructor_refuses_bad_pairs(pairs, pattern):
    with pytest.raises(ValueError, match=pattern):
        lbpcore.BasisSet(8, pairs)


def test_constructor_checks_patch_and_label():
    with pytest.raises(ValueError, match=r"\bpatch\b.*power of two"):
        lbpcore.BasisSet(6, ((0, 0),))
    with pytest.raises(TypeError, match=r"\bpatch\b"):
        lbpcore.BasisSet(8.0, ((0, 0),))
    with pytest.raises(TypeError, match=r"\bspec\b"):
        lbpcore.BasisSet(8, ((0, 0),), None)
    b = lbpcore.BasisSet(np.int64(8), ((1, 0), (0, 0)))
    assert type(b.patch) is int and b == lbpcore.BasisSet.from_indices(8, [(0, 0), (1, 0)])


def test_duplicated_pairs_no_longer_double_the_gradient():
    """The silent wrong answer of the issue: a repeated pair doubled grad_weight; now it is refused."""
    with pytest.raises(ValueError, match=r"more than once"):
        lbpcore.lbp_backward(X, W, GY, grid=(8, 8), patch=8, bases=lbpcore.BasisSet(8, ((0, 0), (0, 0))))


# --------------------------------------------------------------------------
# sizes the machine cannot hold: a ValueError naming the argument, before allocating
# --------------------------------------------------------------------------

HUGE = {
    "select_bases 2**20": (lambda: lbpcore.select_bases(2**20, "lp_l1:2"), r"\bn=1048576\b"),
    "select_bases energy 2**20": (lambda: lbpcore.select_bases(2**20, "energy_l2:2", calibration=np.ones((1, 1))),
                                  r"\bn=1048576\b"),
    "make_plan 2**40": (lambda: lbpcore.make_plan((8, 8), 2**40, "lp_l1:2", pad="zero"), r"\bpatch=1099511627776\b"),
    "walsh_matrix 2**20": (lambda: lbpcore.walsh_matrix(2**20), r"\bn=1048576\b"),
    "walsh_matrix 2**62": (lambda: lbpcore.walsh_matrix(2**62), r"\bn=4611686018427387904\b"),
    "BasisSet 2**20": (lambda: lbpcore.BasisSet(2**20, ((0, 0),)), r"\bpatch=1048576\b"),
    "from_indices 2**30": (lambda: lbpcore.BasisSet.from_indices(2**30, [(0, 0)]), r"\bn=1073741824\b"),
    "sequency_permutation 2**60": (lambda: lbpcore.sequency_permutation(2**60), r"\bn=1152921504606846976\b"),
    "project patch 2**20": (lambda: lbpcore.project(X, grid=(8, 8), patch=2**20, pad="zero"), r"\bpatch=1048576\b"),
    "lbp patch 2**24": (lambda: lbpcore.lbp_backward(X, W, GY, grid=(8, 8), patch=2**24, pad="zero"),
                        r"\bpatch=16777216\b"),
    "cost patch 2**30": (lambda: lbpcore.backward_cost((2, 64, 3), 4, grid=(8, 8), patch=2**30, pad="zero"),
                         r"\bpatch=1073741824\b"),
}


@pytest.mark.parametrize("case", list(HUGE))
def test_impossible_sizes_are_value_errors_before_allocating(case):
    call, pattern = HUGE[case]
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=pattern) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "memory" in str(info.value)
    assert peak < 1 << 24  # nothing of the impossible size was allocated


def test_coefficients_beyond_memory_are_refused_naming_x(monkeypatch):
    """A patch that fits, but coefficients that do not: refused before the kernels allocate them."""
    monkeypatch.setattr(_validation, "memory_limit", lambda: 1 << 20)  # a 1 MiB machine
    x = np.ones((8, 64, 8))  # 32 KiB of data; the full basis of patch 64 on one padded patch: 8*4096*8*8 = 2 MiB
    with pytest.raises(ValueError, match=r"^x: .*coefficients.*more than the 1\.0 MiB"):
        lbpcore.project(x, grid=(8, 8), patch=64, bases="lp_linf:64", pad="zero")
    with pytest.raises(ValueError, match=r"^x: "):
        lbpcore.lbp_backward(x, np.ones((2, 8)), np.ones((8, 64, 2)), grid=(8, 8), patch=64,
                             bases="lp_linf:64", pad="zero")
    assert lbpcore.project(x, grid=(8, 8), patch=8, bases="lp_l1:6").shape == (8, 1, 21, 8)


def test_reconstructed_grid_beyond_memory_is_refused_naming_coef(monkeypatch):
    monkeypatch.setattr(_validation, "memory_limit", lambda: 1 << 20)
    coef = np.ones((1, 64, 1, 1))  # 64 coefficients; the grid they span: 512 x 512 tokens of 8 bytes = 2 MiB
    with pytest.raises(ValueError, match=r"^coef: .*reconstructed"):
        lbpcore.reconstruct(coef, grid=(512, 512), patch=64, bases="lp_l1:1")


def test_memory_limit_is_the_physical_memory():
    assert 1 << 26 < _validation.memory_limit() < 1 << 60


def test_python_sequences_are_converted_by_every_transform():
    """Lists are documented input (as_float_array converts them): the CuPy fast lane must not read .ndim first."""
    for func in (lbpcore.fwht, lbpcore.ifwht):
        np.testing.assert_array_equal(func([1.0, 0.0, 0.0, 0.0]) * (4 if func is lbpcore.ifwht else 1), np.ones(4))
    assert lbpcore.fwht2([[1.0, 0.0], [0.0, 0.0]]).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    with pytest.raises(TypeError, match=r"\bx\b"):
        lbpcore.fwht("abcd")
