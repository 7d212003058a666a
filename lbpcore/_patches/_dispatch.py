"""Kernel choice of the projections: which kernel serves which input (no argument checks).

* CuPy arrays: the fused CUDA kernels (:mod:`._cuda`), one pass over the input,
  for the patch sizes and selections they cover.
* NumPy tokens whose coefficient order does not matter (the backward passes,
  :func:`~lbpcore.apply_projector`): the compiled kernel (:mod:`._compiled`,
  Numba, patch size 8, float32 and float64) where it serves, else the
  cache-blocked kernel (:mod:`._blocked`); both write the same order.
* Otherwise, when ``pw * r`` is small: the direct strip kernel (:mod:`._direct`),
  recomputed with the separable kernel when its result is not finite.
* Otherwise the separable kernel (:mod:`._separable`).
"""

from __future__ import annotations

import numpy as np
from array_api_compat import is_cupy_array

from .._backend import device_of
from .._validation import check_nbytes
from . import _compiled, _cuda
from ._blocked import project_blocked, reconstruct_blocked
from ._direct import project_direct, reconstruct_direct
from ._plan import PatchPlan
from ._separable import project_separable, reconstruct_separable

__all__ = ["project_raw", "reconstruct_raw"]

#: The direct strip kernel costs ``2 * pw * r`` flops per input element; above
#: this ``pw * r`` the separable row/column operators (a few flops per element but
#: more passes over memory) are used instead.
_DIRECT_MAX = 128


def _use_direct(plan: PatchPlan) -> bool:
    """Direct strip contraction (``2 pw r`` flops per element, one pass) or separable operators."""
    return plan.patches[1] * plan.rank <= _DIRECT_MAX


def _use_blocked(x, layout: str) -> bool:
    """Whether the cache-blocked kernel, whose coefficients come in ``(p, i, q, j)`` order, serves ``x``."""
    return layout == "tokens" and isinstance(x, np.ndarray)


def _all_finite(xp, a) -> bool:
    """Whether ``a`` holds only finite values (one reduction; an overflowing sum says no).

    The direct strip operators hold structural zeros between the patches of a
    strip, and ``0 * nan`` is nan: a non-finite value would leak into the
    neighbouring patches.  When this returns False the separable operators, which
    never mix patches, are used instead.
    """
    if isinstance(a, np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):
            return bool(np.isfinite(np.sum(a)))
    return bool(xp.all(xp.isfinite(xp.sum(a))))


def project_raw(xp, x, plan: PatchPlan, layout: str, extra_tokens: int = 0, scale: float = 1.0,
                keep_extra: bool = False, any_order: bool = False, out=None):
    """Coefficients of the grid part of ``x`` (no validation), channels last.

    Returns ``(extra, coef)``: ``coef`` is ``(B, M, C)`` for both layouts, ``M = P * r``,
    each coefficient multiplied by ``scale``; ``extra`` is ``x[:, :e]`` (a view) or None.
    The rows of ``coef`` are in ``(p, q, k)`` order (patches row-major, bases in
    canonical order), or, with ``any_order=True``, in whatever order the fastest
    kernel produces: then only :func:`reconstruct_raw` with ``any_order=True`` (and
    products that do not care about the order of the rows) may consume them.  With
    ``keep_extra=True`` returns ``(None, full)`` where ``full`` is ``(B, e + M, C)``:
    the extra tokens (unscaled) followed by the coefficients, so that one GEMM
    covers both.  ``out`` (NumPy input only): a C-contiguous array of the result's
    shape and dtype to write into instead of a new one (the PyTorch bridge passes
    memory of PyTorch's allocator).
    """
    e = extra_tokens if layout == "tokens" else 0
    extra = None if e == 0 else x[:, :e, :]
    b, c = (x.shape[0], x.shape[2]) if layout == "tokens" else x.shape[:2]
    m = plan.num_patches * plan.rank
    rows = (e if keep_extra else 0) + m
    check_nbytes(b * rows * c * _itemsize(xp, x), "x", f"its ({b}, {rows}, {c}) patch coefficients")
    empty = b * c == 0  # an empty batch or no channel: empty coefficients (the kernels need work)
    if is_cupy_array(x) and not empty:
        coef = _cuda.project(x, plan.grid, plan.patch, plan.pad, plan.basis.indices, extra_tokens=e, scale=scale,
                             layout=layout, keep_extra=keep_extra)
        if coef is not None:
            return (None, coef) if keep_extra else (extra, coef)
    if isinstance(x, np.ndarray):
        full = np.empty((b, rows, c), dtype=x.dtype) if out is None else _checked_out(out, (b, rows, c), x.dtype)
        grid = full
        if keep_extra and e:
            full[:, :e] = extra
            grid = full[:, e:]
        if empty:
            pass
        elif any_order and _use_blocked(x, layout):
            if _compiled.serves(x, plan):
                _compiled.project_compiled(x, plan, e, scale, full, oe=rows - m)
            else:
                project_blocked(x, plan, e, scale, grid)
        elif _use_direct(plan):
            project_direct(xp, x, plan, layout, e, scale, grid)
            if not _all_finite(xp, grid):
                grid[...] = project_separable(xp, x, plan, layout, e, scale)
        else:
            grid[...] = project_separable(xp, x, plan, layout, e, scale)
        return (None, full) if keep_extra else (extra, full)
    if empty:
        coef = xp.zeros((b, m, c), dtype=x.dtype, device=device_of(x))
    elif _use_direct(plan):
        coef = project_direct(xp, x, plan, layout, e, scale, None)
        if not _all_finite(xp, coef):
            coef = project_separable(xp, x, plan, layout, e, scale)
    else:
        coef = project_separable(xp, x, plan, layout, e, scale)
    if keep_extra:
        if e:
            coef = xp.concat([extra, coef], axis=1)
        return None, coef
    return extra, coef


def reconstruct_raw(xp, coef, plan: PatchPlan, layout: str, extra_tokens: int = 0, any_order: bool = False,
                    scale: float = 1.0, out=None):
    """Inverse of :func:`project_raw` with ``keep_extra=True``, up to the factor ``n**2`` and the crop, times ``scale``.

    ``coef`` is ``(B, e + M, C)``: ``e = extra_tokens`` rows copied through as they
    are (tokens layout only), then the coefficients; the result is tokens
    ``(B, e + h*w, C)`` or nchw ``(B, C, h, w)``, its grid multiplied by ``scale``
    (the kernels apply it in their first stage; a power of two leaves the result
    exact).  ``any_order`` as given to :func:`project_raw`; ``out`` as there.
    """
    e = extra_tokens if layout == "tokens" else 0
    b, _, c = coef.shape
    h, w = plan.grid
    check_nbytes(b * h * w * c * _itemsize(xp, coef), "coef", f"the reconstructed ({b}, {h * w}, {c}) grid")
    shape = (b, e + h * w, c) if layout == "tokens" else (b, c, h, w)
    if b * c == 0:  # an empty batch or no channel: an empty grid
        return np.zeros(shape, dtype=coef.dtype) if isinstance(coef, np.ndarray) else \
            xp.zeros(shape, dtype=coef.dtype, device=device_of(coef))
    if is_cupy_array(coef):
        out = _cuda.reconstruct(coef, plan.grid, plan.patch, plan.pad, plan.basis.indices, extra_tokens=e,
                                scale=scale, layout=layout)
        if out is not None:
            return out
    grid_coef = coef if e == 0 else coef[:, e:, :]
    if isinstance(coef, np.ndarray):
        out = np.empty(shape, dtype=coef.dtype) if out is None else _checked_out(out, shape, coef.dtype)
        if e:
            out[:, :e] = coef[:, :e]
        grid_out = out if e == 0 else out[:, e:]
        if any_order and _use_blocked(coef, layout):
            if _compiled.serves(coef, plan):
                _compiled.reconstruct_compiled(coef, plan, out, scale, ce=e, oe=e)
            else:
                reconstruct_blocked(grid_coef, plan, grid_out, scale)
        elif _use_direct(plan) and _all_finite(xp, grid_coef):
            reconstruct_direct(xp, grid_coef, plan, layout, grid_out, scale)
        else:
            grid_out[...] = reconstruct_separable(xp, grid_coef, plan, layout, scale)
        return out
    if _use_direct(plan) and _all_finite(xp, grid_coef):
        out = reconstruct_direct(xp, grid_coef, plan, layout, None, scale)
    else:
        out = reconstruct_separable(xp, grid_coef, plan, layout, scale)
    if e:
        out = xp.concat([coef[:, :e, :], out], axis=1)
    return out


def _checked_out(out, shape, dtype):
    """``out`` if it is a writeable C-contiguous NumPy array of ``shape`` and ``dtype`` (an internal contract)."""
    if not (isinstance(out, np.ndarray) and out.shape == tuple(shape) and out.dtype == dtype
            and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"out must be a writeable C-contiguous {dtype} array of shape {tuple(shape)}")
    return out


def _itemsize(xp, a) -> int:
    """Bytes per element of the array ``a``."""
    return a.dtype.itemsize if isinstance(a, np.ndarray) else xp.finfo(a.dtype).bits // 8
