"""Comparison metrics of an approximate array against an exact one: one definition each.

Every number :mod:`analysis` reports about an approximation (gradient errors,
fidelity of a whole backward pass, energy kept by a selection, the report's
tables) is computed here, in float64, with one convention for zero arrays.
The ``*_of_sums`` forms take the sums of squares and products that a
computation in batch chunks adds up (:mod:`analysis.error_sums`); the array
forms call them.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["relative_error", "cosine", "relative_error_of_sums", "cosine_of_sums", "energy_fraction", "unit_scale",
           "unit_exponent"]


def unit_exponent(a) -> int:
    """The power of two ``k`` that brings ``max|a|`` into [0.5, 1) as ``a * 2**k``.

    Parameters
    ----------
    a : array_like

    Returns
    -------
    int
        0 for arrays with no finite non-zero maximum.

    Examples
    --------
    >>> from analysis.metrics import unit_exponent
    >>> unit_exponent([3.0, -1.0]), unit_exponent([0.0])
    (-2, 0)
    """
    a = np.asarray(a, dtype=np.float64)
    top = float(np.max(np.abs(a))) if a.size else 0.0
    if top == 0.0 or not math.isfinite(top):
        return 0
    return -math.frexp(top)[1]


def unit_scale(a, like=None):
    """``a`` in float64 times the power of two that brings ``max|like|`` (default ``a``) into [0.5, 1).

    Exact (a power of two, :func:`unit_exponent`), and every number these
    metrics compute is invariant to it; norms of values near the ends of the
    float64 range (``1e300``, ``1e-300``) then neither overflow nor underflow.
    Arrays with no finite non-zero maximum are returned unscaled.

    Parameters
    ----------
    a : array_like
    like : array_like, optional
        The array whose magnitude sets the scale; default ``a``.

    Returns
    -------
    ndarray of float64

    Examples
    --------
    >>> from analysis.metrics import unit_scale
    >>> unit_scale([3e300, -1e300]).tolist()
    [0.5599..., -0.1866...]
    """
    a = np.asarray(a, dtype=np.float64)
    return np.ldexp(a, unit_exponent(a if like is None else like))


def relative_error(a, b) -> float:
    """Relative Frobenius error ``||a - b||_F / ||b||_F`` (in float64).

    Parameters
    ----------
    a, b : array_like, same shape
        Approximation and reference.

    Returns
    -------
    float
        0.0 when both are zero; ``inf`` when only ``b`` is zero.  Computed at
        unit scale (:func:`unit_scale`), so finite inputs near ``1e300`` give
        a finite answer.

    Examples
    --------
    >>> from analysis.metrics import relative_error
    >>> relative_error([3.0, 4.0], [3.0, 0.0])
    1.3333333333333333
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    both = np.stack([a, b])  # one scale for both: the ratio is unchanged
    a, b = unit_scale(both)
    d, b = (a - b).ravel(), b.ravel()
    return relative_error_of_sums(np.dot(d, d), np.dot(b, b))


def relative_error_of_sums(diff2, ref2) -> float:
    """:func:`relative_error` from ``||a - b||^2`` and ``||b||^2``.

    Parameters
    ----------
    diff2, ref2 : float
        Sums of squares, non-negative (e.g. added up over batch chunks).

    Returns
    -------
    float
        ``sqrt(diff2) / sqrt(ref2)``; 0.0 when both are zero, ``inf`` when
        only ``ref2`` is.

    Examples
    --------
    >>> from analysis.metrics import relative_error_of_sums
    >>> relative_error_of_sums(16.0, 9.0), relative_error_of_sums(0.0, 0.0)
    (1.3333333333333333, 0.0)
    """
    num, den = math.sqrt(float(diff2)), math.sqrt(float(ref2))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def cosine(a, b) -> float:
    """Cosine similarity ``<a, b> / (||a|| ||b||)`` of two arrays, flattened.

    Parameters
    ----------
    a, b : array_like, same shape

    Returns
    -------
    float
        In ``[-1, 1]``; 1.0 when both are zero, 0.0 when exactly one is.
        Computed at unit scale (:func:`unit_scale`).

    Examples
    --------
    >>> from analysis.metrics import cosine
    >>> cosine([1.0, 0.0], [1.0, 1.0])
    0.7071067811865475
    """
    a = unit_scale(a).ravel()
    b = unit_scale(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    return cosine_of_sums(np.dot(a, b), np.dot(a, a), np.dot(b, b))


def cosine_of_sums(dot, a2, b2) -> float:
    """:func:`cosine` from ``<a, b>``, ``||a||^2`` and ``||b||^2``.

    Parameters
    ----------
    dot : float
        Inner product.
    a2, b2 : float
        Sums of squares, non-negative.

    Returns
    -------
    float
        In ``[-1, 1]``; 1.0 when both norms are zero, 0.0 when exactly one is.

    Examples
    --------
    >>> from analysis.metrics import cosine_of_sums
    >>> cosine_of_sums(1.0, 1.0, 2.0), cosine_of_sums(0.0, 0.0, 0.0)
    (0.7071067811865475, 1.0)
    """
    na, nb = math.sqrt(float(a2)), math.sqrt(float(b2))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(float(dot) / (na * nb), -1.0, 1.0))


def energy_fraction(kept, total):
    """Fraction ``kept / total`` of an energy (a sum of squares) that a projection keeps.

    Parameters
    ----------
    kept : float or array_like
        Energy kept, e.g. ``||P g||^2`` or a sum of spectrum entries.
    total : float or array_like, broadcastable with ``kept``
        Total energy, e.g. ``||g||^2``; non-negative.

    Returns
    -------
    float or ndarray of float64
        ``kept / total``, clipped to at most 1.0 (rounding can push a sum of
        kept parts past the total); 1.0 where ``total`` is 0 (nothing to lose).
        A float for scalar inputs.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.metrics import energy_fraction
    >>> energy_fraction(3.0, 4.0), energy_fraction(0.0, 0.0)
    (0.75, 1.0)
    >>> energy_fraction(np.array([1.0, 2.0]), 2.0).tolist()
    [0.5, 1.0]
    """
    kept = np.asarray(kept, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    safe = np.where(total > 0, total, 1.0)
    frac = np.where(total > 0, np.minimum(kept / safe, 1.0), 1.0)
    return float(frac) if frac.ndim == 0 else frac
