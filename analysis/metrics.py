"""Comparison metrics of an approximate array against an exact one: one definition each.

Every number :mod:`analysis` reports about an approximation (gradient errors,
fidelity of a whole backward pass, the report's tables) is computed here, in
float64, with one convention for zero arrays.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["relative_error", "cosine"]


def relative_error(a, b) -> float:
    """Relative Frobenius error ``||a - b||_F / ||b||_F`` (in float64).

    Parameters
    ----------
    a, b : array_like, same shape
        Approximation and reference.

    Returns
    -------
    float
        0.0 when both are zero; ``inf`` when only ``b`` is zero.

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

    Examples
    --------
    >>> from analysis.metrics import cosine
    >>> cosine([1.0, 0.0], [1.0, 1.0])
    0.7071067811865475
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))
