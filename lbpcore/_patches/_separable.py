"""Separable kernel (any namespace): row and column operators, then a gather.

The generic projection: a block operator along the grid rows, one along the
grid columns, each over the full rectangle of selected vertical and horizontal
sequencies (``k_i x k_j``), then a gather of the selected pairs.  It never mixes
patches, so it also serves as the fallback of the direct kernel on non-finite
input.  Reconstruction scatters the coefficients back into the rectangle and
applies the transposed operators, restricted to the interior of each patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .._backend import constant, device_of
from .._blas import matmul
from .._wht._walsh import ordered_hadamard
from ._plan import PatchPlan, fold, plan_key

__all__ = ["AxisOp", "SeparableOps", "project_separable", "reconstruct_separable", "separable_ops"]


@dataclass(frozen=True)
class AxisOp:
    """Block operator along one axis: output block ``t`` is ``mats[t] @ x[lo_t:hi_t]``.

    ``uniform`` means every block uses the same matrix on consecutive,
    equal-length, non-overlapping input windows that tile ``[0, n_in)``.
    """

    n_in: int
    n_out: int
    lo: tuple
    hi: tuple
    mats: tuple  # numpy arrays (out_len, in_len)
    uniform: bool
    key: tuple


class SeparableOps(NamedTuple):
    """The four block operators of a plan (:func:`separable_ops`)."""

    project_rows: AxisOp  # (ph*k_i, h): along the grid rows, scaled (the first stage)
    project_cols: AxisOp  # (pw*k_j, w): along the grid columns
    reconstruct_rows: AxisOp  # (h, ph*k_i): the transposed rows, cropped
    reconstruct_cols: AxisOp  # (w, pw*k_j): scaled (the first stage)


@lru_cache(maxsize=256)
def _axis_ops(length: int, n: int, pad: str, rows: tuple, scale: float,
              rec_scale: float) -> tuple[AxisOp, AxisOp]:
    """Projection and reconstruction operators along one axis, multiplied by ``scale`` and ``rec_scale``."""
    w = ordered_hadamard(n, "sequency")[np.asarray(rows, dtype=np.int64)].astype(np.float64)  # (k, n)
    k = len(rows)
    folds = fold(length, n, pad)
    count = len(folds)
    uniform = count * n == length
    proj = AxisOp(length, count * k, tuple(f.lo for f in folds), tuple(f.hi for f in folds),
                  tuple((w @ f.matrix) * scale for f in folds), uniform, ("proj", length, n, pad, rows, scale))
    rec = AxisOp(count * k, length, tuple(range(0, count * k, k)), tuple(range(k, count * k + 1, k)),
                 tuple(w[:, f.interior].T * rec_scale for f in folds), uniform,
                 ("rec", length, n, pad, rows, rec_scale))
    return proj, rec


def separable_ops(plan: PatchPlan, scale: float = 1.0, rec_scale: float = 1.0) -> SeparableOps:
    """Row and column operators of ``plan``.

    Each direction is scaled in its first stage, where the values are smallest:
    the row projection by ``scale``, the column reconstruction by ``rec_scale``.
    """
    rows = tuple(int(v) for v in plan.basis.rows)
    cols = tuple(int(v) for v in plan.basis.cols)
    h, w = plan.grid
    project_rows, reconstruct_rows = _axis_ops(h, plan.patch, plan.pad, rows, float(scale), 1.0)
    project_cols, reconstruct_cols = _axis_ops(w, plan.patch, plan.pad, cols, 1.0, float(rec_scale))
    return SeparableOps(project_rows, project_cols, reconstruct_rows, reconstruct_cols)


def _apply(xp, x3, op: AxisOp):
    """Apply ``op`` along axis 1 of ``x3`` of shape ``(pre, n_in, post)``, or along the columns of a 2D ``x3``."""
    dt = x3.dtype
    dev = device_of(x3)
    two_d = x3.ndim == 2
    mm = matmul if isinstance(x3, np.ndarray) else xp.matmul
    if op.uniform:
        m = op.mats[0]
        mat = constant(op.key + ("T",) if two_d else op.key, (lambda: m.T) if two_d else (lambda: m), xp, dt, dev)
        count = len(op.lo)
        kin = op.hi[0] - op.lo[0]
        if two_d:
            pre = x3.shape[0]
            y = mm(xp.reshape(x3, (pre * count, kin)), mat)
            return xp.reshape(y, (pre, op.n_out))
        pre, _, post = x3.shape
        y = mm(mat, xp.reshape(x3, (pre * count, kin, post)))
        return xp.reshape(y, (pre, op.n_out, post))
    pieces = []
    for t, (lo, hi, m) in enumerate(zip(op.lo, op.hi, op.mats, strict=True)):
        if two_d:
            mat = constant(op.key + (t, "T"), lambda m=m: m.T, xp, dt, dev)
            pieces.append(mm(x3[:, lo:hi], mat))
        else:
            mat = constant(op.key + (t,), lambda m=m: m, xp, dt, dev)
            pieces.append(mm(mat, x3[:, lo:hi, :]))
    return xp.concat(pieces, axis=1)


def project_separable(xp, x, plan: PatchPlan, layout: str, e: int, scale: float):
    """Coefficients ``(B, M, C)`` in ``(p, q, k)`` order of the grid part of ``x``."""
    ops = separable_ops(plan, scale)
    oph, opw = ops.project_rows, ops.project_cols
    if layout == "tokens":
        b, _, c = x.shape
        h, w = plan.grid
        g3 = xp.reshape(x if e == 0 else x[:, e:, :], (b, h, w * c))
        t = _apply(xp, g3, oph)  # (B, ph*ki, w*C)
        t = xp.reshape(t, (b * oph.n_out, w, c))
        t = _apply(xp, t, opw)  # (B*ph*ki, pw*kj, C)
        t = xp.reshape(t, (b, oph.n_out * opw.n_out, c))
        axis = 1
    else:
        b, c, h, w = x.shape
        t = _apply(xp, xp.reshape(x, (b * c, h, w)), oph)  # (B*C, ph*ki, w)
        t = _apply(xp, xp.reshape(t, (b * c * oph.n_out, w)), opw)  # (B*C*ph*ki, pw*kj)
        t = xp.reshape(t, (b, c, oph.n_out * opw.n_out))
        axis = 2
    idx = constant(("gather", plan_key(plan)), plan.gather_index, xp, xp.int64, device_of(x))
    t = xp.take(t, idx, axis=axis)
    if layout == "nchw":
        t = xp.permute_dims(t, (0, 2, 1))
    return t


def reconstruct_separable(xp, coef, plan: PatchPlan, layout: str, scale: float = 1.0):
    """Grid ``(B, h*w, C)`` (tokens) or ``(B, C, h, w)`` from ``(B, M, C)`` coefficients in ``(p, q, k)`` order.

    The result is multiplied by ``scale``.
    """
    ops = separable_ops(plan, rec_scale=scale)
    rh, rw = ops.reconstruct_rows, ops.reconstruct_cols
    h, w = plan.grid
    dev = device_of(coef)
    b, _, c = coef.shape
    idx = constant(("scatter", plan_key(plan)), plan.scatter_index, xp, xp.int64, dev)
    zero = xp.zeros((b, 1, c), dtype=coef.dtype, device=dev)
    coef = xp.take(xp.concat([coef, zero], axis=1), idx, axis=1)
    if layout == "tokens":
        t = xp.reshape(coef, (b * rh.n_in, rw.n_in, c))
        t = _apply(xp, t, rw)  # (B*ph*ki, w, C)
        t = xp.reshape(t, (b, rh.n_in, w * c))
        t = _apply(xp, t, rh)  # (B, h, w*C)
        return xp.reshape(t, (b, h * w, c))
    coef = xp.permute_dims(coef, (0, 2, 1))
    t = _apply(xp, xp.reshape(coef, (b * c * rh.n_in, rw.n_in)), rw)  # (B*C*ph*ki, w)
    t = _apply(xp, xp.reshape(t, (b * c, rh.n_in, w)), rh)  # (B*C, h, w)
    return xp.reshape(t, (b, c, h, w))
