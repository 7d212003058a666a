"""The LBP-WHT linear layer as a :class:`torch.autograd.Function` (SPEC sections 1 and 5)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .._grids import check_grid_spec, linear_grid, map_grid
from .._patches import PatchPlan, make_plan
from .._validation import LAYOUTS, check_choice, check_int, check_layer_input, check_weight
from ._bridge import coefficients, grid_values
from ._products import grad_weight_product, gs_times_weight

__all__ = ["DTYPES", "check_tensors", "lbp_linear"]

#: Floating dtypes with an LBP-WHT backward (the kernels have no half-precision path).
DTYPES = (torch.float32, torch.float64)


def check_tensors(x, weight, bias, layout: str) -> None:
    """Raise unless ``x``, ``weight`` and ``bias`` are float32/float64 tensors of one dtype and device.

    Shapes are checked by lbpcore's own checks (:mod:`lbpcore._validation`).
    """
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in DTYPES:
            hint = (" (no half precision: give this layer float32 tensors, run it under torch.autocast, which "
                    "runs it in float32, or leave it dense)") if t.dtype in (torch.float16, torch.bfloat16) else ""
            raise TypeError(f"{name} has dtype {t.dtype}: the LBP-WHT backward supports float32 and float64 only{hint}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have the dtype of x ({x.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on the device of x ({x.device}), got {t.device}")
    check_weight(tuple(weight.shape), None if bias is None else tuple(bias.shape))
    check_layer_input(tuple(x.shape), tuple(weight.shape), layout)


def _dense_forward(x, weight, bias, layout):
    """``x @ weight.T + bias`` on tokens, or the 1x1 convolution of NCHW maps ``x`` (the exact forward)."""
    if layout == "tokens":
        return F.linear(x, weight, bias)
    if 0 in weight.shape:  # F.conv2d refuses C_out = 0 and gives C_in = 0 output channels (not C_out) for C_in = 0
        y = x.new_zeros((x.shape[0], weight.shape[0], *x.shape[2:]))
        return y if bias is None else y + bias[:, None, None]
    return F.conv2d(x, weight[:, :, None, None], bias)


def _autocast_on(device_type: str) -> bool:
    """Whether :class:`torch.autocast` is active for ``device_type``."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # PyTorch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _float32(t):
    """``t`` cast to float32 if it is a half-precision tensor (as autocast casts the inputs of its float32 ops)."""
    return t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16) else t


class _LBPLinearFunction(torch.autograd.Function):
    """Exact forward; backward from the projected input (SPEC section 5).

    Inputs: ``x`` ``(B, e + h*w, C_in)`` or ``(B, C_in, H, W)``, ``weight``
    ``(C_out, C_in)``, ``bias`` ``(C_out,)`` or None, then the plan, ``e`` and the
    layout.  Saves the coefficients of ``x`` (``(B, e + P r, C_in)``, only when
    ``weight`` needs a gradient) and ``weight`` (only when ``x`` needs one).  Both
    backward products are PyTorch's own (oneDNN or :func:`torch.mm` on the
    coefficient rows: :mod:`._products`), the projections lbpcore's kernels
    (:func:`._bridge.coefficients`, :func:`._bridge.grid_values`).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, plan: PatchPlan, e: int, layout: str):
        y = _dense_forward(x, weight, bias, layout)
        need_x, need_weight = ctx.needs_input_grad[:2]
        xs = coefficients(x, plan, e, layout) if need_weight else None
        ctx.save_for_backward(xs, weight if need_x else None)
        ctx.setting = (plan, e, layout, tuple(x.shape))
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        xs, weight = ctx.saved_tensors
        plan, e, layout, x_shape = ctx.setting
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x or need_weight:
            gs = coefficients(grad_y, plan, e, layout)  # (B, e + M, C_out)
            gs2 = gs.flatten(0, 1)  # not reshape(-1, C): ambiguous on an empty tensor
            if need_weight:
                gw = grad_weight_product(gs2, xs.flatten(0, 1))
            if need_x:
                gxs = gs_times_weight(gs2, weight).reshape(gs.shape[0], gs.shape[1], weight.shape[1])
                del gs, gs2  # dead: freed before grad_x is allocated
                gx = grid_values(gxs, plan, e, layout, x_shape)
        if need_bias:
            gb = _bias_grad(grad_y, layout)
        return gx, gw, gb, None, None, None


def _bias_grad(grad_y, layout):
    """``grad_y`` summed over everything but its channels, along its memory order.

    A reduction over ``(0, 2, 3)`` of a channels-last map walks it against its
    memory (8 ms against 0.7 for a ``(8, 192, 56, 56)`` map on 2 cores): such a
    map is summed as the ``(B H W, C)`` matrix it is in memory instead.
    """
    if layout == "tokens":
        return grad_y.reshape(math.prod(grad_y.shape[:-1]), grad_y.shape[-1]).sum(dim=0)
    if grad_y.is_contiguous(memory_format=torch.channels_last) and not grad_y.is_contiguous():
        b, c, h, w = grad_y.shape
        return grad_y.permute(0, 2, 3, 1).reshape(b * h * w, c).sum(dim=0)
    return grad_y.sum(dim=(0, 2, 3))


def lbp_linear(x, weight, bias=None, *, grid="auto", patch=8, bases="lp_l1:6", pad="reflect", extra_tokens=0,
               layout="tokens"):
    """A linear layer (or 1x1 convolution) with the LBP-WHT backward, for PyTorch autograd.

    The forward pass is exact (:func:`torch.nn.functional.linear`, or
    :func:`~torch.nn.functional.conv2d` for ``layout="nchw"``) and saves only the
    patch coefficients of ``x`` on the selected bases (with the extra tokens):
    ``(P r + e) / L`` of the activation a dense layer saves.  The backward pass
    returns :func:`lbpcore.lbp_backward`'s ``grad_x`` and ``grad_weight`` and the
    exact ``grad_bias``, each only when autograd asks for it.  CPU tensors go
    through lbpcore's NumPy kernels and CUDA tensors through CuPy, on the
    tensors' own memory (see :mod:`lbpcore.torch`).

    Parameters
    ----------
    x : torch.Tensor, shape (..., e + h*w, C_in), (B, H, W, C_in) or (B, C_in, H, W)
        Tokens or channels-last maps (``layout="tokens"``; leading dimensions
        of tokens are batch dimensions), or NCHW feature maps
        (``layout="nchw"``; ``torch.channels_last`` maps are read in place).
        float32 or float64; a tensor whose memory is in neither order is copied
        once.
    weight : torch.Tensor, shape (C_out, C_in)
    bias : torch.Tensor, shape (C_out,), optional
    grid : "auto" or (int, int), optional
        Token grid ``(h, w)``.  ``"auto"`` (default; None is the same) takes it
        from the shape of ``x``: ``(H, W)`` of maps, and for tokens
        ``(B, N, C_in)`` the square grid of ``N - extra_tokens`` tokens (which
        must be a perfect square).  A pair must fit: ``e + h*w`` tokens, or maps
        of ``(h, w)``.
    patch, bases, pad, extra_tokens
        As for :func:`lbpcore.lbp_backward` (defaults ``8``, ``"lp_l1:6"``,
        ``"reflect"``, ``0``).
    layout : {"tokens", "nchw"}, optional
        Default ``"tokens"``.

    Returns
    -------
    y : torch.Tensor, shape (..., e + h*w, C_out) or (B, C_out, H, W)
        ``x @ weight.T + bias``, exactly as :func:`torch.nn.functional.linear`.

    Raises
    ------
    TypeError
        If an argument is not a tensor, has a half-precision or integer dtype, or
        the dtypes differ.
    ValueError
        On mismatched shapes or devices, a token count that is not
        ``extra_tokens + h*w`` (with ``"auto"``: not ``extra_tokens`` plus a
        square), or a bad grid, patch, basis or padding.

    Notes
    -----
    Without autograd (:func:`torch.no_grad`, or no input that requires a
    gradient) nothing is projected or saved: the call is plain
    :func:`~torch.nn.functional.linear`.  The backward is not differentiable
    again (no double backward).  Under :class:`torch.autocast` the layer is
    one of autocast's float32 operations: float16 and bfloat16 inputs are cast
    to float32 (their gradients flow back in their own dtype) and ``y`` is
    float32; outside autocast half-precision tensors are a TypeError.

    Examples
    --------
    >>> import torch
    >>> from lbpcore.torch import lbp_linear
    >>> x = torch.randn(2, 1 + 16 * 16, 8, requires_grad=True)
    >>> w = torch.randn(4, 8, requires_grad=True)
    >>> y = lbp_linear(x, w, grid=(16, 16), extra_tokens=1)
    >>> torch.allclose(y, x @ w.T)
    True
    >>> y.square().sum().backward()
    >>> x.grad.shape, w.grad.shape
    (torch.Size([2, 257, 8]), torch.Size([4, 8]))
    """
    check_choice(layout, "layout", LAYOUTS)
    if isinstance(x, torch.Tensor) and _autocast_on(x.device.type):  # a float32 op of autocast (see Notes)
        with torch.autocast(x.device.type, enabled=False):
            return lbp_linear(_float32(x), _float32(weight), _float32(bias), grid=grid, patch=patch, bases=bases,
                              pad=pad, extra_tokens=extra_tokens, layout=layout)
    check_tensors(x, weight, bias, layout)
    grid = check_grid_spec(grid)
    if isinstance(grid, dict):
        raise ValueError("lbp_linear takes one grid ('auto' or (h, w)); pattern dicts are for convert and LBPLinear")
    e = check_int(extra_tokens, "extra_tokens", minimum=0)
    if layout == "nchw":
        if e:
            raise ValueError(f"extra_tokens must be 0 for layout='nchw', got {e}")
        plan = make_plan(map_grid(x.shape, grid), patch, bases, pad)
    else:
        kind, g = linear_grid(x.shape, grid, e)
        plan = make_plan(g, patch, bases, pad)
        out_shape = tuple(x.shape[:-1]) + (weight.shape[0],)
        batch = math.prod(x.shape[:-3] if kind == "maps" else x.shape[:-2])  # not -1: ambiguous for an empty x
        x = x.reshape(batch, e + g[0] * g[1], x.shape[-1])
    tracked = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    if not tracked:
        y = _dense_forward(x, weight, bias, layout)
    else:
        y = _LBPLinearFunction.apply(x, weight, bias, plan, e, layout)
    if layout == "tokens":
        return y.reshape(out_shape)
    return y
