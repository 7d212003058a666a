"""NumPy engine of the Walsh–Hadamard transform.

Lengths up to :data:`DENSE_MAX` are one product with the ordered, scaled
matrix.  Longer ones are factored into Hadamard blocks of at most 16 (``2 * 16``
flops per element per stage), applied by matrix products to chunks that fit the
L2 cache, with every BLAS call below OpenBLAS' multithreading threshold
(:mod:`lbpcore._blas`) and the chunks spread over a few Python threads; the
sequency and dyadic orders are a gather at the end.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .._blas import MNK_SINGLE, parallel
from ._walsh import NORMS, ORDERINGS, natural_hadamard, norm_scale, ordered_hadamard, permutation, split_blocks

__all__ = ["DENSE_MAX", "FLOATS", "plan", "transform"]

#: Lengths up to this use one dense (ordered, scaled) product.
DENSE_MAX = 64
#: Largest Hadamard block of the factored transform.
_BLOCK = 16
#: Elements per chunk: the scratch of one chunk stays in the L2 cache.
_CHUNK_ELEMS = 1 << 15
#: Smallest array (bytes) whose chunks are spread over threads.
_PARALLEL_MIN_BYTES = 1 << 20
#: The dtypes this engine computes in.
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class DensePlan(NamedTuple):
    """One product: ``y = x @ matrix`` along the rows."""

    matrix: np.ndarray  # (n, n): the ordered, scaled Walsh matrix, transposed


class FactoredPlan(NamedTuple):
    """Kronecker factors: natural Hadamard blocks (the last one scaled), then a gather."""

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
    blocks = split_blocks(n, _BLOCK)
    mats = [np.ascontiguousarray(natural_hadamard(b) * (scale if t == len(blocks) - 1 else 1.0), dtype=dtype)
            for t, b in enumerate(blocks)]
    perm = None if ordering == "natural" else np.ascontiguousarray(permutation(n, ordering))
    for a in [*mats, perm]:
        if a is not None:
            a.flags.writeable = False
    return FactoredPlan(tuple(blocks), tuple(mats), perm)


def _rows_chunk(src, dst, fplan: FactoredPlan, a, b, bufs):
    """Transform rows ``src[a:b]`` (2D, unit stride along the rows) into ``dst[a:b]``.

    ``bufs``: two scratch vectors of at least ``(b - a) * n`` elements.
    """
    blocks, mats, perm = fplan
    rc = b - a
    n = src.shape[1]
    k = len(blocks)
    last = blocks[-1]
    cur, other = bufs[0][: rc * n], bufs[1][: rc * n]
    if k == 1 and perm is None:
        np.matmul(src[a:b].reshape(rc * n // last, last), mats[-1], out=dst[a:b].reshape(rc * n // last, last))
        return
    # innermost digit: one right product on the rows
    np.matmul(src[a:b].reshape(rc * n // last, last), mats[-1], out=cur.reshape(rc * n // last, last))
    post = last
    for t in range(k - 2, -1, -1):
        bt = blocks[t]
        pre = rc * n // (bt * post)
        if t == 0 and perm is None:
            np.matmul(mats[t], cur.reshape(pre, bt, post), out=dst[a:b].reshape(pre, bt, post))
            return
        np.matmul(mats[t], cur.reshape(pre, bt, post), out=other.reshape(pre, bt, post))
        cur, other = other, cur
        post *= bt
    np.take(cur.reshape(rc, n), perm, axis=1, out=dst[a:b], mode="clip")


def _rows(src, dst, rplan):
    """Transform every row of the 2D ``src`` into ``dst`` (may be ``src``)."""
    rows, n = src.shape
    if isinstance(rplan, DensePlan):
        np.matmul(src, rplan.matrix, out=dst)  # one product with the ordered, scaled matrix
        return
    rc = max(1, min(_CHUNK_ELEMS, (MNK_SINGLE - 1) // rplan.blocks[-1]) // n)
    rc = min(rc, rows)
    chunks = -(-rows // rc)

    def work(c0, c1):
        bufs = (np.empty(rc * n, dtype=dst.dtype), np.empty(rc * n, dtype=dst.dtype))
        for c in range(c0, c1):
            _rows_chunk(src, dst, rplan, c * rc, min(rows, c * rc + rc), bufs)

    parallel(work, chunks, src.size * src.itemsize, _PARALLEL_MIN_BYTES)


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


def _transform_axis(x3, out3, ordering, scale):
    """Transform along axis 1 of ``(pre, n, post)`` views; ``out3`` may alias ``x3`` exactly."""
    pre, n, post = x3.shape
    if post > 1:
        _cols(x3, out3, n, ordering, scale)
        return
    src = x3.reshape(pre, n)
    dst = out3.reshape(pre, n)
    if pre == 1 and n > _CHUNK_ELEMS:
        # one long vector: rows of length b, then the columns of the (a, b) view
        m = n.bit_length() - 1
        b = 1 << (m - m // 2)
        a = n // b
        _rows(src.reshape(a, b), dst.reshape(a, b), plan(b, "natural", scale, dst.dtype))
        _cols(dst.reshape(1, a, b), dst.reshape(1, a, b), a, "natural", 1.0)
        if ordering != "natural":
            perm = plan(n, ordering, 1.0, dst.dtype).perm
            dst[0] = np.take(dst[0], perm, mode="clip")
        return
    _rows(src, dst, plan(n, ordering, scale, dst.dtype))


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
