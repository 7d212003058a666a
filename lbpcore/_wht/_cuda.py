"""CuPy kernel for the Walsh–Hadamard transform along a contiguous last axis.

One CUDA block transforms one row of length ``n <= 4096`` in shared memory with
radix-8 rounds of butterflies held in registers (three radix-2 stages
between shared-memory exchanges): each element is read from and written to
global memory once, where the generic array-API path (dense Hadamard blocks by
matrix products plus a gather for the ordering) makes several passes.  The
scale and the ordering permutation are applied when the row is written back.
Its measured bandwidth is in ``docs/benchmarks.md`` (GPU section).

Only used for CuPy arrays of float32/float64; everything else takes the generic
path, which remains the reference this kernel is tested against (``gpu`` tests).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["applicable", "fwht_rows", "MAX_N"]

#: Longest row the shared-memory kernel handles.
MAX_N = 4096

_SOURCE = r"""
extern "C" __global__ void fwht_rows_{name}(const {T}* __restrict__ x, {T}* __restrict__ y,
                                         const long long* __restrict__ perm,
                                         const int n, const int logn, const {T} scale) {{
    extern __shared__ unsigned char smem_raw[];
    {T}* s = reinterpret_cast<{T}*>(smem_raw);
    const size_t row = (size_t)blockIdx.x * (size_t)n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = x[row + i];
    __syncthreads();
    /* rounds of up to three radix-2 stages (strides h, 2h, 4h) done in registers */
    for (int logh = 0; logh < logn; logh += 3) {{
        const int stages = min(3, logn - logh);
        const int r = 1 << stages;
        const int h = 1 << logh;
        const int groups = n >> stages;
        for (int t = threadIdx.x; t < groups; t += blockDim.x) {{
            const int base = ((t >> logh) << (logh + stages)) + (t & (h - 1));
            {T} v[8];
            #pragma unroll
            for (int k = 0; k < 8; ++k) if (k < r) v[k] = s[base + k * h];
            #pragma unroll
            for (int st = 1; st < 8; st <<= 1) {{
                if (st < r) {{
                    #pragma unroll
                    for (int k = 0; k < 8; ++k) {{
                        if (k < r && (k & st) == 0) {{
                            const {T} a = v[k];
                            const {T} b = v[k + st];
                            v[k] = a + b;
                            v[k + st] = a - b;
                        }}
                    }}
                }}
            }}
            #pragma unroll
            for (int k = 0; k < 8; ++k) if (k < r) s[base + k * h] = v[k];
        }}
        __syncthreads();
    }}
    for (int i = threadIdx.x; i < n; i += blockDim.x) y[row + i] = scale * s[perm[i]];
}}
"""


@lru_cache(maxsize=None)
def _kernel(cp, dtype_name: str):
    t = "float" if dtype_name == "float32" else "double"
    return cp.RawKernel(_SOURCE.format(name=dtype_name, T=t), f"fwht_rows_{dtype_name}")


def applicable(x, n: int) -> bool:
    """True when ``x`` is a CuPy float32/float64 array and ``2 <= n <= MAX_N``."""
    if not (2 <= n <= MAX_N):
        return False
    mod = type(x).__module__
    if not mod.startswith("cupy"):
        return False
    return np.dtype(x.dtype) in (np.dtype(np.float32), np.dtype(np.float64))


def fwht_rows(x, n: int, perm, scale: float):
    """Transform every length-``n`` row of ``x`` (any shape whose last axis is ``n``).

    Parameters
    ----------
    x : cupy.ndarray, shape (..., n)
    n : int
        Power of two, at most :data:`MAX_N`.
    perm : cupy.ndarray of int64, shape (n,)
        Output ``s`` takes natural coefficient ``perm[s]`` (the identity for natural order).
    scale : float

    Returns
    -------
    cupy.ndarray, same shape and dtype as ``x``
    """
    import cupy as cp  # noqa: PLC0415 - optional GPU dependency, only for CuPy input

    shape = x.shape
    rows = x.size // n
    src = cp.ascontiguousarray(x).reshape(rows, n)
    out = cp.empty_like(src)
    if rows == 0:
        return out.reshape(shape)
    threads = min(512, max(32, n // 2))
    dt = np.dtype(x.dtype)
    kernel = _kernel(cp, dt.name)
    kernel((rows,), (threads,), (src, out, perm, np.int32(n), np.int32(n.bit_length() - 1), dt.type(scale)),
           shared_mem=n * dt.itemsize)
    return out.reshape(shape)
