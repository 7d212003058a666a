"""Comparison metrics of an approximate array against an exact one: one definition each.

Every number :mod:`analysis` reports about an approximation (gradient errors,
fidelity of a whole backward pass, energy kept by a selection, the report's
tables) is computed here, in float64, with one convention for zero arrays.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["relative_error", "cosine", "energy_fraction", "unit_scale"]


def unit_scale(a, like=None):
    """``a`` in float64 times the power of two that brings ``max|like|`` (default ``a``) into [0.5, 1).

    Exact (a power of two), and every number these metrics compute is
    invariant to it; norms of values near the ends of the float64 range
    (``1e300``, ``1e-300``) then neither overflow nor underflow.  Arrays with
    no finite non-zero maximum are returned unscaled.

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
    ref = a if like is None else np.asarray(like, dtype=np.float64)
    top = float(np.max(np.abs(ref))) if ref.size else 0.0
    if top == 0.0 or not math.isfinite(top):
        return a
    return np.ldexp(a, -math.frexp(top)[1])


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
    num = float(np.linalg.norm((a - b).ravel()))
    den = float(np.linalg.norm(b.ravel()))
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
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


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
