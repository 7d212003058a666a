"""Fast Walsh–Hadamard transform in natural, sequency and dyadic order.

The natural-order Hadamard matrix of size ``n = n_1 n_2 ... n_k`` (all powers of
two) is the Kronecker product ``H_{n_1} ⊗ ... ⊗ H_{n_k}``.  Viewing a length-``n``
axis as ``k`` axes of sizes ``n_t`` (row-major), the transform is therefore the
product of ``k`` small dense Hadamard blocks, each applied along one of those
axes with a matrix product.  This costs ``2 n (n_1 + ... + n_k)`` flops instead of
the ``n log2 n`` additions of radix-2 butterflies, but runs at BLAS speed and never
moves data between axes, which makes it the fast design for array libraries.
The sequency and dyadic orders are a gather of the natural result.

All three matrices are symmetric, so the inverse transform is the forward one
with the reciprocal scaling.
"""

from __future__ import annotations

import math

import numpy as np

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


def _wht(x, axes, ordering, norm, inverse, name="x"):
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


def fwht(x, axis=-1, *, ordering="sequency", norm="backward"):
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
    blocks of at most 64 applied by matrix products (see the module notes).
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
    return _wht(x, (axis,), ordering, norm, inverse=False)


def ifwht(x, axis=-1, *, ordering="sequency", norm="backward"):
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
    return _wht(x, (axis,), ordering, norm, inverse=True)


def fwht2(x, axes=(-2, -1), *, ordering="sequency", norm="backward"):
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
    return _wht(x, tuple(axes), ordering, norm, inverse=False)


def ifwht2(x, axes=(-2, -1), *, ordering="sequency", norm="backward"):
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
    return _wht(x, tuple(axes), ordering, norm, inverse=True)


def _check_axes_pair(axes):
    if isinstance(axes, str) or not hasattr(axes, "__len__") or len(axes) != 2:
        raise ValueError(f"axes must be a pair of distinct axes, got {axes!r}")
