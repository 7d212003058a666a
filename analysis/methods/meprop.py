"""``meprop:rho``: meProp (Sun et al., ICML 2017), the top-k entries of each row of the output gradient.

Each token's ``grad_y`` row keeps its ``k = ceil(rho C_out)`` largest entries
in magnitude (ties broken by :func:`numpy.argpartition`), the others set to 0,
and both gradients come from that sparse ``grad_y~``:
``grad_x = grad_y~ W``, ``grad_W = grad_y~^T x``.  Deterministic, biased,
exact for ``rho = 1``.  It saves all of ``x``; with sparse products the GEMMs
cost ``k / C_out`` of the dense ones, and the selection one comparison per entry.
"""

from __future__ import annotations

import math

import numpy as np

from ._base import Method

__all__ = ["MeProp"]


class MeProp(Method):
    """Top-k sparsification of ``grad_y`` per token (see the module docstring).

    Parameters
    ----------
    spec : str
        The normalized spec (made by :func:`analysis.methods.get_method`).
    rho : float
        Kept fraction of each row of ``grad_y``, ``0 < rho <= 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods import get_method
    >>> gy = np.array([[[1.0, -3.0, 2.0, 0.5]]])
    >>> x, w = np.ones((1, 1, 2)), np.ones((4, 2))
    >>> get_method("meprop:0.5").backward(x, w, gy, grid=(1, 1))[1][:, 0].tolist()  # keeps -3 and 2
    [0.0, -3.0, 2.0, 0.0]
    """

    family = "meprop"

    def __init__(self, spec, rho):
        super().__init__(spec)
        self.rho = rho

    def kept(self, c_out) -> int:
        """``k = ceil(rho C_out)`` (at least 1)."""
        return max(1, math.ceil(self.rho * c_out - 1e-9))

    def _backward(self, layer, rng):
        g2 = layer.g2
        c_out = g2.shape[1]
        k = min(self.kept(c_out), c_out)
        if k < c_out:
            idx = np.argpartition(-np.abs(g2), k - 1, axis=1)[:, :k]
            sparse = np.zeros_like(g2)
            np.put_along_axis(sparse, idx, np.take_along_axis(g2, idx, axis=1), axis=1)
            g2 = sparse
        return (g2 @ layer.weight).reshape(layer.x.shape), g2.T @ layer.x2

    def _flops(self, shape, grid, patch):
        b, length, c_in, c_out, _ = shape
        n, k = b * length, min(self.kept(c_out), c_out)
        return 4 * n * k * c_in + n * c_out
