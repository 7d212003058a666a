"""Unbiased samplers of ``grad_W = sum_i g_i x_i^T``: ``wtacrs:rho``, ``crs:rho`` and ``rad:rho``.

The weight gradient is a sum over the ``N = B L`` token rows of outer products
``a_i = g_i x_i^T`` (``||a_i||_F = ||g_i|| ||x_i||``).  The samplers keep a few
rows (or entries) of ``x``, scaled so that the expectation is exact;
``grad_x = grad_y W`` stays exact.  With ``k = ceil(rho N)`` and the scores
``s_i = ||x_i|| ||g_i||``:

* **CRS** (Adelman et al., NeurIPS 2021), Bernoulli column-row sampling: row
  ``i`` is kept independently with ``p_i = min(1, c s_i)``, ``c`` such that
  ``sum p_i = k``, and scaled by ``1/p_i``.  Variance
  ``sum_i (1 - p_i)/p_i s_i^2``.
* **WTA-CRS** (Liu et al., NeurIPS 2023), winner-take-all: with
  ``p_i = s_i / sum s``, the ``c`` rows of largest ``p_i`` (the winners ``C``)
  are kept exactly and ``k - c`` rows are drawn with replacement from the
  others with probabilities ``q_i = p_i / (1 - p_C)``, each scaled by
  ``1 / ((k - c) q_i)``; ``c`` minimizes the paper's variance factor
  ``(1 - p_C) / (k - c)``.  Variance
  ``(sum_{i not in C} s_i^2 / q_i - ||sum_{i not in C} a_i||^2) / (k - c)``.
* **RAD** (Oktay et al., ICLR 2021), randomized autodiff on the saved
  activation: each entry of ``x`` is kept with probability ``rho`` and scaled
  by ``1/rho``.  Variance ``(1 - rho)/rho sum_i s_i^2``.

CRS and WTA-CRS need ``||g_i||``, known only in the backward: a layer saving
only the sampled rows must draw them from a proxy of the scores in the forward
(the papers discuss this); here the rows are drawn from the exact scores, the
ideal the proxies approach, and the saved fraction counts the ``k`` rows.
"""

from __future__ import annotations

import math

import numpy as np

from ._base import Method

__all__ = ["WTACRS", "CRS", "RAD", "bernoulli_probabilities", "wta_split"]


def _rows(rho, n) -> int:
    return min(n, max(1, math.ceil(rho * n - 1e-9)))


def bernoulli_probabilities(scores, k):
    """``p_i = min(1, c s_i)`` with ``sum p_i = min(k, #nonzero scores)`` (water-filling).

    Parameters
    ----------
    scores : ndarray, shape (N,)
        Non-negative.
    k : int
        Expected number of rows kept.

    Returns
    -------
    ndarray, shape (N,)

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods.sampling import bernoulli_probabilities
    >>> bernoulli_probabilities(np.array([10.0, 1.0, 1.0, 0.0]), 2).tolist()
    [1.0, 0.5, 0.5, 0.0]
    """
    s = np.asarray(scores, dtype=np.float64)
    nnz = int(np.count_nonzero(s))
    if nnz <= k:
        return (s > 0).astype(np.float64)
    order = np.argsort(-s, kind="stable")
    ss = s[order]
    tails = np.cumsum(ss[::-1])[::-1]  # tails[t] = sum of ss[t:]
    t = np.arange(k)
    ok = (k - t) * ss[:k] <= tails[:k]  # c_t ss[t] <= 1 with c_t = (k - t) / tails[t], without dividing
    first = int(np.argmax(ok))  # the fewest rows clipped to 1 (t = k - 1 always satisfies it)
    return np.minimum(1.0, (k - first) * (s / tails[first]))


def wta_split(p, k):
    """The winners of WTA-CRS: ``(order, c)``, the rows by decreasing ``p`` and how many are kept exactly.

    Parameters
    ----------
    p : ndarray, shape (N,)
        Probabilities summing to 1.
    k : int
        Rows in the estimate.

    Returns
    -------
    (ndarray of int, int)
        ``c`` minimizes ``(1 - p_C) / (k - c)`` over ``0 <= c < k``; ``c = k``
        (every row kept) when at most ``k`` probabilities are nonzero.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods.sampling import wta_split
    >>> wta_split(np.array([0.7, 0.1, 0.1, 0.1]), 2)[1]  # keep the 0.7 row, sample the other
    1
    """
    order = np.argsort(-p, kind="stable")
    if int(np.count_nonzero(p)) <= k:
        return order, k
    top = np.concatenate([[0.0], np.cumsum(p[order][: k - 1])])  # p_C for c = 0 .. k-1
    factor = (1.0 - top) / (k - np.arange(k))
    return order, int(np.argmin(factor))


def _scores(layer):
    x2, g2 = layer.x2, layer.g2
    return np.linalg.norm(x2, axis=1).astype(np.float64) * np.linalg.norm(g2, axis=1).astype(np.float64)


def _weighted_grad_w(layer, rows, weights):
    """``sum_j weights_j g_{rows_j} x_{rows_j}^T``: the GEMM on the kept rows only."""
    w = np.asarray(weights, dtype=layer.x.dtype)
    return layer.g2[rows].T @ (layer.x2[rows] * w[:, None])


class _RowSampler(Method):
    unbiased = True
    exact_grad_x = True
    stochastic = True

    def __init__(self, spec, rho):
        super().__init__(spec)
        self.rho = rho

    def _saved(self, shape, grid, patch):
        b, length, c_in, _, _ = shape
        n = b * length
        return _rows(self.rho, n) * c_in if n else 0, n * c_in

    def _flops(self, shape, grid, patch):
        b, length, c_in, c_out, _ = shape
        n = b * length
        k = _rows(self.rho, n) if n else 0
        # grad_x GEMM, the GEMM on k rows, the row norms of x and grad_y, the scaling of the kept rows
        return 2 * n * c_in * c_out + 2 * k * c_in * c_out + 2 * n * (c_in + c_out) + k * c_in


class CRS(_RowSampler):
    """Bernoulli column-row sampling of ``k = ceil(rho N)`` rows in expectation (see the module docstring).

    Parameters
    ----------
    spec : str
        The normalized spec (made by :func:`analysis.methods.get_method`).
    rho : float
        Expected fraction of the token rows kept, ``0 < rho <= 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods import get_method
    >>> rng = np.random.default_rng(0)
    >>> x, w, gy = rng.standard_normal((2, 16, 4)), rng.standard_normal((3, 4)), rng.standard_normal((2, 16, 3))
    >>> gx, gw = get_method("crs:1").backward(x, w, gy, grid=(4, 4), rng=0)  # every row kept: exact
    >>> bool(np.allclose(gw, gy.reshape(-1, 3).T @ x.reshape(-1, 4)))
    True
    """

    family = "crs"

    def _grad_w(self, layer, rng):
        s = _scores(layer)
        p = bernoulli_probabilities(s, _rows(self.rho, s.shape[0]))
        keep = np.flatnonzero(rng.random(s.shape[0]) < p)
        return _weighted_grad_w(layer, keep, 1.0 / p[keep])


class WTACRS(_RowSampler):
    """Winner-take-all column-row sampling of ``k = ceil(rho N)`` rows (see the module docstring).

    Parameters
    ----------
    spec : str
        The normalized spec (made by :func:`analysis.methods.get_method`).
    rho : float
        Fraction of the token rows in the estimate, ``0 < rho <= 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods import get_method
    >>> rng = np.random.default_rng(0)
    >>> x, w, gy = rng.standard_normal((2, 16, 4)), rng.standard_normal((3, 4)), rng.standard_normal((2, 16, 3))
    >>> gx, gw = get_method("wtacrs:0.25").backward(x, w, gy, grid=(4, 4), rng=0)
    >>> gw.shape
    (3, 4)
    """

    family = "wtacrs"

    def _grad_w(self, layer, rng):
        s = _scores(layer)
        n = s.shape[0]
        total = float(s.sum())
        if total == 0 or not math.isfinite(total):
            return _weighted_grad_w(layer, np.flatnonzero(s > 0), np.ones(int((s > 0).sum())))
        p = s / total
        k = _rows(self.rho, n)
        order, c = wta_split(p, k)
        winners = order[:c]
        rows, weights = [winners], [np.ones(c)]
        if c < k:
            rest = order[c:]
            q = p[rest] / p[rest].sum()
            draws = rng.choice(rest.shape[0], size=k - c, replace=True, p=q)
            counts = np.bincount(draws, minlength=rest.shape[0])
            hit = np.flatnonzero(counts)
            rows.append(rest[hit])
            weights.append(counts[hit] / ((k - c) * q[hit]))
        return _weighted_grad_w(layer, np.concatenate(rows), np.concatenate(weights))


class RAD(Method):
    """Entries of the saved ``x`` kept with probability ``rho``, scaled by ``1/rho`` (see the module docstring).

    Parameters
    ----------
    spec : str
        The normalized spec (made by :func:`analysis.methods.get_method`).
    rho : float
        Probability of keeping an entry of ``x``, ``0 < rho <= 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods import get_method
    >>> m = get_method("rad:0.5")
    >>> m.unbiased, m.exact_grad_x, m.saved_fraction((2, 16, 4), 3, grid=(4, 4))
    (True, True, 0.5)
    """

    family = "rad"
    unbiased = True
    exact_grad_x = True
    stochastic = True

    def __init__(self, spec, rho):
        super().__init__(spec)
        self.rho = rho

    def _grad_w(self, layer, rng):
        x2 = layer.x2
        if self.rho < 1.0:
            x2 = np.where(rng.random(x2.shape) < self.rho, x2 / np.asarray(self.rho, dtype=x2.dtype), 0)
        return layer.g2.T @ x2

    def _saved(self, shape, grid, patch):
        b, length, c_in, _, _ = shape
        n = b * length * c_in
        return self.rho * n, n

    def _flops(self, shape, grid, patch):
        b, length, c_in, c_out, _ = shape
        n = b * length
        # grad_x GEMM, the sparse GEMM on the kept entries (rho of them), the mask
        return 2 * n * c_in * c_out + math.ceil(2 * self.rho * n * c_in * c_out) + n * c_in
