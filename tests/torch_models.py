"""A small timm-style vision transformer and autograd helpers, for the tests of ``lbpcore.torch``.

Imported only by test modules that skip without PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from analysis.torch_models.vit import VisionTransformer


def make_vit(seed=0, dtype=torch.float64, image_size=32, patch_size=4, dim=16, depth=2, heads=2, num_classes=5):
    """A seeded small timm-style ViT (:mod:`analysis.torch_models.vit`), a batch of images and labels.

    Tokens: 1 class token + ``(image_size // patch_size) ** 2`` grid tokens
    (``model.grid_size``).
    """
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=image_size, patch_size=patch_size, embed_dim=dim, depth=depth,
                              num_heads=heads, num_classes=num_classes).to(dtype)
    images = torch.randn(4, 3, image_size, image_size, dtype=dtype)
    labels = torch.arange(4) % num_classes
    return model, images, labels


def loss_of(model, images, labels):
    return nn.functional.cross_entropy(model(images), labels)


def grads_of(fn, tensors, grad_y):
    """``[y, *grads]``: ``y = fn(*leaves)`` on fresh leaf copies of ``tensors``, backward with ``grad_y``."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    y = fn(*leaves)
    y.backward(grad_y)
    return [y.detach()] + [t.grad for t in leaves]


def random_layer(layout, dtype, grid, c_in, c_out, extra_tokens=0, batch=3, seed=0):
    """Seeded ``(x, weight, bias, grad_y)`` of a layer on ``grid``: tokens ``(B, e + h*w, C)`` or maps."""
    g = torch.Generator().manual_seed(seed)
    length = extra_tokens + grid[0] * grid[1]
    x_shape, gy_shape = ((batch, length, c_in), (batch, length, c_out)) if layout == "tokens" else \
        ((batch, c_in, *grid), (batch, c_out, *grid))
    return (torch.randn(x_shape, generator=g, dtype=dtype), torch.randn(c_out, c_in, generator=g, dtype=dtype),
            torch.randn(c_out, generator=g, dtype=dtype), torch.randn(gy_shape, generator=g, dtype=dtype))
