"""The linear layers of the ViT: forward, and an exact or LBP-WHT backward.

``linear`` runs through :func:`lbpcore.linear` and back through
:func:`lbpcore.dense_backward` or, with an :class:`~analysis.vit.LBPSetting`,
:func:`lbpcore.lbp_backward` on the token grid; ``patch_embed`` is ``patchify``
followed by ``linear``.  Each forward returns ``(out, cache)`` with a typed
cache that its backward takes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

import lbpcore

__all__ = [
    "LinearCache",
    "linear_forward",
    "linear_backward",
    "PatchifyCache",
    "patchify_forward",
    "patchify_backward",
    "PatchEmbedCache",
    "patch_embed_forward",
    "patch_embed_backward",
]


class LinearCache(NamedTuple):
    """What :func:`linear_forward` keeps for :func:`linear_backward`.

    Attributes
    ----------
    x : ndarray, shape (..., C_in)
        Layer input.
    weight : ndarray, shape (C_out, C_in)
    bias : ndarray of shape (C_out,), or None

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import linear_forward
    >>> linear_forward(np.ones((2, 3)), np.ones((4, 3)))[1].weight.shape
    (4, 3)
    """

    x: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None


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
    cache : LinearCache

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import linear_forward
    >>> y, cache = linear_forward(np.ones((2, 5, 3)), np.ones((4, 3)), np.zeros(4))
    >>> y.shape, float(y[0, 0, 0])
    ((2, 5, 4), 3.0)
    """
    y = lbpcore.linear(x, weight, bias)
    return y, LinearCache(x, weight, bias)


def linear_backward(grad_y, cache, *, lbp=None, grid=None, extra_tokens=0):
    """Backward of :func:`linear_forward`, exact or LBP-WHT.

    Parameters
    ----------
    grad_y : ndarray, shape (..., C_out)
    cache : LinearCache
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
    if lbp is None:
        g = lbpcore.dense_backward(cache.x, cache.weight, grad_y, bias=cache.bias)
    else:
        if grid is None:
            raise ValueError("grid=(h, w) is required for an LBP-WHT backward")
        g = lbpcore.lbp_backward(
            cache.x, cache.weight, grad_y, grid=grid, patch=lbp.patch, bases=lbp.bases, pad=lbp.pad,
            extra_tokens=extra_tokens, bias=cache.bias,
        )
    return g.grad_x, g.grad_weight, g.grad_bias


class PatchifyCache(NamedTuple):
    """What :func:`patchify_forward` keeps for :func:`patchify_backward`.

    Attributes
    ----------
    shape : (int, int, int, int)
        Image batch shape ``(B, C, H, W)``.
    patch : int
        Pixel patch side ``p``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import patchify_forward
    >>> patchify_forward(np.zeros((2, 3, 8, 8)), 4)[1]
    PatchifyCache(shape=(2, 3, 8, 8), patch=4)
    """

    shape: tuple
    patch: int


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
    cache : PatchifyCache

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import patchify_forward
    >>> images = np.arange(2 * 3 * 8 * 8.0).reshape(2, 3, 8, 8)
    >>> tokens, cache = patchify_forward(images, 4)
    >>> tokens.shape, tokens[0, 1, :4].tolist()  # token (0, 1): channel 0, first pixel row
    ((2, 4, 48), [4.0, 5.0, 6.0, 7.0])
    """
    b, c, h, w = images.shape
    p = int(patch)
    if p < 1 or h % p or w % p:
        raise ValueError(f"patch must be a positive divisor of the image size {(h, w)}, got {patch}")
    t = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(t.reshape(b, (h // p) * (w // p), c * p * p)), PatchifyCache(images.shape, p)


def patchify_backward(grad, cache):
    """Backward of :func:`patchify_forward` (the inverse rearrangement).

    Parameters
    ----------
    grad : ndarray, shape (B, (H/p) * (W/p), C * p * p)
    cache : PatchifyCache

    Returns
    -------
    grad_images : ndarray, shape (B, C, H, W)

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import patchify_forward, patchify_backward
    >>> images = np.arange(2 * 3 * 8 * 8.0).reshape(2, 3, 8, 8)
    >>> tokens, cache = patchify_forward(images, 4)
    >>> bool(np.array_equal(patchify_backward(tokens, cache), images))
    True
    """
    (b, c, h, w), p = cache
    g = grad.reshape(b, h // p, w // p, c, p, p).transpose(0, 3, 1, 4, 2, 5)
    return np.ascontiguousarray(g.reshape(b, c, h, w))


class PatchEmbedCache(NamedTuple):
    """What :func:`patch_embed_forward` keeps for :func:`patch_embed_backward`.

    Attributes
    ----------
    patchify : PatchifyCache
    linear : LinearCache
        Of the linear layer on the pixel-patch tokens.
    grid : (int, int)
        Token grid ``(H/p, W/p)``.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import patch_embed_forward
    >>> cache = patch_embed_forward(np.ones((2, 3, 8, 4)), np.ones((5, 12)), np.zeros(5), 2)[1]
    >>> cache.grid, cache.linear.x.shape
    ((4, 2), (2, 8, 12))
    """

    patchify: PatchifyCache
    linear: LinearCache
    grid: tuple


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
    cache : PatchEmbedCache

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.vit import patch_embed_forward
    >>> tokens, cache = patch_embed_forward(np.ones((2, 3, 8, 8)), np.ones((5, 12)), np.zeros(5), 2)
    >>> tokens.shape, cache.grid
    ((2, 16, 5), (4, 4))
    """
    t, patchify_cache = patchify_forward(images, patch)
    y, linear_cache = linear_forward(t, weight, bias)
    grid = (images.shape[2] // int(patch), images.shape[3] // int(patch))
    return y, PatchEmbedCache(patchify_cache, linear_cache, grid)


def patch_embed_backward(grad, cache, *, lbp=None):
    """Backward of :func:`patch_embed_forward`.

    Parameters
    ----------
    grad : ndarray, shape (B, L, D)
    cache : PatchEmbedCache
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
    >>> tokens, cache = patch_embed_forward(np.ones((2, 3, 8, 8)), np.ones((5, 12)), np.zeros(5), 2)
    >>> [g.shape for g in patch_embed_backward(np.ones_like(tokens), cache)]
    [(2, 3, 8, 8), (5, 12), (5,)]
    """
    gt, gw, gb = linear_backward(grad, cache.linear, lbp=lbp, grid=cache.grid)
    return patchify_backward(gt, cache.patchify), gw, gb
