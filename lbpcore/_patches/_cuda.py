"""Fused CuPy kernels for the patch projection and reconstruction (SPEC sections 4–5).

One thread per ``(batch item, patch, group of VEC channels)``, consecutive
threads along the channels so that every load and store of a warp is
contiguous in the tokens layout (``VEC`` = 1, 2 or 4 channels per thread, one
access of ``VEC`` values; default 8 bytes, see :data:`DEFAULT_ACCESS_BYTES`).
The selected bases are baked into the source (one module per selection, dtype,
layout and ``VEC``, compiled by NVRTC on first use and cached), so every index
below is a compile-time constant and all arrays stay in registers.

Projection: the thread loads the rows of its ``n x n`` patch in groups of
about 64 four-byte values (all 8 rows of an 8x8 float32 patch at ``VEC = 1``,
so that many loads are in flight), padding by index mapping (reflected indices,
or zeros without a load).  Each row is transformed by butterflies in registers
and ``±`` its selected horizontal sequencies are added into ``r`` accumulators
(the sign is that of the selected vertical Walsh row at the row's index).
Registers: ``VEC (r + 64 / VEC)`` values or so.  Global traffic: the input
once (reflected rows and columns are read again, from cache), the ``r``
coefficients written once, channels-last in ``(p, q, k)`` order; with
``keep_extra`` one more thread per batch item and channel group copies the
extra tokens in front.

Reconstruction: the thread loads its ``r`` coefficients and, for each interior
row of the patch, scatters ``±`` them into an ``n``-vector of horizontal
sequencies, transforms it back by butterflies (no ``1/n**2``) and writes the
interior columns; every grid position belongs to exactly one patch, so the
output is written once, without atomics; extra tokens are copied through.

NCHW input (or output) is read (written) with the same mapping, one channel
per thread: each thread touches ``n`` contiguous values per patch row.

The per-thread work is plain C++ (``lbp_project_one``, ``lbp_reconstruct_one``)
that also compiles as host C++; ``tests/test_cuda_kernels_host.py`` runs it on
the CPU.  Sizes not covered (see :func:`supported`) make the wrappers return
None so that the caller takes the generic path.
"""

from __future__ import annotations

import functools

import numpy as np

from .._validation import check_choice, check_grid, check_padding
from ._cuda_source import SUFFIX, as_indices, source
from ._plan import PADS, padding

__all__ = ["SUPPORTED_PATCHES", "MAX_RANK", "DEFAULT_ACCESS_BYTES", "supported", "channel_vector", "kernel_variants",
           "project", "reconstruct"]

#: Patch sizes with a fused kernel.
SUPPORTED_PATCHES = (1, 2, 4, 8, 16)
#: Largest number of selected bases with a fused kernel (registers: ``VEC * (n + r)``
#: values, and at most 192 four-byte registers of them with one channel per thread).
MAX_RANK = 128

#: Bytes each thread reads per access by default (``VEC = 2`` for float32, 1 for float64).  Wider
#: accesses need more registers per row group and so fewer resident warps; the benchmark in
#: ``benchmarks/cuda_kernels.py`` times every width (``_vec=``) to check this choice.
DEFAULT_ACCESS_BYTES = 8

_BLOCK = 256
_REG_BUDGET = 128  # 4-byte registers for the per-thread arrays when choosing VEC
_REG_LIMIT = 192  # 4-byte registers for the per-thread arrays at VEC = 1 (beyond: spills)
_PAD_CODES = {"reflect": 0, "zero": 1, "none": 2}


def channel_vector(n: int, rank: int, dtype, max_bytes: int = DEFAULT_ACCESS_BYTES) -> int:
    """Largest number of channels per thread (``VEC``) for accesses of ``max_bytes`` and the register budget.

    Parameters
    ----------
    n : int
        Patch size.
    rank : int
        Number ``r`` of selected bases.
    dtype : dtype
        float32 or float64.
    max_bytes : int, optional
        Widest access per thread (4, 8 or 16); default
        :data:`DEFAULT_ACCESS_BYTES`.

    Returns
    -------
    int
        4, 2 or 1: ``VEC * itemsize <= max_bytes`` and ``VEC * (n + r)``
        values within 128 four-byte registers.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore._patches._cuda import channel_vector
    >>> channel_vector(8, 21, np.float32), channel_vector(8, 21, np.float32, 16), channel_vector(8, 21, np.float64)
    (2, 4, 1)
    """
    size = np.dtype(dtype).itemsize
    for vec in (4, 2, 1):
        if vec * size <= max_bytes and vec * (n + rank) * size <= _REG_BUDGET * 4:
            return vec
    return 1


def supported(n: int, indices, dtype=np.float32) -> bool:
    """Whether a fused kernel covers patch size ``n``, this selection and ``dtype``.

    Parameters
    ----------
    n : int
        Patch size.
    indices : array_like of int, shape (r, 2)
        Selected ``(i, j)`` sequency pairs (``BasisSet.indices``).
    dtype : dtype, optional
        Element type; default float32.

    Returns
    -------
    bool
        True for ``n`` in :data:`SUPPORTED_PATCHES`, float32/float64 and
        ``r <= MAX_RANK`` with ``n + r`` values within 192 four-byte registers
        (float64, ``n = 16``: ``r <= 80``).

    Examples
    --------
    >>> from lbpcore._patches._cuda import supported
    >>> supported(8, [(0, 0), (0, 1), (1, 0)]), supported(32, [(0, 0)])
    (True, False)
    """
    dt = np.dtype(dtype)
    if n not in SUPPORTED_PATCHES or dt.name not in SUFFIX:
        return False
    r = len(np.asarray(indices).reshape(-1, 2))
    return 1 <= r <= MAX_RANK and (n + r) * dt.itemsize <= _REG_LIMIT * 4


def kernel_variants(n: int, rank: int):
    """Every ``(dtype, layout, vec)`` with a kernel for patch size ``n`` and ``rank`` bases.

    Parameters
    ----------
    n : int
        Patch size.
    rank : int
        Number ``r`` of selected bases.

    Returns
    -------
    list of (str, str, int)
        ``("float32" or "float64", "tokens" or "nchw", VEC)``; NCHW uses one
        channel per thread, tokens any ``VEC`` up to ``channel_vector(n, rank, dtype, 16)``.

    Examples
    --------
    >>> from lbpcore._patches._cuda import kernel_variants
    >>> kernel_variants(8, 21)[:4]
    [('float32', 'tokens', 1), ('float32', 'tokens', 2), ('float32', 'tokens', 4), ('float32', 'nchw', 1)]
    """
    out = []
    for dt in ("float32", "float64"):
        vmax = channel_vector(n, rank, dt, 16)
        out.extend((dt, "tokens", vec) for vec in (1, 2, 4) if vec <= vmax)
        out.append((dt, "nchw", 1))
    return out


@functools.lru_cache(maxsize=256)
def _module(cp, device_id: int, n: int, pairs: tuple, variant: tuple):
    """The compiled kernels of one selection and variant (per CuPy module object and device)."""
    return cp.RawModule(code=source(n, np.asarray(pairs, dtype=np.int64).reshape(-1, 2), [variant]))


def _function(cp, n: int, idx: np.ndarray, dt, layout: str, vec: int, kind: str):
    """Kernel ``lbp_{kind}_...`` for this selection and variant on the current device (compiled once)."""
    pairs = tuple(map(tuple, idx.tolist()))
    mod = _module(cp, cp.cuda.Device().id, n, pairs, (dt.name, layout, vec))
    return mod.get_function(f"lbp_{kind}_{SUFFIX[dt.name]}_{layout}_v{vec}")


def _geometry(grid, n: int, pad: str):
    """``(h, w, ph, pw, top, left)``, with the padding checks of :func:`~lbpcore.make_plan`."""
    h, w = check_grid(grid)
    check_choice(pad, "pad", PADS)
    counts, befores = [], []
    for side, length in (("grid height", h), ("grid width", w)):
        count, before, after = padding(length, n)
        check_padding(pad, n, side, length, before, after)
        counts.append(count)
        befores.append(before)
    return (h, w, *counts, *befores)


def _vector_width(n, rank, dt, c, ptrs, layout, want):
    """Channels per thread: ``want`` (benchmarks) or the default, narrowed until ``C`` and the pointers allow it."""
    if layout == "nchw":
        return 1
    if want is None:
        vec = channel_vector(n, rank, dt)
    else:
        vec = int(want)
        if vec not in (1, 2, 4) or vec > channel_vector(n, rank, dt, 16):
            raise ValueError(f"_vec={want} is not an instantiated width for n={n}, r={rank}, {dt}")
    while vec > 1 and (c % vec or any(p % (vec * dt.itemsize) for p in ptrs)):
        vec //= 2
    return vec


def _prepare(x, n, indices):
    """``(cupy, contiguous x, indices)`` or None when the fused kernels do not cover the case."""
    dt = np.dtype(x.dtype)
    if n not in SUPPORTED_PATCHES or dt.name not in SUFFIX:
        return None
    idx = as_indices(n, indices)
    if not supported(n, idx, dt):
        return None
    import cupy as cp  # noqa: PLC0415

    return cp, cp.ascontiguousarray(x), idx


def project(x, grid, n, pad, indices, *, extra_tokens=0, scale=1.0, layout="tokens", keep_extra=False, _vec=None):
    """Selected patch coefficients of ``x`` in one pass, channels last (GEMM-ready).

    Parameters
    ----------
    x : cupy.ndarray, shape (B, e + h*w, C) or (B, C, h, w), float32 or float64
        Tokens (the grid row-major after ``e`` extra tokens) or NCHW maps.  Left untouched.
    grid : (int, int)
        ``(h, w)``.
    n : int
        Patch size.
    pad : {"reflect", "zero", "none"}
        Padding (SPEC section 4: top/left get ``ceil(total / 2)``).
    indices : array_like of int, shape (r, 2)
        Selected ``(i, j)`` sequency pairs, in the order of the output (``BasisSet.indices``).
    extra_tokens : int, optional
        ``e`` (tokens layout only).
    scale : float, optional
        Multiplies the coefficients (not the extra tokens).
    layout : {"tokens", "nchw"}, optional
    keep_extra : bool, optional
        Put the ``e`` extra tokens, unscaled, in front of the coefficients.

    Returns
    -------
    cupy.ndarray of shape (B, e' + P*r, C), or None
        ``out[b, e' + (p*pw + q)*r + k, c] = scale * sum_{u,v} B[i_k, j_k][u, v] Z[u, v]``
        with ``Z`` patch ``(p, q)`` of the padded grid of channel ``c`` and
        ``e' = e if keep_extra else 0``; the ``project_raw`` layout in canonical
        order.  None when ``n``, ``r`` or the dtype have no fused kernel (see
        :func:`supported`).

    Raises
    ------
    ValueError
        On a shape that does not match the grid, or padding the grid does not allow.

    Examples
    --------
    >>> import cupy as cp  # doctest: +SKIP
    >>> from lbpcore._patches._cuda import project
    >>> project(cp.ones((1, 16, 2), cp.float32), (4, 4), 4, "none", [(0, 0), (0, 1)])[0]  # doctest: +SKIP
    array([[16., 16.],
           [ 0.,  0.]], dtype=float32)
    """
    prep = _prepare(x, n, indices)
    if prep is None:
        return None
    cp, x, idx = prep
    h, w, ph, pw, top, left = _geometry(grid, n, pad)
    rank = len(idx)
    if layout == "tokens":
        e = int(extra_tokens)
        if x.ndim != 3 or e < 0 or x.shape[1] != e + h * w:
            raise ValueError(f"x must have shape (B, {e} + {h}*{w}, C) for layout='tokens', got {tuple(x.shape)}")
        b, _, c = x.shape
    elif layout == "nchw":
        e = 0
        if x.ndim != 4 or tuple(x.shape[2:]) != (h, w) or extra_tokens:
            raise ValueError(f"x must have shape (B, C, {h}, {w}) and no extra tokens for layout='nchw', "
                             f"got {tuple(x.shape)} and extra_tokens={extra_tokens}")
        b, c = x.shape[:2]
    else:
        raise ValueError(f"layout must be 'tokens' or 'nchw', got {layout!r}")
    eo = e if keep_extra else 0
    dt = np.dtype(x.dtype)
    out = cp.empty((b, eo + ph * pw * rank, c), dtype=dt)
    vec = _vector_width(n, rank, dt, c, (x.data.ptr, out.data.ptr), layout, _vec)
    total = b * (ph * pw + (1 if eo else 0)) * (c // vec)
    if total:
        fn = _function(cp, n, idx, dt, layout, vec, "project")
        fn((-(-total // _BLOCK),), (_BLOCK,),
           (x, out, np.int64(b), np.int64(c), np.int32(h), np.int32(w), np.int32(pw), np.int32(ph * pw),
            np.int32(top), np.int32(left), np.int32(_PAD_CODES[pad]), np.int32(e), np.int32(eo), dt.type(scale)))
    return out


def reconstruct(coef, grid, n, pad, indices, *, extra_tokens=0, scale=1.0, layout="tokens", _vec=None):
    """Inverse of :func:`project` up to ``n**2`` and the crop, in one pass.

    Parameters
    ----------
    coef : cupy.ndarray, shape (B, e + P*r, C), float32 or float64
        The ``e`` extra tokens (copied through unchanged) followed by the
        coefficients in :func:`project`'s order.  Left untouched.
    grid : (int, int)
        ``(h, w)``.
    n : int
        Patch size.
    pad : {"reflect", "zero", "none"}
        Only fixes the patch geometry (the crop never reads padding).
    indices : array_like of int, shape (r, 2)
        Selected ``(i, j)`` sequency pairs, in the order of the coefficients.
    extra_tokens : int, optional
        ``e`` (tokens layout only).
    scale : float, optional
        Multiplies the grid values (``1.0``: no ``1/n**2``; the caller scales).
    layout : {"tokens", "nchw"}, optional

    Returns
    -------
    cupy.ndarray of shape (B, e + h*w, C) or (B, C, h, w), or None
        ``scale * crop(sum_k c_k B[i_k, j_k])`` on the grid of every patch,
        the extra tokens in front (tokens); None when no fused kernel covers
        the case (see :func:`supported`).  This is ``reconstruct_raw``'s
        contract (which takes the coefficients without the extra tokens).

    Raises
    ------
    ValueError
        On a shape that does not match the grid and selection.

    Examples
    --------
    >>> import cupy as cp  # doctest: +SKIP
    >>> from lbpcore._patches._cuda import reconstruct
    >>> coef = cp.asarray([[[16.0], [0.0]]])  # one 4x4 patch, one channel  # doctest: +SKIP
    >>> reconstruct(coef, (4, 4), 4, "none", [(0, 0), (0, 1)])[0, :, 0]  # doctest: +SKIP
    array([16., 16., 16., 16., 16., 16., 16., 16., 16., 16., 16., 16., 16.,
           16., 16., 16.])
    """
    prep = _prepare(coef, n, indices)
    if prep is None:
        return None
    cp, coef, idx = prep
    h, w, ph, pw, top, left = _geometry(grid, n, pad)
    rank = len(idx)
    e = int(extra_tokens) if layout == "tokens" else 0
    if layout not in ("tokens", "nchw"):
        raise ValueError(f"layout must be 'tokens' or 'nchw', got {layout!r}")
    if layout == "nchw" and extra_tokens:
        raise ValueError(f"extra_tokens must be 0 for layout='nchw', got {extra_tokens}")
    if coef.ndim != 3 or e < 0 or coef.shape[1] != e + ph * pw * rank:
        raise ValueError(f"coef must have shape (B, {e} + {ph * pw}*{rank}, C), got {tuple(coef.shape)}")
    b, _, c = coef.shape
    dt = np.dtype(coef.dtype)
    shape = (b, e + h * w, c) if layout == "tokens" else (b, c, h, w)
    out = cp.empty(shape, dtype=dt)
    vec = _vector_width(n, rank, dt, c, (coef.data.ptr, out.data.ptr), layout, _vec)
    total = b * (ph * pw + (1 if e else 0)) * (c // vec)
    if total:
        fn = _function(cp, n, idx, dt, layout, vec, "reconstruct")
        fn((-(-total // _BLOCK),), (_BLOCK,),
           (coef, out, np.int64(b), np.int64(c), np.int32(h), np.int32(w), np.int32(pw), np.int32(ph * pw),
            np.int32(top), np.int32(left), np.int32(e), dt.type(scale)))
    return out
