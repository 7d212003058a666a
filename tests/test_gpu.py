"""CuPy-only checks: the main functions on a CUDA device against NumPy, float32 and float64.

Skipped cleanly without CuPy or a CUDA device (the ``cupy_backend`` fixture skips).
"""

from __future__ import annotations

import numpy as np
import pytest
from oracles import lbp_backward_oracle, lp_l1_oracle
from tolerances import FLOAT_DTYPES as DTYPES
from tolerances import assert_allclose_dtype

import lbpcore
import lbpcore.testing as lt
from lbpcore._wht import _cuda

pytestmark = pytest.mark.gpu


def _check(be, got, want, like, dtype):
    cp = be.xp
    assert isinstance(got, cp.ndarray), type(got)
    assert got.device == like.device
    assert got.dtype == dtype
    assert_allclose_dtype(cp.asnumpy(got), want, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 8, 64, 256, 4096])
def test_gpu_fwht(cupy_backend, dtype, n):
    cp = cupy_backend.xp
    x = np.random.default_rng(n).standard_normal((3, n)).astype(dtype)
    xd = cp.asarray(x)
    for ordering in ("natural", "sequency", "dyadic"):
        for norm in ("backward", "ortho", "forward"):
            _check(cupy_backend, lbpcore.fwht(xd, ordering=ordering, norm=norm),
                   lbpcore.fwht(x, ordering=ordering, norm=norm), xd, dtype)
            _check(cupy_backend, lbpcore.ifwht(xd, ordering=ordering, norm=norm),
                   lbpcore.ifwht(x, ordering=ordering, norm=norm), xd, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_fwht2(cupy_backend, dtype):
    cp = cupy_backend.xp
    x = np.random.default_rng(0).standard_normal((2, 16, 3, 8)).astype(dtype)
    xd = cp.asarray(x)
    _check(cupy_backend, lbpcore.fwht2(xd, axes=(1, 3)), lbpcore.fwht2(x, axes=(1, 3)), xd, dtype)
    kw = dict(axes=(3, 1), norm="ortho")
    _check(cupy_backend, lbpcore.ifwht2(xd, **kw), lbpcore.ifwht2(x, **kw), xd, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pad", ["reflect", "zero"])
def test_gpu_project_reconstruct_apply(cupy_backend, dtype, pad):
    cp = cupy_backend.xp
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1 + 14 * 14, 5)).astype(dtype)
    xd = cp.asarray(x)
    kw = dict(grid=(14, 14), patch=8, bases="lp_l1:6", pad=pad)
    c = lbpcore.project(xd, extra_tokens=1, **kw)
    c_np = lbpcore.project(x, extra_tokens=1, **kw)
    _check(cupy_backend, c, c_np, xd, dtype)
    _check(cupy_backend, lbpcore.reconstruct(c, **kw), lbpcore.reconstruct(c_np, **kw), xd, dtype)
    _check(cupy_backend, lbpcore.apply_projector(xd, extra_tokens=1, **kw),
           lbpcore.apply_projector(x, extra_tokens=1, **kw), xd, dtype)
    m = rng.standard_normal((2, 5, 7, 9)).astype(dtype)
    md = cp.asarray(m)
    kw2 = dict(patch=4, bases=[(0, 0), (1, 2), (3, 0)], pad=pad, layout="nchw")
    _check(cupy_backend, lbpcore.apply_projector(md, **kw2), lbpcore.apply_projector(m, **kw2), md, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["tokens", "nchw"])
def test_gpu_backward(cupy_backend, dtype, layout):
    cp = cupy_backend.xp
    rng = np.random.default_rng(2)
    if layout == "tokens":
        x = rng.standard_normal((2, 1 + 14 * 14, 6))
        gy = rng.standard_normal((2, 1 + 14 * 14, 5))
        kw = dict(grid=(14, 14), extra_tokens=1)
    else:
        x = rng.standard_normal((2, 6, 7, 9))
        gy = rng.standard_normal((2, 5, 7, 9))
        kw = dict(layout="nchw")
    w = rng.standard_normal((5, 6))
    b = rng.standard_normal(5)
    x, gy, w, b = (a.astype(dtype) for a in (x, gy, w, b))
    xd, gyd, wd, bd = (cp.asarray(a) for a in (x, gy, w, b))
    lay = kw.get("layout", "tokens")
    _check(cupy_backend, lbpcore.linear(xd, wd, bd, layout=lay), lbpcore.linear(x, w, b, layout=lay), xd, dtype)
    for got, want in zip(lbpcore.dense_backward(xd, wd, gyd, bias=bd, layout=lay),
                         lbpcore.dense_backward(x, w, gy, bias=b, layout=lay), strict=True):
        _check(cupy_backend, got, want, xd, dtype)
    lkw = dict(patch=4, bases="lp_l1:3", **kw)
    got = lbpcore.lbp_backward(xd, wd, gyd, bias=bd, **lkw)
    for g, want in zip(got, lbpcore.lbp_backward(x, w, gy, bias=b, **lkw), strict=True):
        _check(cupy_backend, g, want, xd, dtype)
    # and against the independent float64 oracle
    grid = (14, 14) if layout == "tokens" else (7, 9)
    ref = lbp_backward_oracle(x, w, gy, grid=grid, n=4, indices=lp_l1_oracle(4, 3),
                              extra_tokens=kw.get("extra_tokens", 0), layout=lay, bias=True)
    for g, want in zip(got, ref, strict=True):
        lt.assert_close(cp.asnumpy(g), want.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_lbplinear(cupy_backend, dtype):
    cp = cupy_backend.xp
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 256, 16)).astype(dtype)
    gy = rng.standard_normal((4, 256, 8)).astype(dtype)
    w = rng.standard_normal((8, 16)).astype(dtype)
    layer = lbpcore.LBPLinear(cp.asarray(w), grid=(16, 16), patch=8, bases="lp_l1:6")
    ref = lbpcore.LBPLinear(w, grid=(16, 16), patch=8, bases="lp_l1:6")
    xd = cp.asarray(x)
    _check(cupy_backend, layer.forward(xd), ref.forward(x), xd, dtype)
    for got, want in zip(layer.backward(cp.asarray(gy)), ref.backward(gy), strict=True):
        if want is not None:
            _check(cupy_backend, got, want, xd, dtype)
    assert layer.saved_nbytes == ref.saved_nbytes == 4 * 256 * 16 * np.dtype(dtype).itemsize * 21 // 64


def test_gpu_energy_selection(cupy_backend):
    cp = cupy_backend.xp
    x = np.random.default_rng(4).standard_normal((2, 64, 3))
    a = lbpcore.select_bases(8, "energy_l2:10", calibration=cp.asarray(x), grid=(8, 8))
    b = lbpcore.select_bases(8, "energy_l2:10", calibration=x, grid=(8, 8))
    assert a == b


def test_gpu_constants_with_raw_cupy_namespace(cupy_backend):
    """walsh_matrix / BasisSet.images document ``xp`` as e.g. ``cupy``: the raw module must work."""
    cp = cupy_backend.xp
    m = lbpcore.walsh_matrix(8, xp=cp, dtype=cp.float32)
    assert isinstance(m, cp.ndarray) and m.dtype == cp.float32
    np.testing.assert_array_equal(cp.asnumpy(m), lbpcore.walsh_matrix(8))
    imgs = lbpcore.select_bases(4, "lp_l1:3").images(xp=cp)
    assert isinstance(imgs, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(imgs), lbpcore.select_bases(4, "lp_l1:3").images())


@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_fwht_kernel_against_dense_reference(cupy_backend, dtype):
    """The shared-memory CUDA kernel (last axis, n <= 4096) against the dense definition."""
    cp = cupy_backend.xp
    for n in [2 ** k for k in range(1, 13)]:
        x = np.random.default_rng(n).standard_normal((5, n)).astype(dtype)
        xd = cp.asarray(x)
        assert _cuda.applicable(xd, n)
        for ordering in ("natural", "sequency", "dyadic"):
            want = lt.fwht_reference(x, ordering=ordering, norm="ortho") if n <= 1024 else \
                lbpcore.fwht(x, ordering=ordering, norm="ortho")
            _check(cupy_backend, lbpcore.fwht(xd, ordering=ordering, norm="ortho"), want, xd, dtype)


def test_gpu_fwht_kernel_noncontiguous_and_batched(cupy_backend):
    cp = cupy_backend.xp
    x = np.random.default_rng(7).standard_normal((4, 3, 64, 2)).astype(np.float32)
    xd = cp.asarray(x)
    view = xd[:, :, :, 0]  # strided: the kernel path must copy to contiguous first
    _check(cupy_backend, lbpcore.fwht(view), lbpcore.fwht(x[:, :, :, 0]), xd, np.float32)
    _check(cupy_backend, lbpcore.fwht(xd, axis=2), lbpcore.fwht(x, axis=2), xd, np.float32)
    empty = cp.zeros((0, 16), dtype=cp.float32)
    assert lbpcore.fwht(empty).shape == (0, 16)
