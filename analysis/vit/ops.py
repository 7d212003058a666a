"""The other operations of the ViT, each forward beside its backward (always exact).

Every operation is a pair ``op_forward(...) -> (out, cache)`` and
``op_backward(grad, cache) -> grads``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
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
]


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
