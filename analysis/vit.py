"""A small vision transformer in NumPy with manual backward, for end-to-end LBP-WHT fidelity.

The network (``TinyViT``) is the usual pre-LayerNorm ViT: patch embedding (a
linear layer on flattened pixel patches), optional class token, learned
position embedding, ``depth`` blocks of ``x + Attn(LN(x))`` then
``x + MLP(LN(x))`` (multi-head self-attention with a fused ``qkv`` and a
``proj`` linear layer; MLP ``fc1`` -> GELU -> ``fc2``), a final LayerNorm, mean
pooling (or the class token), a linear ``head`` and softmax cross-entropy.

Every operation is a pair of small functions ``op_forward(...) -> (out, cache)``
and ``op_backward(grad, cache) -> grads``; the linear layers run through
:func:`lbpcore.linear` and back through :func:`lbpcore.dense_backward` or, per
layer, :func:`lbpcore.lbp_backward` on the ``grid`` of tokens.  The head acts
on pooled features, not on a token grid, and is always exact.

:func:`gradient_fidelity` compares every parameter gradient of an LBP-WHT
backward with the exact one, layer by layer (errors of one layer propagate into
the gradients of every layer before it), next to the backward FLOPs of each
linear layer from :func:`lbpcore.backward_cost`.  :func:`capture_linear_io`
records the ``(x, weight, grad_y)`` each linear layer sees in the exact backward.

Everything here is NumPy (CPU).
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

import lbpcore

from ._io import to_jsonable
from .metrics import relative_error

__all__ = [
    # ops
    "linear_forward",
    "linear_backward",
    "patchify_forward",
    "patchify_backward",
    "patch_embed_forward",
    "patch_embed_backward",
    "cls_token_forward",
    "cls_token_backward",
    "pos_embed_forward",
    "pos_embed_backward",
    "layernorm_forward",
    "layernorm_backward",
    "gelu_forward",
    "gelu_backward",
    "attention_forward",
    "attention_backward",
    "residual_forward",
    "residual_backward",
    "mean_pool_forward",
    "mean_pool_backward",
    "softmax_cross_entropy_forward",
    "softmax_cross_entropy_backward",
    # model
    "ViTConfig",
    "LinearLayerInfo",
    "LBPSetting",
    "ForwardCache",
    "BackwardResult",
    "LayerIO",
    "TinyViT",
    # analysis
    "ParameterError",
    "LayerReport",
    "FidelityReport",
    "gradient_fidelity",
    "capture_linear_io",
]


# ============================================================================
# operations: forward -> (out, cache), backward(grad, cache) -> grads
# ============================================================================


def linear_forward(x, weight, bias=None):
    """Linear layer ``y = x @ weight.T + bias`` (via :func:`lbpcore.linear`).

    Parameters
    ----------
    x : ndarray, shape (..., C_in)
    weight : ndarray, shape (C_out, C_in)
    bias : ndarray, shape (C_out,), optional

    Returns
    -------
    y : ndarray, shape (..., C_out)
    cache : dict
        ``x``, ``weight`` and ``bias``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import linear_forward, linear_backward
    >>> y, cache = linear_forward(np.ones((2, 5, 3)), np.ones((4, 3)), np.zeros(4))
    >>> y.shape
    (2, 5, 4)
    """
    y = lbpcore.linear(x, weight, bias)
    return y, {"x": x, "weight": weight, "bias": bias}


def linear_backward(grad_y, cache, *, lbp=None, grid=None, extra_tokens=0):
    """Backward of :func:`linear_forward`, exact or LBP-WHT.

    Parameters
    ----------
    grad_y : ndarray, shape (..., C_out)
    cache : dict
        From :func:`linear_forward`.
    lbp : LBPSetting, optional
        None (default): exact, :func:`lbpcore.dense_backward`.  Otherwise
        :func:`lbpcore.lbp_backward` with these bases, patch size and padding;
        then ``x`` must be tokens of shape (B, e + h*w, C_in).
    grid : (int, int), optional
        Token grid ``(h, w)``; required with ``lbp``.
    extra_tokens : int, optional
        Leading non-grid tokens ``e`` (exact under LBP-WHT); default 0.

    Returns
    -------
    grad_x : ndarray, shape (..., C_in)
    grad_weight : ndarray, shape (C_out, C_in)
    grad_bias : ndarray of shape (C_out,), or None

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import LBPSetting, linear_forward, linear_backward
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 16, 3)); w = rng.standard_normal((5, 3))
    >>> y, cache = linear_forward(x, w, np.zeros(5))
    >>> gx, gw, gb = linear_backward(np.ones_like(y), cache)
    >>> gx.shape, gw.shape, gb.shape
    ((2, 16, 3), (5, 3), (5,))
    >>> full = LBPSetting("lp_l1:7", patch=4)  # every basis of a 4 x 4 patch
    >>> bool(np.allclose(linear_backward(np.ones_like(y), cache, lbp=full, grid=(4, 4))[1], gw))
    True
    """
    x, weight, bias = cache["x"], cache["weight"], cache["bias"]
    if lbp is None:
        g = lbpcore.dense_backward(x, weight, grad_y, bias=bias)
    else:
        if grid is None:
            raise ValueError("grid=(h, w) is required for an LBP-WHT backward")
        g = lbpcore.lbp_backward(
            x, weight, grad_y, grid=grid, patch=lbp.patch, bases=lbp.bases, pad=lbp.pad,
            extra_tokens=extra_tokens, bias=bias,
        )
    return g.grad_x, g.grad_weight, g.grad_bias


def patchify_forward(images, patch):
    """Cut images into non-overlapping pixel patches, flattened as tokens.

    Parameters
    ----------
    images : ndarray, shape (B, C, H, W)
        ``H`` and ``W`` multiples of ``patch``.
    patch : int
        Pixel patch side ``p``.

    Returns
    -------
    tokens : ndarray, shape (B, (H/p) * (W/p), C * p * p)
        Tokens in row-major order of the ``(H/p, W/p)`` grid; features in
        ``(channel, row, column)`` order, as a ``Conv2d(C, D, p, stride=p)``
        weight flattens.
    cache : tuple
        The input shape and ``p``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import patchify_forward, patchify_backward
    >>> images = np.arange(2 * 3 * 8 * 8.0).reshape(2, 3, 8, 8)
    >>> tokens, cache = patchify_forward(images, 4)
    >>> tokens.shape
    (2, 4, 48)
    >>> bool(np.array_equal(patchify_backward(tokens, cache), images))
    True
    """
    b, c, h, w = images.shape
    p = int(patch)
    if p < 1 or h % p or w % p:
        raise ValueError(f"patch must be a positive divisor of the image size {(h, w)}, got {patch}")
    t = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(t.reshape(b, (h // p) * (w // p), c * p * p)), (images.shape, p)


def patchify_backward(grad, cache):
    """Backward of :func:`patchify_forward` (the inverse rearrangement).

    Parameters
    ----------
    grad : ndarray, shape (B, (H/p) * (W/p), C * p * p)
    cache : tuple

    Returns
    -------
    grad_images : ndarray, shape (B, C, H, W)

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import patchify_forward, patchify_backward
    >>> images = np.arange(2 * 3 * 8 * 8.0).reshape(2, 3, 8, 8)
    >>> tokens, cache = patchify_forward(images, 4)
    >>> tokens.shape
    (2, 4, 48)
    >>> bool(np.array_equal(patchify_backward(tokens, cache), images))
    True
    """
    (b, c, h, w), p = cache
    g = grad.reshape(b, h // p, w // p, c, p, p).transpose(0, 3, 1, 4, 2, 5)
    return np.ascontiguousarray(g.reshape(b, c, h, w))


def patch_embed_forward(images, weight, bias, patch):
    """Patch embedding: :func:`patchify_forward` then a linear layer.

    Parameters
    ----------
    images : ndarray, shape (B, C, H, W)
    weight : ndarray, shape (D, C * p * p)
    bias : ndarray, shape (D,) or None
    patch : int
        Pixel patch side ``p``.

    Returns
    -------
    tokens : ndarray, shape (B, (H/p) * (W/p), D)
    cache : dict

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import patch_embed_forward, patch_embed_backward
    >>> images = np.ones((2, 3, 8, 8))
    >>> tokens, cache = patch_embed_forward(images, np.ones((5, 12)), np.zeros(5), 2)
    >>> tokens.shape, cache["grid"]
    ((2, 16, 5), (4, 4))
    >>> [g.shape for g in patch_embed_backward(np.ones_like(tokens), cache)]
    [(2, 3, 8, 8), (5, 12), (5,)]
    """
    t, pcache = patchify_forward(images, patch)
    y, lcache = linear_forward(t, weight, bias)
    h, w = images.shape[2] // int(patch), images.shape[3] // int(patch)
    return y, {"patchify": pcache, "linear": lcache, "grid": (h, w)}


def patch_embed_backward(grad, cache, *, lbp=None):
    """Backward of :func:`patch_embed_forward`.

    Parameters
    ----------
    grad : ndarray, shape (B, L, D)
    cache : dict
    lbp : LBPSetting, optional
        LBP-WHT backward of the linear layer on the token grid ``(H/p, W/p)``.

    Returns
    -------
    grad_images : ndarray, shape (B, C, H, W)
    grad_weight : ndarray, shape (D, C * p * p)
    grad_bias : ndarray of shape (D,), or None

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import patch_embed_forward, patch_embed_backward
    >>> images = np.ones((2, 3, 8, 8))
    >>> tokens, cache = patch_embed_forward(images, np.ones((5, 12)), np.zeros(5), 2)
    >>> tokens.shape, cache["grid"]
    ((2, 16, 5), (4, 4))
    >>> [g.shape for g in patch_embed_backward(np.ones_like(tokens), cache)]
    [(2, 3, 8, 8), (5, 12), (5,)]
    """
    gt, gw, gb = linear_backward(grad, cache["linear"], lbp=lbp, grid=cache["grid"])
    return patchify_backward(gt, cache["patchify"]), gw, gb


def cls_token_forward(x, token):
    """Prepend a learned class token to every sequence.

    Parameters
    ----------
    x : ndarray, shape (B, L, C)
    token : ndarray, shape (C,)

    Returns
    -------
    out : ndarray, shape (B, 1 + L, C)
    cache : None

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import cls_token_forward, cls_token_backward
    >>> out, cache = cls_token_forward(np.zeros((2, 4, 3)), np.ones(3))
    >>> out.shape, out[:, 0].tolist()
    ((2, 5, 3), [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    >>> gx, gt = cls_token_backward(np.ones((2, 5, 3)), cache)
    >>> gx.shape, gt.tolist()
    ((2, 4, 3), [2.0, 2.0, 2.0])
    """
    b, _, c = x.shape
    t = np.broadcast_to(token.reshape(1, 1, c), (b, 1, c)).astype(x.dtype, copy=False)
    return np.concatenate([t, x], axis=1), None


def cls_token_backward(grad, cache=None):
    """Backward of :func:`cls_token_forward`.

    Parameters
    ----------
    grad : ndarray, shape (B, 1 + L, C)
    cache : None

    Returns
    -------
    grad_x : ndarray, shape (B, L, C)
    grad_token : ndarray, shape (C,)

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import cls_token_forward, cls_token_backward
    >>> out, cache = cls_token_forward(np.zeros((2, 4, 3)), np.ones(3))
    >>> out.shape, out[:, 0].tolist()
    ((2, 5, 3), [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    >>> gx, gt = cls_token_backward(np.ones((2, 5, 3)), cache)
    >>> gx.shape, gt.tolist()
    ((2, 4, 3), [2.0, 2.0, 2.0])
    """
    return grad[:, 1:], grad[:, 0].sum(axis=0)


def pos_embed_forward(x, pos):
    """Add a learned position embedding.

    Parameters
    ----------
    x : ndarray, shape (B, L, C)
    pos : ndarray, shape (L, C)

    Returns
    -------
    out : ndarray, shape (B, L, C)
    cache : None

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import pos_embed_forward, pos_embed_backward
    >>> out, cache = pos_embed_forward(np.zeros((2, 4, 3)), np.ones((4, 3)))
    >>> float(out.sum())
    24.0
    >>> gx, gpos = pos_embed_backward(np.ones((2, 4, 3)), cache)
    >>> gpos.shape, float(gpos[0, 0])
    ((4, 3), 2.0)
    """
    if pos.shape != x.shape[1:]:
        raise ValueError(f"pos must have shape {x.shape[1:]}, got {pos.shape}")
    return x + pos, None


def pos_embed_backward(grad, cache=None):
    """Backward of :func:`pos_embed_forward`.

    Parameters
    ----------
    grad : ndarray, shape (B, L, C)
    cache : None

    Returns
    -------
    grad_x : ndarray, shape (B, L, C)
    grad_pos : ndarray, shape (L, C)

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import pos_embed_forward, pos_embed_backward
    >>> out, cache = pos_embed_forward(np.zeros((2, 4, 3)), np.ones((4, 3)))
    >>> float(out.sum())
    24.0
    >>> gx, gpos = pos_embed_backward(np.ones((2, 4, 3)), cache)
    >>> gpos.shape, float(gpos[0, 0])
    ((4, 3), 2.0)
    """
    return grad, grad.sum(axis=0)


def layernorm_forward(x, gamma, beta, eps=1e-6):
    """LayerNorm over the last axis.

    ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` with the biased
    variance, per token.

    Parameters
    ----------
    x : ndarray, shape (..., C)
    gamma, beta : ndarray, shape (C,)
    eps : float, optional
        Default 1e-6.

    Returns
    -------
    y : ndarray, shape (..., C)
    cache : tuple
        Normalized input, reciprocal standard deviation and ``gamma``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import layernorm_forward, layernorm_backward
    >>> y, cache = layernorm_forward(np.array([[1.0, 2.0, 3.0]]), np.ones(3), np.zeros(3))
    >>> np.round(y, 4)
    array([[-1.2247,  0.    ,  1.2247]])
    >>> gx, ggamma, gbeta = layernorm_backward(np.ones((1, 3)), cache)
    >>> np.round(gx, 6) + 0.0, gbeta.tolist()
    (array([[0., 0., 0.]]), [1.0, 1.0, 1.0])
    """
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd
    return xhat * gamma + beta, (xhat, rstd, gamma)


def layernorm_backward(grad, cache):
    """Backward of :func:`layernorm_forward`.

    Parameters
    ----------
    grad : ndarray, shape (..., C)
    cache : tuple

    Returns
    -------
    grad_x : ndarray, shape (..., C)
    grad_gamma, grad_beta : ndarray, shape (C,)

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import layernorm_forward, layernorm_backward
    >>> y, cache = layernorm_forward(np.array([[1.0, 2.0, 3.0]]), np.ones(3), np.zeros(3))
    >>> np.round(y, 4)
    array([[-1.2247,  0.    ,  1.2247]])
    >>> gx, ggamma, gbeta = layernorm_backward(np.ones((1, 3)), cache)
    >>> np.round(gx, 6) + 0.0, gbeta.tolist()
    (array([[0., 0., 0.]]), [1.0, 1.0, 1.0])
    """
    xhat, rstd, gamma = cache
    c = xhat.shape[-1]
    g2 = grad.reshape(-1, c)
    grad_gamma = (g2 * xhat.reshape(-1, c)).sum(axis=0)
    grad_beta = g2.sum(axis=0)
    gh = grad * gamma
    grad_x = rstd * (gh - gh.mean(axis=-1, keepdims=True) - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
    return grad_x, grad_gamma, grad_beta


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715
_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_forward(x, approximate="tanh"):
    """GELU activation.

    Parameters
    ----------
    x : ndarray
    approximate : {"tanh", "none"}, optional
        ``"tanh"`` (default): ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``
        (PyTorch's ``approximate="tanh"``, GPT-2/BERT), fast.  ``"none"``: the
        exact ``x Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))`` with ``math.erf``
        per element (slow; for checks).

    Returns
    -------
    y : ndarray, shape of ``x``
    cache : tuple

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import gelu_forward, gelu_backward
    >>> y, cache = gelu_forward(np.array([-1.0, 0.0, 1.0]))
    >>> np.round(y, 4)
    array([-0.1588,  0.    ,  0.8412])
    >>> np.round(gelu_forward(np.array([1.0]), approximate="none")[0], 4)
    array([0.8413])
    >>> np.round(gelu_backward(np.ones(3), cache), 4)
    array([-0.083,  0.5  ,  1.083])
    """
    if approximate == "tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * (x * x * x)))  # x**3 is slow for float32
        return 0.5 * x * (1.0 + t), (x, approximate, t)
    if approximate == "none":
        phi = (0.5 * (1.0 + _erf(x / math.sqrt(2.0)))).astype(x.dtype)
        return x * phi, (x, approximate, phi)
    raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")


def gelu_backward(grad, cache):
    """Backward of :func:`gelu_forward` (the exact derivative of the chosen form).

    Parameters
    ----------
    grad : ndarray, shape of ``x``
    cache : tuple

    Returns
    -------
    grad_x : ndarray, shape of ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import gelu_forward, gelu_backward
    >>> y, cache = gelu_forward(np.array([-1.0, 0.0, 1.0]))
    >>> np.round(y, 4)
    array([-0.1588,  0.    ,  0.8412])
    >>> np.round(gelu_forward(np.array([1.0]), approximate="none")[0], 4)
    array([0.8413])
    >>> np.round(gelu_backward(np.ones(3), cache), 4)
    array([-0.083,  0.5  ,  1.083])
    """
    x, approximate, aux = cache
    if approximate == "tanh":
        t = aux
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * x * x)
        return grad * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
    phi = aux  # Phi(x); d/dx x Phi(x) = Phi(x) + x pdf(x)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return grad * (phi + x * pdf)


def attention_forward(qkv, heads):
    """Multi-head scaled dot-product self-attention (no masking).

    Parameters
    ----------
    qkv : ndarray, shape (B, L, 3 C)
        Queries, keys and values, each split into ``heads`` heads of
        ``d = C / heads`` channels (the layout of a fused ``qkv`` linear layer:
        ``qkv.reshape(B, L, 3, heads, d)``).
    heads : int

    Returns
    -------
    out : ndarray, shape (B, L, C)
        ``softmax(q k^T / sqrt(d)) v`` per head, heads concatenated.
    cache : tuple
        ``q``, ``k``, ``v`` (B, heads, L, d), attention ``A`` (B, heads, L, L),
        scale.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import attention_forward, attention_backward
    >>> qkv = np.random.default_rng(0).standard_normal((2, 5, 12))
    >>> out, cache = attention_forward(qkv, heads=2)
    >>> out.shape, cache[3].shape
    ((2, 5, 4), (2, 2, 5, 5))
    >>> attention_backward(np.ones_like(out), cache).shape
    (2, 5, 12)
    """
    b, l, c3 = qkv.shape
    if c3 % (3 * heads):
        raise ValueError(f"qkv channels {c3} must be divisible by 3 * heads = {3 * heads}")
    d = c3 // (3 * heads)
    t = qkv.reshape(b, l, 3, heads, d).transpose(2, 0, 3, 1, 4)
    q, k, v = (np.ascontiguousarray(t[i]) for i in range(3))
    scale = 1.0 / math.sqrt(d)
    s = (q @ k.transpose(0, 1, 3, 2)) * scale
    s = s - s.max(axis=-1, keepdims=True)
    a = np.exp(s)
    a /= a.sum(axis=-1, keepdims=True)
    o = a @ v  # (B, H, L, d)
    out = np.ascontiguousarray(o.transpose(0, 2, 1, 3).reshape(b, l, heads * d))
    return out, (q, k, v, a, scale)


def attention_backward(grad, cache):
    """Backward of :func:`attention_forward`.

    Parameters
    ----------
    grad : ndarray, shape (B, L, C)
    cache : tuple

    Returns
    -------
    grad_qkv : ndarray, shape (B, L, 3 C)

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import attention_forward, attention_backward
    >>> qkv = np.random.default_rng(0).standard_normal((2, 5, 12))
    >>> out, cache = attention_forward(qkv, heads=2)
    >>> out.shape, cache[3].shape
    ((2, 5, 4), (2, 2, 5, 5))
    >>> attention_backward(np.ones_like(out), cache).shape
    (2, 5, 12)
    """
    q, k, v, a, scale = cache
    b, h, l, d = q.shape
    go = grad.reshape(b, l, h, d).transpose(0, 2, 1, 3)
    ga = go @ v.transpose(0, 1, 3, 2)  # (B, H, L, L)
    gv = a.transpose(0, 1, 3, 2) @ go
    gs = a * (ga - (ga * a).sum(axis=-1, keepdims=True))
    gs *= scale
    gq = gs @ k
    gk = gs.transpose(0, 1, 3, 2) @ q
    g = np.stack([gq, gk, gv])  # (3, B, H, L, d)
    return np.ascontiguousarray(g.transpose(1, 3, 0, 2, 4).reshape(b, l, 3 * h * d))


def residual_forward(x, fx):
    """Residual connection ``x + f(x)``.

    Parameters
    ----------
    x, fx : ndarray, same shape

    Returns
    -------
    out : ndarray
    cache : None

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import residual_forward, residual_backward
    >>> out, cache = residual_forward(np.ones(3), np.arange(3.0))
    >>> out.tolist()
    [1.0, 2.0, 3.0]
    >>> [g.tolist() for g in residual_backward(np.ones(3), cache)]
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    return x + fx, None


def residual_backward(grad, cache=None):
    """Backward of :func:`residual_forward`.

    Parameters
    ----------
    grad : ndarray
    cache : None

    Returns
    -------
    grad_x, grad_fx : ndarray
        Both equal to ``grad``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import residual_forward, residual_backward
    >>> out, cache = residual_forward(np.ones(3), np.arange(3.0))
    >>> out.tolist()
    [1.0, 2.0, 3.0]
    >>> [g.tolist() for g in residual_backward(np.ones(3), cache)]
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    return grad, grad


def mean_pool_forward(x, start=0, stop=None):
    """Mean over the tokens ``start:stop``.

    Parameters
    ----------
    x : ndarray, shape (B, L, C)
    start, stop : int, optional
        Token range (default all); ``(0, 1)`` selects a class token.

    Returns
    -------
    out : ndarray, shape (B, C)
    cache : tuple

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import mean_pool_forward, mean_pool_backward
    >>> x = np.arange(12.0).reshape(1, 4, 3)
    >>> out, cache = mean_pool_forward(x, start=1)
    >>> out.tolist()
    [[6.0, 7.0, 8.0]]
    >>> mean_pool_backward(np.ones((1, 3)), cache)[0, :, 0].tolist()
    [0.0, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    sl = slice(start, stop)
    n = len(range(*sl.indices(x.shape[1])))
    if n == 0:
        raise ValueError(f"empty token range {start}:{stop} for {x.shape[1]} tokens")
    return x[:, sl].mean(axis=1), (x.shape, sl, n)


def mean_pool_backward(grad, cache):
    """Backward of :func:`mean_pool_forward`.

    Parameters
    ----------
    grad : ndarray, shape (B, C)
    cache : tuple

    Returns
    -------
    grad_x : ndarray, shape (B, L, C)
        ``grad / n`` on the pooled tokens, zero elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import mean_pool_forward, mean_pool_backward
    >>> x = np.arange(12.0).reshape(1, 4, 3)
    >>> out, cache = mean_pool_forward(x, start=1)
    >>> out.tolist()
    [[6.0, 7.0, 8.0]]
    >>> mean_pool_backward(np.ones((1, 3)), cache)[0, :, 0].tolist()
    [0.0, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    shape, sl, n = cache
    gx = np.zeros(shape, dtype=grad.dtype)
    gx[:, sl] = (grad / n)[:, None, :]
    return gx


def softmax_cross_entropy_forward(logits, labels):
    """Mean softmax cross-entropy.

    Parameters
    ----------
    logits : ndarray, shape (B, K)
    labels : ndarray of int, shape (B,)
        Class indices in ``[0, K)``.

    Returns
    -------
    loss : float
        ``mean_b (logsumexp(logits[b]) - logits[b, labels[b]])``.
    cache : tuple
        Softmax probabilities (B, K) and the labels.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import softmax_cross_entropy_forward, softmax_cross_entropy_backward
    >>> loss, cache = softmax_cross_entropy_forward(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(loss, 6) == round(float(np.log(4)), 6)
    True
    >>> softmax_cross_entropy_backward(1.0, cache)[0].tolist()
    [-0.375, 0.125, 0.125, 0.125]
    """
    labels = np.asarray(labels)
    b, k = logits.shape
    if labels.shape != (b,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers of shape ({b},), got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{labels.min()}, {labels.max()}]")
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    loss = float(np.mean(lse - z[np.arange(b), labels]))
    prob = np.exp(z - lse[:, None])
    return loss, (prob, labels)


def softmax_cross_entropy_backward(grad, cache):
    """Backward of :func:`softmax_cross_entropy_forward`.

    Parameters
    ----------
    grad : float
        Gradient of the final objective with respect to the loss (1.0 for the loss itself).
    cache : tuple

    Returns
    -------
    grad_logits : ndarray, shape (B, K)
        ``grad * (softmax(logits) - onehot(labels)) / B``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import softmax_cross_entropy_forward, softmax_cross_entropy_backward
    >>> loss, cache = softmax_cross_entropy_forward(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(loss, 6) == round(float(np.log(4)), 6)
    True
    >>> softmax_cross_entropy_backward(1.0, cache)[0].tolist()
    [-0.375, 0.125, 0.125, 0.125]
    """
    prob, labels = cache
    b = prob.shape[0]
    g = prob.copy()
    g[np.arange(b), labels] -= 1.0
    return g * (grad / b)


# ============================================================================
# model
# ============================================================================


@dataclass(frozen=True)
class ViTConfig:
    """Hyperparameters of :class:`TinyViT`.

    Attributes
    ----------
    image_size : int
        Square input side (default 64).
    patch_size : int
        Pixel patch side ``p`` (default 4, a 16 x 16 token grid on 64 x 64 images).
    in_chans : int
        Image channels (default 3).
    dim : int
        Token width ``C`` (default 64).
    depth : int
        Number of blocks (default 4).
    heads : int
        Attention heads; ``dim`` must be a multiple (default 4).
    mlp_ratio : float
        MLP hidden width is ``int(dim * mlp_ratio)`` (default 4).
    num_classes : int
        Output classes (default 3: the bundled sample images).
    class_token : bool
        Prepend a learned class token (one extra token outside the grid); default False.
    pool : {"mean", "cls"}
        Head input: mean over the grid tokens (default), or the class token.
    gelu : {"tanh", "none"}
        GELU form (see :func:`gelu_forward`); default "tanh".
    ln_eps : float
        LayerNorm epsilon (default 1e-6).
    dtype : str
        Parameter dtype, "float32" (default) or "float64".
    seed : int
        Seed of the parameter initialisation (default 0).

    Examples
    --------
    >>> from analysis.vit import ViTConfig
    >>> cfg = ViTConfig()
    >>> cfg.grid, cfg.num_tokens, cfg.hidden
    ((16, 16), 256, 256)
    >>> ViTConfig(class_token=True, pool="cls").num_tokens
    257
    """

    image_size: int = 64
    patch_size: int = 4
    in_chans: int = 3
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 3
    class_token: bool = False
    pool: str = "mean"
    gelu: str = "tanh"
    ln_eps: float = 1e-6
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self):
        for name in ("image_size", "patch_size", "in_chans", "dim", "depth", "heads", "num_classes"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide image_size {self.image_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        if self.hidden < 1:
            raise ValueError(f"mlp_ratio must give a positive hidden width, got {self.mlp_ratio}")
        if self.pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {self.pool!r}")
        if self.pool == "cls" and not self.class_token:
            raise ValueError("pool='cls' needs class_token=True")
        if self.gelu not in ("tanh", "none"):
            raise ValueError(f"gelu must be 'tanh' or 'none', got {self.gelu!r}")
        if np.dtype(self.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid ``(h, w) = (image_size / p, image_size / p)``."""
        g = self.image_size // self.patch_size
        return (g, g)

    @property
    def extra_tokens(self) -> int:
        """Tokens outside the grid: 1 with a class token, else 0."""
        return int(self.class_token)

    @property
    def num_tokens(self) -> int:
        """Sequence length ``L = extra_tokens + h * w`` inside the blocks."""
        h, w = self.grid
        return self.extra_tokens + h * w

    @property
    def hidden(self) -> int:
        """MLP hidden width."""
        return int(self.dim * self.mlp_ratio)

    def to_dict(self) -> dict:
        """Plain dict of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class LinearLayerInfo:
    """Where a linear layer sits and what it sees.

    Attributes
    ----------
    name : str
        ``"patch_embed"``, ``"blocks.{i}.attn.qkv"``, ``"blocks.{i}.attn.proj"``,
        ``"blocks.{i}.mlp.fc1"``, ``"blocks.{i}.mlp.fc2"`` or ``"head"``.
    in_features, out_features : int
    grid : (int, int) or None
        Token grid, None for the head (pooled features).
    extra_tokens : int
        Leading tokens outside the grid (the class token).

    Examples
    --------
    >>> from analysis.vit import TinyViT
    >>> info = TinyViT().layers["blocks.0.mlp.fc1"]
    >>> info.in_features, info.out_features, info.grid, info.on_grid
    (64, 256, (16, 16), True)
    >>> TinyViT().layers["head"].on_grid
    False
    """

    name: str
    in_features: int
    out_features: int
    grid: tuple | None
    extra_tokens: int

    @property
    def on_grid(self) -> bool:
        """Whether the layer acts on a token grid (and so may use LBP-WHT)."""
        return self.grid is not None


@dataclass(frozen=True)
class LBPSetting:
    """How one linear layer backpropagates with LBP-WHT.

    Attributes
    ----------
    bases : str or tuple of (int, int) or lbpcore.BasisSet
        Basis selection (see :func:`lbpcore.select_bases`); default ``"lp_l1:6"``.
    patch : int
        Patch size ``n`` of the token grid, a power of two; default 8.
    pad : {"reflect", "zero", "none"}
        Padding of grids ``n`` does not divide; default ``"reflect"``.

    Examples
    --------
    >>> from analysis.vit import LBPSetting
    >>> s = LBPSetting("lp_l1:3", patch=8)
    >>> s.basis.rank, s.to_dict()["indices"][:3]
    (6, [[0, 0], [0, 1], [1, 0]])
    """

    bases: Any = "lp_l1:6"
    patch: int = 8
    pad: str = "reflect"

    def __post_init__(self):
        b = self.bases
        if not isinstance(b, (str, lbpcore.BasisSet)):
            object.__setattr__(self, "bases", tuple(tuple(int(v) for v in pair) for pair in np.asarray(b).tolist()))
        self.basis  # validate now  # noqa: B018

    @property
    def basis(self):
        """The :class:`lbpcore.BasisSet` selected."""
        return lbpcore.select_bases(self.patch, self.bases)

    @property
    def spec(self) -> str:
        """Short text: the spec string, or ``"explicit"``."""
        if isinstance(self.bases, str):
            return self.bases
        if isinstance(self.bases, lbpcore.BasisSet):
            return self.bases.spec
        return "explicit"

    def to_dict(self) -> dict:
        """``bases`` (spec string), ``indices`` (list of pairs), ``rank``, ``patch``, ``pad``."""
        basis = self.basis
        return {
            "bases": self.spec,
            "indices": basis.indices.tolist(),
            "rank": int(basis.rank),
            "patch": int(self.patch),
            "pad": self.pad,
        }


@dataclass
class ForwardCache:
    """What :meth:`TinyViT.forward` keeps for the backward pass.

    Attributes
    ----------
    loss : float or None
        None when no labels were given.
    logits : ndarray, shape (B, num_classes)
    ops : dict
        Per-operation caches, keyed by operation name.

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> images, labels = image_batch(batch=2, size=16)
    >>> loss, cache = TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2)).forward(images, labels)
    >>> cache.logits.shape, cache.loss == loss
    ((2, 3), True)
    """

    loss: float | None
    logits: np.ndarray
    ops: dict = field(repr=False)


@dataclass(frozen=True)
class LayerIO:
    """The triple a linear layer sees in a backward pass.

    Attributes
    ----------
    name : str
    x : ndarray, shape (B, L, C_in), or (B, C_in) for the head
        Layer input.
    weight : ndarray, shape (C_out, C_in)
    grad_y : ndarray, shape (B, L, C_out), or (B, C_out) for the head
        Gradient of the loss with respect to the layer output.
    grid : (int, int) or None
        Token grid (None for the head).
    extra_tokens : int

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, capture_linear_io
    >>> images, labels = image_batch(batch=2, size=16)
    >>> io = capture_linear_io(TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2)), images, labels)
    >>> io["blocks.0.mlp.fc1"].to_dict()["grad_y_shape"], io["head"].grid
    ([2, 16, 32], None)
    """

    name: str
    x: np.ndarray = field(repr=False)
    weight: np.ndarray = field(repr=False)
    grad_y: np.ndarray = field(repr=False)
    grid: tuple | None
    extra_tokens: int

    def to_dict(self) -> dict:
        """Shapes and metadata only (no arrays)."""
        return {
            "name": self.name,
            "x_shape": list(self.x.shape),
            "weight_shape": list(self.weight.shape),
            "grad_y_shape": list(self.grad_y.shape),
            "grid": None if self.grid is None else list(self.grid),
            "extra_tokens": self.extra_tokens,
        }


@dataclass
class BackwardResult:
    """Gradients from :meth:`TinyViT.backward`.

    Attributes
    ----------
    grads : dict of str to ndarray
        Gradient of every parameter, keyed (and shaped) like :attr:`TinyViT.params`.
    grad_images : ndarray, shape (B, in_chans, image_size, image_size)
    lbp : dict of str to LBPSetting
        Layers that used LBP-WHT.
    captured : dict of str to LayerIO or None
        Per linear layer, what it saw (with ``capture=True``).

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2))
    >>> res = model.backward(model.forward(images, labels)[1], lbp="all", patch=4, bases="lp_l1:3")
    >>> list(res.grads) == list(model.params), res.grad_images.shape, len(res.lbp)
    (True, (2, 3, 16, 16), 5)
    """

    grads: dict
    grad_images: np.ndarray = field(repr=False)
    lbp: dict
    captured: dict | None = field(default=None, repr=False)


class TinyViT:
    """A small pre-LayerNorm vision transformer with a manual NumPy backward.

    Parameters
    ----------
    config : ViTConfig, optional
        Default ``ViTConfig()``: 64 x 64 images, 4 x 4 pixel patches (16 x 16
        token grid), width 64, 4 heads, depth 4, MLP ratio 4, 3 classes, float32.
    params : dict of str to ndarray, optional
        Parameters to use instead of the seeded initialisation (same names and
        shapes as :meth:`init_params`; cast to ``config.dtype``).

    Attributes
    ----------
    config : ViTConfig
    params : dict of str to ndarray
        ``patch_embed.weight`` (C, in_chans p p), ``patch_embed.bias``,
        ``cls_token`` (C,) with a class token, ``pos_embed`` (L, C), per block
        ``blocks.{i}.norm1.{weight,bias}``, ``blocks.{i}.attn.qkv.{weight,bias}``
        (3C, C), ``blocks.{i}.attn.proj.{weight,bias}`` (C, C),
        ``blocks.{i}.norm2.{weight,bias}``, ``blocks.{i}.mlp.fc1.{weight,bias}``
        (hidden, C), ``blocks.{i}.mlp.fc2.{weight,bias}`` (C, hidden), then
        ``norm.{weight,bias}`` and ``head.{weight,bias}`` (num_classes, C).
    layers : dict of str to LinearLayerInfo
        The linear layers in forward order.

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=16, depth=1, heads=2))
    >>> loss, cache = model.forward(images, labels)
    >>> res = model.backward(cache, lbp={"blocks.0.mlp.*": "lp_l1:3"}, patch=4)
    >>> sorted(res.lbp)
    ['blocks.0.mlp.fc1', 'blocks.0.mlp.fc2']
    >>> res.grads["blocks.0.mlp.fc1.weight"].shape
    (64, 16)
    """

    def __init__(self, config=None, *, params=None):
        self.config = ViTConfig() if config is None else config
        cfg = self.config
        ref = self.init_params(cfg)
        if params is None:
            self.params = ref
        else:
            params = dict(params)
            if set(params) != set(ref):
                raise ValueError(
                    f"params must have exactly the keys {sorted(ref)}; "
                    f"missing {sorted(set(ref) - set(params))}, unexpected {sorted(set(params) - set(ref))}"
                )
            self.params = {}
            for k, v in ref.items():
                a = np.asarray(params[k], dtype=cfg.dtype)
                if a.shape != v.shape:
                    raise ValueError(f"params[{k!r}] must have shape {v.shape}, got {a.shape}")
                self.params[k] = a
        c, hid, e = cfg.dim, cfg.hidden, cfg.extra_tokens
        pin = cfg.in_chans * cfg.patch_size**2
        layers = [LinearLayerInfo("patch_embed", pin, c, cfg.grid, 0)]
        for i in range(cfg.depth):
            p = f"blocks.{i}."
            layers += [
                LinearLayerInfo(p + "attn.qkv", c, 3 * c, cfg.grid, e),
                LinearLayerInfo(p + "attn.proj", c, c, cfg.grid, e),
                LinearLayerInfo(p + "mlp.fc1", c, hid, cfg.grid, e),
                LinearLayerInfo(p + "mlp.fc2", hid, c, cfg.grid, e),
            ]
        layers.append(LinearLayerInfo("head", c, cfg.num_classes, None, 0))
        self.layers = {info.name: info for info in layers}

    # ------------------------------------------------------------------ params

    @staticmethod
    def init_params(config):
        """Seeded parameter initialisation.

        Linear weights are LeCun-normal (standard deviation ``1/sqrt(C_in)``),
        linear biases ``N(0, 0.02^2)``, LayerNorm weights ``1 + N(0, 0.02^2)``
        and biases ``N(0, 0.02^2)``, position embedding and class token
        ``N(0, 0.02^2)``; all from ``numpy.random.default_rng(config.seed)``.

        Parameters
        ----------
        config : ViTConfig

        Returns
        -------
        dict of str to ndarray
            Of ``config.dtype``; see :class:`TinyViT` for names and shapes.
        """
        rng = np.random.default_rng(config.seed)
        c, hid = config.dim, config.hidden
        pin = config.in_chans * config.patch_size**2
        p = {}

        def lin(name, cout, cin):
            p[name + ".weight"] = rng.standard_normal((cout, cin)) / math.sqrt(cin)
            p[name + ".bias"] = 0.02 * rng.standard_normal(cout)

        def ln(name):
            p[name + ".weight"] = 1.0 + 0.02 * rng.standard_normal(c)
            p[name + ".bias"] = 0.02 * rng.standard_normal(c)

        lin("patch_embed", c, pin)
        if config.class_token:
            p["cls_token"] = 0.02 * rng.standard_normal(c)
        p["pos_embed"] = 0.02 * rng.standard_normal((config.num_tokens, c))
        for i in range(config.depth):
            b = f"blocks.{i}."
            ln(b + "norm1")
            lin(b + "attn.qkv", 3 * c, c)
            lin(b + "attn.proj", c, c)
            ln(b + "norm2")
            lin(b + "mlp.fc1", hid, c)
            lin(b + "mlp.fc2", c, hid)
        ln("norm")
        lin("head", config.num_classes, c)
        return {k: np.ascontiguousarray(v, dtype=config.dtype) for k, v in p.items()}

    @property
    def linear_layers(self) -> tuple:
        """Names of all linear layers, forward order (``patch_embed`` ... ``head``)."""
        return tuple(self.layers)

    @property
    def token_layers(self) -> tuple:
        """Names of the linear layers on the token grid (all but ``head``): LBP-WHT candidates."""
        return tuple(n for n, info in self.layers.items() if info.on_grid)

    @staticmethod
    def layer_of(param_name: str) -> str:
        """Module a parameter belongs to: ``"blocks.0.mlp.fc1.weight"`` -> ``"blocks.0.mlp.fc1"``."""
        if param_name in ("pos_embed", "cls_token"):
            return param_name
        return param_name.rsplit(".", 1)[0]

    # ---------------------------------------------------------------- forward

    def forward(self, images, labels=None):
        """Forward pass.

        Parameters
        ----------
        images : ndarray, shape (B, in_chans, image_size, image_size)
            Cast to ``config.dtype``.
        labels : ndarray of int, shape (B,), optional
            Classes for the cross-entropy loss.

        Returns
        -------
        loss : float or None
            Mean softmax cross-entropy (None without labels).
        cache : ForwardCache
            Holds the logits (B, num_classes) and every operation's cache.
        """
        cfg, p = self.config, self.params
        images = np.asarray(images, dtype=cfg.dtype)
        expect = (cfg.in_chans, cfg.image_size, cfg.image_size)
        if images.ndim != 4 or images.shape[1:] != expect:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expect))}), got {images.shape}")
        ops = {}
        x, ops["patch_embed"] = patch_embed_forward(images, p["patch_embed.weight"], p["patch_embed.bias"],
                                                    cfg.patch_size)
        if cfg.class_token:
            x, ops["cls_token"] = cls_token_forward(x, p["cls_token"])
        x, ops["pos_embed"] = pos_embed_forward(x, p["pos_embed"])
        for i in range(cfg.depth):
            b = f"blocks.{i}."
            h, ops[b + "norm1"] = layernorm_forward(x, p[b + "norm1.weight"], p[b + "norm1.bias"], cfg.ln_eps)
            h, ops[b + "attn.qkv"] = linear_forward(h, p[b + "attn.qkv.weight"], p[b + "attn.qkv.bias"])
            h, ops[b + "attn.core"] = attention_forward(h, cfg.heads)
            h, ops[b + "attn.proj"] = linear_forward(h, p[b + "attn.proj.weight"], p[b + "attn.proj.bias"])
            x, _ = residual_forward(x, h)
            h, ops[b + "norm2"] = layernorm_forward(x, p[b + "norm2.weight"], p[b + "norm2.bias"], cfg.ln_eps)
            h, ops[b + "mlp.fc1"] = linear_forward(h, p[b + "mlp.fc1.weight"], p[b + "mlp.fc1.bias"])
            h, ops[b + "mlp.act"] = gelu_forward(h, cfg.gelu)
            h, ops[b + "mlp.fc2"] = linear_forward(h, p[b + "mlp.fc2.weight"], p[b + "mlp.fc2.bias"])
            x, _ = residual_forward(x, h)
        x, ops["norm"] = layernorm_forward(x, p["norm.weight"], p["norm.bias"], cfg.ln_eps)
        if cfg.pool == "cls":
            x, ops["pool"] = mean_pool_forward(x, 0, 1)
        else:
            x, ops["pool"] = mean_pool_forward(x, cfg.extra_tokens)
        logits, ops["head"] = linear_forward(x, p["head.weight"], p["head.bias"])
        loss = None
        if labels is not None:
            loss, ops["loss"] = softmax_cross_entropy_forward(logits, labels)
        return loss, ForwardCache(loss, logits, ops)

    def predict(self, images):
        """Logits, shape (B, num_classes)."""
        return self.forward(images)[1].logits

    def loss(self, images, labels) -> float:
        """Mean softmax cross-entropy of ``images`` against ``labels``."""
        return self.forward(images, labels)[0]

    # --------------------------------------------------------------- backward

    def resolve_lbp(self, lbp, *, patch=8, bases="lp_l1:6", pad="reflect"):
        """Normalize a selection of LBP-WHT layers.

        Parameters
        ----------
        lbp : None, str, iterable of str, or mapping
            * None or empty: no layer (exact backward);
            * ``"all"``: every token-grid layer (:attr:`token_layers`);
            * a layer name or :mod:`fnmatch` pattern (``"blocks.*.mlp.fc1"``),
              or an iterable of them: those layers with the default setting;
            * a mapping from names/patterns to a setting: None (defaults), a
              bases spec (``"lp_l1:3"``, explicit pairs, a ``BasisSet``), an
              :class:`LBPSetting`, or a dict of ``bases``/``patch``/``pad``.
              Later keys override earlier ones for the layers they match.

            Patterns match token-grid layers only; naming ``"head"`` is an error.
        patch, bases, pad
            Defaults for layers whose setting does not give them.

        Returns
        -------
        dict of str to LBPSetting
            In forward order.

        Raises
        ------
        ValueError
            If a name or pattern matches no token-grid layer, names the head,
            or a setting is invalid.
        """
        if lbp is None:
            return {}
        if isinstance(lbp, str):
            lbp = {lbp: None}
        elif not isinstance(lbp, Mapping):
            lbp = {k: None for k in lbp}
        chosen = {}
        candidates = self.token_layers
        for key, value in lbp.items():
            if not isinstance(key, str):
                raise ValueError(f"lbp keys must be layer names or patterns, got {key!r}")
            if key == "head":
                raise ValueError("lbp: 'head' acts on pooled features, not a token grid; its backward is always exact")
            if key == "all":
                matched = list(candidates)
            else:
                matched = [n for n in candidates if fnmatch.fnmatchcase(n, key)]
            if not matched:
                raise ValueError(f"lbp: {key!r} matches no token-grid layer; layers are {list(candidates)}")
            setting = self._setting(value, patch, bases, pad)
            for n in matched:
                chosen[n] = setting
        return {n: chosen[n] for n in candidates if n in chosen}

    @staticmethod
    def _setting(value, patch, bases, pad):
        if value is None:
            return LBPSetting(bases, patch, pad)
        if isinstance(value, LBPSetting):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"bases", "patch", "pad"}
            if unknown:
                raise ValueError(f"lbp setting has unknown keys {sorted(unknown)}")
            return LBPSetting(value.get("bases", bases), value.get("patch", patch), value.get("pad", pad))
        return LBPSetting(value, patch, pad)

    def backward(self, cache, *, lbp=None, patch=8, bases="lp_l1:6", pad="reflect", capture=False,
                 grad_loss=1.0, grad_logits=None):
        """Manual backward pass, with LBP-WHT on a chosen subset of linear layers.

        Parameters
        ----------
        cache : ForwardCache
            From :meth:`forward`.
        lbp : None, str, iterable or mapping, optional
            Layers that use :func:`lbpcore.lbp_backward` (see :meth:`resolve_lbp`);
            the others use :func:`lbpcore.dense_backward`.  Default None (exact).
        patch, bases, pad : optional
            Default LBP-WHT setting (``8``, ``"lp_l1:6"``, ``"reflect"``).
        capture : bool, optional
            Record each linear layer's ``(x, weight, grad_y)`` (default False).
        grad_loss : float, optional
            Gradient with respect to the loss (default 1.0).
        grad_logits : ndarray, shape (B, num_classes), optional
            Start from this gradient of the logits instead of the loss (needed
            when the forward pass had no labels).

        Returns
        -------
        BackwardResult
        """
        cfg, p, ops = self.config, self.params, cache.ops
        settings = self.resolve_lbp(lbp, patch=patch, bases=bases, pad=pad)
        grads = {}
        captured = {} if capture else None

        def lin(name, g):
            info = self.layers[name]
            c = ops[name]
            if name == "patch_embed":
                c = c["linear"]
            if captured is not None:
                captured[name] = LayerIO(name, c["x"], c["weight"], g, info.grid, info.extra_tokens)
            gx, grads[name + ".weight"], grads[name + ".bias"] = linear_backward(
                g, c, lbp=settings.get(name), grid=info.grid, extra_tokens=info.extra_tokens
            )
            return gx

        def ln(name, g):
            gx, grads[name + ".weight"], grads[name + ".bias"] = layernorm_backward(g, ops[name])
            return gx

        if grad_logits is None:
            if "loss" not in ops:
                raise ValueError("the forward pass had no labels: pass grad_logits=")
            g = softmax_cross_entropy_backward(grad_loss, ops["loss"])
        else:
            g = np.asarray(grad_logits, dtype=cache.logits.dtype)
            if g.shape != cache.logits.shape:
                raise ValueError(f"grad_logits must have shape {cache.logits.shape}, got {g.shape}")
        g = lin("head", g)
        g = mean_pool_backward(g, ops["pool"])
        g = ln("norm", g)
        for i in reversed(range(cfg.depth)):
            b = f"blocks.{i}."
            g, gh = residual_backward(g)
            gh = lin(b + "mlp.fc2", gh)
            gh = gelu_backward(gh, ops[b + "mlp.act"])
            gh = lin(b + "mlp.fc1", gh)
            g = g + ln(b + "norm2", gh)
            g, gh = residual_backward(g)
            gh = lin(b + "attn.proj", gh)
            gh = attention_backward(gh, ops[b + "attn.core"])
            gh = lin(b + "attn.qkv", gh)
            g = g + ln(b + "norm1", gh)
        g, grads["pos_embed"] = pos_embed_backward(g)
        if cfg.class_token:
            g, grads["cls_token"] = cls_token_backward(g)
        pe = ops["patch_embed"]
        name = "patch_embed"
        if captured is not None:
            c = pe["linear"]
            captured[name] = LayerIO(name, c["x"], c["weight"], g, self.layers[name].grid, 0)
        g_img, grads[name + ".weight"], grads[name + ".bias"] = patch_embed_backward(g, pe, lbp=settings.get(name))
        grads = {k: grads[k] for k in p}  # parameter order
        if captured is not None:
            captured = {n: captured[n] for n in self.layers}
        return BackwardResult(grads, g_img, settings, captured)

    def loss_and_grads(self, images, labels, **backward_kwargs):
        """Forward and backward in one call.

        Parameters
        ----------
        images : ndarray, shape (B, in_chans, image_size, image_size)
        labels : ndarray of int, shape (B,)
        **backward_kwargs
            Passed to :meth:`backward` (``lbp=``, ``patch=``, ``bases=`` ...).

        Returns
        -------
        loss : float
        grads : dict of str to ndarray
        """
        loss, cache = self.forward(images, labels)
        return loss, self.backward(cache, **backward_kwargs).grads

    def attention_backward_flops(self, batch: int) -> int:
        """FLOPs of the attention matrix products in one block's backward.

        Four batched GEMMs (gradients of ``A v`` and of ``q k^T``), each
        ``2 B L^2 C``: ``8 B L^2 C``.  These do not shrink under LBP-WHT.
        """
        cfg = self.config
        return 8 * int(batch) * cfg.num_tokens**2 * cfg.dim


# ============================================================================
# fidelity analysis
# ============================================================================


@dataclass(frozen=True)
class ParameterError:
    """Error of one parameter gradient against the exact backward.

    Attributes
    ----------
    name : str
        Parameter name (see :class:`TinyViT`).
    layer : str
        Module it belongs to (``"blocks.0.mlp.fc1"``, ``"blocks.0.norm1"``, ``"pos_embed"``...).
    shape : tuple of int
    exact_norm : float
        Frobenius norm of the exact gradient.
    rel_error : float
        ``||g_lbp - g_exact||_F / ||g_exact||_F`` (0 when both vanish, inf if only the exact one does).
    cosine : float or None
        Cosine similarity of the flattened gradients (None if one vanishes).
    max_abs_error : float

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, gradient_fidelity
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2))
    >>> rep = gradient_fidelity(model, images, labels, "blocks.0.mlp.fc2", patch=4, bases="lp_l1:2")
    >>> pe = rep.parameters[0]
    >>> pe.name, pe.layer, pe.rel_error > 0
    ('patch_embed.weight', 'patch_embed', True)
    """

    name: str
    layer: str
    shape: tuple
    exact_norm: float
    rel_error: float
    cosine: float | None
    max_abs_error: float

    def to_dict(self) -> dict:
        """JSON-ready dict (an infinite error becomes None)."""
        return to_jsonable(asdict(self))


@dataclass(frozen=True)
class LayerReport:
    """One linear layer: how it backpropagated, its cost and its weight-gradient error.

    Attributes
    ----------
    name : str
    method : {"dense", "lbp"}
    bases : str or None
        Spec of the selected bases (LBP-WHT layers).
    patch, rank : int or None
        ``n`` and ``r`` (LBP-WHT layers).
    grid : (int, int) or None
    extra_tokens : int
    x_shape : tuple of int
    out_features : int
    dense_flops : int
        FLOPs of the exact backward GEMMs, ``4 B L C_in C_out``.
    backward_flops : int
        FLOPs of the backward actually used (LBP-WHT: GEMMs on coefficients plus
        projections, :attr:`lbpcore.BackwardCost.lbp_flops`).
    gemm_flops, projection_flops : int
        The two parts of ``backward_flops`` (``projection_flops`` is 0 when dense).
    flops_saved : int
        ``dense_flops - backward_flops`` (negative if projections cost more).
    ideal_speedup : float
        ``dense_flops / gemm_flops``.
    weight_rel_error, weight_cosine : float
        Of the weight gradient in the full LBP-WHT backward: includes the
        error propagated from every later LBP-WHT layer.
    bias_rel_error : float
        Of the bias gradient (exact locally; nonzero only through propagation).
    local_weight_rel_error : float or None
        Error of this layer's LBP-WHT weight gradient computed from the exact
        ``(x, grad_y)`` alone: the layer's own contribution.
    grad_y_energy_kept : float or None
        ``||P grad_y||^2 / ||grad_y||^2`` of the exact output gradient's grid
        part (SPEC 5): 1 means nothing dropped.

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, gradient_fidelity
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2))
    >>> rep = gradient_fidelity(model, images, labels, "blocks.0.mlp.fc2", patch=4, bases="lp_l1:2")
    >>> lr = rep.layers[4]
    >>> lr.name, lr.method, lr.rank, lr.dense_flops == 4 * 2 * 16 * 32 * 8
    ('blocks.0.mlp.fc2', 'lbp', 3, True)
    """

    name: str
    method: str
    bases: str | None
    patch: int | None
    rank: int | None
    grid: tuple | None
    extra_tokens: int
    x_shape: tuple
    out_features: int
    dense_flops: int
    backward_flops: int
    gemm_flops: int
    projection_flops: int
    flops_saved: int
    ideal_speedup: float
    weight_rel_error: float
    weight_cosine: float | None
    bias_rel_error: float
    local_weight_rel_error: float | None
    grad_y_energy_kept: float | None

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return to_jsonable(asdict(self))


@dataclass(frozen=True)
class FidelityReport:
    """Result of :func:`gradient_fidelity`.

    Attributes
    ----------
    config : dict
        The model's :class:`ViTConfig`.
    batch : int
    loss : float
    lbp : dict of str to dict
        The LBP-WHT layers and their settings (:meth:`LBPSetting.to_dict`).
    parameters : list of ParameterError
        Every parameter, forward order.
    layers : list of LayerReport
        Every linear layer, forward order.
    dense_linear_flops : int
        Backward FLOPs of all linear layers, exact.
    lbp_linear_flops : int
        Backward FLOPs of all linear layers with the selection.
    attention_flops : int
        Backward FLOPs of the attention matrix products (unchanged by LBP-WHT).

    Examples
    --------
    >>> import json
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, gradient_fidelity
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2))
    >>> rep = gradient_fidelity(model, images, labels, "all", patch=4, bases="lp_l1:3")
    >>> rep.max_rel_error > 0, rep.errors()["head.weight"]
    (True, 0.0)
    >>> sorted(json.loads(rep.to_json()))[:3]
    ['attention_flops', 'batch', 'config']
    """

    config: dict
    batch: int
    loss: float
    lbp: dict
    parameters: list
    layers: list
    dense_linear_flops: int
    lbp_linear_flops: int
    attention_flops: int

    @property
    def linear_flops_saved_fraction(self) -> float:
        """Fraction of the linear layers' backward FLOPs saved."""
        return 1.0 - self.lbp_linear_flops / self.dense_linear_flops

    @property
    def total_flops_saved_fraction(self) -> float:
        """Fraction saved of linear plus attention-GEMM backward FLOPs."""
        total = self.dense_linear_flops + self.attention_flops
        return (self.dense_linear_flops - self.lbp_linear_flops) / total

    @property
    def max_rel_error(self) -> float:
        """Largest relative error over all parameter gradients."""
        return max(pe.rel_error for pe in self.parameters)

    def errors(self) -> dict:
        """``{parameter name: relative error}``."""
        return {pe.name: pe.rel_error for pe in self.parameters}

    def to_dict(self) -> dict:
        """JSON-ready dict, with the derived fractions and ``max_rel_error``."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["parameters"] = [pe.to_dict() for pe in self.parameters]
        d["layers"] = [lr.to_dict() for lr in self.layers]
        d["linear_flops_saved_fraction"] = self.linear_flops_saved_fraction
        d["total_flops_saved_fraction"] = self.total_flops_saved_fraction
        d["max_rel_error"] = self.max_rel_error
        return to_jsonable(d)

    def to_json(self, **kwargs) -> str:
        """:func:`json.dumps` of :meth:`to_dict` (keyword arguments passed on)."""
        return json.dumps(self.to_dict(), **kwargs)

    def table(self) -> str:
        """Plain-text table: one row per parameter, with each linear layer's method and cost."""
        by_layer = {lr.name: lr for lr in self.layers}
        lines = [f"{'parameter':<28} {'method':<14} {'rel err':>9} {'cosine':>8} {'bwd MFLOP':>10} {'dense':>9}"]
        for pe in self.parameters:
            lr = by_layer.get(pe.layer)
            method = "" if lr is None else ("dense" if lr.method == "dense" else f"lbp {lr.bases}/{lr.patch}")
            cost = ("", "") if lr is None or not pe.name.endswith(".weight") else (
                f"{lr.backward_flops / 1e6:.2f}", f"{lr.dense_flops / 1e6:.2f}")
            cos = "-" if pe.cosine is None else f"{pe.cosine:.5f}"
            lines.append(f"{pe.name:<28} {method:<14} {pe.rel_error:>9.2e} {cos:>8} {cost[0]:>10} {cost[1]:>9}")
        lines.append(
            f"linear backward: {self.lbp_linear_flops / 1e6:.2f} / {self.dense_linear_flops / 1e6:.2f} MFLOP "
            f"({100 * self.linear_flops_saved_fraction:.1f}% saved; attention GEMMs "
            f"{self.attention_flops / 1e6:.2f} MFLOP unchanged)"
        )
        return "\n".join(lines)


def _compare(a, b):
    """(rel_error, cosine, max_abs_error, ||b||) of approximation ``a`` against exact ``b``, in float64."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    nb, na = float(np.linalg.norm(b)), float(np.linalg.norm(a))
    rel = relative_error(a, b)
    cos = float(a @ b) / (na * nb) if na > 0 and nb > 0 else None  # None: undefined for a zero vector
    mx = float(np.max(np.abs(a - b))) if a.size else 0.0
    return rel, cos, mx, nb


def capture_linear_io(model, images, labels):
    """The ``(x, weight, grad_y)`` every linear layer sees in the exact backward.

    Parameters
    ----------
    model : TinyViT
    images : ndarray, shape (B, in_chans, image_size, image_size)
    labels : ndarray of int, shape (B,)

    Returns
    -------
    dict of str to LayerIO
        Forward order (``patch_embed``, blocks, ``head``).  Token layers have
        ``x`` (B, L, C_in) and ``grad_y`` (B, L, C_out) on ``grid``; the head
        has ``x`` (B, C) and ``grad_y`` (B, num_classes).

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, capture_linear_io
    >>> images, labels = image_batch(batch=2, size=16)
    >>> io = capture_linear_io(TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2)), images, labels)
    >>> list(io)
    ['patch_embed', 'blocks.0.attn.qkv', 'blocks.0.attn.proj', 'blocks.0.mlp.fc1', 'blocks.0.mlp.fc2', 'head']
    >>> io["patch_embed"].x.shape, io["head"].x.shape
    ((2, 16, 48), (2, 8))
    """
    _, cache = model.forward(images, labels)
    return model.backward(cache, capture=True).captured


def gradient_fidelity(model, images, labels, lbp, *, patch=8, bases="lp_l1:6", pad="reflect"):
    """Every parameter gradient under LBP-WHT against the exact backward, with costs.

    One forward pass; one exact backward (capturing each layer's
    ``(x, weight, grad_y)``) and one backward with the selected LBP-WHT layers.
    Errors are reported for every parameter, so the effect of an approximate
    layer on all the layers before it (the backward order) is visible.

    Parameters
    ----------
    model : TinyViT
    images : ndarray, shape (B, in_chans, image_size, image_size)
    labels : ndarray of int, shape (B,)
    lbp : None, str, iterable or mapping
        The LBP-WHT layers (see :meth:`TinyViT.resolve_lbp`).
    patch, bases, pad : optional
        Default setting of the selected layers (``8``, ``"lp_l1:6"``, ``"reflect"``).

    Returns
    -------
    FidelityReport

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, gradient_fidelity
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=16, depth=1, heads=2, dtype="float64"))
    >>> rep = gradient_fidelity(model, images, labels, "all", patch=4, bases="lp_l1:7")
    >>> rep.max_rel_error < 1e-12  # every basis: exact
    True
    """
    loss, cache = model.forward(images, labels)
    exact = model.backward(cache, capture=True)
    approx = model.backward(cache, lbp=lbp, patch=patch, bases=bases, pad=pad)
    settings = approx.lbp
    batch = int(cache.logits.shape[0])
    itemsize = np.dtype(model.config.dtype).itemsize

    params = []
    for name in model.params:
        rel, cos, mx, nb = _compare(approx.grads[name], exact.grads[name])
        params.append(ParameterError(name, model.layer_of(name), tuple(model.params[name].shape), nb, rel, cos, mx))
    perr = {pe.name: pe for pe in params}

    layers = []
    dense_total = lbp_total = 0
    for name, info in model.layers.items():
        io = exact.captured[name]
        x_shape = tuple(io.x.shape)
        setting = settings.get(name)
        if info.on_grid:
            cost = lbpcore.backward_cost(
                x_shape, info.out_features, grid=info.grid, extra_tokens=info.extra_tokens, itemsize=itemsize,
                **({} if setting is None else {"patch": setting.patch, "bases": setting.bases, "pad": setting.pad}),
            )
            dense = int(cost.dense_flops)
        else:
            cost = None
            dense = 4 * int(np.prod(x_shape)) * info.out_features
        local = kept = None
        if setting is None:
            used, gemm, proj, speed = dense, dense, 0, 1.0
        else:
            used, gemm, proj = int(cost.lbp_flops), int(cost.lbp_gemm_flops), int(cost.projection_flops)
            speed = float(cost.ideal_speedup)
            g_local = lbpcore.lbp_backward(
                io.x, io.weight, io.grad_y, grid=info.grid, patch=setting.patch, bases=setting.bases,
                pad=setting.pad, extra_tokens=info.extra_tokens,
            ).grad_weight
            local = _compare(g_local, exact.grads[name + ".weight"])[0]
            gy = np.asarray(io.grad_y, dtype=np.float64)
            pg = lbpcore.apply_projector(gy, grid=info.grid, patch=setting.patch, bases=setting.bases,
                                         pad=setting.pad, extra_tokens=info.extra_tokens)
            e = info.extra_tokens
            denom = float(np.sum(gy[:, e:] ** 2))
            kept = float(np.sum(pg[:, e:] ** 2)) / denom if denom > 0 else 1.0
        dense_total += dense
        lbp_total += used
        w = perr[name + ".weight"]
        layers.append(LayerReport(
            name=name,
            method="dense" if setting is None else "lbp",
            bases=None if setting is None else setting.spec,
            patch=None if setting is None else int(setting.patch),
            rank=None if setting is None else int(setting.basis.rank),
            grid=info.grid,
            extra_tokens=info.extra_tokens,
            x_shape=x_shape,
            out_features=info.out_features,
            dense_flops=dense,
            backward_flops=used,
            gemm_flops=gemm,
            projection_flops=proj,
            flops_saved=dense - used,
            ideal_speedup=speed,
            weight_rel_error=w.rel_error,
            weight_cosine=w.cosine,
            bias_rel_error=perr[name + ".bias"].rel_error,
            local_weight_rel_error=local,
            grad_y_energy_kept=kept,
        ))
    return FidelityReport(
        config=model.config.to_dict(),
        batch=batch,
        loss=float(loss),
        lbp={n: s.to_dict() for n, s in settings.items()},
        parameters=params,
        layers=layers,
        dense_linear_flops=dense_total,
        lbp_linear_flops=lbp_total,
        attention_flops=model.config.depth * model.attention_backward_flops(batch),
    )
