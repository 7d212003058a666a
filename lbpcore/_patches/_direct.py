"""Direct strip kernel: one matrix per patch row, for GPUs and the NCHW layout.

One matrix per patch row maps a whole ``n``-row strip of the grid to the
``pw * r`` coefficients of its patches in canonical ``(p, q, k)`` order:
padding, the 2D transform and the selection in a single batched product per
strip (``2 pw r`` flops per element, one pass).  The NCHW layout is read
through a transposed view.  The structural zeros of these matrices would spread
a NaN to the neighbouring patches of the strip, so the kernel choice
(:mod:`._dispatch`) recomputes results with non-finite values with the
separable kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .._backend import constant, device_of, numpy_constant
from .._wht._walsh import ordered_hadamard
from ._plan import PatchPlan, fold, plan_key

__all__ = ["project_direct", "reconstruct_direct"]


@dataclass(frozen=True, eq=False)
class _StripOps:
    """Direct operators on horizontal strips of patches (one strip per patch row ``p``).

    ``proj[p]`` (``pw*r x win_p*w``) maps the original rows ``win[p]`` of the grid
    (all columns, row-major) to the coefficients of the ``pw`` patches of row ``p``
    in ``(q, k)`` order: padding, the 2D transform and the selection in one matrix.
    ``rec[p]`` (``nint_p*w x pw*r``) maps them back to the grid rows ``out_rows[p]``
    (the crop of the padded strip).  Both are multiplied by the ``scale`` of
    :func:`_strip_ops`.  ``uniform``: no padding along the rows, so
    every strip uses the same matrices on consecutive, equal windows.
    """

    uniform: bool
    win: tuple
    proj: tuple
    out_rows: tuple
    rec: tuple


@lru_cache(maxsize=128)
def _strip_ops(key: tuple, scale: float) -> _StripOps:
    (h, w), n, pad, raw = key
    idx = np.frombuffer(raw, dtype=np.int64).reshape(-1, 2)
    ii, jj = idx[:, 0], idx[:, 1]
    wal = ordered_hadamard(n, "sequency").astype(np.float64)  # (n, n)
    cols = fold(w, n, pad)
    pw = len(cols)
    acol = np.zeros((pw, n, w))  # projection along the columns, padding folded in
    ccrop = np.zeros((pw, n, w))  # reconstruction along the columns, cropped
    for q, f in enumerate(cols):
        acol[q, :, f.lo : f.hi] = wal @ f.matrix
        ccrop[q][:, f.out_lo : f.out_hi] = wal[:, f.interior]
    acol = acol[:, jj, :]  # (pw, r, w)
    ccrop = ccrop[:, jj, :]
    win, proj, out_rows, rec = [], [], [], []
    for f in fold(h, n, pad):
        arow = (wal @ f.matrix)[ii, :]  # (r, win)
        g = np.einsum("ks,qkt->qkst", arow, acol).reshape(pw * len(ii), (f.hi - f.lo) * w)
        win.append((f.lo, f.hi))
        proj.append(g * scale)
        rrow = wal[:, f.interior][ii, :]  # (r, nint)
        out_rows.append((f.out_lo, f.out_hi))
        rec.append(np.einsum("ks,qkt->stqk", rrow, ccrop).reshape(len(f.interior) * w, pw * len(ii)) * scale)
    return _StripOps(h % n == 0, tuple(win), tuple(proj), tuple(out_rows), tuple(rec))


def _token_major(xp, x, layout, e):
    """Grid part of ``x`` as ``(B, h*w, C)`` (a transposed view for NCHW on NumPy)."""
    if layout == "tokens":
        return x if e == 0 else x[:, e:, :]
    b, c, h, w = x.shape
    return xp.permute_dims(xp.reshape(x, (b, c, h * w)), (0, 2, 1))


def project_direct(xp, x, plan: PatchPlan, layout: str, e: int, scale: float, out):
    """Coefficients ``(B, M, C)`` in ``(p, q, k)`` order; NumPy writes into ``out`` if given."""
    ops = _strip_ops(plan_key(plan), float(scale))
    h, w = plan.grid
    ph, pw = plan.patches
    r = plan.rank
    n = plan.patch
    numpy = isinstance(x, np.ndarray)
    dt = x.dtype
    dev = device_of(x)
    key = ("strip", plan_key(plan), float(scale))
    if layout == "tokens":
        b, _, c = x.shape
    else:
        b, c = x.shape[:2]
    if numpy:
        if out is None:
            out = np.empty((b, ph * pw * r, c), dtype=dt)
        xv = _token_major(np, x, layout, e)  # (B, h*w, C), possibly strided
        if ops.uniform:
            g = numpy_constant(key + (0,), ops.proj[0], dt)
            np.matmul(g, xv.reshape(b, ph, n * w, c), out=out.reshape(b, ph, pw * r, c))
        else:
            o4 = out.reshape(b, ph, pw * r, c)
            for p, (lo, hi) in enumerate(ops.win):
                g = numpy_constant(key + (p,), ops.proj[p], dt)
                np.matmul(g, xv[:, lo * w : hi * w, :], out=o4[:, p])
        return out
    if layout == "tokens":
        xv = _token_major(xp, x, layout, e)
        if ops.uniform:
            g = constant(key + (0,), lambda: ops.proj[0], xp, dt, dev)
            y = xp.matmul(g, xp.reshape(xv, (b, ph, n * w, c)))
            return xp.reshape(y, (b, ph * pw * r, c))
        pieces = []
        for p, (lo, hi) in enumerate(ops.win):
            g = constant(key + (p,), lambda p=p: ops.proj[p], xp, dt, dev)
            pieces.append(xp.matmul(g, xv[:, lo * w : hi * w, :]))
        return xp.concat(pieces, axis=1)
    # NCHW, generic: (B, ph, C, n*w) @ G.T, then channels last
    x3 = xp.reshape(x, (b, c, h * w))
    if ops.uniform:
        gt = constant(key + (0, "T"), lambda: ops.proj[0].T, xp, dt, dev)
        y = xp.matmul(xp.permute_dims(xp.reshape(x3, (b, c, ph, n * w)), (0, 2, 1, 3)), gt)  # (B, ph, C, pw*r)
        y = xp.permute_dims(y, (0, 1, 3, 2))
        return xp.reshape(y, (b, ph * pw * r, c))
    pieces = []
    for p, (lo, hi) in enumerate(ops.win):
        gt = constant(key + (p, "T"), lambda p=p: ops.proj[p].T, xp, dt, dev)
        y = xp.matmul(x3[:, :, lo * w : hi * w], gt)  # (B, C, pw*r)
        pieces.append(xp.permute_dims(y, (0, 2, 1)))
    return xp.concat(pieces, axis=1)


def reconstruct_direct(xp, coef, plan: PatchPlan, layout: str, out, scale: float = 1.0):
    """Grid ``(B, h*w, C)`` (tokens) or ``(B, C, h, w)``, times ``scale``, from ``(B, M, C)`` canonical coefficients."""
    ops = _strip_ops(plan_key(plan), float(scale))
    h, w = plan.grid
    ph, pw = plan.patches
    r = plan.rank
    n = plan.patch
    b, _, c = coef.shape
    dt = coef.dtype
    dev = device_of(coef)
    key = ("strip", plan_key(plan), float(scale))
    c4 = xp.reshape(coef, (b, ph, pw * r, c))
    if isinstance(coef, np.ndarray):
        if out is None:
            out = np.empty((b, h * w, c) if layout == "tokens" else (b, c, h, w), dtype=dt)
        if layout == "tokens":
            if ops.uniform:
                rm = numpy_constant(key + ("rec", 0), ops.rec[0], dt)
                np.matmul(rm, c4, out=out.reshape(b, ph, n * w, c))
            else:
                for p, (lo, hi) in enumerate(ops.out_rows):
                    rm = numpy_constant(key + ("rec", p), ops.rec[p], dt)
                    np.matmul(rm, c4[:, p], out=out[:, lo * w : hi * w, :])
            return out
        # NCHW: out^T = coef^T @ R^T writes rows of (C, strip) directly
        o3 = out.reshape(b, c, h * w)
        ct = c4.transpose(0, 1, 3, 2)  # (B, ph, C, pw*r)
        if ops.uniform:
            rt = numpy_constant(key + ("rec", 0, "T"), ops.rec[0].T, dt)
            np.matmul(ct, rt, out=o3.reshape(b, c, ph, n * w).transpose(0, 2, 1, 3))
        else:
            for p, (lo, hi) in enumerate(ops.out_rows):
                rt = numpy_constant(key + ("rec", p, "T"), ops.rec[p].T, dt)
                np.matmul(ct[:, p], rt, out=o3[:, :, lo * w : hi * w])
        return out
    if layout == "tokens":
        if ops.uniform:
            rm = constant(key + ("rec", 0), lambda: ops.rec[0], xp, dt, dev)
            return xp.reshape(xp.matmul(rm, c4), (b, h * w, c))
        pieces = []
        for p in range(ph):
            rm = constant(key + ("rec", p), lambda p=p: ops.rec[p], xp, dt, dev)
            pieces.append(xp.matmul(rm, c4[:, p, :, :]))
        return xp.concat(pieces, axis=1)
    ct = xp.permute_dims(c4, (0, 1, 3, 2))  # (B, ph, C, pw*r)
    if ops.uniform:
        rt = constant(key + ("rec", 0, "T"), lambda: ops.rec[0].T, xp, dt, dev)
        y = xp.matmul(ct, rt)  # (B, ph, C, n*w)
        y = xp.permute_dims(y, (0, 2, 1, 3))
        return xp.reshape(y, (b, c, h, w))
    pieces = []
    for p in range(ph):
        rt = constant(key + ("rec", p, "T"), lambda p=p: ops.rec[p].T, xp, dt, dev)
        pieces.append(xp.matmul(ct[:, p, :, :], rt))  # (B, C, nint*w)
    return xp.reshape(xp.concat(pieces, axis=2), (b, c, h, w))
