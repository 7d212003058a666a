"""Projections of the saved activation: ``velora:G`` (VeLoRA, NeurIPS 2024) and ``compact:rho`` (CompAct, NAACL 2025).

Both keep ``grad_x = grad_y W`` exact (the weight is at hand in the backward)
and approximate only ``grad_W = grad_y^T x`` from a compressed copy of ``x``:

* **VeLoRA** splits each token into ``G`` sub-tokens of ``d = C_in / G``
  values and saves one number per sub-token, ``z = x_sub . v``, with ``v`` the
  normalized mean sub-token of the calibration batch (frozen);
  ``x_hat = z v^T``.  Deterministic, biased; exact for ``G = C_in``.
* **CompAct** saves ``x P`` with a Gaussian ``P`` (``C_in x r``,
  ``r = ceil(rho C_in)``, entries ``N(0, 1/r)``, drawn from ``rng``) and
  computes ``grad_W = (grad_y^T (x P)) P^T``: unbiased because
  ``E[P P^T] = I``, with ``E||grad_W~ - grad_W||^2 = (C_in + 1) / r ||grad_W||^2``
  (so not exact even at ``rho = 1``: ``P P^T`` is then invertible, not ``I``).
"""

from __future__ import annotations

import math

import numpy as np

from ._base import Method

__all__ = ["VeLoRA", "CompAct"]


class VeLoRA(Method):
    """Rank-1 sub-token projection of ``x`` with ``G`` sub-tokens per token (see the module docstring).

    Parameters
    ----------
    spec : str
        The normalized spec (made by :func:`analysis.methods.get_method`).
    groups : int
        Sub-tokens ``G`` per token; must divide ``C_in``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods import get_method
    >>> rng = np.random.default_rng(0)
    >>> x, w, gy = rng.standard_normal((2, 16, 8)), rng.standard_normal((3, 8)), rng.standard_normal((2, 16, 3))
    >>> m = get_method("velora:8").calibrate(x, w, gy, grid=(4, 4))  # G = C_in: exact
    >>> bool(np.allclose(m.backward(x, w, gy, grid=(4, 4))[1], gy.reshape(-1, 3).T @ x.reshape(-1, 8)))
    True
    """

    family = "velora"
    exact_grad_x = True
    needs_calibration = True

    def __init__(self, spec, groups):
        super().__init__(spec)
        self.groups = groups
        self.v = None  # (d,) unit vector, once calibrated

    @property
    def calibrated(self):
        return self.v is not None

    def _sub_size(self, c_in):
        if c_in % self.groups:
            raise ValueError(f"{self.spec}: G = {self.groups} sub-tokens must divide C_in = {c_in}")
        return c_in // self.groups

    def _calibrate(self, layer):
        d = self._sub_size(layer.x.shape[-1])
        mean = layer.x2.reshape(-1, d).mean(axis=0, dtype=np.float64)
        norm = float(np.linalg.norm(mean))
        v = np.zeros(d)
        v[0] = 1.0
        self.v = mean / norm if norm > 0 and math.isfinite(norm) else v

    def _grad_w(self, layer, rng):
        c_in = layer.x.shape[-1]
        d = self._sub_size(c_in)
        if self.v.shape[0] != d:
            raise ValueError(f"{self.spec}: calibrated on sub-tokens of {self.v.shape[0]} values, not {d}")
        v = self.v.astype(layer.x.dtype, copy=False)
        z = layer.x2.reshape(-1, self.groups, d) @ v  # (N, G): what is saved
        gz = layer.g2.T @ z  # (C_out, G)
        gw = (gz[:, :, None] * v).reshape(-1, c_in)  # grad_y^T (z v^T), never forming x_hat
        return gw

    def _saved(self, shape, grid, patch):
        b, length, c_in, _, _ = shape
        return b * length * self.groups, b * length * c_in

    def _flops(self, shape, grid, patch):
        b, length, c_in, c_out, _ = shape
        n = b * length
        # grad_x GEMM, z = x_sub . v, grad_y^T z, and the outer product with v
        return 2 * n * c_in * c_out + 2 * n * c_in + 2 * n * self.groups * c_out + c_out * c_in


class CompAct(Method):
    """Gaussian projection of ``x`` to ``r = ceil(rho C_in)`` columns (see the module docstring).

    Parameters
    ----------
    spec : str
        The normalized spec (made by :func:`analysis.methods.get_method`).
    rho : float
        Kept fraction of the columns, ``0 < rho <= 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods import get_method
    >>> rng = np.random.default_rng(0)
    >>> x, w, gy = rng.standard_normal((2, 16, 8)), rng.standard_normal((3, 8)), rng.standard_normal((2, 16, 3))
    >>> gx, gw = get_method("compact:0.5").backward(x, w, gy, grid=(4, 4), rng=1)
    >>> bool(np.allclose(gx, gy @ w)), gw.shape  # grad_x exact
    (True, (3, 8))
    """

    family = "compact"
    unbiased = True
    exact_grad_x = True
    stochastic = True

    def __init__(self, spec, rho):
        super().__init__(spec)
        self.rho = rho

    def columns(self, c_in) -> int:
        """``r = ceil(rho C_in)`` (at least 1)."""
        return max(1, math.ceil(self.rho * c_in - 1e-9))

    def _grad_w(self, layer, rng):
        c_in = layer.x.shape[-1]
        r = self.columns(c_in)
        p = (rng.standard_normal((c_in, r)) / math.sqrt(r)).astype(layer.x.dtype, copy=False)
        xp = layer.x2 @ p  # (N, r): what is saved (P is regenerated from the seed)
        return (layer.g2.T @ xp) @ p.T

    def _saved(self, shape, grid, patch):
        b, length, c_in, _, _ = shape
        return b * length * self.columns(c_in), b * length * c_in

    def _flops(self, shape, grid, patch):
        b, length, c_in, c_out, _ = shape
        n, r = b * length, self.columns(c_in)
        return 2 * n * c_in * c_out + 2 * n * c_in * r + 2 * n * r * c_out + 2 * c_out * r * c_in
