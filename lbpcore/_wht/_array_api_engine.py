"""Array-API engine of the Walsh–Hadamard transform (CuPy, PyTorch, array-api-strict, ...).

Viewing a length-``n`` axis as ``k`` axes of sizes ``n_t`` (row-major), the
natural-order transform is the product of ``k`` small dense Hadamard blocks of
at most 64, each applied along one of those axes with a matrix product.  This
costs ``2 n (n_1 + ... + n_k)`` flops instead of the ``n log2 n`` additions of
radix-2 butterflies, but runs at BLAS speed and never moves data between axes.
The sequency and dyadic orders are a gather of the natural result.  CuPy rows
along the last axis take the CUDA kernel of :mod:`lbpcore._wht._cuda`.
"""

from __future__ import annotations

import math

from .._backend import constant, device_of
from . import _cuda
from ._walsh import natural_hadamard, permutation, split_blocks

__all__ = ["transform_axis"]

#: Largest dense Hadamard block.
_MAX_BLOCK = 64


def transform_axis(xp, x, axis: int, ordering: str, scale: float):
    """Apply ``scale * M`` along ``axis`` (already normalized) of ``x``."""
    shape = tuple(x.shape)
    n = shape[axis]
    pre = math.prod(shape[:axis])
    post = math.prod(shape[axis + 1 :])
    dt = x.dtype
    dev = device_of(x)
    if pre * post == 0:  # empty along another axis: an empty result, as numpy.fft gives
        return xp.asarray(x, copy=True)
    if n == 1:
        return x * xp.asarray(scale, dtype=dt, device=dev) if scale != 1.0 else xp.asarray(x, copy=True)
    if post == 1 and _cuda.applicable(x, n):
        return _cuda.transform(x, n, ordering, scale)
    y = xp.reshape(x, (pre, n, post))
    left = 1
    right = n
    for t, b in enumerate(split_blocks(n, _MAX_BLOCK)):
        right //= b
        s = scale if t == 0 else 1.0
        h = constant(("hblock", b, s), lambda b=b, s=s: natural_hadamard(b) * s, xp, dt, dev)
        inner = right * post
        if inner == 1:
            y = xp.reshape(y, (pre * left, b))
            y = xp.matmul(y, h)
        else:
            y = xp.reshape(y, (pre * left, b, inner))
            y = xp.matmul(h, y)
        left *= b
    y = xp.reshape(y, (pre, n, post))
    if ordering != "natural":
        perm = constant(("perm", n, ordering), lambda: permutation(n, ordering), xp, xp.int64, dev)
        y = xp.take(y, perm, axis=1)
    return xp.reshape(y, shape)
