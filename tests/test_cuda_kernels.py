"""The CUDA kernels of ``lbpcore._wht._cuda`` and ``lbpcore._patches._cuda`` on a device, against NumPy.

Skipped cleanly without CuPy or a CUDA device (the ``cupy_backend`` fixture
skips).  ``tests/test_cuda_kernels_host.py`` runs the same kernels on the CPU.
Each patch selection compiles a few small modules (one per dtype, layout and
channel width), so the cases below keep the number of distinct kernels low.
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import assert_allclose_dtype

import lbpcore
from lbpcore._patches import _cuda as _cuda_patches
from lbpcore._wht import _cuda as _cuda_wht

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]
ORDERINGS = ["natural", "sequency", "dyadic"]

#: (n, selection): low-pass and not low-pass, every supported patch size
SELECTIONS = [
    (1, "lp_l1:1"),
    (2, "lp_linf:2"),
    (4, [(0, 0), (1, 2), (3, 0), (2, 3)]),
    (8, "lp_l1:6"),
    (8, [(7, 7), (0, 5), (3, 1)]),
    (16, "lp_l1:3"),
    (16, [(15, 0), (0, 15), (9, 8), (4, 12)]),
]
GRIDS = [(7, 9), (14, 14), (3, 5), (1, 1)]


def _cases(n):
    """(grid, pad) pairs: every padding each grid allows, plus a divisible grid for pad="none"."""
    out = []
    for grid in GRIDS + [(n, 2 * n)]:
        for pad in ("reflect", "zero", "none"):
            try:
                lbpcore.make_plan(grid, n, "lp_l1:1", pad)
            except ValueError:
                continue
            out.append((grid, pad))
    return out


def _check(cp, n, bases, grid, pad, dtype, layout, e, c, rng, vec=None):
    basis = lbpcore.select_bases(n, bases)
    idx = basis.indices
    h, w = grid
    kw = dict(grid=grid, patch=n, bases=basis, pad=pad, layout=layout)
    x = rng.standard_normal((2, e + h * w, c) if layout == "tokens" else (2, c, h, w)).astype(dtype)
    xd = cp.asarray(x)
    ref = lbpcore.project(x, extra_tokens=e, **kw)
    if layout == "nchw":
        ref = ref.transpose(0, 2, 3, 1)
    ref = ref.reshape(2, -1, c)
    msg = f"n={n} {bases} grid={grid} pad={pad} {layout} e={e} C={c} {np.dtype(dtype).name} vec={vec}"
    for keep in (False, True):
        got = _cuda_patches.project(xd, grid, n, pad, idx, extra_tokens=e, scale=0.5, layout=layout,
                                    keep_extra=keep, _vec=vec)
        assert isinstance(got, cp.ndarray) and got.dtype == dtype, msg
        eo = e if keep else 0
        assert got.shape == (2, eo + ref.shape[1], c), msg
        g = got.get()
        assert_allclose_dtype(g[:, eo:], 0.5 * ref, dtype, err_msg=msg)
        if eo:
            np.testing.assert_array_equal(g[:, :eo], x[:, :eo])
    np.testing.assert_array_equal(xd.get(), x)  # input untouched
    coef = rng.standard_normal((2, e + ref.shape[1], c)).astype(dtype)
    cd = cp.asarray(coef)
    rec = _cuda_patches.reconstruct(cd, grid, n, pad, idx, extra_tokens=e, scale=1.0 / (n * n), layout=layout,
                                    _vec=vec).get()
    c4 = coef[:, e:].reshape(2, -1, len(idx), c)
    want = lbpcore.reconstruct(c4 if layout == "tokens" else c4.transpose(0, 3, 1, 2), **kw)
    if layout == "tokens":
        np.testing.assert_array_equal(rec[:, :e], coef[:, :e])
        rec = rec[:, e:]
    assert rec.shape == want.shape, msg
    assert_allclose_dtype(rec, want, dtype, err_msg="reconstruct " + msg)
    np.testing.assert_array_equal(cd.get(), coef)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "bases"), SELECTIONS, ids=[f"{n}-{b}" for n, b in SELECTIONS])
def test_patch_kernels(cupy_backend, n, bases, dtype):
    cp = cupy_backend.xp
    rng = np.random.default_rng(n)
    for k, (grid, pad) in enumerate(_cases(n)):
        e = (0, 1, 3)[k % 3]
        _check(cp, n, bases, grid, pad, dtype, "tokens", e, 6, rng)
        _check(cp, n, bases, grid, pad, dtype, "nchw", 0, 3, rng)


@pytest.mark.parametrize("vec", [1, 4])
def test_patch_kernels_vector_widths(cupy_backend, vec):
    cp = cupy_backend.xp
    rng = np.random.default_rng(vec)
    for grid, pad in (((14, 14), "reflect"), ((16, 16), "none"), ((7, 9), "zero")):
        _check(cp, 8, "lp_l1:6", grid, pad, np.float32, "tokens", 1, 8, rng, vec)


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
