"""Rank-matched per-patch subspaces that LBP-WHT is compared with.

Each function returns orthonormal rows of length ``n*n``: basis images of an
``n x n`` patch, flattened row-major.  :func:`analysis.errors.gradient_errors`
projects the output gradient onto them patch by patch; why each baseline is
there and what is guaranteed about their errors is explained in
:ref:`method-baselines`.
"""

from __future__ import annotations

import math

import numpy as np

import lbpcore

from .coefficients import full_basis

__all__ = ["dct_matrix", "dct_basis", "walsh_basis", "klt_basis", "top_eigenvectors", "random_basis"]


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix.

    Parameters
    ----------
    n : int
        Length, positive.

    Returns
    -------
    ndarray of float64, shape (n, n)
        ``D[k, u] = s_k cos(pi (2u + 1) k / (2n))`` with ``s_0 = sqrt(1/n)``,
        ``s_k = sqrt(2/n)``; ``D @ D.T = I`` (``scipy.fft.dct(..., norm="ortho")``).

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.baselines import dct_matrix
    >>> d = dct_matrix(4)
    >>> bool(np.allclose(d @ d.T, np.eye(4))), round(float(d[0, 0]), 4)
    (True, 0.5)
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    k = np.arange(n)[:, None]
    u = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * u + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def dct_basis(n: int, r: int) -> np.ndarray:
    """Low-pass 2D DCT-II basis images of an ``n x n`` patch.

    Parameters
    ----------
    n : int
        Patch size, a power of two.
    r : int
        Number of images, ``1 <= r <= n*n``.

    Returns
    -------
    ndarray of float64, shape (r, n*n)
        Orthonormal rows ``outer(d_i, d_j).ravel()`` for the first ``r`` pairs
        ``(i, j)`` in ``(i + j, i, j)`` order (the order of ``lp_l1``).

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.baselines import dct_basis
    >>> q = dct_basis(4, 3)
    >>> q.shape, bool(np.allclose(q @ q.T, np.eye(3)))
    ((3, 16), True)
    """
    pairs = full_basis(n).indices
    r = _check_rank(r, n)
    d = dct_matrix(n)
    i, j = pairs[:r, 0], pairs[:r, 1]
    return (d[i, :, None] * d[j, None, :]).reshape(r, n * n)


def walsh_basis(n: int, bases="lp_l1:6") -> np.ndarray:
    """Selected 2D Walsh basis images, normalized to orthonormal rows.

    Parameters
    ----------
    n : int
        Patch size, a power of two.
    bases : str, sequence of pairs or lbpcore.BasisSet
        As for :func:`lbpcore.select_bases`.

    Returns
    -------
    ndarray of float64, shape (r, n*n)
        ``images / n`` flattened row-major, in ``BasisSet.indices`` order.

    Examples
    --------
    >>> from analysis.baselines import walsh_basis
    >>> walsh_basis(2, "lp_l1:2").tolist()
    [[0.5, 0.5, 0.5, 0.5], [0.5, -0.5, 0.5, -0.5], [0.5, 0.5, -0.5, -0.5]]
    """
    b = lbpcore.select_bases(n, bases)
    return b.images().reshape(b.rank, n * n) / n


def _check_rank(r, n):
    r = int(r)
    if not 1 <= r <= n * n:
        raise ValueError(f"rank must be between 1 and {n * n} for patch size {n}, got {r}")
    return r


def _sign_fix(vecs):
    """Make the largest-magnitude entry of each row positive (deterministic output)."""
    idx = np.argmax(np.abs(vecs), axis=1)
    s = np.sign(vecs[np.arange(vecs.shape[0]), idx])
    s[s == 0] = 1.0
    return vecs * s[:, None]


def top_eigenvectors(gram):
    """Eigenvectors of a symmetric Gram matrix as rows, by decreasing eigenvalue, signs fixed.

    Parameters
    ----------
    gram : ndarray, shape (d, d)
        Symmetric positive semi-definite, e.g. ``V^T V``.

    Returns
    -------
    ndarray of float64, shape (d, d)
        Orthonormal rows; each row's largest-magnitude entry is positive, so
        the result is deterministic.  The first ``r`` rows span the KLT
        subspace of dimension ``r``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.baselines import top_eigenvectors
    >>> top_eigenvectors(np.array([[1.0, 0.0], [0.0, 4.0]])).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(-evals, kind="stable")
    return _sign_fix(evecs[:, order].T)


def klt_basis(vectors, r: int) -> np.ndarray:
    """Optimal ``r``-dimensional subspace (KLT/PCA) of a set of vectors.

    Parameters
    ----------
    vectors : array_like, shape (N, d)
        Samples, e.g. patch vectors from :func:`analysis.errors.patch_vectors`.
    r : int
        Subspace dimension, ``1 <= r <= d``.

    Returns
    -------
    ndarray of float64, shape (r, d)
        Orthonormal rows: the top ``r`` eigenvectors of the (uncentered)
        second-moment matrix ``V^T V``, by decreasing eigenvalue, signs fixed
        so that each row's largest-magnitude entry is positive.  Their span
        minimizes ``sum ||v - Q v||^2`` over all rank-``r`` projectors ``Q``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.baselines import klt_basis
    >>> v = np.array([[3.0, 0.0], [0.0, 1.0], [-3.0, 0.1]])
    >>> klt_basis(v, 1).round(3).tolist()
    [[1.0, -0.018]]
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"vectors must have shape (N, d), got {v.shape}")
    d = v.shape[1]
    r = int(r)
    if not 1 <= r <= d:
        raise ValueError(f"r must be between 1 and {d}, got {r}")
    return top_eigenvectors(v.T @ v)[:r]


def random_basis(n: int, r: int, seed=0) -> np.ndarray:
    """Random orthonormal ``r``-dimensional subspace of ``n x n`` patches.

    Parameters
    ----------
    n : int
        Patch size.
    r : int
        ``1 <= r <= n*n``.
    seed : int or numpy.random.Generator, optional

    Returns
    -------
    ndarray of float64, shape (r, n*n)
        The first ``r`` rows of a Haar-random orthogonal matrix drawn from
        ``seed`` (so subspaces for increasing ``r`` are nested).

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.baselines import random_basis
    >>> q = random_basis(4, 5, seed=1)
    >>> q.shape, bool(np.allclose(q @ q.T, np.eye(5)))
    ((5, 16), True)
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    r = _check_rank(r, n)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    q, upper = np.linalg.qr(rng.standard_normal((n * n, n * n)))
    q = q * np.where(np.diag(upper) < 0, -1.0, 1.0)[None, :]  # unique QR: Haar distributed
    return q.T[:r]
