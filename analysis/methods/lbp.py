"""``lbp:<bases>``: LBP-WHT itself (:func:`lbpcore.lbp_backward`) behind the one interface.

Any selection of :func:`lbpcore.select_bases` works.  An energy selection
(``lbp:energy_l2:16``) is ranked on the ``grad_y`` of the calibration batch
(:meth:`~analysis.methods.Method.calibrate`) and then frozen, which makes it a
method; ranked on the gradient it approximates it would be an oracle.
"""

from __future__ import annotations

import numpy as np

import lbpcore

from ._base import Method

__all__ = ["LBP"]


def _is_energy(bases) -> bool:
    return bases.strip().startswith("energy")


class LBP(Method):
    """LBP-WHT with the selection ``bases`` (see :func:`analysis.methods.get_method`).

    Parameters
    ----------
    spec : str
        The normalized spec (made by :func:`analysis.methods.get_method`).
    bases : str
        A selection of :func:`lbpcore.select_bases`.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods import get_method
    >>> rng = np.random.default_rng(0)
    >>> x, w, gy = rng.standard_normal((2, 64, 4)), rng.standard_normal((3, 4)), rng.standard_normal((2, 64, 3))
    >>> gx, gw = get_method("lbp:lp_l1:2").backward(x, w, gy, grid=(8, 8), patch=4)
    >>> gx.shape, gw.shape
    ((2, 64, 4), (3, 4))
    """

    family = "lbp"

    def __init__(self, spec, bases):
        super().__init__(spec)
        self.bases = bases
        self.needs_calibration = _is_energy(bases)
        self.basis = None
        try:  # the syntax, checked now (a constant map stands in for an energy spec's data)
            lbpcore.select_bases(8, bases, calibration=np.ones((8, 8)))
        except ValueError as exc:
            if "rank" not in str(exc) and "between" not in str(exc):  # a rank that only fits larger patches is fine
                raise ValueError(f"method spec {spec!r}: {exc}") from None

    @property
    def calibrated(self):
        return self.basis is not None or not self.needs_calibration

    def _calibrate(self, layer):
        if not self.needs_calibration:
            return
        from ..spectrum import energy_maps  # noqa: PLC0415 - analysis.spectrum is only needed for energy specs

        res = energy_maps(layer.grad_y, grid=layer.grid, patch=layer.patch, extra_tokens=layer.extra_tokens)
        score = res.l1_map if self.bases.strip().startswith("energy_l1") else res.energy_map
        self.basis = lbpcore.select_bases(layer.patch, self.bases, calibration=score)

    def _selection(self, patch):
        if self.basis is not None:
            if self.basis.patch != patch:
                raise ValueError(f"{self.spec}: calibrated at patch {self.basis.patch}, used at patch {patch}")
            return self.basis
        if self.needs_calibration:  # costs only: every selection of this rank costs the same GEMMs
            return lbpcore.select_bases(patch, self.bases, calibration=np.ones((patch, patch)))
        return self.bases

    def _backward(self, layer, rng):
        g = lbpcore.lbp_backward(layer.x, layer.weight, layer.grad_y, grid=layer.grid, patch=layer.patch,
                                 bases=self._selection(layer.patch), extra_tokens=layer.extra_tokens)
        return g.grad_x, g.grad_weight

    def _cost(self, shape, grid, patch):
        b, length, c_in, c_out, e = shape
        return lbpcore.backward_cost((b, length, c_in), c_out, grid=grid, patch=patch,
                                     bases=self._selection(patch), extra_tokens=e)

    def _saved(self, shape, grid, patch):
        c = self._cost(shape, grid, patch)
        return c.lbp_saved_bytes, c.activation_bytes

    def _flops(self, shape, grid, patch):
        return self._cost(shape, grid, patch).lbp_flops
