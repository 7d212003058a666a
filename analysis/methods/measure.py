"""The published methods measured against the dense backward on one layer: errors, bias² and variance, costs.

:func:`method_errors` runs every spec of :func:`analysis.methods.get_method` on
one layer and compares its gradients with the dense ones:

* the relative error ``||g~ - g|| / ||g||`` and the cosine of ``grad_W`` and
  ``grad_x`` (for a stochastic method, the root mean square of the error and
  the mean cosine over ``S`` seeds);
* for a stochastic method the split of the mean squared relative error into
  bias² ``||E g~ - g||² / ||g||²`` and variance ``E||g~ - E g~||² / ||g||²``,
  estimated without bias over the ``S`` draws (the two add up to the mean
  squared error exactly; the bias² estimate can be slightly negative for an
  unbiased method); a deterministic method has bias² = error² and variance 0;
* the saved fraction and the backward FLOPs of :meth:`Method.saved_fraction`
  and :meth:`Method.backward_flops`.

A method that is calibrated (VeLoRA, the calibrated KLT, an energy-ranked LBP
selection) never sees the items it is measured on: the batch is split in two
halves, each half's gradients come from the method calibrated on the other half
(two-fold cross-fitting), and ``grad_W``, a sum over the items, is the sum of
the two halves'.  A single item is calibrated on itself (in-sample, noted in
``info``), unless a separate ``calibration`` batch is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..metrics import cosine
from . import get_method
from ._base import Layer, as_rng, dense_flops

__all__ = ["MethodError", "method_errors", "tokens_view"]


@dataclass(frozen=True)
class MethodError:
    """Errors and costs of one method on one layer.

    Attributes
    ----------
    spec, family : str
    unbiased, exact_grad_x, stochastic : bool
    seeds : int
        Draws the statistics are over (1 for a deterministic method).
    grad_x, grad_weight : dict
        ``rel_error`` (RMS over the draws), ``cosine`` (mean), ``bias2`` and
        ``variance`` (relative to ``||g||²``; None for a stochastic method
        measured with one draw).
    saved_fraction : float
        Saved bytes over the float32 activation's.
    backward_flops, dense_flops : int
    info : dict
        How it was calibrated, and the like.

    Examples
    --------
    >>> from analysis.methods.measure import MethodError
    >>> e = MethodError("rad:0.5", "rad", True, True, True, 8, {"rel_error": 0.0}, {"rel_error": 0.7}, 0.5, 6, 8)
    >>> e.flops_fraction, e.to_dict()["grad_weight"]["rel_error"]
    (0.75, 0.7)
    """

    spec: str
    family: str
    unbiased: bool
    exact_grad_x: bool
    stochastic: bool
    seeds: int
    grad_x: dict
    grad_weight: dict
    saved_fraction: float
    backward_flops: int
    dense_flops: int
    info: dict = field(default_factory=dict)

    @property
    def flops_fraction(self) -> float:
        """``backward_flops / dense_flops`` (NaN without work)."""
        return self.backward_flops / self.dense_flops if self.dense_flops else math.nan

    def to_dict(self) -> dict:
        """JSON-ready dict of every field and ``flops_fraction``."""
        def num(v):
            return None if v is None else float(v)

        return {"spec": self.spec, "family": self.family, "unbiased": self.unbiased,
                "exact_grad_x": self.exact_grad_x, "stochastic": self.stochastic, "seeds": int(self.seeds),
                "grad_x": {k: num(v) for k, v in self.grad_x.items()},
                "grad_weight": {k: num(v) for k, v in self.grad_weight.items()},
                "saved_fraction": float(self.saved_fraction), "backward_flops": int(self.backward_flops),
                "dense_flops": int(self.dense_flops), "flops_fraction": float(self.flops_fraction),
                "info": dict(self.info)}


def tokens_view(x, grid, extra_tokens, layout):
    """``(x as (B, e + h*w, C), grid, e)``: NCHW maps as tokens in row-major order, tokens as they are.

    Parameters
    ----------
    x : ndarray, shape (B, e + h*w, C) or (B, C, H, W)
    grid : (int, int) or None
        Ignored for nchw (the maps' ``(H, W)``).
    extra_tokens : int
    layout : {"tokens", "nchw"}

    Returns
    -------
    (ndarray, (int, int), int)

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods.measure import tokens_view
    >>> t, grid, e = tokens_view(np.zeros((2, 3, 4, 5)), None, 0, "nchw")
    >>> t.shape, grid, e
    ((2, 20, 3), (4, 5), 0)
    """
    if layout == "nchw":
        b, c, h, w = x.shape
        return x.reshape(b, c, h * w).transpose(0, 2, 1), (h, w), 0
    return x, tuple(grid), int(extra_tokens)


class _Moments:
    """Running sums over the draws of one gradient: of the estimates, squared errors and cosines."""

    def __init__(self, exact):
        self.exact = exact
        self.ref2 = float(np.vdot(exact, exact))
        self.total = np.zeros_like(exact)
        self.err2 = 0.0
        self.cos = 0.0
        self.n = 0

    def add(self, est):
        if est is None:  # the exact gradient itself (a method whose grad_x is exact): nothing to compute
            self.total += self.exact
            self.cos += cosine(self.exact, self.exact) if self.n == 0 else self.cos / self.n
            self.n += 1
            return
        d = est - self.exact
        self.total += est
        self.err2 += float(np.vdot(d, d))
        self.cos += cosine(est, self.exact)
        self.n += 1

    def result(self, stochastic) -> dict:
        s, ref2 = self.n, self.ref2
        mse = self.err2 / s
        mean_dev = self.total / s - self.exact
        b2 = float(np.vdot(mean_dev, mean_dev))
        rel = math.sqrt(mse / ref2) if ref2 else (0.0 if mse == 0 else math.inf)
        out = {"rel_error": rel, "cosine": self.cos / s}
        if not ref2:
            out.update(bias2=None, variance=None)
        elif not stochastic:
            out.update(bias2=mse / ref2, variance=0.0)
        elif s < 2:
            out.update(bias2=None, variance=None)
        else:
            var = max(0.0, mse - b2) * s / (s - 1)  # unbiased over the draws
            out.update(bias2=(mse - var) / ref2, variance=var / ref2)
        return out


def _halves(b):
    h = b // 2
    return (slice(0, h), slice(h, b)), (slice(h, b), slice(0, h))  # (calibrate on, measure on)


def _estimate(spec, x, weight, grad_y, kw, rng, calibration, state):
    """One draw of ``(grad_x, grad_W)`` of ``spec``, calibrated out of sample (see the module docstring).

    ``grad_x`` is None for a method whose ``grad_x`` is exact (not recomputed at every draw).
    """
    method = get_method(spec)
    if not method.needs_calibration:
        if method.exact_grad_x:
            layer = Layer.of(x, weight, grad_y, kw["grid"], kw["patch"], kw["extra_tokens"])
            return None, method._grad_w(layer, as_rng(rng))
        return method.backward(x, weight, grad_y, rng=rng, **kw)
    if calibration is not None or x.shape[0] < 2:
        if "method" not in state:
            cx, cg = (x, grad_y) if calibration is None else calibration
            state["method"] = method.calibrate(cx, weight, cg, **kw)
            state["info"] = {"calibration": "in-sample (a single item)" if calibration is None
                             else "the given calibration batch"}
        return state["method"].backward(x, weight, grad_y, rng=rng, **kw)
    if "fits" not in state:
        state["fits"] = [get_method(spec).calibrate(x[cal], weight, grad_y[cal], **kw) for cal, _ in _halves(
            x.shape[0])]
        state["info"] = {"calibration": "two-fold cross-fit over the batch items"}
    gx = np.empty_like(x)
    gw = 0
    for fit, (_, use) in zip(state["fits"], _halves(x.shape[0]), strict=True):
        gx_h, gw_h = fit.backward(x[use], weight, grad_y[use], rng=rng, **kw)
        gx[use] = gx_h
        gw = gw + gw_h
    return gx, gw


def method_errors(x, weight, grad_y, specs, *, grid=None, patch=8, extra_tokens=0, layout="tokens", seeds=8, seed=0,
                  calibration=None) -> dict:
    """Errors of the methods ``specs`` against the dense backward of one layer.

    Parameters
    ----------
    x : array_like, shape (B, e + h*w, C_in) or (B, C_in, H, W)
        Computed in float64.
    weight : array_like, shape (C_out, C_in)
    grad_y : array_like, shape (B, e + h*w, C_out) or (B, C_out, H, W)
    specs : sequence of str
        Method specs (:func:`analysis.methods.get_method`).
    grid : (int, int), optional
        Required for tokens; ``(H, W)`` for nchw.
    patch, extra_tokens, layout
        As for :func:`lbpcore.lbp_backward`.
    seeds : int, optional
        Draws ``S`` of each stochastic method (default 8; at least 1).
    seed : int, optional
        Draw ``s`` uses ``numpy.random.default_rng([seed, s])``.
    calibration : (x, grad_y), optional
        A separate calibration batch of this layer (default: cross-fitting).

    Returns
    -------
    dict of str to MethodError
        By normalized spec, in the order given.  A setting the layer does not
        allow (``velora:G`` with ``G`` not dividing ``C_in``, a rank above
        ``n*n``) has None errors and the reason in ``info["not_applicable"]``.

    Raises
    ------
    ValueError
        On a bad spec (naming the accepted ones), ``seeds < 1``, or shapes
        that do not fit.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.methods.measure import method_errors
    >>> rng = np.random.default_rng(0)
    >>> x, w, gy = rng.standard_normal((4, 64, 8)), rng.standard_normal((6, 8)), rng.standard_normal((4, 64, 6))
    >>> res = method_errors(x, w, gy, ["crs:1", "rad:0.5"], grid=(8, 8), seeds=4)
    >>> res["crs:1"].grad_weight["rel_error"] < 1e-12, res["rad:0.5"].grad_weight["variance"] > 0
    (True, True)
    """
    seeds = int(seeds)
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if layout == "tokens" and grid is None:
        raise ValueError("grid=(h, w) is required for layout='tokens'")
    x, weight, grad_y = (np.asarray(a, dtype=np.float64) for a in (x, weight, grad_y))
    xt, grid, e = tokens_view(x, grid, extra_tokens, layout)
    gt, _, _ = tokens_view(grad_y, grid, extra_tokens, layout)
    if calibration is not None:
        calibration = tuple(tokens_view(np.asarray(a, dtype=np.float64), grid, e, layout)[0] for a in calibration)
    methods = [get_method(s) for s in specs]  # every spec checked before anything runs
    kw = {"grid": grid, "patch": patch, "extra_tokens": e}
    c_out = weight.shape[0]
    if xt.ndim != 3 or gt.shape[:2] != xt.shape[:2] or gt.ndim != 3 or gt.shape[2] != c_out:
        raise ValueError(f"x {x.shape}, weight {weight.shape} and grad_y {grad_y.shape} do not fit one layer")
    exact_gx = gt @ weight
    exact_gw = gt.reshape(-1, c_out).T @ xt.reshape(-1, xt.shape[2])
    out = {}
    for method in methods:
        draws = seeds if method.stochastic else 1
        mgx, mgw = _Moments(exact_gx), _Moments(exact_gw)
        state = {}
        try:
            for s in range(draws):
                gx, gw = _estimate(method.spec, xt, weight, gt, kw, np.random.default_rng([seed, s]), calibration,
                                   state)
                mgx.add(None if gx is None else np.asarray(gx, dtype=np.float64))
                mgw.add(np.asarray(gw, dtype=np.float64))
            info = dict(state.get("info", {}))
            grads = mgx.result(method.stochastic), mgw.result(method.stochastic)
        except ValueError as exc:  # a setting this layer does not allow (G not dividing C_in...): no numbers
            info = {"not_applicable": str(exc)}
            grads = tuple(dict.fromkeys(("rel_error", "cosine", "bias2", "variance")) for _ in range(2))
        out[method.spec] = MethodError(
            spec=method.spec, family=method.family, unbiased=method.unbiased, exact_grad_x=method.exact_grad_x,
            stochastic=method.stochastic, seeds=draws, grad_x=grads[0], grad_weight=grads[1],
            saved_fraction=method.saved_fraction(xt.shape, c_out, **kw),
            backward_flops=method.backward_flops(xt.shape, c_out, **kw),
            dense_flops=dense_flops(xt.shape, c_out), info=info)
    return out
