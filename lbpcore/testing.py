"""Reference implementations and assertions for testing LBP-WHT code.

Everything here is written from the definitions in plain NumPy and shares no
code with the computations of :mod:`lbpcore`: Walsh matrices come from the
``(-1)^popcount(i & j)`` formula and a sign-change sort, padding from
:func:`numpy.pad`, patches from explicit loops, and the projector is an explicit
matrix.  Use these as oracles in your own tests (they are slow: small sizes
only).  This module does not import hypothesis.

Inputs from other array libraries are accepted if NumPy can convert them
(:func:`to_numpy`, the package's one conversion to NumPy, which computes
nothing); results are NumPy arrays.
"""

from __future__ import annotations

import numpy as np

from ._backend import to_numpy

__all__ = [
    "walsh_matrix_reference",
    "fwht_reference",
    "basis_image_reference",
    "pad_grid_reference",
    "projector_matrix",
    "dense_backward_reference",
    "lbp_backward_reference",
    "default_tolerance",
    "assert_close",
    "to_numpy",
]


def walsh_matrix_reference(n: int, ordering: str = "sequency") -> np.ndarray:
    """Walsh matrix from its definition.

    ``"natural"``: ``H[i, j] = (-1)^popcount(i & j)``; ``"sequency"``: the natural
    rows sorted by their number of sign changes; ``"dyadic"``: natural rows at
    bit-reversed indices.

    Parameters
    ----------
    n : int
        Power of two.
    ordering : {"sequency", "natural", "dyadic"}

    Returns
    -------
    ndarray of int64, shape (n, n)

    Examples
    --------
    >>> from lbpcore.testing import walsh_matrix_reference
    >>> walsh_matrix_reference(4, "sequency")
    array([[ 1,  1,  1,  1],
           [ 1,  1, -1, -1],
           [ 1, -1, -1,  1],
           [ 1, -1,  1, -1]])
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"n must be a power of two, got {n}")
    h = np.array([[(-1) ** bin(i & j).count("1") for j in range(n)] for i in range(n)], dtype=np.int64)
    if ordering == "natural":
        return h
    if ordering == "sequency":
        changes = [int(np.sum(row[1:] != row[:-1])) for row in h]
        return h[np.argsort(changes, kind="stable")]
    if ordering == "dyadic":
        bits = n.bit_length() - 1
        rev = [int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(n)]
        return h[rev]
    raise ValueError(f"ordering must be 'natural', 'sequency' or 'dyadic', got {ordering!r}")


def fwht_reference(x, axis=-1, ordering="sequency", norm="backward", inverse=False) -> np.ndarray:
    """Walsh–Hadamard transform as a dense matrix product (``O(n^2)``).

    Parameters
    ----------
    x : array_like, shape (..., n, ...)
    axis : int
    ordering : {"sequency", "natural", "dyadic"}
    norm : {"backward", "ortho", "forward"}
    inverse : bool
        Apply the inverse transform.

    Returns
    -------
    ndarray, float64

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore.testing import fwht_reference
    >>> fwht_reference(np.array([1.0, 2.0, 3.0, 4.0]), ordering="natural")
    array([10., -2., -4.,  0.])
    """
    x = np.asarray(to_numpy(x), dtype=np.float64)
    n = x.shape[axis]
    m = walsh_matrix_reference(n, ordering).astype(np.float64)
    if inverse:
        m = m.T / n  # the inverse of M is M.T / n
        scale = {"backward": 1.0, "ortho": np.sqrt(n), "forward": n}[norm]
    else:
        scale = {"backward": 1.0, "ortho": 1 / np.sqrt(n), "forward": 1 / n}[norm]
    y = np.moveaxis(np.tensordot(m, np.moveaxis(x, axis, 0), axes=(1, 0)), 0, axis)
    return y * scale


def basis_image_reference(n: int, i: int, j: int) -> np.ndarray:
    """2D Walsh basis image ``outer(w_i, w_j)`` of sequency-ordered rows.

    Parameters
    ----------
    n : int
        Patch size, a power of two.
    i, j : int
        Vertical and horizontal sequency, ``0 <= i, j < n``.

    Returns
    -------
    ndarray of int64, shape (n, n)
        Entries ±1.

    Examples
    --------
    >>> from lbpcore.testing import basis_image_reference
    >>> basis_image_reference(2, 1, 0)
    array([[ 1,  1],
           [-1, -1]])
    """
    w = walsh_matrix_reference(n, "sequency")
    return np.outer(w[i], w[j])


def _pad_amounts(length, n):
    count = -(-length // n)
    total = count * n - length
    before = -(-total // 2)
    return before, total - before


def pad_grid_reference(z, patch: int, pad: str = "reflect") -> np.ndarray:
    """Pad the last two axes of ``z`` to multiples of ``patch`` with :func:`numpy.pad`.

    Parameters
    ----------
    z : array_like, shape (..., h, w)
    patch : int
    pad : {"reflect", "zero", "none"}

    Returns
    -------
    ndarray, shape (..., ph*patch, pw*patch)

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore.testing import pad_grid_reference
    >>> pad_grid_reference(np.arange(9.0).reshape(3, 3), 4)  # 1 row/col before, 0 after
    array([[4., 3., 4., 5.],
           [1., 0., 1., 2.],
           [4., 3., 4., 5.],
           [7., 6., 7., 8.]])
    """
    z = np.asarray(to_numpy(z))
    h, w = z.shape[-2:]
    (top, bottom), (left, right) = _pad_amounts(h, patch), _pad_amounts(w, patch)
    if pad == "none":
        if top + bottom + left + right:
            raise ValueError("grid not divisible by patch and pad='none'")
        return z.copy()
    widths = [(0, 0)] * (z.ndim - 2) + [(top, bottom), (left, right)]
    if pad == "reflect":
        return np.pad(z, widths, mode="reflect")
    return np.pad(z, widths, mode="constant")


def projector_matrix(padded_shape, patch: int, indices) -> np.ndarray:
    """Explicit orthogonal projector ``P`` on a padded grid, shape ``(H*W, H*W)``.

    ``P = sum over patches and selected (i, j) of b b^T / n^2`` where ``b`` is the
    basis image placed in the patch (zero elsewhere), flattened row-major.

    Parameters
    ----------
    padded_shape : (int, int)
        ``(H, W)``, multiples of ``patch``.
    patch : int
    indices : sequence of (int, int)

    Returns
    -------
    ndarray, float64, shape (H*W, H*W)

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore.testing import projector_matrix
    >>> p = projector_matrix((2, 2), 2, [(0, 0)])  # projector onto the patch mean
    >>> bool(np.allclose(p, np.full((4, 4), 0.25)))
    True
    """
    hh, ww = padded_shape
    n = patch
    if hh % n or ww % n:
        raise ValueError("padded_shape must be multiples of patch")
    p = np.zeros((hh * ww, hh * ww))
    for pi in range(hh // n):
        for qi in range(ww // n):
            for i, j in np.asarray(indices).reshape(-1, 2):
                img = np.zeros((hh, ww))
                img[pi * n:(pi + 1) * n, qi * n:(qi + 1) * n] = basis_image_reference(n, int(i), int(j))
                v = img.ravel()
                p += np.outer(v, v) / (n * n)
    return p


def _grid_view(a, grid, extra_tokens, layout):
    """(B, C, h, w) grid part and (B, e, C) extra part of tokens or NCHW data."""
    if layout == "tokens":
        b, length, c = a.shape
        h, w = grid
        extra = a[:, :extra_tokens, :]
        g = a[:, extra_tokens:, :].reshape(b, h, w, c).transpose(0, 3, 1, 2)
        return g, extra
    return a, a[:, :0, 0]


def dense_backward_reference(x, weight, grad_y, *, layout="tokens", bias=None):
    """Dense gradients by explicit sums over tokens (float64).

    Parameters
    ----------
    x : array_like, shape (..., C_in) or (B, C_in, H, W)
    weight : array_like, shape (C_out, C_in)
    grad_y : array_like, shape (..., C_out) or (B, C_out, H, W)
    layout : {"tokens", "nchw"}
    bias : array_like or None
        Only its presence matters.

    Returns
    -------
    grad_x, grad_weight, grad_bias : ndarray (grad_bias None without bias)

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore.testing import dense_backward_reference
    >>> gx, gw, gb = dense_backward_reference(np.ones((2, 3)), np.ones((1, 3)), np.ones((2, 1)))
    >>> gw, gb
    (array([[2., 2., 2.]]), None)
    """
    x = np.asarray(to_numpy(x), dtype=np.float64)
    wt = np.asarray(to_numpy(weight), dtype=np.float64)
    g = np.asarray(to_numpy(grad_y), dtype=np.float64)
    if layout == "nchw":
        x = np.moveaxis(x, 1, -1)
        g = np.moveaxis(g, 1, -1)
    xf = x.reshape(-1, x.shape[-1])
    gf = g.reshape(-1, g.shape[-1])
    gw = np.zeros_like(wt)
    for t in range(xf.shape[0]):
        gw += np.outer(gf[t], xf[t])
    gx = (gf @ wt).reshape(x.shape[:-1] + (wt.shape[1],))
    gb = gf.sum(axis=0) if bias is not None else None
    if layout == "nchw":
        gx = np.moveaxis(gx, -1, 1)
    return gx, gw, gb


def lbp_backward_reference(x, weight, grad_y, *, grid=None, patch=8, indices, pad="reflect",
                           extra_tokens=0, layout="tokens", bias=None):
    """LBP-WHT gradients from the formulas of SPEC section 5, with explicit loops.

    Pads with :func:`numpy.pad`, cuts ``n x n`` patches, computes the
    coefficients ``c_ij = sum B_ij * Z`` one basis image at a time, forms
    ``grad_W = sum g_s x_s^T`` and ``grad_x = crop(sum_ij B_ij (g_s @ W))``, and
    treats extra tokens and the bias exactly.

    Parameters
    ----------
    x, weight, grad_y : array_like
        As for :func:`lbpcore.lbp_backward`.
    grid : (int, int), optional
        Required for tokens; nchw uses the spatial shape.
    patch : int
    indices : sequence of (int, int)
        Selected basis pairs (any order).
    pad : {"reflect", "zero", "none"}
    extra_tokens : int
    layout : {"tokens", "nchw"}
    bias : array_like or None
        Only its presence matters.

    Returns
    -------
    grad_x, grad_weight, grad_bias : ndarray, float64 (grad_bias None without bias)

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore.testing import lbp_backward_reference, dense_backward_reference
    >>> rng = np.random.default_rng(0)
    >>> x, w, g = rng.random((1, 16, 2)), rng.random((3, 2)), rng.random((1, 16, 3))
    >>> full = [(i, j) for i in range(4) for j in range(4)]
    >>> lbp = lbp_backward_reference(x, w, g, grid=(4, 4), patch=4, indices=full)
    >>> bool(np.allclose(lbp[1], dense_backward_reference(x, w, g)[1]))
    True
    """
    x = np.asarray(to_numpy(x), dtype=np.float64)
    wt = np.asarray(to_numpy(weight), dtype=np.float64)
    g = np.asarray(to_numpy(grad_y), dtype=np.float64)
    n = patch
    if layout == "nchw":
        grid = x.shape[2:]
        e = 0
    else:
        e = extra_tokens
    h, w = grid
    xg, xe = _grid_view(x, grid, e, layout)  # (B, C, h, w)
    gg, ge = _grid_view(g, grid, e, layout)
    xp_ = pad_grid_reference(xg, n, pad)
    gp_ = pad_grid_reference(gg, n, pad)
    hh, ww = xp_.shape[-2:]
    (top, _), (left, _) = _pad_amounts(h, n), _pad_amounts(w, n)
    imgs = [basis_image_reference(n, int(i), int(j)).astype(np.float64) for i, j in np.asarray(indices).reshape(-1, 2)]
    b = x.shape[0]
    c_in = wt.shape[1]
    gw = np.zeros_like(wt)
    rec = np.zeros((b, c_in, hh, ww))
    for pi in range(hh // n):
        for qi in range(ww // n):
            sl = (slice(None), slice(None), slice(pi * n, (pi + 1) * n), slice(qi * n, (qi + 1) * n))
            zx = xp_[sl]
            zg = gp_[sl]
            for img in imgs:
                xs = np.einsum("bcuv,uv->bc", zx, img)
                gs = np.einsum("bcuv,uv->bc", zg, img) / (n * n)
                gw += gs.T @ xs
                rec[sl] += np.einsum("bc,uv->bcuv", gs @ wt, img)
    gx_grid = rec[:, :, top:top + h, left:left + w]
    if layout == "tokens":
        gx_grid = gx_grid.transpose(0, 2, 3, 1).reshape(b, h * w, c_in)
        gx = np.concatenate([ge @ wt, gx_grid], axis=1)
        gw += np.einsum("bto,bti->oi", ge, xe)
        gb = g.sum(axis=(0, 1)) if bias is not None else None
    else:
        gx = gx_grid
        gb = g.sum(axis=(0, 2, 3)) if bias is not None else None
    return gx, gw, gb


def default_tolerance(dtype) -> tuple[float, float]:
    """Default ``(rtol, atol)`` for comparing results of a floating dtype.

    float64: ``(1e-10, 1e-12)``; float32: ``(2e-4, 1e-5)``, which covers the
    rounding of sums of a few thousand terms of unit size.  These defaults are
    meant for users' own, possibly larger problems: lbpcore's test suite, whose
    problems are small, compares against float64 oracles with a tighter
    relative tolerance (float32 ``2e-5``, float64 ``1e-12``).

    Parameters
    ----------
    dtype : dtype or str
        A NumPy, CuPy or array API floating dtype (or its name).

    Returns
    -------
    rtol, atol : float

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore.testing import default_tolerance
    >>> default_tolerance(np.float32)
    (0.0002, 1e-05)
    """
    name = str(getattr(dtype, "name", dtype)).split(".")[-1]
    if "float32" in name:
        return 2e-4, 1e-5
    return 1e-10, 1e-12


def assert_close(actual, desired, *, rtol=None, atol=None, err_msg=""):
    """Assert that two arrays agree to tolerances chosen from their dtype.

    Like :func:`numpy.testing.assert_allclose`, but accepts arrays of any
    supported library, checks shapes strictly, and scales ``atol`` by the
    largest magnitude of ``desired`` so that results of any size compare fairly.
    Defaults come from :func:`default_tolerance` of the less precise dtype.

    Parameters
    ----------
    actual, desired : array_like
    rtol, atol : float, optional
    err_msg : str, optional

    Raises
    ------
    AssertionError
        If shapes differ or any element is off by more than
        ``atol * max|desired| + rtol * |desired|``.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore.testing import assert_close
    >>> assert_close(np.float32([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7]))
    """
    a = to_numpy(actual)
    d = to_numpy(desired)
    if a.shape != d.shape:
        raise AssertionError(f"shapes differ: {a.shape} != {d.shape}. {err_msg}")
    r0, a0 = default_tolerance(a.dtype)
    r1, a1 = default_tolerance(d.dtype)
    rtol = max(r0, r1) if rtol is None else rtol
    atol = max(a0, a1) if atol is None else atol
    scale = float(np.max(np.abs(d))) if d.size and np.all(np.isfinite(d)) else 1.0
    np.testing.assert_allclose(
        np.asarray(a, dtype=np.float64), np.asarray(d, dtype=np.float64),
        rtol=rtol, atol=atol * max(scale, 1e-300), err_msg=err_msg,
    )
