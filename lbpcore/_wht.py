"""Fast Walsh–Hadamard transform in natural, sequency and dyadic order.

The natural-order Hadamard matrix of size ``n = n_1 n_2 ... n_k`` (all powers of
two) is the Kronecker product ``H_{n_1} ⊗ ... ⊗ H_{n_k}``.  Viewing a length-``n``
axis as ``k`` axes of sizes ``n_t`` (row-major), the transform is therefore the
product of ``k`` small dense Hadamard blocks, each applied along one of those
axes with a matrix product.  This costs ``2 n (n_1 + ... + n_k)`` flops instead of
the ``n log2 n`` additions of radix-2 butterflies, but runs at BLAS speed and never
moves data between axes, which makes it the fast design for array libraries.
The sequency and dyadic orders are a gather of the natural result.

NumPy arrays take a dedicated engine: lengths up to 64 are one product with the
ordered, scaled matrix; longer ones use blocks of at most 16, processed in
chunks that fit the L2 cache, with every BLAS call kept below OpenBLAS'
multithreading threshold and the chunks spread over a few Python threads.
Results can be written into ``out=`` (in place when ``out`` is ``x``).

All three matrices are symmetric, so the inverse transform is the forward one
with the reciprocal scaling.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _cuda
from ._backend import as_float_array, constant, device_of
from ._validation import check_choice, check_power_of_two, normalize_axis

__all__ = [
    "ORDERINGS",
    "NORMS",
    "fwht",
    "ifwht",
    "fwht2",
    "ifwht2",
    "walsh_matrix",
    "sequency_permutation",
]

ORDERINGS = ("natural", "sequency", "dyadic")
NORMS = ("backward", "ortho", "forward")

#: Largest dense Hadamard block used by the factored transform.
_MAX_BLOCK = 64


def _bit_reverse(values: np.ndarray, bits: int) -> np.ndarray:
    out = np.zeros_like(values)
    v = values.copy()
    for _ in range(bits):
        out = (out << 1) | (v & 1)
        v >>= 1
    return out


def sequency_permutation(n: int, ordering: str = "sequency") -> np.ndarray:
    """Natural-order row index of each row of the ``ordering``-ordered matrix.

    Parameters
    ----------
    n : int
        Transform length, a power of two.
    ordering : {"natural", "sequency", "dyadic"}
        Row ordering.

    Returns
    -------
    perm : ndarray of int64, shape (n,)
        ``walsh_matrix(n, ordering=ordering)[s] == walsh_matrix(n, ordering="natural")[perm[s]]``.

    Examples
    --------
    >>> from lbpcore import sequency_permutation
    >>> sequency_permutation(4).tolist()
    [0, 2, 3, 1]
    """
    n = check_power_of_two(n, "n")
    check_choice(ordering, "ordering", ORDERINGS)
    s = np.arange(n, dtype=np.int64)
    bits = n.bit_length() - 1
    if ordering == "natural":
        return s
    if ordering == "dyadic":
        return _bit_reverse(s, bits)
    return _bit_reverse(s ^ (s >> 1), bits)


def _natural_hadamard(n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.int64)
    anded = i[:, None] & i[None, :]
    parity = np.zeros_like(anded)
    while np.any(anded):
        parity ^= anded & 1
        anded >>= 1
    return 1 - 2 * parity


def walsh_matrix(n, *, ordering="sequency", dtype=None, xp=None, device=None):
    """Walsh–Hadamard matrix of size ``n`` with entries ±1.

    Parameters
    ----------
    n : int
        Size, a power of two.
    ordering : {"sequency", "natural", "dyadic"}, optional
        Row order.  ``"natural"`` is Sylvester's order (``scipy.linalg.hadamard``),
        ``"sequency"`` (default, Walsh order) sorts rows by their number of sign
        changes, ``"dyadic"`` (Paley order) takes natural rows at bit-reversed indices.
    dtype : dtype, optional
        Floating dtype of the result; default float64 of ``xp``.
    xp : array namespace, optional
        Namespace of the result (for example ``cupy``); default NumPy.
    device : device, optional
        Device of the result, for namespaces that have several.

    Returns
    -------
    M : array, shape (n, n)
        Symmetric, ``M @ M.T == n * I``.

    Examples
    --------
    >>> from lbpcore import walsh_matrix
    >>> walsh_matrix(4)
    array([[ 1.,  1.,  1.,  1.],
           [ 1.,  1., -1., -1.],
           [ 1., -1., -1.,  1.],
           [ 1., -1.,  1., -1.]])
    """
    n = check_power_of_two(n, "n")
    check_choice(ordering, "ordering", ORDERINGS)
    if xp is None:
        from array_api_compat import numpy as xp  # noqa: PLC0415
    if dtype is None:
        dtype = xp.float64
    perm = sequency_permutation(n, ordering)
    m = constant(("walsh", n, ordering), lambda: _natural_hadamard(n)[perm], xp, dtype, device)
    return xp.asarray(m, copy=True)


def _factor(n: int) -> list[int]:
    """Split ``n = 2**m`` into near-equal power-of-two blocks of at most ``_MAX_BLOCK``."""
    m = n.bit_length() - 1
    max_bits = _MAX_BLOCK.bit_length() - 1
    k = max(1, -(-m // max_bits))
    base, extra = divmod(m, k)
    return [1 << (base + (1 if t < extra else 0)) for t in range(k)]


def _scale(n: int, norm: str, inverse: bool) -> float:
    if norm == "ortho":
        return 1.0 / math.sqrt(n)
    if (norm == "backward") == inverse:
        return 1.0 / n
    return 1.0


# ---------------------------------------------------------------------------
# NumPy engine: cache-blocked factored transform with single-threaded BLAS calls

#: OpenBLAS hands a GEMM to several threads once ``m * n * k`` reaches twice its
#: threshold (``2 * 65536 * 4`` with the default build).  For the thin products
#: used here that only adds thread wake-ups, which cost up to milliseconds on a
#: busy machine, so every NumPy product is kept below this size and the cores
#: are used by running independent chunks on a few Python threads instead.
_MNK_SINGLE = 1 << 19
#: Lengths up to this use one dense (ordered, scaled) product.
_DENSE_MAX = 64
#: Largest Hadamard block of the NumPy engine (2 * 16 flops per element per stage).
_NP_BLOCK = 16
#: Elements per chunk: the scratch of one chunk stays in the L2 cache.
_CHUNK_ELEMS = 1 << 15
#: Smallest array (bytes) whose chunks are spread over threads.
_PARALLEL_MIN_BYTES = 1 << 20
_pool = None
_pool_lock = threading.Lock()


_nworkers = None


def _workers() -> int:
    global _nworkers
    if _nworkers is None:
        try:
            _nworkers = max(1, min(8, len(os.sched_getaffinity(0))))
        except (AttributeError, OSError):  # pragma: no cover - non-Linux
            _nworkers = max(1, min(8, os.cpu_count() or 1))
    return _nworkers


def _parallel(work, count, nbytes):
    """Run ``work(start, stop)`` over ``range(count)``, split over the CPUs for large inputs.

    Every BLAS call inside is single-threaded (see ``_MNK_SINGLE``) and releases
    the GIL, so a few Python threads use the cores without oversubscription.
    """
    global _pool
    if count < 2 or nbytes < _PARALLEL_MIN_BYTES or _workers() < 2:
        work(0, count)
        return
    k = min(_workers(), count)
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="lbpcore")
    bounds = [count * t // k for t in range(k + 1)]
    futures = [_pool.submit(work, bounds[t], bounds[t + 1]) for t in range(1, k)]
    work(bounds[0], bounds[1])
    for f in futures:
        f.result()


def _split(n: int, max_block: int) -> list:
    m = n.bit_length() - 1
    max_bits = max_block.bit_length() - 1
    k = max(1, -(-m // max_bits))
    base, extra = divmod(m, k)
    return [1 << (base + (1 if t >= k - extra else 0)) for t in range(k)]  # larger blocks last


_np_plans: dict = {}


def _np_plan(n: int, ordering: str, scale: float, dtype):
    """Cached constants: ``("dense", M.T)`` or ``("factored", blocks, mats, perm)``."""
    key = (n, ordering, scale, dtype)
    hit = _np_plans.get(key)
    if hit is not None:
        return hit
    if n <= _DENSE_MAX:
        m = _natural_hadamard(n)[sequency_permutation(n, ordering)] * scale
        plan = ("dense", np.ascontiguousarray(m.T, dtype=dtype))
    else:
        blocks = _split(n, _NP_BLOCK)
        mats = [np.ascontiguousarray(_natural_hadamard(b) * (scale if t == len(blocks) - 1 else 1.0), dtype=dtype)
                for t, b in enumerate(blocks)]
        perm = None if ordering == "natural" else np.ascontiguousarray(sequency_permutation(n, ordering))
        plan = ("factored", tuple(blocks), tuple(mats), perm)
    for a in plan[1:]:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    if len(_np_plans) > 256:
        _np_plans.clear()
    _np_plans[key] = plan
    return plan


def _rows_chunk(src, dst, plan, a, b, bufs):
    """Transform rows ``src[a:b]`` (2D, unit stride along the rows) into ``dst[a:b]``.

    ``bufs``: two scratch vectors of at least ``(b - a) * n`` elements.
    """
    _, blocks, mats, perm = plan
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


def _rows(src, dst, plan):
    """Transform every row of the 2D ``src`` into ``dst`` (may be ``src``)."""
    rows, n = src.shape
    if plan[0] == "dense":
        np.matmul(src, plan[1], out=dst)  # one product with the ordered, scaled matrix
        return
    rc = max(1, min(_CHUNK_ELEMS, (_MNK_SINGLE - 1) // plan[1][-1]) // n)
    rc = min(rc, rows)
    chunks = -(-rows // rc)

    def work(c0, c1):
        bufs = (np.empty(rc * n, dtype=dst.dtype), np.empty(rc * n, dtype=dst.dtype))
        for c in range(c0, c1):
            _rows_chunk(src, dst, plan, c * rc, min(rows, c * rc + rc), bufs)

    if chunks == 1:
        work(0, 1)
        return

    _parallel(work, chunks, src.size * src.itemsize)


def _cols(src, dst, n, ordering, scale):
    """Transform along axis 1 of ``(pre, n, post)`` arrays (``post > 1``); ``dst`` may be ``src``.

    Chunks of ``(n, w)`` columns are copied into contiguous scratch (in cache),
    transformed digit by digit with left products, and written back once.
    """
    pre, _, post = src.shape
    plan = _np_plan(n, ordering, scale, dst.dtype)
    if plan[0] == "dense":
        blocks, mats, perm = (n,), (np.ascontiguousarray(plan[1].T),), None
    else:
        _, blocks, mats, perm = plan
    pc = max(1, min(post, _CHUNK_ELEMS // n, (_MNK_SINGLE - 1) // (n * max(blocks))))
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

    _parallel(work, total, src.size * src.itemsize)


def _np_axis(x3, out3, ordering, scale):
    """NumPy transform along axis 1 of ``(pre, n, post)`` views; ``out3`` may alias ``x3`` exactly."""
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
        _rows(src.reshape(a, b), dst.reshape(a, b), _np_plan(b, "natural", scale, dst.dtype))
        _cols(dst.reshape(1, a, b), dst.reshape(1, a, b), a, "natural", 1.0)
        if ordering != "natural":
            perm = _np_plan(n, ordering, 1.0, dst.dtype)[3]
            dst[0] = np.take(dst[0], perm, mode="clip")
        return
    _rows(src, dst, _np_plan(n, ordering, scale, dst.dtype))


def _transform_axis(xp, x, axis: int, ordering: str, scale: float):
    """Apply ``scale * M`` along ``axis`` (already normalized)."""
    shape = tuple(x.shape)
    n = shape[axis]
    pre = math.prod(shape[:axis])
    post = math.prod(shape[axis + 1 :])
    dt = x.dtype
    dev = device_of(x)
    if n == 1:
        y = x * xp.asarray(scale, dtype=dt, device=dev) if scale != 1.0 else xp.asarray(x, copy=True)
        return y
    if post == 1 and _cuda.applicable(xp, x, n):
        perm = constant(("perm", n, ordering), lambda: sequency_permutation(n, ordering), xp, xp.int64, dev)
        return _cuda.fwht_rows(x, n, perm, scale)
    blocks = _factor(n)
    y = xp.reshape(x, (pre, n, post))
    left = 1
    right = n
    for t, b in enumerate(blocks):
        right //= b
        s = scale if t == 0 else 1.0
        h = constant(("hblock", b, s), lambda b=b, s=s: _natural_hadamard(b) * s, xp, dt, dev)
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
        perm = constant(("perm", n, ordering), lambda: sequency_permutation(n, ordering), xp, xp.int64, dev)
        y = xp.take(y, perm, axis=1)
    return xp.reshape(y, shape)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _wht_numpy(x, axes, ordering, norm, inverse, out):
    """NumPy fast path; returns None when the arguments need the general path (and its errors)."""
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
            raise ValueError(
                f"out must be a NumPy array of shape {shape} and dtype {x.dtype}, got "
                f"{type(out).__name__}" + (f" of shape {out.shape} and dtype {out.dtype}" if isinstance(out, np.ndarray) else "")
            )
        if not out.flags.writeable:
            raise ValueError("out must be writeable")
        if out.flags.c_contiguous and (out is x or not np.may_share_memory(x, out)):
            res = out
        else:
            res = np.empty(shape, dtype=x.dtype)
    src = x
    size = x.size
    for a in norm_axes:
        n = shape[a]
        scale = _scale(n, norm, inverse)
        if a == ndim - 1:
            pre, post = size // n, 1
        else:
            pre = math.prod(shape[:a])
            post = size // (pre * n)
        if n == 1:
            np.multiply(src, src.dtype.type(scale), out=res)
        else:
            _np_axis(src.reshape(pre, n, post), res.reshape(pre, n, post), ordering, scale)
        src = res
    if out is not None and res is not out:
        np.copyto(out, res)
        return out
    return res


_fast: dict = {}


def _wht(x, axes, ordering, norm, inverse, name="x", out=None):
    if type(x) is np.ndarray:
        # fast lane: a single transform along the last axis with a dense (ordered,
        # scaled) matrix, looked up by the call's signature (a few microseconds)
        key = (x.shape, x.dtype, axes, ordering, norm, inverse)
        m = _fast.get(key)
        if m is not None:
            if out is None:
                return np.matmul(x, m)
            if type(out) is np.ndarray and out.shape == x.shape and out.dtype == x.dtype and out.flags.writeable:
                return np.matmul(x, m, out=out)  # overlap with x is handled by NumPy
        if x.dtype in _FLOATS:
            y = _wht_numpy(x, axes, ordering, norm, inverse, out)
            if y is not None:
                if m is None and len(axes) == 1 and x.ndim >= 1:
                    n = x.shape[-1]
                    a = axes[0]
                    if type(a) is int and a in (-1, x.ndim - 1) and 1 < n <= _DENSE_MAX:
                        if len(_fast) > 256:
                            _fast.clear()
                        _fast[key] = _np_plan(n, ordering, _scale(n, norm, inverse), x.dtype)[1]
                return y
    check_choice(ordering, "ordering", ORDERINGS)
    check_choice(norm, "norm", NORMS)
    xp, x = as_float_array(x, name)
    ndim = x.ndim
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d array")
    norm_axes = [normalize_axis(a, ndim, "axis" if len(axes) == 1 else "axes") for a in axes]
    if len(set(norm_axes)) != len(norm_axes):
        raise ValueError(f"axes must be distinct, got {tuple(axes)}")
    for a in norm_axes:
        check_power_of_two(x.shape[a], f"length of {name} along axis {a}")
    if isinstance(x, np.ndarray):  # promoted integers: the NumPy engine
        y = _wht_numpy(x, axes, ordering, norm, inverse, out)
        if y is not None:
            return y
    if out is not None:
        raise TypeError("out= is supported for NumPy arrays only")
    y = x
    for a in norm_axes:
        y = _transform_axis(xp, y, a, ordering, _scale(x.shape[a], norm, inverse))
    return y


_COMMON_DOC = """
    ordering : {"sequency", "natural", "dyadic"}, optional
        Row order of the Walsh matrix (see :func:`walsh_matrix`); default ``"sequency"``.
    norm : {"backward", "ortho", "forward"}, optional
        Normalization with :mod:`numpy.fft` semantics: ``"backward"`` (default)
        leaves the forward transform unscaled and divides the inverse by ``n``;
        ``"ortho"`` scales both by ``1/sqrt(n)``; ``"forward"`` divides the forward
        transform by ``n``.
"""


def fwht(x, axis=-1, *, ordering="sequency", norm="backward", out=None):
    """Fast Walsh–Hadamard transform along one axis.

    Parameters
    ----------
    x : array, shape (..., n, ...)
        Real floating input (integers are promoted to the default floating
        dtype); ``n = x.shape[axis]`` must be a power of two.
    axis : int, optional
        Axis along which to transform; default last.
    ordering : {"sequency", "natural", "dyadic"}, optional
        Row order of the Walsh matrix (see :func:`walsh_matrix`); default ``"sequency"``.
    norm : {"backward", "ortho", "forward"}, optional
        Normalization with :mod:`numpy.fft` semantics: ``"backward"`` (default)
        leaves the forward transform unscaled and divides the inverse by ``n``;
        ``"ortho"`` scales both by ``1/sqrt(n)``; ``"forward"`` divides the forward
        transform by ``n``.
    out : ndarray, optional
        NumPy only: C-contiguous array of the input's shape and dtype that
        receives the result (it may be ``x`` itself for an in-place transform).
        Any other overlap with ``x`` is computed through a temporary.

    Returns
    -------
    y : array, same shape, dtype, namespace and device as ``x``
        ``y = scale * M @ x`` along ``axis`` with ``M = walsh_matrix(n, ordering=ordering)``.

    Raises
    ------
    ValueError
        If the length along ``axis`` is not a power of two, ``axis`` is out of
        range, or ``ordering``/``norm`` is unknown.
    TypeError
        If ``x`` is boolean, complex or not an array.

    Notes
    -----
    The cost is ``O(n log n)``: the transform is factored into dense Hadamard
    blocks applied by matrix products (see the module notes).  On NumPy,
    lengths up to 64 use one dense product with the ordered, scaled matrix
    (no separate permutation or scaling pass); longer ones
    use blocks of at most 16, processed in cache-sized chunks spread over the
    CPU cores, with every BLAS call kept single-threaded.
    NaN and inf propagate into every output element that depends on them.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import fwht, ifwht
    >>> fwht(np.array([1.0, 0.0, 0.0, 0.0]))
    array([1., 1., 1., 1.])
    >>> fwht(np.array([1.0, 2.0, 3.0, 4.0]), ordering="natural")
    array([10., -2., -4.,  0.])
    >>> ifwht(fwht(np.array([1.0, 2.0, 3.0, 4.0])))
    array([1., 2., 3., 4.])
    """
    return _wht(x, (axis,), ordering, norm, inverse=False, out=out)


def ifwht(x, axis=-1, *, ordering="sequency", norm="backward", out=None):
    """Inverse fast Walsh–Hadamard transform along one axis.

    Parameters
    ----------
    x : array, shape (..., n, ...)
        Real floating input; ``n = x.shape[axis]`` must be a power of two.
    axis : int, optional
        Axis along which to transform; default last.
    ordering : {"sequency", "natural", "dyadic"}, optional
        Row order; must match the forward transform.  Default ``"sequency"``.
    norm : {"backward", "ortho", "forward"}, optional
        Normalization with :mod:`numpy.fft` semantics; must match the forward
        transform.  With ``"backward"`` (default) the inverse divides by ``n``.
    out : ndarray, optional
        NumPy only: C-contiguous array of the input's shape and dtype that
        receives the result (it may be ``x`` itself for an in-place transform).
        Any other overlap with ``x`` is computed through a temporary.

    Returns
    -------
    y : array, same shape, dtype, namespace and device as ``x``
        ``ifwht(fwht(x)) == x`` to rounding for every ordering and norm.

    Raises
    ------
    ValueError, TypeError
        As :func:`fwht`.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import ifwht
    >>> ifwht(np.array([4.0, 0.0, 0.0, 0.0]))
    array([1., 1., 1., 1.])
    """
    return _wht(x, (axis,), ordering, norm, inverse=True, out=out)


def fwht2(x, axes=(-2, -1), *, ordering="sequency", norm="backward", out=None):
    """Two-dimensional fast Walsh–Hadamard transform.

    Parameters
    ----------
    x : array, shape (..., n0, ..., n1, ...)
        Real floating input; the lengths along ``axes`` must be powers of two.
    axes : pair of int, optional
        The two distinct axes to transform; default the last two.
    ordering : {"sequency", "natural", "dyadic"}, optional
        Row order, used along both axes; default ``"sequency"``.
    norm : {"backward", "ortho", "forward"}, optional
        Normalization per axis with :mod:`numpy.fft` semantics; default ``"backward"``.
    out : ndarray, optional
        NumPy only: C-contiguous array of the input's shape and dtype that
        receives the result (it may be ``x`` itself for an in-place transform).
        Any other overlap with ``x`` is computed through a temporary.

    Returns
    -------
    y : array, same shape, dtype, namespace and device as ``x``
        For a 2D block ``Z``: ``M0 @ Z @ M1.T`` (times the scaling), the
        coefficients on the basis images ``outer(M0[i], M1[j])``.

    Raises
    ------
    ValueError, TypeError
        As :func:`fwht`; also if ``axes`` are not two distinct axes.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import fwht2
    >>> fwht2(np.ones((2, 2)))
    array([[4., 0.],
           [0., 0.]])
    """
    _check_axes_pair(axes)
    return _wht(x, tuple(axes), ordering, norm, inverse=False, out=out)


def ifwht2(x, axes=(-2, -1), *, ordering="sequency", norm="backward", out=None):
    """Inverse two-dimensional fast Walsh–Hadamard transform.

    Parameters
    ----------
    x : array, shape (..., n0, ..., n1, ...)
        Real floating input; the lengths along ``axes`` must be powers of two.
    axes : pair of int, optional
        The two distinct axes to transform; default the last two.
    ordering : {"sequency", "natural", "dyadic"}, optional
        Row order; default ``"sequency"``.
    norm : {"backward", "ortho", "forward"}, optional
        Normalization per axis; default ``"backward"`` (divide by ``n0 * n1``).
    out : ndarray, optional
        NumPy only: C-contiguous array of the input's shape and dtype that
        receives the result (it may be ``x`` itself for an in-place transform).
        Any other overlap with ``x`` is computed through a temporary.

    Returns
    -------
    y : array, same shape, dtype, namespace and device as ``x``

    Raises
    ------
    ValueError, TypeError
        As :func:`fwht2`.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import fwht2, ifwht2
    >>> z = np.arange(16.0).reshape(4, 4)
    >>> bool(np.allclose(ifwht2(fwht2(z)), z))
    True
    """
    _check_axes_pair(axes)
    return _wht(x, tuple(axes), ordering, norm, inverse=True, out=out)


def _check_axes_pair(axes):
    if isinstance(axes, str) or not hasattr(axes, "__len__") or len(axes) != 2:
        raise ValueError(f"axes must be a pair of distinct axes, got {axes!r}")
