"""The one interface of :mod:`analysis.methods`: a method's backward, calibration and costs.

Every method approximates the backward pass of one linear layer
``y = x W^T`` on ``B`` items of ``L = e + h*w`` tokens (``N = B L`` rows):
the exact gradients are ``grad_x = grad_y W`` (``N x C_in``) and
``grad_W = grad_y^T x`` (``C_out x C_in``).  :class:`Method` fixes the calling
convention; each family module (:mod:`analysis.methods.lbp`, ...) fills in
:meth:`Method._backward` and the cost model.  What each method computes, saves
and costs is explained in :ref:`method-alternatives`.

The FLOPs follow :func:`lbpcore.backward_cost`: two per multiply-add of a
matrix product (the dense backward costs ``4 N C_in C_out``), the work on the
saved activations (projection, sampling) counted with the backward, whatever
the precision of the arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lbpcore._validation import check_grad_y, check_int, check_layer_input, check_weight

__all__ = ["Layer", "Method", "as_rng", "check_fraction", "dense_flops", "layer_shape"]


def as_rng(rng):
    """A :class:`numpy.random.Generator` from ``None`` (fresh entropy), a seed or a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def check_fraction(text, spec, form):
    """The fraction ``rho`` of a spec, ``0 < rho <= 1``, else a ValueError naming the accepted form."""
    try:
        rho = float(text)
    except (TypeError, ValueError):
        rho = math.nan
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"method spec {spec!r}: expected {form} with a fraction 0 < rho <= 1, got {text!r}")
    return rho


def layer_shape(x_shape, out_features, grid, extra_tokens):
    """``(B, L, C_in, C_out, e)`` of a token layer, checked against its grid."""
    shape = tuple(check_int(s, "x_shape entries", minimum=0) for s in x_shape)
    if len(shape) != 3:
        raise ValueError(f"x must have shape (B, e + h*w, C_in), got {shape}")
    if grid is None or len(tuple(grid)) != 2:
        raise ValueError(f"grid must be a pair (h, w), got {grid!r}")
    h, w = (check_int(v, "grid", minimum=1) for v in grid)
    e = check_int(extra_tokens, "extra_tokens", minimum=0)
    b, length, c_in = shape
    if length != e + h * w:
        raise ValueError(f"x has {length} tokens, not extra_tokens + h*w = {e} + {h}*{w} = {e + h * w}")
    return b, length, c_in, check_int(out_features, "out_features", minimum=0), e


def dense_flops(x_shape, out_features) -> int:
    """``4 B L C_in C_out``: the dense backward's two GEMMs (as :func:`lbpcore.backward_cost`)."""
    b, length, c_in = x_shape
    return 4 * b * length * c_in * out_features


@dataclass(frozen=True)
class Layer:
    """A token layer's arrays, checked, with ``x`` and ``grad_y`` as ``(N, C)`` rows.

    Attributes
    ----------
    x, grad_y : ndarray, shape (B, L, C_in) and (B, L, C_out)
    weight : ndarray, shape (C_out, C_in)
    x2, g2 : ndarray, shape (N, C_in) and (N, C_out)
        The same data as rows (views).
    grid : (int, int)
    patch, extra_tokens : int
    """

    x: np.ndarray
    weight: np.ndarray
    grad_y: np.ndarray
    grid: tuple
    patch: int
    extra_tokens: int

    @classmethod
    def of(cls, x, weight, grad_y, grid, patch, extra_tokens):
        """Check the arrays (tokens layout) and wrap them."""
        x, weight, grad_y = (np.asarray(a) for a in (x, weight, grad_y))
        for name, a in (("x", x), ("weight", weight), ("grad_y", grad_y)):
            if a.dtype.kind != "f":
                raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
        check_weight(weight.shape, None)
        check_layer_input(x.shape, weight.shape, "tokens")
        check_grad_y(x.shape, weight.shape[0], grad_y.shape, "tokens")
        layer_shape(x.shape, weight.shape[0], grid, extra_tokens)
        patch = check_int(patch, "patch", minimum=1)
        return cls(x, weight, grad_y, tuple(int(v) for v in grid), patch, int(extra_tokens))

    @property
    def x2(self):
        return self.x.reshape(-1, self.x.shape[-1])

    @property
    def g2(self):
        return self.grad_y.reshape(-1, self.grad_y.shape[-1])

    def exact_grad_x(self):
        """``grad_y W``, shape of ``x``."""
        return (self.g2 @ self.weight).reshape(self.x.shape)


class Method:
    """An approximate backward of a linear layer (the interface of every spec of :func:`get_method`).

    Parameters
    ----------
    spec : str
        The normalized spec (the families' constructors are called by
        :func:`analysis.methods.get_method`).

    Attributes
    ----------
    spec : str
        The spec it was made from, normalized (``"wtacrs:0.3"``).
    family : str
        ``"lbp"``, ``"velora"``, ``"compact"``, ``"wtacrs"``, ``"crs"``,
        ``"meprop"``, ``"rad"``, ``"hot"`` or ``"calibrated"``.
    unbiased : bool
        Whether ``E[grad_weight]`` (and ``E[grad_x]``) over ``rng`` is exact.
    exact_grad_x : bool
        Whether ``grad_x`` is the dense one.
    stochastic : bool
        Whether the result depends on ``rng``.
    needs_calibration : bool
        Whether :meth:`backward` needs :meth:`calibrate` first (the fitted
        state is that of one layer).

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods import get_method
    >>> m = get_method("meprop:0.25")
    >>> m.backward_flops((2, 16, 8), 8, grid=(4, 4)) / (4 * 32 * 8 * 8)  # 2 of 8 entries, plus the selection
    0.28125
    """

    family = ""
    unbiased = False
    exact_grad_x = False
    stochastic = False
    needs_calibration = False

    def __init__(self, spec):
        self.spec = spec

    def __repr__(self):
        return f"get_method({self.spec!r})"

    # -- the interface ----------------------------------------------------

    def calibrate(self, x, weight, grad_y, *, grid, patch=8, extra_tokens=0):
        """Fit what the method fits once, on a calibration batch of this layer (a no-op for most).

        Parameters
        ----------
        x : array, shape (B, e + h*w, C_in)
        weight : array, shape (C_out, C_in)
        grad_y : array, shape (B, e + h*w, C_out)
        grid : (int, int)
        patch : int, optional
            Patch size of the per-patch methods (default 8).
        extra_tokens : int, optional
            Leading tokens outside the grid (default 0).

        Returns
        -------
        Method
            ``self``, fitted.
        """
        self._calibrate(Layer.of(x, weight, grad_y, grid, patch, extra_tokens))
        return self

    def backward(self, x, weight, grad_y, *, grid, patch=8, extra_tokens=0, rng=None):
        """The approximate gradients.

        Parameters
        ----------
        x, weight, grad_y, grid, patch, extra_tokens
            As for :meth:`calibrate`.
        rng : None, int or numpy.random.Generator, optional
            Randomness of the stochastic methods (ignored by the others).

        Returns
        -------
        (grad_x, grad_weight) : (ndarray of the shape of x, ndarray of shape (C_out, C_in))

        Raises
        ------
        ValueError, TypeError
            On shapes that do not fit each other or the grid, non-floating input.
        RuntimeError
            If the method needs :meth:`calibrate` and was not calibrated.
        """
        layer = Layer.of(x, weight, grad_y, grid, patch, extra_tokens)
        if self.needs_calibration and not self.calibrated:
            raise RuntimeError(f"{self.spec}: call calibrate(x, weight, grad_y, grid=...) on a calibration batch "
                               "before backward")
        gx, gw = self._backward(layer, as_rng(rng) if self.stochastic else None)
        return gx, gw

    def saved_fraction(self, x_shape, out_features, *, grid, patch=8, extra_tokens=0) -> float:
        """Bytes saved for the backward over those of the float32 activation ``x`` a dense layer saves.

        Parameters
        ----------
        x_shape : tuple of int
            ``(B, e + h*w, C_in)``.
        out_features : int
        grid, patch, extra_tokens
            As for :meth:`backward`.

        Returns
        -------
        float
            1.0 for a method that keeps all of ``x`` (meProp); NaN for an empty ``x``.
        """
        shape = layer_shape(x_shape, out_features, grid, extra_tokens)
        num, den = self._saved(shape, grid, patch)
        return num / den if den else math.nan

    def backward_flops(self, x_shape, out_features, *, grid, patch=8, extra_tokens=0) -> int:
        """FLOPs of the backward (the cost model of :func:`lbpcore.backward_cost`; see the module docstring).

        Parameters
        ----------
        x_shape, out_features, grid, patch, extra_tokens
            As for :meth:`saved_fraction`.

        Returns
        -------
        int
        """
        shape = layer_shape(x_shape, out_features, grid, extra_tokens)
        return int(self._flops(shape, grid, patch))

    # -- what the families fill in ------------------------------------------

    @property
    def calibrated(self) -> bool:
        return True

    def _calibrate(self, layer):
        """Nothing to fit (the default)."""

    def _backward(self, layer, rng):
        """(grad_x, grad_W); the families with an exact ``grad_x`` define :meth:`_grad_w` only."""
        return layer.exact_grad_x(), self._grad_w(layer, rng)

    def _grad_w(self, layer, rng):
        raise NotImplementedError

    def _saved(self, shape, grid, patch):
        """(saved elements in float32 units, activation elements): the default keeps all of ``x``."""
        b, length, c_in, _, _ = shape
        return b * length * c_in, b * length * c_in

    def _flops(self, shape, grid, patch):
        b, length, c_in, c_out, _ = shape
        return 4 * b * length * c_in * c_out
