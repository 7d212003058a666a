"""A small vision transformer in plain PyTorch and autograd helpers, for the tests of ``lbpcore.torch``.

Imported only by test modules that skip without PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / (dim // self.heads) ** 0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding (a strided convolution), a class token, ``depth`` blocks, a linear head.

    Tokens: 1 class token + ``(image_size // patch_size) ** 2`` grid tokens.
    """

    def __init__(self, image_size=32, patch_size=4, dim=16, depth=2, heads=2, num_classes=5):
        super().__init__()
        self.grid = (image_size // patch_size,) * 2
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 1 + self.grid[0] * self.grid[1], dim))
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def make_vit(seed=0, dtype=torch.float64, **kwargs):
    """A seeded :class:`ViT`, a batch of images and labels."""
    torch.manual_seed(seed)
    model = ViT(**kwargs).to(dtype)
    size = kwargs.get("image_size", 32)
    images = torch.randn(4, 3, size, size, dtype=dtype)
    labels = torch.arange(4) % kwargs.get("num_classes", 5)
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
