"""Token, normalization, activation, pooling and loss operations of the ViT, forward beside backward (exact).

Every operation is a pair ``op_forward(...) -> (out, cache)`` and
``op_backward(grad, cache) -> grads``; the cache is a small named tuple, or
None where the backward needs nothing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "cls_token_forward",
    "cls_token_backward",
    "pos_embed_forward",
    "pos_embed_backward",
    "LayerNormCache",
    "layernorm_forward",
    "layernorm_backward",
    "GeluCache",
    "gelu_forward",
    "gelu_backward",
    "residual_forward",
    "residual_backward",
    "MeanPoolCache",
    "mean_pool_forward",
    "mean_pool_backward",
    "CrossEntropyCache",
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
    >>> from analysis.vit import cls_token_forward
    >>> out, cache = cls_token_forward(np.zeros((2, 4, 3)), np.ones(3))
    >>> out.shape, out[:, 0].tolist()
    ((2, 5, 3), [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
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
        Summed over the batch.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import cls_token_backward
    >>> gx, gt = cls_token_backward(np.ones((2, 5, 3)))
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
    >>> from analysis.vit import pos_embed_forward
    >>> out, cache = pos_embed_forward(np.zeros((2, 4, 3)), np.ones((4, 3)))
    >>> float(out.sum()), cache is None
    (24.0, True)
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
        Summed over the batch.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import pos_embed_backward
    >>> gx, gpos = pos_embed_backward(np.ones((2, 4, 3)))
    >>> gpos.shape, float(gpos[0, 0])
    ((4, 3), 2.0)
    """
    return grad, grad.sum(axis=0)


class LayerNormCache(NamedTuple):
    """What :func:`layernorm_forward` keeps for :func:`layernorm_backward`.

    Attributes
    ----------
    xhat : ndarray, shape (..., C)
        Normalized input ``(x - mean) / sqrt(var + eps)``.
    rstd : ndarray, shape (..., 1)
        Reciprocal standard deviation ``1 / sqrt(var + eps)`` per token.
    gamma : ndarray, shape (C,)

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import layernorm_forward
    >>> cache = layernorm_forward(np.array([[1.0, 3.0]]), np.ones(2), np.zeros(2), eps=0.0)[1]
    >>> cache.xhat.tolist(), cache.rstd.tolist()
    ([[-1.0, 1.0]], [[1.0]])
    """

    xhat: np.ndarray
    rstd: np.ndarray
    gamma: np.ndarray


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
    cache : LayerNormCache

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import layernorm_forward
    >>> y, cache = layernorm_forward(np.array([[1.0, 2.0, 3.0]]), np.ones(3), np.zeros(3))
    >>> np.round(y, 4)
    array([[-1.2247,  0.    ,  1.2247]])
    """
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd
    return xhat * gamma + beta, LayerNormCache(xhat, rstd, gamma)


def layernorm_backward(grad, cache):
    """Backward of :func:`layernorm_forward`.

    Parameters
    ----------
    grad : ndarray, shape (..., C)
    cache : LayerNormCache

    Returns
    -------
    grad_x : ndarray, shape (..., C)
    grad_gamma, grad_beta : ndarray, shape (C,)

    Examples
    --------
    A gradient that is the same on every channel does not reach ``x`` (the
    normalization removes the mean):

    >>> import numpy as np
    >>> from analysis.vit import layernorm_forward, layernorm_backward
    >>> _, cache = layernorm_forward(np.array([[1.0, 2.0, 3.0]]), np.ones(3), np.zeros(3))
    >>> gx, ggamma, gbeta = layernorm_backward(np.ones((1, 3)), cache)
    >>> np.round(gx, 6) + 0.0, np.round(ggamma, 4), gbeta.tolist()
    (array([[0., 0., 0.]]), array([-1.2247,  0.    ,  1.2247]), [1.0, 1.0, 1.0])
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


class GeluCache(NamedTuple):
    """What :func:`gelu_forward` keeps for :func:`gelu_backward`.

    Attributes
    ----------
    x : ndarray
        Input.
    approximate : {"tanh", "none"}
    tanh : ndarray or None
        ``tanh(sqrt(2/pi) (x + 0.044715 x^3))`` for ``"tanh"``, else None.
    cdf : ndarray or None
        ``Phi(x)``, the standard normal CDF, for ``"none"``, else None.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import gelu_forward
    >>> cache = gelu_forward(np.array([0.0]), approximate="none")[1]
    >>> cache.approximate, cache.tanh, cache.cdf.tolist()
    ('none', None, [0.5])
    """

    x: np.ndarray
    approximate: str
    tanh: np.ndarray | None = None
    cdf: np.ndarray | None = None


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
    cache : GeluCache

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import gelu_forward
    >>> y, cache = gelu_forward(np.array([-1.0, 0.0, 1.0]))
    >>> np.round(y, 4)
    array([-0.1588,  0.    ,  0.8412])
    >>> np.round(gelu_forward(np.array([1.0]), approximate="none")[0], 4)
    array([0.8413])
    """
    if approximate == "tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * (x * x * x)))  # x**3 is slow for float32
        return 0.5 * x * (1.0 + t), GeluCache(x, approximate, tanh=t)
    if approximate == "none":
        phi = (0.5 * (1.0 + _erf(x / math.sqrt(2.0)))).astype(x.dtype)
        return x * phi, GeluCache(x, approximate, cdf=phi)
    raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")


def gelu_backward(grad, cache):
    """Backward of :func:`gelu_forward` (the exact derivative of the chosen form).

    Parameters
    ----------
    grad : ndarray, shape of ``x``
    cache : GeluCache

    Returns
    -------
    grad_x : ndarray, shape of ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import gelu_forward, gelu_backward
    >>> _, cache = gelu_forward(np.array([-1.0, 0.0, 1.0]))
    >>> np.round(gelu_backward(np.ones(3), cache), 4)
    array([-0.083,  0.5  ,  1.083])
    """
    x = cache.x
    if cache.approximate == "tanh":
        t = cache.tanh
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * x * x)
        return grad * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # d/dx x Phi(x) = Phi(x) + x pdf(x)
    return grad * (cache.cdf + x * pdf)


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
    >>> from analysis.vit import residual_forward
    >>> out, cache = residual_forward(np.ones(3), np.arange(3.0))
    >>> out.tolist()
    [1.0, 2.0, 3.0]
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
    >>> from analysis.vit import residual_backward
    >>> [g.tolist() for g in residual_backward(np.ones(3))]
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    return grad, grad


class MeanPoolCache(NamedTuple):
    """What :func:`mean_pool_forward` keeps for :func:`mean_pool_backward`.

    Attributes
    ----------
    shape : (int, int, int)
        Input shape ``(B, L, C)``.
    tokens : slice
        The pooled tokens.
    count : int
        How many tokens the slice selects.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import mean_pool_forward
    >>> mean_pool_forward(np.zeros((2, 5, 3)), start=1)[1]
    MeanPoolCache(shape=(2, 5, 3), tokens=slice(1, None, None), count=4)
    """

    shape: tuple
    tokens: slice
    count: int


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
    cache : MeanPoolCache

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import mean_pool_forward
    >>> out, cache = mean_pool_forward(np.arange(12.0).reshape(1, 4, 3), start=1)
    >>> out.tolist()
    [[6.0, 7.0, 8.0]]
    """
    tokens = slice(start, stop)
    count = len(range(*tokens.indices(x.shape[1])))
    if count == 0:
        raise ValueError(f"empty token range {start}:{stop} for {x.shape[1]} tokens")
    return x[:, tokens].mean(axis=1), MeanPoolCache(x.shape, tokens, count)


def mean_pool_backward(grad, cache):
    """Backward of :func:`mean_pool_forward`.

    Parameters
    ----------
    grad : ndarray, shape (B, C)
    cache : MeanPoolCache

    Returns
    -------
    grad_x : ndarray, shape (B, L, C)
        ``grad / count`` on the pooled tokens, zero elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import mean_pool_forward, mean_pool_backward
    >>> _, cache = mean_pool_forward(np.zeros((1, 4, 3)), start=1)
    >>> mean_pool_backward(np.ones((1, 3)), cache)[0, :, 0].tolist()
    [0.0, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    gx = np.zeros(cache.shape, dtype=grad.dtype)
    gx[:, cache.tokens] = (grad / cache.count)[:, None, :]
    return gx


class CrossEntropyCache(NamedTuple):
    """What :func:`softmax_cross_entropy_forward` keeps for :func:`softmax_cross_entropy_backward`.

    Attributes
    ----------
    prob : ndarray, shape (B, K)
        Softmax probabilities.
    labels : ndarray of int, shape (B,)

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import softmax_cross_entropy_forward
    >>> softmax_cross_entropy_forward(np.zeros((1, 2)), np.array([1]))[1].prob.tolist()
    [[0.5, 0.5]]
    """

    prob: np.ndarray
    labels: np.ndarray


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
    cache : CrossEntropyCache

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import softmax_cross_entropy_forward
    >>> loss, cache = softmax_cross_entropy_forward(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(loss, 6) == round(float(np.log(4)), 6)
    True
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
    return loss, CrossEntropyCache(prob, labels)


def softmax_cross_entropy_backward(grad, cache):
    """Backward of :func:`softmax_cross_entropy_forward`.

    Parameters
    ----------
    grad : float
        Gradient of the final objective with respect to the loss (1.0 for the loss itself).
    cache : CrossEntropyCache

    Returns
    -------
    grad_logits : ndarray, shape (B, K)
        ``grad * (softmax(logits) - onehot(labels)) / B``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import softmax_cross_entropy_forward, softmax_cross_entropy_backward
    >>> _, cache = softmax_cross_entropy_forward(np.zeros((2, 4)), np.array([0, 3]))
    >>> softmax_cross_entropy_backward(1.0, cache)[0].tolist()
    [-0.375, 0.125, 0.125, 0.125]
    """
    b = cache.prob.shape[0]
    g = cache.prob.copy()
    g[np.arange(b), cache.labels] -= 1.0
    return g * (grad / b)
