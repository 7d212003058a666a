"""NumPy engine of the Walsh–Hadamard transform.

Lengths up to :data:`DENSE_MAX` are one product with the ordered, scaled
matrix.  Longer ones are factored into Hadamard blocks of at most 16, applied by
matrix products to chunks that fit the L2 cache, with every BLAS call below
OpenBLAS' multithreading threshold (:mod:`lbpcore._blas`) and the chunks spread
over a few Python threads.  Along rows the passes of :mod:`._passes` also put the
digits of the sequency and dyadic orders in place; along other axes (columns) the
order is a gather of whole rows when the chunk is written back.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .._blas import MNK_SINGLE, parallel, parallel_dynamic
from ._passes import BLOCK, DST, SRC, row_plan
from ._walsh import NORMS, ORDERINGS, natural_hadamard, norm_scale, ordered_hadamard, permutation, split_blocks

__all__ = ["DENSE_MAX", "FLOATS", "plan", "transform"]

#: Lengths up to this use one dense (ordered, scaled) product.
DENSE_MAX = 64
#: Elements per chunk: the scratch of one chunk stays in the L2 cache.
_CHUNK_ELEMS = 1 << 15
#: Longest rows (bytes) transformed a chunk at a time; longer ones take two steps (:func:`_long`).
_ROW_BYTES = 1 << 18
#: Length of the columns of the two-step transform of longer rows (at least; measured best).
_LONG_COLUMNS = 64
#: Plans whose scratch buffers a thread keeps between calls.
_SCRATCH_PLANS = 4
#: Smallest array (bytes) whose chunks are spread over threads.
_PARALLEL_MIN_BYTES = 1 << 20
#: The dtypes this engine computes in.
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class DensePlan(NamedTuple):
    """One product: ``y = x @ matrix`` along the rows."""

    matrix: np.ndarray  # (n, n): the ordered, scaled Walsh matrix, transposed


class FactoredPlan(NamedTuple):
    """Kronecker factors along columns: natural Hadamard blocks (the last one scaled), then a gather."""

    blocks: tuple  # block sizes, larger last
    mats: tuple  # (b, b) natural Hadamard matrices
    perm: np.ndarray | None  # output ``s`` takes natural coefficient ``perm[s]``; None for natural order


@lru_cache(maxsize=256)
def plan(n: int, ordering: str, scale: float, dtype) -> DensePlan | FactoredPlan:
    """Read-only constants of the transform of length ``n`` in ``dtype``."""
    if n <= DENSE_MAX:
        m = np.ascontiguousarray((ordered_hadamard(n, ordering) * scale).T, dtype=dtype)
        m.flags.writeable = False
        return DensePlan(m)
    blocks = split_blocks(n, BLOCK)
    mats = [np.ascontiguousarray(natural_hadamard(b) * (scale if t == len(blocks) - 1 else 1.0), dtype=dtype)
            for t, b in enumerate(blocks)]
    perm = None if ordering == "natural" else np.ascontiguousarray(permutation(n, ordering))
    for a in [*mats, perm]:
        if a is not None:
            a.flags.writeable = False
    return FactoredPlan(tuple(blocks), tuple(mats), perm)


def _view(buf, shape, perm):
    """``buf`` reshaped (by splitting and merging axes that allow it without a copy) and transposed."""
    return buf.reshape(shape).transpose(perm)


def _bind(passes, bufs):
    """Per pass the (input, output) views that lie in the scratch ``bufs`` (None for the chunk's own)."""
    return [
        (None if p.src == SRC else _view(bufs[p.src - 1], p.in_shape, p.in_perm),
         None if p.dst == DST else _view(bufs[p.dst - 1], p.out_shape, p.out_perm))
        for p in passes
    ]


_local = threading.local()


def _scratch(passes, size, dtype):
    """Views of two scratch buffers of ``size`` for ``passes``, kept per thread for the next call (a few plans)."""
    cache = _local.__dict__.setdefault("scratch", {})
    got = cache.get(id(passes))
    if got is None or got[0] is not passes:
        if len(cache) >= _SCRATCH_PLANS:
            cache.clear()
        bufs = (np.empty(size, dtype=dtype), np.empty(size, dtype=dtype))
        got = cache[id(passes)] = (passes, _bind(passes, bufs))
    return got[1]


def _run_passes(passes, bound, src, dst):
    """Apply ``passes`` to one chunk; ``dst`` may be ``src``.

    ``src`` and ``dst`` are C-contiguous chunks of rows, or the strided column blocks
    of :func:`_columns`, whose plans only split their axes (no reshape copies).
    """
    for p, (x, o) in zip(passes, bound, strict=True):
        if x is None:
            x = _view(src, p.in_shape, p.in_perm)
        if o is None:
            o = _view(dst, p.out_shape, p.out_perm)
        if p.right:
            np.matmul(x, p.op, out=o)
        else:
            np.matmul(p.op, x, out=o)


def _rows(src, dst, n, ordering, scale, kind="rows"):
    """Transform every row of the 2D ``src`` (``(rows, n)``) into ``dst`` (may be ``src``).

    ``kind="parity"``: odd rows transformed reversed (sequency; see :func:`._passes.row_plan`).
    """
    rows = src.shape[0]
    if n <= DENSE_MAX:
        np.matmul(src, plan(n, ordering, scale, dst.dtype).matrix, out=dst)  # one product
        return
    # rows per chunk: the chunk stays in the L2 cache and no product reaches OpenBLAS' threading threshold
    rc = max(1, min(rows, _CHUNK_ELEMS // n, (MNK_SINGLE - 1) // (n * BLOCK)))
    if kind == "parity" and rc > 1:
        rc -= rc % 2  # whole pairs of rows (rows is even)
    chunks = -(-rows // rc)
    dtype = dst.dtype
    # one row per chunk: the parity is the chunk's
    kinds = ("rows", "odd") if kind == "parity" and rc == 1 else (kind, kind)

    def work(items):
        for c in items:
            a = c * rc
            b = min(rows, a + rc)
            passes = row_plan(n, ordering, scale, dtype, b - a, kinds[c % 2])
            _run_passes(passes, _scratch(passes, (b - a) * n, dtype), src[a:b], dst[a:b])

    parallel_dynamic(work, chunks, src.size * src.itemsize, _PARALLEL_MIN_BYTES)


def _cols(src, dst, n, ordering, scale):
    """Transform along axis 1 of ``(pre, n, post)`` arrays (``post > 1``); ``dst`` may be ``src``.

    Chunks of ``(n, w)`` columns are copied into contiguous scratch (in cache),
    transformed digit by digit with left products, and written back once.
    """
    pre, _, post = src.shape
    cplan = plan(n, ordering, scale, dst.dtype)
    if isinstance(cplan, DensePlan):
        blocks, mats, perm = (n,), (np.ascontiguousarray(cplan.matrix.T),), None
    else:
        blocks, mats, perm = cplan
    pc = max(1, min(post, _CHUNK_ELEMS // n, (MNK_SINGLE - 1) // (n * max(blocks))))
    cchunks = -(-post // pc)
    total = pre * cchunks

    def work(c0, c1):
        bufs = (np.empty(n * pc, dtype=dst.dtype), np.empty(n * pc, dtype=dst.dtype))
        for c in range(c0, c1):
            i, j = divmod(c, cchunks)
            j0 = j * pc
            w = min(post, j0 + pc) - j0
            cur = bufs[0][: n * w].reshape(n, w)
            other = bufs[1][: n * w].reshape(n, w)
            np.copyto(cur, src[i, :, j0 : j0 + w])
            left = 1
            for t, bt in enumerate(blocks):
                inner = n // (left * bt)
                np.matmul(mats[t], cur.reshape(left, bt, inner * w), out=other.reshape(left, bt, inner * w))
                cur, other = other, cur
                left *= bt
            if perm is None:
                np.copyto(dst[i, :, j0 : j0 + w], cur)
            else:
                np.take(cur, perm, axis=0, out=dst[i, :, j0 : j0 + w], mode="clip")

    parallel(work, total, src.size * src.itemsize, _PARALLEL_MIN_BYTES)


def _columns(src, dst, a, ordering, scale):
    """Transform along axis 1 of ``src`` ``(pre, a, b)`` by blocks of columns, read where they lie.

    ``dst``: ``(pre, a, b)`` for the natural order (may be ``src``), else ``(pre, b, a)``
    (each block written transposed, so that the column digits come last).
    """
    pre, _, b = src.shape
    w = max(1, min(b, _CHUNK_ELEMS // a))
    per = b // w
    dtype = dst.dtype

    def work(items):
        passes = row_plan(a, ordering, scale, dtype, w, "cols")
        bound = _scratch(passes, a * w, dtype)
        for c in items:
            i, j = divmod(c, per)
            j0 = j * w
            out = dst[i, :, j0 : j0 + w] if ordering == "natural" else dst[i, j0 : j0 + w]
            _run_passes(passes, bound, src[i, :, j0 : j0 + w], out)

    parallel_dynamic(work, pre * per, src.size * src.itemsize, _PARALLEL_MIN_BYTES)


def _long(src, dst, n, ordering, scale):
    """Rows too long for one chunk: the rows of length ``b`` of ``(pre, a, b)`` views, then their columns.

    The sequency and dyadic orders put the digits of ``b`` first: the columns go
    transposed into a ``(pre, b, a)`` view of ``dst`` (through a temporary), and
    the sequency sign between the two halves is the reversal of odd rows.
    """
    pre = src.shape[0]
    # long rows, short columns: the column blocks are wide (``_CHUNK_ELEMS / a`` columns)
    b = min(n // _LONG_COLUMNS, _ROW_BYTES // src.itemsize)
    a = n // b
    if ordering == "natural":
        _rows(src.reshape(pre * a, b), dst.reshape(pre * a, b), b, ordering, 1.0)
        _columns(dst.reshape(pre, a, b), dst.reshape(pre, a, b), a, ordering, scale)
        return
    tmp = np.empty((pre * a, b), dtype=dst.dtype)
    _rows(src.reshape(pre * a, b), tmp, b, ordering, 1.0, "parity" if ordering == "sequency" else "rows")
    _columns(tmp.reshape(pre, a, b), dst.reshape(pre, b, a), a, ordering, scale)


def _transform_axis(x3, out3, ordering, scale):
    """Transform along axis 1 of ``(pre, n, post)`` views; ``out3`` may alias ``x3`` exactly."""
    pre, n, post = x3.shape
    if post > 1:
        _cols(x3, out3, n, ordering, scale)
    elif n * x3.itemsize <= _ROW_BYTES:
        _rows(x3.reshape(pre, n), out3.reshape(pre, n), n, ordering, scale)
    else:
        _long(x3.reshape(pre, n), out3.reshape(pre, n), n, ordering, scale)


def transform(x, axes, ordering, norm, inverse, out):
    """Transform a float32/float64 NumPy ``x`` along ``axes``.

    Returns None when the arguments need the general path (and its errors).
    ``out`` may be ``x`` (in place); any other overlap goes through a temporary.
    """
    ndim = x.ndim
    if ndim == 0 or ordering not in ORDERINGS or norm not in NORMS:
        return None
    norm_axes = []
    for a in axes:
        if type(a) is not int or not -ndim <= a < ndim:
            return None
        norm_axes.append(a + ndim if a < 0 else a)
    if len(set(norm_axes)) != len(norm_axes):
        return None
    shape = x.shape
    for a in norm_axes:
        n = shape[a]
        if n < 1 or n & (n - 1):
            return None
    if out is None:
        res = np.empty(shape, dtype=x.dtype)
    else:
        if type(out) is not np.ndarray or out.shape != shape or out.dtype != x.dtype:
            got = type(out).__name__
            if isinstance(out, np.ndarray):
                got += f" of shape {out.shape} and dtype {out.dtype}"
            raise ValueError(f"out must be a NumPy array of shape {shape} and dtype {x.dtype}, got {got}")
        if not out.flags.writeable:
            raise ValueError("out must be writeable")
        if out.flags.c_contiguous and (out is x or not np.may_share_memory(x, out)):
            res = out
        else:
            res = np.empty(shape, dtype=x.dtype)
    src = x
    size = x.size
    if size == 0:  # an empty axis besides the transformed ones: an empty result, as numpy.fft gives
        return res if out is None else out
    for a in norm_axes:
        n = shape[a]
        scale = norm_scale(n, norm, inverse)
        if a == ndim - 1:
            pre, post = size // n, 1
        else:
            pre = math.prod(shape[:a])
            post = size // (pre * n)
        if n == 1:
            np.multiply(src, src.dtype.type(scale), out=res)
        else:
            _transform_axis(src.reshape(pre, n, post), res.reshape(pre, n, post), ordering, scale)
        src = res
    if out is not None and res is not out:
        np.copyto(out, res)
        return out
    return res
