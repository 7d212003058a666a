"""Linear layer: forward, dense backward and the LBP-WHT backward (SPEC sections 1 and 5)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import is_cupy_array, size

from ._backend import common_namespace, device_of
from ._bases import BasisSet, as_basis
from ._patches import PatchPlan, make_plan, plan_for, project_raw, reconstruct_raw
from ._validation import LAYOUTS, check_choice, check_grad_y, check_layer_input, check_weight, require_grid

__all__ = ["Gradients", "linear", "dense_backward", "lbp_backward", "LBPLinear"]


@dataclass(frozen=True)
class Gradients:
    """Gradients of a linear layer.

    Attributes
    ----------
    grad_x : array, shape of ``x``
    grad_weight : array, shape (C_out, C_in)
    grad_bias : array of shape (C_out,), or None
        None when the layer has no bias.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import Gradients
    >>> gx, gw, gb = Gradients(np.zeros((1, 2, 3)), np.zeros((4, 3)))
    >>> gx.shape, gw.shape, gb
    ((1, 2, 3), (4, 3), None)
    """

    grad_x: Any
    grad_weight: Any
    grad_bias: Any = None

    def __iter__(self):
        return iter((self.grad_x, self.grad_weight, self.grad_bias))


def linear(x, weight, bias=None, *, layout="tokens"):
    """Forward pass of a linear layer (or a 1x1 convolution).

    Parameters
    ----------
    x : array, shape (..., C_in) or (B, C_in, H, W)
        Tokens (``layout="tokens"``, any leading shape) or feature maps (``"nchw"``).
    weight : array, shape (C_out, C_in)
    bias : array, shape (C_out,), optional
    layout : {"tokens", "nchw"}, optional
        Default ``"tokens"``.

    Returns
    -------
    y : array, shape (..., C_out) or (B, C_out, H, W)
        ``x @ weight.T + bias`` along the channel axis.

    Raises
    ------
    ValueError
        On mismatched shapes or an unknown layout.
    TypeError
        On mixed namespaces or dtypes, or non-floating input.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import linear
    >>> linear(np.ones((1, 2, 3)), np.ones((4, 3)), np.arange(4.0))
    array([[[3., 4., 5., 6.],
            [3., 4., 5., 6.]]])
    """
    check_choice(layout, "layout", LAYOUTS)
    xp, (x, weight, bias) = common_namespace([("x", x), ("weight", weight), ("bias", bias)], optional=("bias",))
    check_weight(weight.shape, None if bias is None else bias.shape)
    check_layer_input(x.shape, weight.shape, layout)
    c_out, c_in = weight.shape
    if layout == "tokens":
        lead = tuple(x.shape[:-1])
        y = xp.matmul(xp.reshape(x, (math.prod(lead), c_in)), weight.T)  # not -1: C_in may be 0
        if bias is not None:
            y = y + bias
        return xp.reshape(y, lead + (c_out,))
    b, _, h, w = x.shape
    y = xp.matmul(weight, xp.reshape(x, (b, c_in, h * w)))
    if bias is not None:
        y = y + bias[:, None]
    return xp.reshape(y, (b, c_out, h, w))


def _bias_grad(xp, grad_y, bias, layout):
    """``grad_y`` summed over everything but the channels (None without a bias).

    CuPy sums the rows with a matrix-vector product against ones (cuBLAS): its
    reduction along the leading axis takes about five times as long on the
    ``(B*L, C)`` gradients of a transformer layer.
    """
    if bias is None:
        return None
    if layout == "tokens":
        g2 = xp.reshape(grad_y, (math.prod(grad_y.shape[:-1]), grad_y.shape[-1]))
        if is_cupy_array(g2) and g2.shape[0]:
            return xp.matmul(xp.ones(g2.shape[0], dtype=g2.dtype, device=device_of(g2)), g2)
        return xp.sum(g2, axis=0)
    if is_cupy_array(grad_y) and math.prod(grad_y.shape):
        b, c, h, w = grad_y.shape
        per_item = xp.matmul(xp.reshape(grad_y, (b, c, h * w)), xp.ones(h * w, dtype=grad_y.dtype,
                                                                        device=device_of(grad_y)))
        return xp.sum(per_item, axis=0)
    return xp.sum(grad_y, axis=(0, 2, 3))


def _validated(x, weight, grad_y, bias, layout):
    check_choice(layout, "layout", LAYOUTS)
    xp, (x, weight, grad_y, bias) = common_namespace(
        [("x", x), ("weight", weight), ("grad_y", grad_y), ("bias", bias)], optional=("bias",)
    )
    check_weight(weight.shape, None if bias is None else bias.shape)
    check_layer_input(x.shape, weight.shape, layout)
    check_grad_y(x.shape, weight.shape[0], grad_y.shape, layout)
    return xp, x, weight, grad_y, bias


def dense_backward(x, weight, grad_y, *, bias=None, layout="tokens"):
    """Exact gradients of a linear layer (two GEMMs).

    Parameters
    ----------
    x : array, shape (..., C_in) or (B, C_in, H, W)
        Layer input (tokens of any leading shape, or NCHW maps for a 1x1 convolution).
    weight : array, shape (C_out, C_in)
    grad_y : array, shape (..., C_out) or (B, C_out, H, W)
        Gradient of the loss with respect to the layer output.
    bias : array, shape (C_out,), optional
        Only its presence and shape matter: with a bias, ``grad_bias`` is returned.
    layout : {"tokens", "nchw"}, optional
        Default ``"tokens"``.

    Returns
    -------
    Gradients
        ``grad_x = grad_y @ W``, ``grad_weight = sum grad_y^T x`` over all tokens,
        ``grad_bias = grad_y`` summed over everything but channels (None without bias).

    Raises
    ------
    ValueError
        On mismatched shapes (including batch) or an unknown layout.
    TypeError
        On mixed namespaces or dtypes, or non-floating input.

    Notes
    -----
    Costs ``4 * tokens * C_in * C_out`` flops.  NaN and inf propagate.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import dense_backward
    >>> g = dense_backward(np.ones((1, 2, 3)), np.ones((4, 3)), np.ones((1, 2, 4)), bias=np.zeros(4))
    >>> g.grad_x.shape, g.grad_weight[0, 0], g.grad_bias.tolist()
    ((1, 2, 3), np.float64(2.0), [2.0, 2.0, 2.0, 2.0])
    """
    xp, x, weight, grad_y, bias = _validated(x, weight, grad_y, bias, layout)
    c_out, c_in = weight.shape
    if layout == "tokens":
        rows = math.prod(x.shape[:-1])  # not -1: a channel count may be 0
        g2 = xp.reshape(grad_y, (rows, c_out))
        x2 = xp.reshape(x, (rows, c_in))
        gx = xp.reshape(xp.matmul(g2, weight), tuple(x.shape))
        gw = xp.matmul(g2.T, x2)
    else:
        b, _, h, w = x.shape
        g3 = xp.reshape(grad_y, (b, c_out, h * w))
        x3 = xp.reshape(x, (b, c_in, h * w))
        gx = xp.reshape(xp.matmul(weight.T, g3), tuple(x.shape))
        gw = xp.tensordot(g3, x3, axes=([0, 2], [0, 2]))
    return Gradients(gx, gw, _bias_grad(xp, grad_y, bias, layout))


class _Saved(NamedTuple):
    """What :class:`LBPLinear` keeps between forward and backward."""

    coefficients: Any  # (B, e + M, C_in), see _saved_coefficients
    x_shape: tuple
    extra_tokens: int


def _saved_coefficients(xp, x, plan: PatchPlan, e: int, layout: str, out=None):
    """``(B, e + M, C_in)``: the extra tokens of ``x``, then its coefficients divided by ``n`` (a new array).

    Divided by ``n`` (a power of two, so exactly), the coefficients are those of
    the orthonormal basis ``B / n``: at most the patch's 2-norm, ``n * max|x|``,
    instead of ``n**2 * max|x|`` for the unnormalized ones (see :func:`lbp_backward`).
    """
    return project_raw(xp, x, plan, layout, e, scale=1.0 / plan.patch, keep_extra=True, any_order=True, out=out)[1]


def _coefficient_grads(xp, xs, weight, grad_y, plan: PatchPlan, e: int, layout: str, *, overwrite_xs: bool,
                       grad_x: bool = True, grad_weight: bool = True):
    """``grad_weight`` and the coefficients of ``grad_x``, ``(B, e + M, C_in)``, from the saved ``xs``.

    Both GEMMs run once over the ``B * (e + M)`` rows of :func:`_saved_coefficients`:
    the extra tokens ride along with the coefficients, exact.  ``grad_y`` is
    projected with the same ``1/n`` as ``xs``, so that ``grad_weight`` has the
    SPEC's ``1/n**2``, and ``grad_x`` is reconstructed with the other ``1/n``.
    With ``overwrite_xs=True`` (``xs`` is dead after this call) ``grad_x``'s coefficients
    take ``xs``'s buffer when it is a writeable contiguous NumPy array, which saves
    an allocation (and its page faults) and peak memory.  A caller that drops its
    own reference to ``xs`` on return frees it before the reconstruction of ``grad_x``
    allocates ``grad_x``: the peak temporary memory is then the larger of
    ``xs + gs``, ``gs + gxs`` and ``gxs + grad_x`` (plus ``grad_weight``).
    ``grad_x=False`` or ``grad_weight=False`` skips that GEMM and returns None in
    its place (``xs`` is not read without ``grad_weight``, ``weight`` not without
    ``grad_x``: either may then be None).
    """
    c_out = grad_y.shape[-1] if layout == "tokens" else grad_y.shape[1]
    _, gs = project_raw(xp, grad_y, plan, layout, e, scale=1.0 / plan.patch, keep_extra=True, any_order=True)
    b, rows, _ = gs.shape
    gs2 = xp.reshape(gs, (b * rows, c_out))
    gw = None
    if grad_weight:
        gw = xp.matmul(gs2.T, xp.reshape(xs, (b * rows, xs.shape[-1])))
    if not grad_x:
        return gw, None
    c_in = weight.shape[1]
    if overwrite_xs and isinstance(xs, np.ndarray) and xs.flags.c_contiguous and xs.flags.writeable:
        return gw, np.matmul(gs2, weight, out=xs.reshape(b * rows, c_in)).reshape(b, rows, c_in)
    return gw, xp.reshape(xp.matmul(gs2, weight), (b, rows, c_in))


def _grad_x(xp, gxs, plan: PatchPlan, e: int, layout: str, out=None):
    """``grad_x`` from the coefficients of :func:`_coefficient_grads`: the grid reconstructed
    with the second ``1/n``, the extra tokens copied through (into ``out``, see :func:`reconstruct_raw`)."""
    return reconstruct_raw(xp, gxs, plan, layout, extra_tokens=e, any_order=True, scale=1.0 / plan.patch, out=out)


def lbp_backward(
    x,
    weight,
    grad_y,
    *,
    grid=None,
    patch=8,
    bases="lp_l1:6",
    pad="reflect",
    extra_tokens=0,
    layout="tokens",
    bias=None,
):
    """LBP-WHT gradients of a linear layer (SPEC section 5).

    ``x`` and ``grad_y`` are projected, patch by patch of the token grid, onto the
    selected 2D Walsh–Hadamard basis images; both backward GEMMs run on the
    ``P * r`` coefficient rows instead of the ``h * w`` tokens, and ``grad_x`` is
    reconstructed from its coefficients.  Extra tokens and the bias gradient are
    exact.

    Parameters
    ----------
    x : array, shape (B, e + h*w, C_in) or (B, C_in, H, W)
        Layer input: tokens (``layout="tokens"``) or maps (``layout="nchw"``).
    weight : array, shape (C_out, C_in)
    grad_y : array, shape (B, e + h*w, C_out) or (B, C_out, H, W)
    grid : (int, int), optional
        Token grid ``(h, w)``; required for tokens, defaults to ``(H, W)`` for nchw.
    patch : int, optional
        Patch size ``n``, a power of two; default 8 (the paper's).
    bases : str, sequence of pairs or BasisSet, optional
        Selected bases (see :func:`select_bases`); default ``"lp_l1:6"``
        (21 of 64 bases for ``n = 8``).
    pad : {"reflect", "zero", "none"}, optional
        Padding of grids that ``patch`` does not divide; default ``"reflect"``
        (the reference).
    extra_tokens : int, optional
        Number ``e`` of leading tokens outside the grid (class token...); their
        gradients are exact.  Default 0.
    layout : {"tokens", "nchw"}, optional
        Default ``"tokens"``.
    bias : array, shape (C_out,), optional
        Only its presence and shape matter: with a bias, ``grad_bias`` (exact) is returned.

    Returns
    -------
    Gradients
        ``grad_weight = (P pad(grad_y)).T @ pad(x)`` and
        ``grad_x = crop(P pad(grad_y)) @ weight`` on the grid, exact on extra tokens.

    Raises
    ------
    ValueError
        On mismatched shapes, ``L != e + h*w``, a bad grid, patch, pad,
        layout or spec, or padding the grid does not allow.
    TypeError
        On mixed namespaces or dtypes, or non-floating input.

    Notes
    -----
    With every basis selected on a divisible grid the result equals
    :func:`dense_backward`.  The GEMMs cost ``4 B P r C_in C_out`` flops, a
    fraction ``P r / (h w)`` of the dense ones (see :func:`backward_cost`).
    NaN and inf propagate within the patches (and so the gradients) they touch.

    Numerical range: the coefficients are computed in the orthonormal basis
    (divided by ``n``, exactly: a power of two), so each is at most
    ``n * max|x|`` (``n * max|grad_y|``), and the sums of ``grad_weight`` have
    the dense ones' bound.  The result is finite wherever the dense backward's
    bounds times ``n`` are: for float64 and ``n = 8``, values up to about
    ``2.2e307`` (see :ref:`method-range`).

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import dense_backward, lbp_backward
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 64, 5)); w = rng.standard_normal((3, 5))
    >>> gy = rng.standard_normal((2, 64, 3))
    >>> full = lbp_backward(x, w, gy, grid=(8, 8), patch=8, bases="lp_linf:8")
    >>> bool(np.allclose(full.grad_weight, dense_backward(x, w, gy).grad_weight))
    True
    >>> lbp_backward(x, w, gy, grid=(8, 8), patch=8, bases="lp_l1:6").grad_x.shape
    (2, 64, 5)
    """
    xp, x, weight, grad_y, bias = _validated(x, weight, grad_y, bias, layout)
    plan, e = plan_for(tuple(x.shape), grid, patch, bases, pad, extra_tokens, layout)
    xs = _saved_coefficients(xp, x, plan, e, layout)
    gw, gxs = _coefficient_grads(xp, xs, weight, grad_y, plan, e, layout, overwrite_xs=True)
    del xs  # dead (its buffer may hold gxs): freed before grad_x is allocated
    return Gradients(_grad_x(xp, gxs, plan, e, layout), gw, _bias_grad(xp, grad_y, bias, layout))


class LBPLinear:
    """A linear layer whose forward saves only projected activations.

    The forward pass computes ``y = x @ W.T + b`` exactly and keeps the patch
    coefficients of ``x`` on the selected bases (``r / n^2`` of the grid
    activation) plus the extra tokens; the backward pass is :func:`lbp_backward`
    computed from them.  The saved coefficients are those of :func:`project`
    divided by ``n`` (the orthonormal ones; see :func:`lbp_backward`, Notes).

    Parameters
    ----------
    weight : array, shape (C_out, C_in)
    bias : array, shape (C_out,), optional
    grid : (int, int), optional
        Token grid; required for ``layout="tokens"``.
    patch, bases, pad, extra_tokens, layout
        As for :func:`lbp_backward`.

    Attributes
    ----------
    weight, bias : arrays
    plan : PatchPlan
        The validated grid/patch/basis combination.
    basis : BasisSet
    saved_nbytes : int
        Bytes held between forward and backward (0 before the first forward).

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import LBPLinear
    >>> rng = np.random.default_rng(0)
    >>> layer = LBPLinear(rng.standard_normal((4, 6)), grid=(16, 16), patch=8, bases="lp_l1:6")
    >>> x = rng.standard_normal((2, 256, 6))
    >>> y = layer.forward(x)
    >>> layer.saved_nbytes / x.nbytes  # 21 of 64 bases
    0.328125
    >>> layer.backward(np.ones_like(y)).grad_weight.shape
    (4, 6)
    """

    def __init__(self, weight, bias=None, *, grid=None, patch=8, bases="lp_l1:6", pad="reflect",
                 extra_tokens=0, layout="tokens"):
        check_choice(layout, "layout", LAYOUTS)
        self._xp, (self.weight, self.bias) = common_namespace([("weight", weight), ("bias", bias)], optional=("bias",))
        check_weight(self.weight.shape, None if self.bias is None else self.bias.shape)
        self.layout = layout
        self.extra_tokens = extra_tokens
        require_grid(grid, layout)
        self._grid = grid
        self._patch = patch
        self._bases = bases
        self._pad = pad
        self.plan = make_plan(grid, patch, bases, pad) if grid is not None else None
        self._saved = None

    @property
    def basis(self) -> BasisSet:
        """The selected bases."""
        if self.plan is None:
            return as_basis(self._patch, self._bases)
        return self.plan.basis

    def forward(self, x):
        """Compute ``y`` and save the projected ``x``.

        Parameters
        ----------
        x : array, shape (B, e + h*w, C_in) or (B, C_in, H, W)

        Returns
        -------
        y : array, shape (B, e + h*w, C_out) or (B, C_out, H, W)
        """
        y = linear(x, self.weight, self.bias, layout=self.layout)
        xp, (x,) = common_namespace([("x", x)])
        self.plan, e = plan_for(tuple(x.shape), self._grid, self._patch, self._bases, self._pad, self.extra_tokens,
                                self.layout)
        self._saved = _Saved(_saved_coefficients(xp, x, self.plan, e, self.layout), tuple(x.shape), e)
        return y

    @property
    def saved_nbytes(self) -> int:
        """Bytes held between forward and backward (0 before the first forward)."""
        if self._saved is None:
            return 0
        xs = self._saved.coefficients
        return int(size(xs) * (self._xp.finfo(xs.dtype).bits // 8))

    def backward(self, grad_y):
        """Gradients from the saved coefficients.

        Parameters
        ----------
        grad_y : array, shape of the forward output

        Returns
        -------
        Gradients
            As :func:`lbp_backward` on the forward input.

        Raises
        ------
        RuntimeError
            If called before :meth:`forward`.
        ValueError
            If ``grad_y`` does not match the forward output's shape.
        """
        if self._saved is None:
            raise RuntimeError("LBPLinear.backward called before forward")
        xs, x_shape, e = self._saved
        xp, (weight, grad_y, bias) = common_namespace(
            [("weight", self.weight), ("grad_y", grad_y), ("bias", self.bias)], optional=("bias",)
        )
        check_grad_y(x_shape, weight.shape[0], grad_y.shape, self.layout)
        gw, gxs = _coefficient_grads(xp, xs, weight, grad_y, self.plan, e, self.layout, overwrite_xs=False)
        return Gradients(_grad_x(xp, gxs, self.plan, e, self.layout), gw, _bias_grad(xp, grad_y, bias, self.layout))
