"""Multi-head self-attention of the ViT, forward beside its backward (always exact).

The attention matrix products do not shrink under LBP-WHT; their backward cost
is :meth:`analysis.vit.TinyViT.attention_backward_flops`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["AttentionCache", "attention_forward", "attention_backward"]


class AttentionCache(NamedTuple):
    """What :func:`attention_forward` keeps for :func:`attention_backward`.

    Attributes
    ----------
    q, k, v : ndarray, shape (B, heads, L, d)
        Queries, keys and values per head.
    attn : ndarray, shape (B, heads, L, L)
        Attention weights ``softmax(q k^T * scale)``.
    scale : float
        ``1 / sqrt(d)``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import attention_forward
    >>> cache = attention_forward(np.zeros((1, 3, 12)), heads=2)[1]
    >>> cache.q.shape, cache.attn[0, 0, 0].tolist(), cache.scale
    ((1, 2, 3, 2), [0.3333333333333333, 0.3333333333333333, 0.3333333333333333], 0.7071067811865475)
    """

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    attn: np.ndarray
    scale: float


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
    cache : AttentionCache

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import attention_forward
    >>> out, cache = attention_forward(np.random.default_rng(0).standard_normal((2, 5, 12)), heads=2)
    >>> out.shape, cache.attn.shape, bool(np.allclose(cache.attn.sum(axis=-1), 1.0))
    ((2, 5, 4), (2, 2, 5, 5), True)
    """
    batch, tokens, width3 = qkv.shape
    if width3 % (3 * heads):
        raise ValueError(f"qkv channels {width3} must be divisible by 3 * heads = {3 * heads}")
    d = width3 // (3 * heads)
    t = qkv.reshape(batch, tokens, 3, heads, d).transpose(2, 0, 3, 1, 4)
    q, k, v = (np.ascontiguousarray(t[i]) for i in range(3))
    scale = 1.0 / math.sqrt(d)
    s = (q @ k.transpose(0, 1, 3, 2)) * scale
    s = s - s.max(axis=-1, keepdims=True)
    a = np.exp(s)
    a /= a.sum(axis=-1, keepdims=True)
    o = a @ v  # (B, H, L, d)
    out = np.ascontiguousarray(o.transpose(0, 2, 1, 3).reshape(batch, tokens, heads * d))
    return out, AttentionCache(q, k, v, a, scale)


def attention_backward(grad, cache):
    """Backward of :func:`attention_forward`.

    Parameters
    ----------
    grad : ndarray, shape (B, L, C)
    cache : AttentionCache

    Returns
    -------
    grad_qkv : ndarray, shape (B, L, 3 C)
        In the layout of ``qkv``.

    Examples
    --------
    Equal values make the output independent of the queries and keys:

    >>> import numpy as np
    >>> from analysis.vit import attention_forward, attention_backward
    >>> qkv = np.random.default_rng(0).standard_normal((2, 5, 12)); qkv[..., 8:] = 1.0
    >>> out, cache = attention_forward(qkv, heads=2)
    >>> g = attention_backward(np.ones_like(out), cache)
    >>> g.shape, float(abs(g[..., :8]).max()) < 1e-12
    ((2, 5, 12), True)
    """
    q, k, v, a, scale = cache
    batch, heads, tokens, d = q.shape
    go = grad.reshape(batch, tokens, heads, d).transpose(0, 2, 1, 3)
    ga = go @ v.transpose(0, 1, 3, 2)  # (B, H, L, L)
    gv = a.transpose(0, 1, 3, 2) @ go
    gs = a * (ga - (ga * a).sum(axis=-1, keepdims=True))
    gs *= scale
    gq = gs @ k
    gk = gs.transpose(0, 1, 3, 2) @ q
    g = np.stack([gq, gk, gv])  # (3, B, H, L, d)
    return np.ascontiguousarray(g.transpose(1, 3, 0, 2, 4).reshape(batch, tokens, 3 * heads * d))
