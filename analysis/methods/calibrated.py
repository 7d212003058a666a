"""``calibrated:r``: a per-patch KLT of ``grad_y`` fitted once on a calibration batch, then frozen.

In the spirit of INSTANT (ICLR 2026): the ``r`` leading eigenvectors of the
uncentered second moment of the calibration batch's ``grad_y`` patch vectors
(:func:`analysis.baselines.top_eigenvectors`) span the subspace onto which
every later ``grad_y`` is projected, patch by patch, as LBP-WHT projects onto
Walsh bases (:func:`analysis.errors.subspace_backward`).  The ``klt`` baseline
of :func:`analysis.errors.gradient_errors` is fitted on the very gradient it
approximates (an oracle); this one is not.
"""

from __future__ import annotations

import math

from ._base import Method

__all__ = ["Calibrated"]


class Calibrated(Method):
    """The frozen per-patch KLT of rank ``r`` (see :func:`analysis.methods.get_method`).

    Parameters
    ----------
    spec : str
        The normalized spec (made by :func:`analysis.methods.get_method`).
    rank : int
        Directions ``r`` per patch, ``1 <= r <= n*n``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods import get_method
    >>> rng = np.random.default_rng(0)
    >>> x, w, gy = rng.standard_normal((2, 64, 4)), rng.standard_normal((3, 4)), rng.standard_normal((2, 64, 3))
    >>> m = get_method("calibrated:16").calibrate(x, w, gy, grid=(8, 8), patch=4)
    >>> gx, gw = m.backward(x, w, gy, grid=(8, 8), patch=4)  # every direction of a 4x4 patch: exact
    >>> bool(np.allclose(gw, gy.reshape(-1, 3).T @ x.reshape(-1, 4)))
    True
    """

    family = "calibrated"
    needs_calibration = True

    def __init__(self, spec, rank):
        super().__init__(spec)
        self.rank = rank
        self.rows = None  # (r, n*n) orthonormal rows in pixels, once calibrated

    @property
    def calibrated(self):
        return self.rows is not None

    def _calibrate(self, layer):
        from ..baselines import top_eigenvectors  # noqa: PLC0415 - analysis.errors imports this package
        from ..errors import patch_vectors  # noqa: PLC0415

        n = layer.patch
        if not 1 <= self.rank <= n * n:
            raise ValueError(f"{self.spec}: the rank must be between 1 and {n * n} for patch {n}, got {self.rank}")
        v = patch_vectors(layer.grad_y, grid=layer.grid, patch=n, extra_tokens=layer.extra_tokens)
        self.rows = top_eigenvectors(v.T @ v)[:self.rank]

    def _backward(self, layer, rng):
        from ..errors import subspace_backward  # noqa: PLC0415 - analysis.errors imports this package

        if self.rows.shape[1] != layer.patch ** 2:
            raise ValueError(f"{self.spec}: calibrated at patch {math.isqrt(self.rows.shape[1])}, used at patch "
                             f"{layer.patch}")
        g = subspace_backward(layer.x, layer.weight, layer.grad_y, self.rows, grid=layer.grid, patch=layer.patch,
                              extra_tokens=layer.extra_tokens)
        return g.grad_x.astype(layer.x.dtype, copy=False), g.grad_weight.astype(layer.x.dtype, copy=False)

    def _geometry(self, shape, grid, patch):
        b, length, c_in, c_out, e = shape
        p = math.ceil(grid[0] / patch) * math.ceil(grid[1] / patch)
        return b, p, min(self.rank, patch * patch), e

    def _saved(self, shape, grid, patch):
        b, p, r, e = self._geometry(shape, grid, patch)
        return b * (p * r + e) * shape[2], b * shape[1] * shape[2]

    def _flops(self, shape, grid, patch):
        b, p, r, e = self._geometry(shape, grid, patch)
        c_in, c_out = shape[2], shape[3]
        gemm = 4 * b * (p * r + e) * c_in * c_out
        # dense (r x n*n) projections of x and grad_y and the reconstruction of grad_x: no fast transform
        projection = 2 * b * p * r * patch * patch * (2 * c_in + c_out)
        return gemm + projection
