"""The CUDA kernels of ``lbpcore._wht._cuda`` and ``lbpcore._patches._cuda`` on a device, against NumPy.

Skipped cleanly without CuPy or a CUDA device (the ``cupy_backend`` fixture
skips).  ``tests/test_cuda_kernels_host.py`` runs the same kernels on the CPU.
Each patch selection compiles a few small modules (one per dtype, layout and
channel width), so the cases below keep the number of distinct kernels low.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_cases import SELECTION_IDS, SELECTIONS, check_patch_kernels, grid_cases
from tolerances import assert_allclose_dtype

import lbpcore
from lbpcore._patches import _cuda as _cuda_patches
from lbpcore._wht import _cuda as _cuda_wht

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]
ORDERINGS = ["natural", "sequency", "dyadic"]

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "bases"), SELECTIONS, ids=SELECTION_IDS)
def test_patch_kernels(cupy_backend, n, bases, dtype):
    cp = cupy_backend.xp
    rng = np.random.default_rng(n)
    for k, (grid, pad) in enumerate(grid_cases(n)):
        e = (0, 1, 3)[k % 3]
        check_patch_kernels(cp.asarray, cp.asnumpy, n, bases, grid, pad, dtype, "tokens", e, 6, rng)
        check_patch_kernels(cp.asarray, cp.asnumpy, n, bases, grid, pad, dtype, "nchw", 0, 3, rng)


@pytest.mark.parametrize("vec", [1, 4])
def test_patch_kernels_vector_widths(cupy_backend, vec):
    cp = cupy_backend.xp
    rng = np.random.default_rng(vec)
    for grid, pad in (((14, 14), "reflect"), ((16, 16), "none"), ((7, 9), "zero")):
        check_patch_kernels(cp.asarray, cp.asnumpy, 8, "lp_l1:6", grid, pad, np.float32, "tokens", 1, 8, rng, vec)


def test_patch_kernels_misaligned_view(cupy_backend):
    cp = cupy_backend.xp
    rng = np.random.default_rng(7)
    idx = lbpcore.select_bases(8, "lp_l1:6").indices
    flat = cp.asarray(rng.standard_normal(1 + 2 * 196 * 8).astype(np.float32))
    x = flat[1:].reshape(2, 196, 8)
    got = _cuda_patches.project(x, (14, 14), 8, "reflect", idx)
    want = lbpcore.project(x.get(), grid=(14, 14), patch=8, bases="lp_l1:6").reshape(2, -1, 8)
    assert_allclose_dtype(got.get(), want, np.float32)
    big = cp.asarray(rng.standard_normal((3, 196, 770)).astype(np.float32))  # C not a multiple of 4
    got = _cuda_patches.project(big, (14, 14), 8, "reflect", idx)
    want = lbpcore.project(big.get(), grid=(14, 14), patch=8, bases="lp_l1:6").reshape(3, -1, 770)
    assert_allclose_dtype(got.get(), want, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wht_rows(cupy_backend, dtype):
    cp = cupy_backend.xp
    rng = np.random.default_rng(0)
    for logn in range(1, 13):
        n = 1 << logn
        x = rng.standard_normal((3 if n >= 1024 else 5 + 4096 // n, n)).astype(dtype)
        xd = cp.asarray(x)
        for ordering, norm in zip(ORDERINGS, ("backward", "ortho", "forward"), strict=True):
            scale = {"backward": 1.0, "ortho": 1.0 / np.sqrt(n), "forward": 1.0 / n}[norm]
            got = _cuda_wht.fwht_rows(xd, n, ordering, scale)
            want = lbpcore.fwht(x, ordering=ordering, norm=norm)
            assert_allclose_dtype(got.get(), want, dtype, err_msg=f"n={n} {ordering} {norm}")
        perm = rng.permutation(n)
        got = _cuda_wht.fwht_rows(xd, n, cp.asarray(perm), 1.0)
        assert_allclose_dtype(got.get(), lbpcore.fwht(x, ordering="natural")[:, perm], dtype)
        np.testing.assert_array_equal(xd.get(), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wht_long(cupy_backend, dtype):
    cp = cupy_backend.xp
    rng = np.random.default_rng(1)
    for logn, rows in ((13, 1), (14, 3), (16, 1), (19, 2), (22, 1)):
        n = 1 << logn
        x = rng.standard_normal((rows, n)).astype(dtype)
        xd = cp.asarray(x)
        for ordering in ORDERINGS:
            got = _cuda_wht.fwht_long(xd, n, ordering, 1.0 / np.sqrt(n))
            want = lbpcore.fwht(x, ordering=ordering, norm="ortho")
            assert_allclose_dtype(got.get(), want, dtype, err_msg=f"n=2**{logn} {ordering}")
        np.testing.assert_array_equal(xd.get(), x)
    x = rng.standard_normal((2, 1 << 12)).astype(dtype)
    for ordering in ORDERINGS:  # recursion (rows longer than (2**_max_log)**2)
        got = _cuda_wht.fwht_long(cp.asarray(x), 1 << 12, ordering, 1.0, _max_log=3)
        assert_allclose_dtype(got.get(), lbpcore.fwht(x, ordering=ordering), dtype)
