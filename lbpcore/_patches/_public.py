"""The public projection functions: :func:`project`, :func:`reconstruct` and :func:`apply_projector`."""

from __future__ import annotations

from .._backend import as_float_array
from .._validation import LAYOUTS, check_choice, check_coefficients
from ._dispatch import project_raw, reconstruct_raw
from ._plan import make_plan, plan_for

__all__ = ["apply_projector", "project", "reconstruct"]


def _prepare(x, grid, patch, bases, pad, extra_tokens, layout):
    check_choice(layout, "layout", LAYOUTS)
    xp, x = as_float_array(x, "x")
    plan, e = plan_for(tuple(x.shape), grid, patch, bases, pad, extra_tokens, layout)
    return xp, x, plan, e


def project(x, *, grid=None, patch=8, bases="lp_l1:6", pad="reflect", extra_tokens=0, layout="tokens"):
    """Coefficients of every patch of a token grid on the selected basis images.

    For each batch item, patch and channel, ``c_ij = sum_{u,v} B[i, j][u, v] Z[u, v]``
    over the (padded) ``n x n`` patch ``Z`` (SPEC section 5, unnormalized).

    Parameters
    ----------
    x : array, shape (B, e + h*w, C) or (B, C, H, W)
        Tokens (``layout="tokens"``, the ``h x w`` grid in row-major order after
        ``e`` extra tokens) or feature maps (``layout="nchw"``).
    grid : (int, int), optional
        Token grid ``(h, w)``; required for tokens, defaults to ``(H, W)`` for nchw.
    patch : int, optional
        Patch size ``n``, a power of two; default 8.
    bases : str, sequence of pairs or BasisSet, optional
        Basis selection (see :func:`select_bases`); default ``"lp_l1:6"``.
    pad : {"reflect", "zero", "none"}, optional
        Padding of grids that ``n`` does not divide; default ``"reflect"``.
    extra_tokens : int, optional
        Number ``e`` of leading non-grid tokens (tokens layout); they are ignored.
    layout : {"tokens", "nchw"}, optional
        Default ``"tokens"``.

    Returns
    -------
    coef : array, shape (B, P, r, C) or (B, C, P, r)
        ``P = ceil(h/n) * ceil(w/n)`` patches in row-major order; the ``r``
        bases in the canonical order of ``BasisSet.indices``.  Same dtype,
        namespace and device as ``x``.

    Raises
    ------
    ValueError
        On shape/grid mismatches, a bad ``patch``, ``pad``, ``layout`` or
        ``bases``, or padding the grid does not allow.
    TypeError
        If ``x`` is not a real floating (or integer) array.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import project
    >>> x = np.ones((1, 16, 1))  # one channel, a 4x4 grid of ones
    >>> project(x, grid=(4, 4), patch=4, bases="lp_l1:2")[0, 0, :, 0]
    array([16.,  0.,  0.])
    """
    xp, x, plan, e = _prepare(x, grid, patch, bases, pad, extra_tokens, layout)
    _, coef = project_raw(xp, x, plan, layout, e)
    pcount, r = plan.num_patches, plan.rank
    if layout == "tokens":
        return xp.reshape(coef, (x.shape[0], pcount, r, x.shape[2]))
    return xp.reshape(xp.permute_dims(coef, (0, 2, 1)), (x.shape[0], x.shape[1], pcount, r))


def reconstruct(coef, *, grid, patch=8, bases="lp_l1:6", pad="reflect", layout="tokens"):
    """Grid values from patch coefficients: ``crop(sum_k B_k c_k) / n**2``.

    Parameters
    ----------
    coef : array, shape (B, P, r, C) or (B, C, P, r)
        Coefficients as returned by :func:`project`.
    grid : (int, int)
        Token grid ``(h, w)``.
    patch, bases, pad, layout
        As for :func:`project`.

    Returns
    -------
    z : array, shape (B, h*w, C) or (B, C, h, w)
        Grid tokens only (no extra tokens).  ``reconstruct(project(x))`` is the
        projector applied to the padded grid, then cropped; on a divisible grid
        with every basis selected it returns the grid part of ``x``.

    Raises
    ------
    ValueError
        If ``coef`` does not have the shape the plan implies.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import project, reconstruct
    >>> x = np.arange(16.0).reshape(1, 16, 1)
    >>> c = project(x, grid=(4, 4), patch=4, bases="lp_linf:4")
    >>> bool(np.allclose(reconstruct(c, grid=(4, 4), patch=4, bases="lp_linf:4"), x))
    True
    """
    check_choice(layout, "layout", LAYOUTS)
    xp, coef = as_float_array(coef, "coef")
    plan = make_plan(grid, patch, bases, pad)
    pcount, r = plan.num_patches, plan.rank
    check_coefficients(coef.shape, pcount, r, layout)
    if layout == "tokens":
        b, _, _, c = coef.shape
        flat = xp.reshape(coef, (b, pcount * r, c))
    else:
        b, c, _, _ = coef.shape
        flat = xp.permute_dims(xp.reshape(coef, (b, c, pcount * r)), (0, 2, 1))
    # 1/n**2 in the kernels' first stage: exact (a power of two), and no intermediate above the result's scale
    return reconstruct_raw(xp, flat, plan, layout, scale=1.0 / (plan.patch * plan.patch))


def apply_projector(x, *, grid=None, patch=8, bases="lp_l1:6", pad="reflect", extra_tokens=0, layout="tokens"):
    """Apply the patch projector: ``crop(P pad(x))`` on the grid, extra tokens unchanged.

    ``P`` is the orthogonal projector onto the span of the selected basis images
    in every patch of the padded grid (``P = P.T = P @ P``).

    Parameters
    ----------
    x : array, shape (B, e + h*w, C) or (B, C, H, W)
    grid, patch, bases, pad, extra_tokens, layout
        As for :func:`project`.

    Returns
    -------
    y : array, same shape, dtype, namespace and device as ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import apply_projector
    >>> x = np.array([[[1.0], [3.0], [5.0], [7.0]]])  # a 2x2 grid
    >>> apply_projector(x, grid=(2, 2), patch=2, bases="lp_l1:1")[0, :, 0]  # the patch mean
    array([4., 4., 4., 4.])
    """
    xp, x, plan, e = _prepare(x, grid, patch, bases, pad, extra_tokens, layout)
    _, coef = project_raw(xp, x, plan, layout, e, scale=1.0 / (plan.patch * plan.patch), keep_extra=True,
                          any_order=True)
    return reconstruct_raw(xp, coef, plan, layout, extra_tokens=e, any_order=True)
