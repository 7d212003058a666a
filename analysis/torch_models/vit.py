"""Plain-PyTorch replica of timm's ``VisionTransformer`` (ViT and distilled DeiT).

Same module names, parameter shapes and token layout as
``timm.models.vision_transformer``: ``patch_embed.proj`` (a strided
convolution), a class token (and, for DeiT, a distillation token) in front of
the ``14 x 14`` patch tokens of a 224 image, ``blocks.N.{norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm`` and ``head``.  Random
initialization only (no weights are downloaded); the init follows timm's in
scale (truncated normal, std 0.02), not bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VisionTransformer"]


class PatchEmbed(nn.Module):
    """Image ``(B, 3, H, W)`` to patch tokens ``(B, (H/p)(W/p), D)`` by a ``p x p`` convolution of stride ``p``."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        """``(B, 3, H, W)`` -> ``(B, N, D)`` (NCHW flattened, channels last, as timm's ``flatten=True``)."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2`` on the last axis (timm's ``Mlp``, dropout 0)."""

    def __init__(self, in_features, hidden_features, out_features=None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x):
        """``(..., C)`` -> ``(..., C_out)``."""
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (timm's ``Attention``)."""

    def __init__(self, dim, num_heads=8, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        """``(B, N, C)`` -> ``(B, N, C)``."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        """``(B, N, C)`` -> ``(B, N, C)``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """timm's ``VisionTransformer`` (class-token pooling), optionally with DeiT's distillation token.

    Parameters
    ----------
    img_size, patch_size : int, optional
        Default 224 and 16: a ``14 x 14`` token grid.
    embed_dim, depth, num_heads : int, optional
        Default 768, 12, 12 (ViT-B).
    mlp_ratio : float, optional
        Default 4.
    num_classes : int, optional
        Default 1000.
    distilled : bool, optional
        Add DeiT's distillation token (then two extra tokens precede the grid)
        and its ``head_dist``; the output is the mean of both heads (timm's
        inference output).

    Attributes
    ----------
    num_prefix_tokens : int
        Tokens in front of the grid: 1 (class), or 2 with ``distilled``.
    grid_size : (int, int)
        The token grid.

    Examples
    --------
    >>> import torch
    >>> from analysis.torch_models.vit import VisionTransformer
    >>> model = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    >>> model.grid_size, model.pos_embed.shape, model(torch.randn(2, 3, 32, 32)).shape
    ((4, 4), torch.Size([1, 17, 16]), torch.Size([2, 3]))
    """

    def __init__(self, img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 num_classes=1000, distilled=False):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        self.grid_size = self.patch_embed.grid_size
        self.num_prefix_tokens = 2 if distilled else 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + self.num_prefix_tokens,
                                                  embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self.head_dist = nn.Linear(embed_dim, num_classes) if distilled else None
        for p in (self.pos_embed, self.cls_token, self.dist_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        self.apply(init_linear)

    def forward(self, x):
        """Images ``(B, 3, H, W)`` -> logits ``(B, num_classes)``."""
        x = self.patch_embed(x)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat(prefix + [x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        if self.head_dist is None:
            return self.head(x[:, 0])
        return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2


def init_linear(m):
    """timm's ViT init in scale: truncated normal weights (std 0.02), zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
