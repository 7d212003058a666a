"""The cases of the fused CUDA patch kernels, shared by the device tests and their host emulation.

``tests/test_cuda_kernels.py`` runs them on a GPU with CuPy, ``tests/test_cuda_kernels_host.py``
on the CPU through a stand-in for CuPy; both compare with lbpcore's NumPy ``project`` and
``reconstruct``.
"""

from __future__ import annotations

import numpy as np
from tolerances import assert_allclose_dtype

import lbpcore
from lbpcore._patches import _cuda as cuda_patches

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
SELECTION_IDS = [f"{n}-{b}" for n, b in SELECTIONS]
GRIDS = [(7, 9), (14, 14), (3, 5), (1, 1)]


def grid_cases(n):
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


def check_patch_kernels(to_device, to_host, n, bases, grid, pad, dtype, layout, e, c, rng, vec=None):
    """Projection (with and without the extra tokens in front) and reconstruction against NumPy.

    ``to_device`` / ``to_host`` move a NumPy array to the kernels' array type and back.
    The inputs must be left untouched.
    """
    basis = lbpcore.select_bases(n, bases)
    idx = basis.indices
    h, w = grid
    kw = dict(grid=grid, patch=n, bases=basis, pad=pad, layout=layout)
    x = rng.standard_normal((2, e + h * w, c) if layout == "tokens" else (2, c, h, w)).astype(dtype)
    xd = to_device(x)
    ref = lbpcore.project(x, extra_tokens=e, **kw)  # (B, P, r, C) or (B, C, P, r)
    if layout == "nchw":
        ref = ref.transpose(0, 2, 3, 1)
    ref = ref.reshape(2, -1, c)
    msg = f"n={n} {bases} grid={grid} pad={pad} {layout} e={e} C={c} {np.dtype(dtype).name} vec={vec}"
    for keep in (False, True):
        got = cuda_patches.project(xd, grid, n, pad, idx, extra_tokens=e, scale=0.5, layout=layout,
                                   keep_extra=keep, _vec=vec)
        eo = e if keep else 0
        assert got.shape == (2, eo + ref.shape[1], c) and got.dtype == dtype, msg
        g = to_host(got)
        assert_allclose_dtype(g[:, eo:], 0.5 * ref, dtype, err_msg=msg)
        if eo:
            np.testing.assert_array_equal(g[:, :eo], x[:, :eo])
    np.testing.assert_array_equal(to_host(xd), x)  # input untouched
    # reconstruction of random coefficients, extra tokens in front
    coef = rng.standard_normal((2, e + ref.shape[1], c)).astype(dtype)
    cd = to_device(coef)
    rec = to_host(cuda_patches.reconstruct(cd, grid, n, pad, idx, extra_tokens=e, scale=1.0 / (n * n),
                                           layout=layout, _vec=vec))
    c4 = coef[:, e:].reshape(2, -1, len(idx), c)
    want = lbpcore.reconstruct(c4 if layout == "tokens" else c4.transpose(0, 3, 1, 2), **kw)
    if layout == "tokens":
        assert rec.shape == (2, e + h * w, c), msg
        np.testing.assert_array_equal(rec[:, :e], coef[:, :e])
        rec = rec[:, e:]
    assert rec.shape == want.shape, msg
    assert_allclose_dtype(rec, want, dtype, err_msg="reconstruct " + msg)
    np.testing.assert_array_equal(to_host(cd), coef)
