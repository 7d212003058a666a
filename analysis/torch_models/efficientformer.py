"""Plain-PyTorch replica of timm's ``EfficientFormer`` (L1: the LBP-WHT paper's model).

Same module names, parameter shapes and layouts as
``timm.models.efficientformer``: a stride-4 ``stem``, four ``stages`` of
``MetaBlock2d`` blocks on NCHW maps (pooling token mixer, an MLP of two 1x1
convolutions ``mlp.fc1``/``mlp.fc2`` with batch norms) at 56, 28, 14 and 7
pixels of a 224 image, and, at the end of the last stage, ``Flat`` and a
``MetaBlock1d`` on ``(B, 49, C)`` tokens (attention with ``token_mixer.qkv``
and ``token_mixer.proj``, an MLP of ``nn.Linear`` layers); ``norm``, ``head``
and ``head_dist``.  The converted layers therefore live at five resolutions
and in two layouts, which is what ``grid="auto"`` resolves.  Random
initialization only.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EfficientFormer"]

#: ``(depths, widths)`` of the L1 model.
L1 = ((3, 2, 6, 4), (48, 96, 224, 448))


class Stem4(nn.Module):
    """Two stride-2 3x3 convolutions with batch norm and ReLU."""

    def __init__(self, in_chs, out_chs):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs // 2, 3, stride=2, padding=1)
        self.norm1 = nn.BatchNorm2d(out_chs // 2)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_chs // 2, out_chs, 3, stride=2, padding=1)
        self.norm2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU()

    def forward(self, x):
        """``(B, 3, H, W)`` -> ``(B, C, H/4, W/4)``."""
        return self.act2(self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x))))))


class Downsample(nn.Module):
    """A stride-2 3x3 convolution and batch norm between stages."""

    def __init__(self, in_chs, out_chs):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x):
        """``(B, C_in, H, W)`` -> ``(B, C_out, H/2, W/2)``."""
        return self.norm(self.conv(x))


class Pooling(nn.Module):
    """``avg_pool3x3(x) - x`` (PoolFormer's token mixer)."""

    def __init__(self, pool_size=3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x):
        """``(B, C, H, W)`` -> same."""
        return self.pool(x) - x


class ConvMlpWithNorm(nn.Module):
    """``fc1`` (1x1 conv) -> BN -> GELU -> ``fc2`` (1x1 conv) -> BN on NCHW maps."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x):
        """``(B, C, H, W)`` -> same."""
        return self.norm2(self.fc2(self.act(self.norm1(self.fc1(x)))))


class LayerScale(nn.Module):
    """Per-channel scale on the last axis (``LayerScale``) or on axis 1 (``LayerScale2d``, ``nchw=True``)."""

    def __init__(self, dim, init=1e-5, nchw=False):
        super().__init__()
        self.nchw = nchw
        self.gamma = nn.Parameter(init * torch.ones(dim))

    def forward(self, x):
        """``x * gamma`` broadcast along the channel axis."""
        return x * (self.gamma.view(1, -1, 1, 1) if self.nchw else self.gamma)


class MetaBlock2d(nn.Module):
    """``x + ls1(pool(x))``, then ``x + ls2(mlp(x))`` on NCHW maps."""

    def __init__(self, dim, mlp_ratio=4.0, layer_scale=1e-5):
        super().__init__()
        self.token_mixer = Pooling()
        self.ls1 = LayerScale(dim, layer_scale, nchw=True)
        self.mlp = ConvMlpWithNorm(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale, nchw=True)

    def forward(self, x):
        """``(B, C, H, W)`` -> same."""
        x = x + self.ls1(self.token_mixer(x))
        return x + self.ls2(self.mlp(x))


class Flat(nn.Module):
    """NCHW maps to ``(B, H*W, C)`` tokens."""

    def forward(self, x):
        """``(B, C, H, W)`` -> ``(B, H*W, C)``."""
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """EfficientFormer's attention: 8 heads of key size 32, values 4x wider, a learned relative-position bias."""

    def __init__(self, dim, key_dim=32, num_heads=8, attn_ratio=4, resolution=7):
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim ** -0.5
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.val_attn_dim = self.val_dim * num_heads
        self.qkv = nn.Linear(dim, key_dim * num_heads * 2 + self.val_attn_dim)
        self.proj = nn.Linear(self.val_attn_dim, dim)
        pos = torch.stack(torch.meshgrid(torch.arange(resolution), torch.arange(resolution), indexing="ij")).flatten(1)
        rel = (pos[..., :, None] - pos[..., None, :]).abs()
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", rel[0] * resolution + rel[1], persistent=False)

    def forward(self, x):
        """``(B, N, C)`` -> ``(B, N, C)``."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, self.val_attn_dim)
        return self.proj(x)


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2`` (``nn.Linear``) on tokens."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        """``(B, N, C)`` -> same."""
        return self.fc2(self.act(self.fc1(x)))


class MetaBlock1d(nn.Module):
    """``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))`` on tokens."""

    def __init__(self, dim, mlp_ratio=4.0, layer_scale=1e-5, resolution=7):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = Attention(dim, resolution=resolution)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls1 = LayerScale(dim, layer_scale)
        self.ls2 = LayerScale(dim, layer_scale)

    def forward(self, x):
        """``(B, N, C)`` -> same."""
        x = x + self.ls1(self.token_mixer(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class EfficientFormerStage(nn.Module):
    """``downsample`` (not in the first stage), then ``blocks``; the last ``num_vit`` blocks are 1d, after ``Flat``."""

    def __init__(self, dim, dim_out, depth, downsample, num_vit=0, resolution=7):
        super().__init__()
        self.downsample = Downsample(dim, dim_out) if downsample else nn.Identity()
        blocks = []
        for i in range(depth):
            remain = depth - i - 1
            if num_vit and num_vit > remain:
                blocks.append(MetaBlock1d(dim_out, resolution=resolution))
            else:
                blocks.append(MetaBlock2d(dim_out))
                if num_vit and num_vit == remain:
                    blocks.append(Flat())
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        """Maps in, maps (or, for the last stage, tokens) out."""
        return self.blocks(self.downsample(x))


class EfficientFormer(nn.Module):
    """timm's ``EfficientFormer`` (default: L1 at 224 pixels, 1000 classes, one 1d block).

    Parameters
    ----------
    depths, widths : sequences of 4 int, optional
        Blocks and channels per stage; default L1's ``(3, 2, 6, 4)``, ``(48, 96, 224, 448)``.
    img_size : int, optional
        Default 224; the last stage's maps (and its attention) are ``img_size / 32`` wide.
    num_classes : int, optional
        Default 1000.
    num_vit : int, optional
        1d (attention) blocks at the end of the last stage, at least 1; default 1.

    Examples
    --------
    >>> import torch
    >>> from analysis.torch_models.efficientformer import EfficientFormer
    >>> model = EfficientFormer(depths=(1, 1, 1, 2), widths=(8, 8, 16, 16), img_size=64, num_classes=3)
    >>> type(model.stages[3].blocks[1]).__name__, model.stages[3].blocks[2].mlp.fc1
    ('Flat', Linear(in_features=16, out_features=64, bias=True))
    >>> model(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 3])
    """

    def __init__(self, depths=L1[0], widths=L1[1], img_size=224, num_classes=1000, num_vit=1):
        if num_vit < 1:
            raise ValueError(f"num_vit must be >= 1 (the head normalizes tokens), got {num_vit}")
        super().__init__()
        self.stem = Stem4(3, widths[0])
        res = img_size // 32
        stages, prev = [], widths[0]
        for i, (depth, dim) in enumerate(zip(depths, widths, strict=True)):
            stages.append(EfficientFormerStage(prev, dim, depth, downsample=i > 0,
                                               num_vit=num_vit if i == len(depths) - 1 else 0, resolution=res))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(widths[-1])
        self.head = nn.Linear(widths[-1], num_classes)
        self.head_dist = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        """Images ``(B, 3, H, W)`` -> logits ``(B, num_classes)`` (mean of both heads, timm's inference output)."""
        x = self.norm(self.stages(self.stem(x))).mean(dim=1)
        return (self.head(x) + self.head_dist(x)) / 2
