"""CuPy kernels for the Walsh–Hadamard transform along a contiguous last axis.

Two entry points:

* :func:`fwht_rows` transforms every row of length ``2 <= n <= 4096`` in one
  pass over global memory.  Each thread holds ``V = min(n, 16)`` elements of a
  row in registers: ``VEC`` contiguous ones (one 16-byte vector load) times
  ``V / VEC`` chunks spaced ``VEC * n / V`` apart.  The index bits held in
  registers are transformed by butterflies in registers, the next five bits
  (the lanes of a warp) by ``__shfl_xor_sync``, and only the bits beyond a warp
  (``n >= 1024``) by one exchange through shared memory, after which the
  thread holds those bits in registers.  The scale and the ordering
  (computed in the kernel: bit reversal, Gray code, or a table) are applied
  when the row is written: natural order straight from registers (one
  kernel), other orders through one more pass over shared memory so the
  global stores stay coalesced (another kernel: either path alone needs
  50-60 registers for float32, both together 90).  Shared-memory addresses are
  XOR-swizzled so that the accesses of a warp (consecutive, or bit-reversed)
  fall in distinct banks.  Blocks of 256 threads hold one row (``n = 4096``)
  or several (short rows).
* :func:`fwht_long` transforms long rows (``n > 4096``, one or a few) in three
  passes over memory (four for natural order): with ``n = a * b`` the ``b``-long
  rows of the ``(a, b)`` view in dyadic order, a tiled transpose, and the
  ``a``-long rows in dyadic (sequency) order.  Two bit-reversed passes with a
  transpose between them give the global dyadic order; the global sequency
  order is the dyadic one read through a Gray code, which the last pass applies
  by reading row ``g ^ (g >> 1)`` and reversing odd rows.  Rows longer than
  ``4096 ** 2`` recurse.

The device code is plain C++ with a small CUDA layer: every phase of a thread's
work is a function that also compiles as host C++, and the host build runs the
threads of a block one after the other (shuffles read the partner thread's
registers), which is how ``tests/test_cuda_kernels_host.py`` checks the kernels
without a GPU.  Only CuPy float32/float64 arrays are handled; everything else
takes the generic array-API path.
"""

from __future__ import annotations

import functools

import numpy as np

from ._cuda_source import SOURCE

__all__ = ["MAX_N", "ORDER_CODES", "applicable", "fwht_rows", "fwht_long", "transform"]

#: Longest row that :func:`fwht_rows` transforms in one pass (longer ones: :func:`fwht_long`).
MAX_N = 4096
#: Kernel codes of the orderings (a permutation table is code 3).
ORDER_CODES = {"natural": 0, "dyadic": 1, "sequency": 2}

_LOG_MAX = 12
_BLOCK = 256


_SUFFIX = {"float32": "f32", "float64": "f64"}


@functools.lru_cache(maxsize=None)
def _module(cp, device_id: int):
    """The compiled :data:`SOURCE` for one CuPy module object and device (compiled on first use)."""
    return cp.RawModule(code=SOURCE)


def _function(cp, name):
    """The kernel ``name`` of :data:`SOURCE` on the current device."""
    return _module(cp, cp.cuda.Device().id).get_function(name)


def applicable(x, n: int) -> bool:
    """Whether the kernels of this module handle ``x`` along a last axis of length ``n``.

    Parameters
    ----------
    x : array
    n : int
        Transform length.

    Returns
    -------
    bool
        True when ``x`` is a CuPy float32/float64 array and ``n >= 2`` is a power
        of two (rows up to :data:`MAX_N` with :func:`fwht_rows`, longer ones with
        :func:`fwht_long`).

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore._wht._cuda import applicable
    >>> applicable(np.zeros(8, np.float32), 8)  # NumPy arrays take the CPU engine
    False
    """
    if n < 2 or n & (n - 1):
        return False
    if not type(x).__module__.startswith("cupy"):
        return False
    return np.dtype(x.dtype) in (np.dtype(np.float32), np.dtype(np.float64))


def _ordering(cp, perm, n):
    """``(code, table)``: the kernel code of ``perm`` and the table (or a null pointer)."""
    if isinstance(perm, str):
        if perm not in ORDER_CODES:
            raise ValueError(f"unknown ordering {perm!r}; expected one of {sorted(ORDER_CODES)}")
        return ORDER_CODES[perm], np.uint64(0)
    table = cp.ascontiguousarray(cp.asarray(perm, dtype=cp.int64))
    if table.shape != (n,):
        raise ValueError(f"perm must have shape ({n},), got {tuple(table.shape)}")
    return 3, table


def _rows_kernel_args(n: int):
    """``(V, rows per block)``: values per thread and rows per 256-thread block for length ``n``."""
    v = min(n, 16)
    return v, _BLOCK // (n // v)


def _launch_rows(cp, src, dst, rows: int, n: int, code: int, table, scale: float, group: int = 0):
    """Transform ``rows`` contiguous rows of length ``n`` of ``src`` into ``dst`` (flat, aligned)."""
    if rows == 0:
        return
    dt = np.dtype(src.dtype)
    v, rpb = _rows_kernel_args(n)
    path = "nat" if code == 0 and group <= 0 else "perm"
    fn = _function(cp, f"lbp_wht_rows_{_SUFFIX[dt.name]}_v{v}_{path}")
    blocks = -(-rows // rpb)
    fn((blocks,), (_BLOCK,), (src, dst, table, np.int64(rows), np.int32(n.bit_length() - 1), np.int32(code),
                              dt.type(scale), np.int64(group)))


def _launch_transpose(cp, src, dst, batch: int, nr: int, nk: int):
    """``dst (batch, nk, nr) = src (batch, nr, nk)`` transposed, 32 x 32 tiles through shared memory."""
    dt = np.dtype(src.dtype)
    fn = _function(cp, f"lbp_wht_transpose_{_SUFFIX[dt.name]}")
    blocks = batch * (-(-nr // 32)) * (-(-nk // 32))
    fn((blocks,), (_BLOCK,), (src, dst, np.int32(nr), np.int32(nk)))


def _launch_gray_rows(cp, src, dst, rows: int, nb: int, na: int):
    """``dst`` row ``g`` of each group of ``nb`` rows = ``src`` row ``g ^ (g >> 1)``, reversed when ``g`` is odd."""
    dt = np.dtype(src.dtype)
    fn = _function(cp, f"lbp_wht_gray_rows_{_SUFFIX[dt.name]}")
    total = rows * nb * na
    fn((-(-total // _BLOCK),), (_BLOCK,), (src, dst, np.int64(total), np.int64(nb), np.int64(na)))


def _flat_input(cp, x):
    """``x`` as a contiguous flat array whose data pointer is 16-byte aligned (copied if needed)."""
    src = cp.ascontiguousarray(x)
    if src.data.ptr % 16:
        src = src.copy()
    return src.reshape(-1)


def _check(x, n):
    dt = np.dtype(x.dtype)
    if dt.name not in _SUFFIX:
        raise TypeError(f"the CUDA transform needs float32 or float64, got {dt}")
    if n < 1 or n & (n - 1):
        raise ValueError(f"n must be a power of two, got {n}")
    if not x.shape or x.shape[-1] != n:
        raise ValueError(f"the last axis of x must have length n={n}, got shape {tuple(x.shape)}")


def fwht_rows(x, n: int, perm, scale: float):
    """Transform every length-``n`` row of ``x`` in one pass (``n <= MAX_N``).

    Parameters
    ----------
    x : cupy.ndarray, shape (..., n), float32 or float64
        Left untouched (copied first when not C-contiguous or not 16-byte aligned).
    n : int
        Power of two, at most :data:`MAX_N`.
    perm : {"natural", "sequency", "dyadic"} or cupy.ndarray of int64, shape (n,)
        Output ``s`` takes natural coefficient ``perm[s]``; an ordering name lets
        the kernel compute the index (no table reads).
    scale : float
        Multiplies every output.

    Returns
    -------
    cupy.ndarray, same shape and dtype as ``x``
        ``scale * M @ row`` for every row, ``M`` the ``perm``-ordered Hadamard matrix.

    Raises
    ------
    ValueError
        If ``n`` is not a power of two, exceeds :data:`MAX_N` or is not the last
        axis of ``x``, or ``perm`` is unknown or of the wrong shape.
    TypeError
        If ``x`` is not float32 or float64.

    Examples
    --------
    >>> import cupy as cp  # doctest: +SKIP
    >>> from lbpcore._wht._cuda import fwht_rows
    >>> fwht_rows(cp.ones((2, 4), cp.float32), 4, "sequency", 1.0)  # doctest: +SKIP
    array([[4., 0., 0., 0.],
           [4., 0., 0., 0.]], dtype=float32)
    """
    import cupy as cp  # noqa: PLC0415

    _check(x, n)
    if n > MAX_N:
        raise ValueError(f"fwht_rows handles n <= {MAX_N}; use fwht_long for n={n}")
    shape = x.shape
    if n == 1:
        return x * x.dtype.type(scale)
    code, table = _ordering(cp, perm, n)
    src = _flat_input(cp, x)
    out = cp.empty(src.shape, dtype=src.dtype)
    _launch_rows(cp, src, out, src.size // n, n, code, table, scale)
    return out.reshape(shape)


def _long(cp, src, rows: int, logn: int, code: int, scale: float, max_log: int):
    """Flat ``rows x 2**logn`` transform of ``src`` in ordering ``code`` (0, 1, 2); returns a new array."""
    n = 1 << logn
    if logn <= max_log:
        out = cp.empty(src.shape, dtype=src.dtype)
        _launch_rows(cp, src, out, rows, n, code, np.uint64(0), scale)
        return out
    lb = min(max_log, logn - logn // 2)
    la = logn - lb
    a, b = 1 << la, 1 << lb
    t1 = cp.empty(src.shape, dtype=src.dtype)
    # b-long rows of the (a, b) view: natural for a natural result, dyadic otherwise
    _launch_rows(cp, src, t1, rows * a, b, 0 if code == 0 else 1, np.uint64(0), 1.0)
    t2 = cp.empty(src.shape, dtype=src.dtype)
    _launch_transpose(cp, t1, t2, rows, a, b)
    del t1
    if code == 0:
        t3 = _long(cp, t2, rows * b, la, 0, scale, max_log)  # (rows, b, a): natural along a
        del t2
        out = cp.empty(src.shape, dtype=src.dtype)
        _launch_transpose(cp, t3, out, rows, b, a)
        return out
    if code == 1:
        return _long(cp, t2, rows * b, la, 1, scale, max_log)
    if la <= max_log:
        # sequency: output row g reads row g ^ (g >> 1) and reverses odd rows (in the kernel)
        out = cp.empty(src.shape, dtype=src.dtype)
        _launch_rows(cp, t2, out, rows * b, a, 2, np.uint64(0), scale, group=b)
        return out
    t3 = _long(cp, t2, rows * b, la, 2, scale, max_log)
    del t2
    out = cp.empty(src.shape, dtype=src.dtype)
    _launch_gray_rows(cp, t3, out, rows, b, a)
    return out


def fwht_long(x, n: int, perm, scale: float, *, _max_log: int = _LOG_MAX):
    """Transform long rows (one or a few vectors of any power-of-two length) in a few passes.

    Parameters
    ----------
    x : cupy.ndarray, shape (..., n), float32 or float64
        Left untouched.
    n : int
        Power of two; rows up to ``2**_max_log`` take :func:`fwht_rows`.
    perm : {"natural", "sequency", "dyadic"} or cupy.ndarray of int64, shape (n,)
        As for :func:`fwht_rows`; a table costs a natural-order transform plus a gather.
    scale : float
        Multiplies every output.

    Returns
    -------
    cupy.ndarray, same shape and dtype as ``x``

    Raises
    ------
    ValueError, TypeError
        As for :func:`fwht_rows`.

    Notes
    -----
    With ``n = a * b`` (``b = 2**ceil(m/2)`` up to ``4096``): ``b``-long rows in
    dyadic order, a transpose to ``(b, a)``, then ``a``-long rows in dyadic order
    give the dyadic transform (bit reversal of ``i = ia * b + ib`` is
    ``bitrev(ib) * a + bitrev(ia)``); sequency output ``s`` is dyadic ``s ^ (s >> 1)``,
    i.e. row ``g`` of the last pass reads row ``g ^ (g >> 1)``, reversed when ``g``
    is odd.  Natural order uses natural passes and a second transpose.  Memory:
    two temporaries of the size of ``x``.

    Examples
    --------
    >>> import cupy as cp  # doctest: +SKIP
    >>> from lbpcore._wht._cuda import fwht_long
    >>> y = fwht_long(cp.ones(2**20, cp.float32), 2**20, "sequency", 1.0)  # doctest: +SKIP
    >>> float(y[0]), float(abs(y[1:]).max())  # doctest: +SKIP
    (1048576.0, 0.0)
    """
    import cupy as cp  # noqa: PLC0415

    _check(x, n)
    max_log = int(_max_log)
    if not 1 <= max_log <= _LOG_MAX:
        raise ValueError(f"_max_log must be in [1, {_LOG_MAX}], got {max_log}")
    shape = x.shape
    if n == 1:
        return x * x.dtype.type(scale)
    code, table = _ordering(cp, perm, n)
    src = _flat_input(cp, x)
    rows = src.size // n
    if rows == 0:
        return cp.empty(shape, dtype=src.dtype)
    logn = n.bit_length() - 1
    if code == 3:
        nat = _long(cp, src, rows, logn, 0, scale, max_log).reshape(rows, n)
        return cp.take(nat, table, axis=1).reshape(shape)
    return _long(cp, src, rows, logn, code, scale, max_log).reshape(shape)


def transform(x, n: int, perm, scale: float):
    """Dispatch to :func:`fwht_rows` (``n <= MAX_N``) or :func:`fwht_long`.

    Parameters
    ----------
    x : cupy.ndarray, shape (..., n), float32 or float64
    n : int
        Power of two.
    perm : {"natural", "sequency", "dyadic"} or cupy.ndarray of int64, shape (n,)
    scale : float

    Returns
    -------
    cupy.ndarray, same shape and dtype as ``x``

    Examples
    --------
    >>> import math
    >>> import cupy as cp  # doctest: +SKIP
    >>> from lbpcore._wht._cuda import transform
    >>> transform(cp.arange(4.0), 4, "natural", 1 / math.sqrt(4))  # doctest: +SKIP
    array([ 3., -1., -2.,  0.])
    """
    if n <= MAX_N:
        return fwht_rows(x, n, perm, scale)
    return fwht_long(x, n, perm, scale)

