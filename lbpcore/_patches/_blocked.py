"""Cache-blocked separable kernel (NumPy, tokens layout): the backward passes' projections.

A row operator ``(k_i, window)`` per patch row, then, per selected vertical
sequency ``i``, a column operator that keeps only the horizontal sequencies
selected with it.  The coefficients stay in the kernel's own order
``(p, i, q, j)``, so no gather is needed (the backward GEMMs do not care about
the order of their rows).  Chunks of the batch go through both stages while
their scratch sits in the L2 cache, every BLAS call is kept single-threaded
(:mod:`lbpcore._blas`) and the chunks are spread over a few Python threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .._backend import numpy_constant
from .._blas import matmul, parallel
from .._wht._walsh import ordered_hadamard
from ._plan import PatchPlan, fold, padding, plan_key

__all__ = ["project_blocked", "reconstruct_blocked"]

#: Smallest input (bytes) for which the batch is split over threads.
_PARALLEL_MIN_BYTES = 1 << 22


@dataclass(frozen=True, eq=False)
class _BlockedOps:
    """Operators of the cache-blocked kernel.

    Coefficients are kept in the order ``(p, i, q, j)``: patch row, then
    each selected vertical sequency ``i`` (the ``t``-th of ``rows``), then patch
    column, then the horizontal sequencies ``cols[t]`` selected with that ``i``.
    Every coefficient row is a selected basis, so no gather is needed; the
    backward GEMMs do not care about the order of their rows.
    """

    rows: tuple  # selected vertical sequencies I (k_i of them)
    cols: tuple  # per t: selected horizontal sequencies J_t with I[t]
    offsets: tuple  # per t: first row of J_t's block inside a patch-row block
    block: int  # rows per patch row: pw * r
    row_uniform: bool
    col_uniform: bool
    prow: tuple  # per p: (lo, hi, (k_i, hi-lo) matrix), scaled (the projection's first stage)
    pcol: tuple  # per t: per q: (lo, hi, (|J_t|, hi-lo) matrix)
    rrow: tuple  # per p: (lo, hi, (hi-lo, k_i) matrix): output grid rows
    rcol: tuple  # per t: per q: (lo, hi, (hi-lo, |J_t|) matrix): output grid columns, scaled (the first stage)
    pcol_all: tuple  # per t: the (pw*|J_t|, w) column operator of all patch columns at once (padding folded)
    rcol_all: tuple  # per t: the (w, pw*|J_t|) column reconstruction of all patch columns at once, scaled


@lru_cache(maxsize=128)
def _blocked_ops(key: tuple, scale: float) -> _BlockedOps:
    (h, w), n, pad, raw = key
    idx = np.frombuffer(raw, dtype=np.int64).reshape(-1, 2)
    rows = tuple(int(v) for v in np.unique(idx[:, 0]))
    cols = tuple(tuple(int(j) for j in np.sort(idx[idx[:, 0] == i, 1])) for i in rows)
    wal = ordered_hadamard(n, "sequency").astype(np.float64)
    pw = padding(w, n)[0]
    offsets, off = [], 0
    for js in cols:
        offsets.append(off)
        off += pw * len(js)
    wr = wal[list(rows)]
    prow, rrow = [], []
    for f in fold(h, n, pad):
        prow.append((f.lo, f.hi, (wr @ f.matrix) * scale))
        rrow.append((f.out_lo, f.out_hi, wr[:, f.interior].T.copy()))
    pcol, rcol, pcol_all, rcol_all = [], [], [], []
    folds = fold(w, n, pad)
    for js in cols:
        wc = wal[list(js)]
        pcol.append(tuple((f.lo, f.hi, wc @ f.matrix) for f in folds))
        rcol.append(tuple((f.out_lo, f.out_hi, wc[:, f.interior].T * scale) for f in folds))
        pa = np.zeros((len(folds), len(js), w))
        ra = np.zeros((w, len(folds), len(js)))
        for q, f in enumerate(folds):
            pa[q, :, f.lo : f.hi] = wc @ f.matrix
            ra[f.out_lo : f.out_hi, q, :] = wc[:, f.interior].T * scale
        pcol_all.append(pa.reshape(-1, w))
        rcol_all.append(ra.reshape(w, -1))
    return _BlockedOps(rows, cols, tuple(offsets), off, h % n == 0, w % n == 0,
                       tuple(prow), tuple(pcol), tuple(rrow), tuple(rcol), tuple(pcol_all), tuple(rcol_all))


#: Working-set target of one batch chunk of the cache-blocked NumPy path (bytes).
_CHUNK_BYTES = 1 << 20


def _chunks(b, ph, per_p):
    """Batch and patch-row chunk sizes so that a chunk's scratch is about ``_CHUNK_BYTES``."""
    nb = max(1, _CHUNK_BYTES // max(1, per_p * ph))
    if nb >= 2:
        return min(nb, b), ph
    return 1, max(1, min(ph, _CHUNK_BYTES // max(1, per_p)))


def _mats(plan, scale, dt, row_ops, col_ops, rtag, ctag):
    """NumPy constants of one direction of the kernel: per-patch-row matrices and,
    per selected vertical sequency, per-patch-column matrices."""
    key = ("blocked", plan_key(plan), scale)
    rmats = [numpy_constant(key + (rtag, p), m, dt) for p, (_, _, m) in enumerate(row_ops)]
    cmats = [[numpy_constant(key + (ctag, t, q), m, dt) for q, (_, _, m) in enumerate(cq)]
             for t, cq in enumerate(col_ops)]
    return rmats, cmats


def _all_columns(plan, scale, dt, ops_all, tag):
    """NumPy constants of the all-columns operators (per selected vertical sequency), for grids with padding.

    One product over all ``pw`` patch columns (``2 pw |J_t|`` flops per
    element) instead of one per patch column (``2 |J_t|`` flops, ``pw`` calls):
    the calls, not the flops, bound these thin products (1.1-1.7x faster
    projections and reconstructions of 14x14 and 28x28 grids, measured
    interleaved in one process).
    """
    key = ("blocked", plan_key(plan), scale, tag)
    return [numpy_constant(key + (t,), m, dt) for t, m in enumerate(ops_all)]


def _tiles(ops, plan, bs, be, b, inner, dt):
    """Tiles ``(b0, b1, p0, p1, scratch)`` of batch items ``[bs, be)`` and patch rows,
    with an L2-sized scratch ``(b1-b0, p1-p0) + inner``
    (``inner = (k_i, w*C)``) reused across tiles (one per worker)."""
    ph = plan.patches[0]
    nb, npp = _chunks(b, ph, inner[0] * inner[1] * np.dtype(dt).itemsize)
    if not ops.row_uniform:
        npp = 1
    scratch = np.empty((min(nb, be - bs), npp) + tuple(inner), dtype=dt)
    for b0 in range(bs, be, nb):
        b1 = min(be, b0 + nb)
        for p0 in range(0, ph, npp):
            p1 = min(ph, p0 + npp)
            yield b0, b1, p0, p1, scratch[: b1 - b0, : p1 - p0]


def _sizes(plan: PatchPlan, ops: _BlockedOps, a):
    """``(b, c, h, w, n, ph, pw, ki)`` of a kernel call on the ``(B, ., C)`` array ``a``."""
    b, _, c = a.shape
    return (b, c, *plan.grid, plan.patch, *plan.patches, len(ops.rows))


def _column_blocks(ops: _BlockedOps, coef4, t4, b0, b1, p0, p1, pw, w, c):
    """Per selected vertical sequency ``t`` of a tile: ``(t, coef, grid)``.

    ``coef`` views the tile's coefficients of ``J_t`` in ``coef4`` ``(B, ph, pw*r, C)``
    as ``(b1-b0, p1-p0, pw, |J_t|, C)``; ``grid`` views row ``t`` of the scratch
    ``t4`` ``(b1-b0, p1-p0, k_i, w*C)`` as ``(b1-b0, p1-p0, w, C)``.
    """
    t5 = t4.reshape(b1 - b0, p1 - p0, len(ops.rows), w, c)
    for t, js in enumerate(ops.cols):
        off = ops.offsets[t]
        coef = coef4[b0:b1, p0:p1, off : off + pw * len(js)].reshape(b1 - b0, p1 - p0, pw, len(js), c)
        yield t, coef, t5[:, :, t]


def project_blocked(x, plan: PatchPlan, e: int, scale: float, out):
    """Coefficients of the grid part of tokens ``x`` into ``out`` ``(B, M, C)``, in ``(p, i, q, j)`` order."""
    ops = _blocked_ops(plan_key(plan), float(scale))
    dt = x.dtype
    b, c, h, w, n, ph, pw, ki = _sizes(plan, ops, x)
    wc = w * c
    xv = (x if e == 0 else x[:, e:, :]).reshape(b, h, wc)
    o4 = out.reshape(b, ph, ops.block, c)
    pmats, cmats = _mats(plan, float(scale), dt, ops.prow, ops.pcol, "r", "c")
    call = _all_columns(plan, float(scale), dt, ops.pcol_all, "ca")
    x4 = xv.reshape(b, ph, n, wc) if ops.row_uniform else None

    def work(bs, be):
        for b0, b1, p0, p1, t4 in _tiles(ops, plan, bs, be, b, (ki, wc), dt):
            if ops.row_uniform:
                matmul(pmats[0], x4[b0:b1, p0:p1], t4)
            else:
                lo, hi, _ = ops.prow[p0]
                matmul(pmats[p0], xv[b0:b1, lo:hi][:, None], t4)
            for t, coef, grid in _column_blocks(ops, o4, t4, b0, b1, p0, p1, pw, w, c):
                if ops.col_uniform:
                    matmul(cmats[t][0], grid.reshape(b1 - b0, p1 - p0, pw, n, c), coef)
                else:  # every patch column in one product (padding folded into its operator)
                    matmul(call[t], grid, coef.reshape(b1 - b0, p1 - p0, -1, c))

    parallel(work, b, x.nbytes, _PARALLEL_MIN_BYTES)
    return out


def reconstruct_blocked(coef, plan: PatchPlan, out, scale: float = 1.0):
    """Inverse of :func:`project_blocked` (crop, times ``scale``): ``(B, M, C)`` -> ``out`` ``(B, h*w, C)``."""
    ops = _blocked_ops(plan_key(plan), float(scale))
    dt = coef.dtype
    b, c, h, w, n, ph, pw, ki = _sizes(plan, ops, coef)
    wc = w * c
    ov = out.reshape(b, h, wc)
    c4 = coef.reshape(b, ph, ops.block, c)
    rmats, cmats = _mats(plan, float(scale), dt, ops.rrow, ops.rcol, "R", "C")
    call = _all_columns(plan, float(scale), dt, ops.rcol_all, "Ca")
    o4 = ov.reshape(b, ph, n, wc) if ops.row_uniform else None

    def work(bs, be):
        for b0, b1, p0, p1, t4 in _tiles(ops, plan, bs, be, b, (ki, wc), dt):
            for t, coef, grid in _column_blocks(ops, c4, t4, b0, b1, p0, p1, pw, w, c):
                if ops.col_uniform:
                    matmul(cmats[t][0], coef, grid.reshape(b1 - b0, p1 - p0, pw, n, c))
                else:  # every patch column in one product (the crop folded into its operator)
                    matmul(call[t], coef.reshape(b1 - b0, p1 - p0, -1, c), grid)
            if ops.row_uniform:
                matmul(rmats[0], t4, o4[b0:b1, p0:p1])
            else:
                lo, hi, _ = ops.rrow[p0]
                matmul(rmats[p0], t4[:, 0], ov[b0:b1, lo:hi])

    parallel(work, b, b * h * wc * dt.itemsize, _PARALLEL_MIN_BYTES)
    return out
