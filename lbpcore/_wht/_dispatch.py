"""Route a transform to the NumPy or the array-API engine, after the argument checks."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._backend import as_float_array
from .._validation import check_choice, check_transform_axes
from . import _cuda, _numpy_engine
from ._array_api_engine import transform_axis
from ._walsh import NORMS, ORDERINGS, norm_scale

__all__ = ["transform"]


@lru_cache(maxsize=256)
def _one_product(ndim, n, dtype, axes, ordering, norm, inverse):
    """The matrix ``m`` with ``y = x @ m`` when the call is one dense product along the last axis, else None."""
    if len(axes) != 1 or type(axes[0]) is not int or axes[0] not in (-1, ndim - 1):
        return None
    if not 1 < n <= _numpy_engine.DENSE_MAX or n & (n - 1) or dtype not in _numpy_engine.FLOATS:
        return None
    if ordering not in ORDERINGS or norm not in NORMS:
        return None
    return _numpy_engine.plan(n, ordering, norm_scale(n, norm, inverse), dtype).matrix


def transform(x, axes, ordering, norm, inverse, out=None, name="x"):
    """Walsh–Hadamard transform of ``x`` along each of ``axes`` (see :func:`lbpcore.fwht`)."""
    if type(x) is np.ndarray:
        if x.ndim:
            # fast lane: a single product along the last axis, looked up by the call's
            # signature (a few microseconds)
            m = _one_product(x.ndim, x.shape[-1], x.dtype, axes, ordering, norm, inverse)
            if m is not None:
                if out is None:
                    return np.matmul(x, m)
                if type(out) is np.ndarray and out.shape == x.shape and out.dtype == x.dtype and out.flags.writeable:
                    return np.matmul(x, m, out=out)  # overlap with x is handled by NumPy
        if x.dtype in _numpy_engine.FLOATS:
            y = _numpy_engine.transform(x, axes, ordering, norm, inverse, out)
            if y is not None:
                return y
    elif len(axes) == 1 and ordering in ORDERINGS and norm in NORMS and getattr(x, "ndim", 0) and out is None:
        # CuPy fast lane: one kernel along the last axis, without the generic checks (which
        # cost more CPU time than the kernel takes on the GPU for arrays of tens of MB)
        n = x.shape[-1]
        if type(axes[0]) is int and axes[0] in (-1, x.ndim - 1) and _cuda.applicable(x, n):
            return _cuda.transform(x, n, ordering, norm_scale(n, norm, inverse))
    check_choice(ordering, "ordering", ORDERINGS)
    check_choice(norm, "norm", NORMS)
    xp, x = as_float_array(x, name)
    norm_axes = check_transform_axes(tuple(x.shape), axes, name)
    if isinstance(x, np.ndarray):  # promoted integers: the NumPy engine
        y = _numpy_engine.transform(x, axes, ordering, norm, inverse, out)
        if y is not None:
            return y
    if out is not None:
        raise TypeError("out= is supported for NumPy arrays only")
    y = x
    for a in norm_axes:
        y = transform_axis(xp, y, a, ordering, norm_scale(x.shape[a], norm, inverse))
    return y
