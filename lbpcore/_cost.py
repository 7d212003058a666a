"""FLOP and memory cost model of the dense and LBP-WHT backward passes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ._patches import plan_for, separable_ops
from ._validation import LAYOUTS, check_choice, check_int

__all__ = ["BackwardCost", "backward_cost"]


@dataclass(frozen=True)
class BackwardCost:
    """Cost of one linear layer's backward pass, dense versus LBP-WHT.

    Attributes
    ----------
    batch, tokens, grid_tokens, extra_tokens : int
        ``B``, ``L = e + h*w``, ``h*w`` and ``e``.
    in_features, out_features : int
        ``C_in`` and ``C_out``.
    patches, rank, patch : int
        ``P = ceil(h/n) ceil(w/n)``, ``r`` and ``n``.
    dense_flops : int
        ``4 B L C_in C_out``: the two dense GEMMs.
    lbp_gemm_flops : int
        ``4 B (P r + e) C_in C_out``: the two GEMMs on coefficients (plus extra tokens).
    projection_flops : int
        Projection of ``x`` and ``grad_y`` and reconstruction of ``grad_x`` with
        the separable row/column operators this library uses.
    lbp_flops : int
        ``lbp_gemm_flops + projection_flops``.
    ideal_speedup : float
        ``dense_flops / lbp_gemm_flops``, i.e. ``L / (P r)`` without extra tokens:
        the speed-up if projections were free.  NaN (like this and the other
        ratios) when an empty dimension leaves no work at all.
    flop_speedup : float
        ``dense_flops / lbp_flops``.
    activation_bytes : int
        Bytes of ``x`` a dense layer saves for its backward pass.
    lbp_saved_bytes : int
        Bytes an LBP-WHT layer saves: coefficients of ``x`` plus extra tokens.
    coefficient_bytes : int
        Temporary coefficient arrays of the LBP-WHT backward (``grad_y``'s and
        ``grad_x``'s coefficients).

    Examples
    --------
    >>> from lbpcore import backward_cost
    >>> cost = backward_cost((8, 1 + 14 * 14, 64), 32, grid=(14, 14), extra_tokens=1)
    >>> cost.patches, cost.rank, round(cost.ideal_speedup, 3)
    (4, 21, 2.318)
    >>> round(cost.memory_ratio, 3)
    0.431
    """

    batch: int
    tokens: int
    grid_tokens: int
    extra_tokens: int
    in_features: int
    out_features: int
    patches: int
    rank: int
    patch: int
    dense_flops: int
    lbp_gemm_flops: int
    projection_flops: int
    lbp_flops: int
    ideal_speedup: float
    flop_speedup: float
    activation_bytes: int
    lbp_saved_bytes: int
    coefficient_bytes: int

    @property
    def memory_ratio(self) -> float:
        """``lbp_saved_bytes / activation_bytes`` (NaN for an empty activation)."""
        return _ratio(self.lbp_saved_bytes, self.activation_bytes)

    def to_dict(self) -> dict:
        """Plain ``dict`` of every field (JSON-serializable)."""
        d = asdict(self)
        d["memory_ratio"] = self.memory_ratio
        return d


def _ratio(a, b) -> float:
    """``a / b``, NaN when both are 0 (an empty dimension: no work either way)."""
    return a / b if b else math.nan


def _op_flops(op, pre, post):
    """Flops of a block operator (:class:`~lbpcore._patches._separable.AxisOp`) applied to ``pre x post`` vectors."""
    return 2 * pre * post * sum((hi - lo) * m.shape[0] for lo, hi, m in zip(op.lo, op.hi, op.mats, strict=True))


def backward_cost(x_shape, out_features, *, grid=None, patch=8, bases="lp_l1:6", pad="reflect",
                  extra_tokens=0, layout="tokens", itemsize=4):
    """FLOPs and bytes of the dense and LBP-WHT backward of one linear layer.

    Parameters
    ----------
    x_shape : tuple of int
        ``(B, e + h*w, C_in)`` for tokens or ``(B, C_in, H, W)`` for nchw; ``B``
        and ``C_in`` may be 0.
    out_features : int
        ``C_out`` (may be 0).
    grid : (int, int), optional
        Token grid; required for tokens, ``(H, W)`` by default for nchw.
    patch, bases, pad, extra_tokens, layout
        As for :func:`lbp_backward`.
    itemsize : int, optional
        Bytes per element (4 for float32, the default; 8 for float64).

    Returns
    -------
    BackwardCost

    Raises
    ------
    ValueError
        If the shape does not match the grid and extra tokens, or as :func:`make_plan`.

    Examples
    --------
    >>> from lbpcore import backward_cost
    >>> c = backward_cost((64, 256, 768), 3072, grid=(16, 16), patch=8, bases="lp_l1:6")
    >>> round(c.ideal_speedup, 4), c.patches, c.rank
    (3.0476, 4, 21)
    >>> c.dense_flops == 4 * 64 * 256 * 768 * 3072
    True
    """
    check_choice(layout, "layout", LAYOUTS)
    shape = tuple(check_int(s, "x_shape entries", minimum=0) for s in x_shape)
    c_out = check_int(out_features, "out_features", minimum=0)
    itemsize = check_int(itemsize, "itemsize", minimum=1)
    plan, e = plan_for(shape, grid, patch, bases, pad, extra_tokens, layout, name="x_shape")
    h, w = plan.grid
    if layout == "tokens":
        b, length, c_in = shape
    else:
        b, c_in = shape[:2]
        length = h * w
    p, r = plan.num_patches, plan.rank
    dense = 4 * b * length * c_in * c_out
    gemm = 4 * b * (p * r + e) * c_in * c_out
    ops = separable_ops(plan)
    ki_rows = b * plan.patches[0] * plan.rect[0]  # rows of the (B*ph*k_i, ...) intermediate

    def proj(c):
        return _op_flops(ops.project_rows, b, w * c) + _op_flops(ops.project_cols, ki_rows, c)

    def rec(c):
        return _op_flops(ops.reconstruct_cols, ki_rows, c) + _op_flops(ops.reconstruct_rows, b, w * c)

    projection = proj(c_in) + proj(c_out) + rec(c_in)
    return BackwardCost(
        batch=b,
        tokens=length,
        grid_tokens=h * w,
        extra_tokens=e,
        in_features=c_in,
        out_features=c_out,
        patches=p,
        rank=r,
        patch=plan.patch,
        dense_flops=dense,
        lbp_gemm_flops=gemm,
        projection_flops=projection,
        lbp_flops=gemm + projection,
        ideal_speedup=_ratio(dense, gemm),
        flop_speedup=_ratio(dense, gemm + projection),
        activation_bytes=b * length * c_in * itemsize,
        lbp_saved_bytes=b * (p * r + e) * c_in * itemsize,
        coefficient_bytes=b * p * r * (c_out + c_in) * itemsize,
    )

