"""The factored NumPy transform (``lbpcore._wht._passes``): every pass plan against the oracles.

Lengths 128 .. 65536 cover every digit split of blocks 4 .. 16 (``split_blocks(n, 16)``),
the row chunks of several rows, of one row and the shorter last chunk, in all three
orderings (the sequency order's sign between digits, the dyadic order without it).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from oracles import ORDERINGS, fwht_butterfly_oracle, fwht_oracle, natural_index, walsh_oracle
from tolerances import FLOAT_DTYPES, assert_allclose_dtype

import lbpcore
from lbpcore import _blas
from lbpcore._blas import MNK_SINGLE
from lbpcore._wht._passes import BLOCK, DST, SRC, row_plan
from lbpcore._wht._walsh import split_blocks

LENGTHS = [2**m for m in range(7, 17)]


@pytest.mark.parametrize("n", [1, 2, 4, 64, 256])
def test_butterfly_oracle_matches_the_dense_oracle(n, rng):
    x = rng.standard_normal((3, n))
    for ordering in ORDERINGS:
        np.testing.assert_allclose(fwht_butterfly_oracle(x, ordering), fwht_oracle(x, -1, ordering), atol=1e-9)
    bits = n.bit_length() - 1
    for ordering in ORDERINGS:
        rows = [natural_index(s, bits, ordering) for s in range(n)]
        np.testing.assert_array_equal(walsh_oracle(n, ordering), walsh_oracle(n, "natural")[rows])


def _run_chunk(passes, src, dst, rc, n):
    """Run a plan on one chunk the plain way, checking that no view copies and no product threads."""
    bufs = {SRC: src, 1: np.empty(rc * n, src.dtype), 2: np.empty(rc * n, src.dtype), DST: dst}
    for p in passes:
        xv = bufs[p.src].reshape(p.in_shape).transpose(p.in_perm)
        ov = bufs[p.dst].reshape(p.out_shape).transpose(p.out_perm)
        assert np.shares_memory(xv, bufs[p.src]) and np.shares_memory(ov, bufs[p.dst])
        assert xv.shape[-1] * xv.shape[-2] * p.op.shape[-1] < MNK_SINGLE  # below OpenBLAS' threading threshold
        if p.right:
            np.matmul(xv, p.op, out=ov)
        else:
            np.matmul(p.op, xv, out=ov)


def _apply(passes, x, rc):
    out = np.empty_like(x)
    for a in range(0, x.shape[0], rc):
        _run_chunk(passes, x[a : a + rc], out[a : a + rc], rc, x.shape[1])
    return out


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("ordering", ORDERINGS)
def test_row_plans_match_the_oracle(n, ordering, rng):
    for rc in sorted({1, 2, max(1, 8192 // n)}):
        if rc * n > 1 << 16:
            continue
        x = rng.standard_normal((rc, n))
        passes = row_plan(n, ordering, 1.0, np.dtype(np.float64), rc)
        assert len(passes) == len(split_blocks(n, BLOCK))
        assert_allclose_dtype(_apply(passes, x, rc), fwht_butterfly_oracle(x, ordering), scale=math.sqrt(n) * 4)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [128, 1024, 4096, 65536])
def test_fwht_rows_chunks_and_in_place(n, dtype, rng):
    """Several chunks, a shorter last one, ``out=`` the input, every norm's scale."""
    rows = max(3, (1 << 16) // n + 3)
    x = rng.standard_normal((rows, n)).astype(dtype)
    for ordering in ORDERINGS:
        want = fwht_butterfly_oracle(x, ordering, scale=1 / math.sqrt(n))
        y = lbpcore.fwht(x, ordering=ordering, norm="ortho")
        assert_allclose_dtype(y, want, dtype=dtype, scale=4)
        z = x.copy()
        assert lbpcore.fwht(z, ordering=ordering, norm="ortho", out=z) is z
        np.testing.assert_array_equal(z, y)
        back = lbpcore.ifwht(y, ordering=ordering, norm="ortho")
        assert_allclose_dtype(back, x, dtype=dtype, scale=4)


CHUNKS = [(n, rc) for n in (128, 1024, 4096, 65536) for rc in (1, 2, 4, 32) if rc * n <= 1 << 17]


@pytest.mark.parametrize(("n", "rc"), CHUNKS)
def test_row_plans_with_reversed_rows(n, rc, rng):
    """``kind="parity"``/``"odd"``: the sequency transform of odd rows / every row reversed."""
    x = rng.standard_normal((rc, n))
    for kind in ("parity", "odd"):
        if kind == "parity" and rc % 2:
            continue
        out = np.empty_like(x)
        _run_chunk(row_plan(n, "sequency", 1.0, np.dtype(np.float64), rc, kind), x, out, rc, n)
        rev = x.copy()
        if kind == "parity":
            rev[1::2] = rev[1::2, ::-1]
        else:
            rev = rev[:, ::-1]
        assert_allclose_dtype(out, fwht_butterfly_oracle(rev, "sequency"), scale=math.sqrt(n) * 4)


@pytest.mark.parametrize("n", [4, 64, 256, 2048])
@pytest.mark.parametrize("ordering", ORDERINGS)
def test_column_plans_read_strided_blocks(n, ordering, rng):
    """``kind="cols"``: an ``(n, w)`` block of a wider array, in place (natural) or transposed."""
    w = 8
    big = rng.standard_normal((n, 3 * w))
    passes = row_plan(n, ordering, 0.5, np.dtype(np.float64), w, "cols")
    want = fwht_butterfly_oracle(big[:, w : 2 * w].T, ordering, scale=0.5)
    if ordering == "natural":
        got = big.copy()
        _run_chunk(passes, got[:, w : 2 * w], got[:, w : 2 * w], w, n)
        others = np.s_[:, np.r_[0:w, 2 * w : 3 * w]]
        np.testing.assert_array_equal(got[others], big[others])
        got = got[:, w : 2 * w].T
    else:
        got = np.empty((w, n))
        _run_chunk(passes, big[:, w : 2 * w], got, w, n)
    assert_allclose_dtype(got, want, scale=math.sqrt(n) * 4)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(1 << 17,), (2, 1 << 17), (1 << 20,)])
def test_fwht_long_rows_two_steps(shape, dtype, rng):
    """Rows longer than one chunk: rows of ``b`` then columns of ``a``, the sequency sign between them."""
    x = rng.standard_normal(shape).astype(dtype)
    n = shape[-1]
    for ordering in ORDERINGS:
        y = lbpcore.fwht(x, ordering=ordering, norm="ortho")
        assert_allclose_dtype(y, fwht_butterfly_oracle(x, ordering, scale=1 / math.sqrt(n)), dtype=dtype, scale=4)
        z = x.copy()
        lbpcore.fwht(z, ordering=ordering, norm="ortho", out=z)
        np.testing.assert_array_equal(z, y)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_parallel_dynamic_takes_every_item_once(workers, monkeypatch):
    monkeypatch.setattr(_blas, "_workers", lambda: workers)
    seen = []

    def work(items):
        for c in items:
            seen.append(c)

    _blas.parallel_dynamic(work, 37, 1 << 30, 1)
    assert sorted(seen) == list(range(37))
    seen.clear()
    _blas.parallel_dynamic(work, 37, 10, 1 << 20)  # small: the calling thread only
    assert seen == list(range(37))

    def fail(items):
        for _ in items:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _blas.parallel_dynamic(fail, 5, 1 << 30, 1)
