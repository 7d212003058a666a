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


def _apply(passes, x, rc):
    """Run a plan chunk by chunk the plain way, checking that no view copies."""
    n = x.shape[1]
    out = np.empty_like(x)
    s1 = np.empty(rc * n, x.dtype)
    s2 = np.empty(rc * n, x.dtype)
    for a in range(0, x.shape[0], rc):
        bufs = {SRC: x[a : a + rc], 1: s1, 2: s2, DST: out[a : a + rc]}
        for p in passes:
            xv = bufs[p.src].reshape(p.in_shape).transpose(p.in_perm)
            ov = bufs[p.dst].reshape(p.out_shape).transpose(p.out_perm)
            assert np.shares_memory(xv, bufs[p.src]) and np.shares_memory(ov, bufs[p.dst])
            # every product stays below OpenBLAS' threading threshold
            d = p.op.shape[-1]
            assert xv.shape[-1] * xv.shape[-2] * d < MNK_SINGLE
            if p.right:
                np.matmul(xv, p.op, out=ov)
            else:
                np.matmul(p.op, xv, out=ov)
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
