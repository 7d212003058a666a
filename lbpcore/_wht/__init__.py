"""Fast Walsh–Hadamard transform in natural, sequency and dyadic order.

The public functions and their documentation; the computing lives in
:mod:`._numpy_engine` (NumPy), :mod:`._array_api_engine` (every other array
library) and :mod:`._cuda` (a CuPy kernel), the matrices and orderings in
:mod:`._walsh`.  All three matrices are symmetric, so the inverse transform is
the forward one with the reciprocal scaling.
"""

from __future__ import annotations

import numpy as np

from .._backend import compat_namespace, constant
from .._validation import (
    check_axes_pair,
    check_choice,
    check_matrix_dtype,
    check_nbytes,
    check_patch,
    check_power_of_two,
)
from ._dispatch import transform
from ._walsh import NORMS, ORDERINGS, ordered_hadamard, permutation

__all__ = ["NORMS", "ORDERINGS", "fwht", "fwht2", "ifwht", "ifwht2", "sequency_permutation", "walsh_matrix"]


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
    check_nbytes(3 * 8 * n, f"n={n}", f"a permutation of {n} indices")
    check_choice(ordering, "ordering", ORDERINGS)
    return permutation(n, ordering)


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
        Dtype of the result: real floating, or a signed integer (which holds
        ``-1``); default float64 of ``xp``.
    xp : array namespace, optional
        Namespace of the result (for example ``cupy``); default NumPy.
    device : device, optional
        Device of the result, for namespaces that have several.

    Returns
    -------
    M : array, shape (n, n)
        Symmetric, ``M @ M.T == n * I``.

    Raises
    ------
    ValueError
        If ``n`` is not a power of two, the matrix would not fit in memory, or
        ``ordering`` is unknown.
    TypeError
        If ``dtype`` is boolean, unsigned or complex (it cannot hold ``-1``
        and ``1``).

    Examples
    --------
    >>> from lbpcore import walsh_matrix
    >>> walsh_matrix(4)
    array([[ 1.,  1.,  1.,  1.],
           [ 1.,  1., -1., -1.],
           [ 1., -1., -1.,  1.],
           [ 1., -1.,  1., -1.]])
    """
    n = check_patch(n, "n")
    check_choice(ordering, "ordering", ORDERINGS)
    if xp is None:
        xp = compat_namespace(None)
    dtype = xp.float64 if dtype is None else check_matrix_dtype(compat_namespace(xp), dtype)
    m = constant(("walsh", n, ordering), lambda: ordered_hadamard(n, ordering), xp, dtype, device)
    return xp.asarray(m, copy=True)


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
    The cost is ``O(n log n)``: the natural-order matrix is a Kronecker product
    of small Hadamard blocks, applied by matrix products.  On NumPy, lengths up
    to 64 use one dense product with the ordered, scaled matrix (no separate
    permutation or scaling pass); longer ones use blocks of at most 16,
    processed in cache-sized chunks spread over the CPU cores, with every BLAS
    call kept single-threaded.  NaN and inf propagate into every output element
    that depends on them.

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
    return transform(x, (axis,), ordering, norm, inverse=False, out=out)


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
    return transform(x, (axis,), ordering, norm, inverse=True, out=out)


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
    check_axes_pair(axes)
    return transform(x, tuple(axes), ordering, norm, inverse=False, out=out)


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
    check_axes_pair(axes)
    return transform(x, tuple(axes), ordering, norm, inverse=True, out=out)

