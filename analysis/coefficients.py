"""The coefficients of every padded patch on all ``n*n`` 2D Walsh basis images, and their sums.

:func:`full_coefficients` is the one full-basis patch projection of
:mod:`analysis`: the spectra (:mod:`analysis.spectrum`) sum its squares and
absolute values (:func:`basis_sums`), the gradient errors
(:mod:`analysis.error_sums`) use it, divided by ``n``, as orthonormal patch
coordinates.
"""

from __future__ import annotations

import numpy as np

import lbpcore

__all__ = ["full_basis", "full_coefficients", "basis_sums"]


def full_basis(n: int) -> lbpcore.BasisSet:
    """All ``n*n`` Walsh basis images, in canonical ``(i + j, i, j)`` order.

    Parameters
    ----------
    n : int
        Patch size, a power of two.

    Returns
    -------
    lbpcore.BasisSet
        ``lp_linf:n``; ``indices[k]`` is the ``(i, j)`` of coefficient ``k``.

    Examples
    --------
    >>> from analysis.coefficients import full_basis
    >>> full_basis(2).indices.tolist()
    [[0, 0], [0, 1], [1, 0], [1, 1]]
    """
    return lbpcore.select_bases(n, f"lp_linf:{n}")


def full_coefficients(x, *, grid=None, patch=8, pad="reflect", extra_tokens=0, layout="tokens"):
    """Unnormalized coefficients of every padded patch on all ``n*n`` Walsh basis images.

    Parameters
    ----------
    x : array_like, shape (B, e + h*w, C) or (B, C, H, W)
        Converted to float64.
    grid, patch, pad, extra_tokens, layout
        As for :func:`lbpcore.project` (``grid`` is required for tokens).

    Returns
    -------
    ndarray of float64, shape (B, P, n*n, C)
        ``[b, p, k, c]``: coefficient of patch ``p`` (row-major over the padded
        grid) of channel ``c`` on basis ``full_basis(n).indices[k]``, for both
        layouts.  Divided by ``n``, these are the patch vectors in an
        orthonormal basis.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.coefficients import full_coefficients
    >>> c = full_coefficients(np.ones((2, 3, 8, 8)), patch=4, layout="nchw")
    >>> c.shape, float(c[0, 0, 0, 0]), float(abs(c[..., 1:, :]).max())
    ((2, 4, 16, 3), 16.0, 0.0)
    """
    basis = full_basis(patch)
    coef = lbpcore.project(np.asarray(x, dtype=np.float64), grid=grid, patch=basis.patch, bases=basis, pad=pad,
                           extra_tokens=extra_tokens, layout=layout)
    return coef.transpose(0, 2, 3, 1) if layout == "nchw" else coef


def basis_sums(coef, axis):
    """Sums of squares and of absolute values of coefficients, computed in place.

    Parameters
    ----------
    coef : ndarray of float64, shape (B, P, n*n, C)
        Coefficients, e.g. from :func:`full_coefficients`; overwritten (it
        ends up holding their squares), so that no temporary of its size is
        made.
    axis : tuple of int
        Axes summed over: ``(0, 1, 3)`` for per-basis totals.

    Returns
    -------
    (ndarray, ndarray)
        ``sum(coef**2)`` and ``sum(abs(coef))`` over ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.coefficients import basis_sums
    >>> l2, l1 = basis_sums(np.array([[[[3.0], [-4.0]]]]), (0, 1, 3))
    >>> l2.tolist(), l1.tolist()
    ([9.0, 16.0], [3.0, 4.0])
    """
    np.abs(coef, out=coef)
    l1 = coef.sum(axis=axis)
    np.multiply(coef, coef, out=coef)
    return coef.sum(axis=axis), l1
