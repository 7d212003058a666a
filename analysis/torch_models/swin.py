"""Plain-PyTorch replica of timm's ``SwinTransformer`` (Swin-T: windowed attention, four resolutions).

Same module names, parameter shapes and layouts as timm's (0.9 and later)
``timm.models.swin_transformer``: ``patch_embed`` (4x4 convolution, channels
last), four ``layers`` (stages) at 56, 28, 14 and 7 tokens across a 224 image,
each but the first starting with a ``downsample`` (``PatchMerging``: its
``reduction`` is an ``nn.Linear`` on ``(B, H/2, W/2, 4C)``), then ``blocks``
whose attention ``attn.qkv``/``attn.proj`` sees the ``(B * windows, 49, C)``
tokens of 7x7 windows (shifted every other block) and whose MLP
``mlp.fc1``/``mlp.fc2`` sees ``(B, H, W, C)`` maps; ``norm`` and ``head.fc``.
One ``grid`` cannot describe these layers; ``grid="auto"`` gives each its own.
Random initialization only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vit import Mlp, init_linear

__all__ = ["SwinTransformer"]


def window_partition(x, ws):
    """``(B, H, W, C)`` -> ``(B * H/ws * W/ws, ws*ws, C)`` windows, row-major within each."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows, ws, h, w):
    """Inverse of :func:`window_partition`."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


class WindowAttention(nn.Module):
    """Multi-head attention within windows, with a relative-position bias table."""

    def __init__(self, dim, num_heads, window_size=7):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
        rel = (coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window_size - 1) + rel[..., 1],
                             persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask=None):
        """``(B * windows, N, C)`` -> same; ``mask`` ``(windows, N, N)`` of 0 / -100 for shifted windows."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).repeat(b // nw, 1, 1, 1)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


def _shift_mask(h, w, ws, shift):
    """The attention mask of shifted windows: 0 within a region, -100 across regions."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).squeeze(-1)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0)


class SwinTransformerBlock(nn.Module):
    """``x + attn(norm1(x))`` in (shifted) windows, then ``x + mlp(norm2(x))``, on ``(B, H, W, C)``."""

    def __init__(self, dim, resolution, num_heads, window_size=7, shift=False, mlp_ratio=4.0):
        super().__init__()
        self.resolution = resolution
        self.window_size = min(window_size, resolution)
        self.shift_size = window_size // 2 if shift and resolution > window_size else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, self.window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = _shift_mask(resolution, resolution, self.window_size, self.shift_size) if self.shift_size else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def _attn(self, x):
        b, h, w, c = x.shape
        s, ws = self.shift_size, self.window_size
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        x = window_reverse(self.attn(window_partition(x, ws), self.attn_mask), ws, h, w)
        return torch.roll(x, shifts=(s, s), dims=(1, 2)) if s else x

    def forward(self, x):
        """``(B, H, W, C)`` -> same."""
        x = x + self._attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated, ``norm``, ``reduction`` (``nn.Linear(4C, 2C)``, no bias) on ``(B, H, W, C)``."""

    def __init__(self, dim, out_dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x):
        """``(B, H, W, C)`` -> ``(B, H/2, W/2, 2C)``."""
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinTransformerStage(nn.Module):
    """``downsample`` (``PatchMerging``, or nothing in the first stage), then ``blocks``."""

    def __init__(self, dim, out_dim, resolution, depth, num_heads, window_size, downsample):
        super().__init__()
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[SwinTransformerBlock(out_dim, resolution, num_heads, window_size,
                                                           shift=i % 2 == 1) for i in range(depth)])

    def forward(self, x):
        """``(B, H, W, C)`` -> ``(B, H', W', C')``."""
        return self.blocks(self.downsample(x))


class PatchEmbed(nn.Module):
    """``proj`` (4x4 convolution, stride 4), channels last, ``norm``."""

    def __init__(self, patch_size, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        """``(B, 3, H, W)`` -> ``(B, H/4, W/4, C)``."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ClassifierHead(nn.Module):
    """Average over the map, then ``fc``."""

    def __init__(self, dim, num_classes):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x):
        """``(B, H, W, C)`` -> ``(B, num_classes)``."""
        return self.fc(x.mean(dim=(1, 2)))


class SwinTransformer(nn.Module):
    """timm's ``SwinTransformer`` (default: Swin-T, ``swin_tiny_patch4_window7_224``).

    Parameters
    ----------
    img_size : int, optional
        Default 224 (56x56 tokens after the 4x4 patch embedding).
    embed_dim : int, optional
        Default 96; doubled at each stage.
    depths, num_heads : sequences of int, optional
        Default ``(2, 2, 6, 2)`` and ``(3, 6, 12, 24)``.
    window_size : int, optional
        Default 7.
    num_classes : int, optional
        Default 1000.

    Examples
    --------
    >>> import torch
    >>> from analysis.torch_models.swin import SwinTransformer
    >>> model = SwinTransformer(img_size=56, embed_dim=8, depths=(2, 2), num_heads=(1, 2), num_classes=3)
    >>> model.layers[1].downsample.reduction, model.layers[0].blocks[1].shift_size
    (Linear(in_features=32, out_features=16, bias=False), 3)
    >>> model(torch.randn(2, 3, 56, 56)).shape
    torch.Size([2, 3])
    """

    def __init__(self, img_size=224, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                 num_classes=1000):
        super().__init__()
        self.patch_embed = PatchEmbed(4, embed_dim)
        res, dim, layers = img_size // 4, embed_dim, []
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            out = embed_dim * 2 ** i
            if i:
                res //= 2
            layers.append(SwinTransformerStage(dim, out, res, depth, heads, window_size, downsample=i > 0))
            dim = out
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.head = ClassifierHead(dim, num_classes)
        self.apply(init_linear)

    def forward(self, x):
        """Images ``(B, 3, H, W)`` -> logits ``(B, num_classes)``."""
        return self.head(self.norm(self.layers(self.patch_embed(x))))

