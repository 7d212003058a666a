"""Compiled kernel (Numba, tokens layout, patch size 8): the backward passes' projections, one pass each.

The cache-blocked kernel (:mod:`._blocked`) runs the two stages of the
separable transform as many small BLAS products; on the layer shapes of ViT
and EfficientFormer it moves 3-8 GB/s, a fraction of the memory bandwidth.
This kernel reads each patch once and transforms it in registers with the
8-point butterfly (:mod:`._numba_kernels`): additions only, so the
coefficients are the exact sums rounded, in fewer steps than a product
(``3`` additions per value and axis instead of ``8``).  It writes the
coefficients in the cache-blocked kernel's own ``(p, i, q, j)`` order, so
either kernel may serve either side of a backward pass.

Served: C-contiguous float32 or float64 NumPy tokens with patch size 8, when
Numba can be imported and the environment variable ``LBPCORE_NUMBA`` is not
``0``; everything else goes to the cache-blocked kernel.  Compiled on first
use (a few seconds per dtype) and cached on disk by Numba.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from .._blas import parallel_dynamic
from .._wht._walsh import ordered_hadamard
from ._blocked import _blocked_ops
from ._plan import PatchPlan, fold, plan_key

__all__ = ["available", "openmp_team", "project_compiled", "reconstruct_compiled", "serves"]

#: Smallest input (bytes) for which the patch rows are split over threads.
_PARALLEL_MIN_BYTES = 1 << 20

#: Chunks of patch rows that the threads take one at a time (at most this many per call).
_CHUNKS = 16

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@cache
def available() -> bool:
    """Whether the compiled kernel can run: Numba is installed and ``LBPCORE_NUMBA`` is not ``0``."""
    if os.environ.get("LBPCORE_NUMBA", "1").strip() == "0":
        return False
    return importlib.util.find_spec("numba") is not None


def serves(a, plan: PatchPlan) -> bool:
    """Whether the compiled kernel serves the tokens array ``a`` (its coefficients or its grid) for ``plan``."""
    return (plan.patch == 8 and isinstance(a, np.ndarray) and a.dtype in _DTYPES and a.flags.c_contiguous
            and available())


#: The OpenMP team the kernels run on, when one is set (:func:`openmp_team`).
_TEAM = contextvars.ContextVar("lbpcore_openmp_team", default=None)


@contextlib.contextmanager
def openmp_team(team):
    """Run the compiled kernels called inside the block on an OpenMP team (None: lbpcore's own pool).

    ``team`` is ``(GOMP_parallel, threads)``: the ``GOMP_parallel`` entry point of
    the caller's OpenMP runtime as a :mod:`ctypes` function (argument types
    ``void *, void *, unsigned, unsigned``) and the team size.  The PyTorch bridge
    passes PyTorch's own runtime, so that lbpcore's kernels and PyTorch's
    operations share one team of threads (see :mod:`._openmp`).
    """
    token = _TEAM.set(team)
    try:
        yield
    finally:
        _TEAM.reset(token)


@cache
def _team_runner():
    from ._openmp import run_on_team  # noqa: PLC0415 - Numba is optional and slow to import

    return run_on_team


@cache
def _kernels():
    from . import _numba_kernels  # noqa: PLC0415 - Numba is optional and slow to import

    return _numba_kernels


@dataclass(frozen=True, eq=False)
class _Ops:
    """Index arrays of the compiled kernel for one plan (see :func:`._numba_kernels.project8`)."""

    src_r: np.ndarray  # (ph, 8): grid row of each padded patch row, -1 a zero
    src_c: np.ndarray  # (pw, 8)
    dst_r: np.ndarray  # (ph, 8): grid row of each patch row inside the grid, -1 cropped
    dst_c: np.ndarray  # (pw, 8)
    need_a: np.ndarray  # natural indices of the horizontal sequencies used
    sel_i: np.ndarray  # (len(need_a), 8): per used column, the natural vertical indices, -1 ends
    sel_row: np.ndarray  # (len(need_a), 8, 2): (base, length): row p*block + base + q*length
    block: int


def _natural(n: int) -> np.ndarray:
    """``perm`` with ``ordered_hadamard(n, "sequency")[i] == H[perm[i]]``, ``H`` Sylvester's (natural) matrix."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    seq = ordered_hadamard(n, "sequency")
    return np.array([int(np.flatnonzero((h == row).all(axis=1))[0]) for row in seq], dtype=np.int64)


def _axis(length: int, n: int, pad: str):
    """``(src, dst)`` ``(count, n)`` of one grid axis: the sample each padded position reads, and the
    sample each interior position is cropped to (-1 for a zero, or outside the grid)."""
    folds = fold(length, n, pad)
    src = np.full((len(folds), n), -1, dtype=np.int64)
    dst = np.full((len(folds), n), -1, dtype=np.int64)
    for q, f in enumerate(folds):
        rows, cols = np.nonzero(f.matrix)
        src[q, rows] = f.lo + cols
        dst[q, f.interior] = f.out_lo + np.arange(len(f.interior))
    return src, dst


@lru_cache(maxsize=128)
def _ops(key: tuple) -> _Ops:
    (h, w), n, pad, _ = key
    blocked = _blocked_ops(key, 1.0)
    perm = _natural(n)
    used = {}
    for t, (i, js) in enumerate(zip(blocked.rows, blocked.cols, strict=True)):
        for pos, j in enumerate(js):
            used.setdefault(int(perm[j]), []).append((int(perm[i]), blocked.offsets[t] + pos, len(js)))
    need_a = np.array(sorted(used), dtype=np.int64)
    sel_i = np.full((len(need_a), n), -1, dtype=np.int64)
    sel_row = np.zeros((len(need_a), n, 2), dtype=np.int64)
    for k, a in enumerate(need_a):
        for m, (i, base, length) in enumerate(used[int(a)]):
            sel_i[k, m] = i
            sel_row[k, m] = (base, length)
    src_r, dst_r = _axis(h, n, pad)
    src_c, dst_c = _axis(w, n, pad)
    return _Ops(src_r, src_c, dst_r, dst_c, need_a, sel_i, sel_row, blocked.block)


def _on_team(kind, a, a_extra, width, tables, block, scale, out, o_extra, rows, nbytes) -> bool:
    """Run ``kind`` on the OpenMP team set by :func:`openmp_team`; False (nothing done) when none is
    set, the team has one thread, or the input is too small to split."""
    team = _TEAM.get()
    if team is None or team[1] < 2 or rows < 2 or nbytes < _PARALLEL_MIN_BYTES:
        return False
    _team_runner()(team, kind, a, a_extra, width, tables, block, scale, out, o_extra, rows, _CHUNKS)
    return True


def _over_rows(run, scratch, rows: int, nbytes: int) -> None:
    """``run(start, stop, *scratch())`` over patch rows ``0 .. rows-1``, in chunks the threads take in turn.

    A dynamic split (:func:`.._blas.parallel_dynamic`), not a static one: a thread
    whose core is shared (with PyTorch's OpenMP workers, which spin for a while
    after each PyTorch operation, or with another process) takes fewer chunks
    instead of holding up the call; a static split ran the caller's half of a
    projection right after a convolution at half speed, doubling the call.
    ``scratch()`` makes one thread's scratch arrays, once per thread.  An input
    too small to split is one call on the calling thread (each call of a Numba
    kernel with its fifteen arguments costs about 30 us).
    """
    if rows < 2 or nbytes < _PARALLEL_MIN_BYTES:
        run(0, rows, *scratch())
        return
    chunk = max(1, -(-rows // _CHUNKS))

    def work(items):
        bufs = scratch()
        for i in items:
            run(i * chunk, min(rows, (i + 1) * chunk), *bufs)

    parallel_dynamic(work, -(-rows // chunk), nbytes, _PARALLEL_MIN_BYTES)


def _run(kind: str, a, plan: PatchPlan, a_extra: int, scale: float, out, o_extra: int):
    """Kernel ``kind`` (``"project"``: :func:`._numba_kernels.project8`, ``"reconstruct"``:
    :func:`._numba_kernels.reconstruct8`) of ``a`` into ``out``: on the OpenMP team when one is set,
    else on lbpcore's pool (:func:`_over_rows`)."""
    ops = _ops(plan_key(plan))
    project = kind == "project"
    tables = ((ops.src_r, ops.src_c) if project else (ops.dst_r, ops.dst_c)) + (ops.need_a, ops.sel_i, ops.sel_row)
    b, _, c = a.shape
    s = a.dtype.type(scale)
    rows = b * plan.patches[0]
    nbytes = (a if project else out).nbytes
    if _on_team(kind, a, a_extra, plan.grid[1], tables, ops.block, s, out, o_extra, rows, nbytes):
        return out
    kern = _kernels().project8 if project else _kernels().reconstruct8
    shapes = [(8, 8, c)] if project else [(8, 8, c), (8, 8, c), (8, c)]  # the kernels' scratch

    def run(start, stop, *bufs):
        kern(a, a_extra, plan.grid[1], *tables, ops.block, s, out, o_extra, start, stop, *bufs)

    _over_rows(run, lambda: tuple(np.empty(shape, dtype=a.dtype) for shape in shapes), rows, nbytes)
    return out


def project_compiled(x, plan: PatchPlan, e: int, scale: float, out, oe: int = 0):
    """Coefficients of the grid part of tokens ``x`` ``(B, e + h*w, C)`` into rows ``oe:`` of ``out``.

    ``out`` is C-contiguous ``(B, oe + M, C)``; the coefficients come in the
    ``(p, i, q, j)`` order of :func:`._blocked.project_blocked`, times ``scale``.
    """
    return _run("project", x, plan, e, scale, out, oe)


def reconstruct_compiled(coef, plan: PatchPlan, out, scale: float = 1.0, ce: int = 0, oe: int = 0):
    """Inverse of :func:`project_compiled` (the crop, times ``scale``): ``coef[:, ce:]`` into ``out[:, oe:]``.

    ``coef`` ``(B, ce + M, C)`` and ``out`` ``(B, oe + h*w, C)``, both C-contiguous.
    """
    return _run("reconstruct", coef, plan, ce, scale, out, oe)
