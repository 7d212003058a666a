"""Plain-PyTorch replica of timm's ``ConvNeXt`` (ConvNeXt-T): ``nn.Linear`` MLPs on channels-last maps.

Same module names, parameter shapes and layouts as ``timm.models.convnext``:
``stem`` (4x4 patchify convolution and a channels-first layer norm), four
``stages`` at 56, 28, 14 and 7 pixels of a 224 image (each but the first
starting with a ``downsample``), whose ``blocks`` run a 7x7 depthwise
convolution ``conv_dw`` on NCHW maps, then, channels last, ``norm`` and the MLP
``mlp.fc1``/``mlp.fc2`` on ``(B, H, W, C)``, and a layer scale ``gamma``;
``head.norm`` and ``head.fc``.  Random initialization only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vit import Mlp, init_linear

__all__ = ["ConvNeXt"]


class LayerNorm2d(nn.LayerNorm):
    """Layer norm over the channels of NCHW maps."""

    def forward(self, x):
        """``(B, C, H, W)`` -> same."""
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """``x + gamma * mlp(norm(conv_dw(x)))``, the MLP on channels-last ``(B, H, W, C)`` maps."""

    def __init__(self, dim, mlp_ratio=4, ls_init=1e-6):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio * dim)
        self.gamma = nn.Parameter(ls_init * torch.ones(dim))

    def forward(self, x):
        """``(B, C, H, W)`` -> same."""
        y = self.mlp(self.norm(self.conv_dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + y * self.gamma.reshape(1, -1, 1, 1)


class ConvNeXtStage(nn.Module):
    """``downsample`` (layer norm and a 2x2 stride-2 convolution; nothing in the first stage), then ``blocks``."""

    def __init__(self, dim, out_dim, depth, downsample):
        super().__init__()
        self.downsample = nn.Sequential(LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, out_dim, 2, stride=2)) \
            if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[ConvNeXtBlock(out_dim) for _ in range(depth)])

    def forward(self, x):
        """``(B, C, H, W)`` -> ``(B, C', H', W')``."""
        return self.blocks(self.downsample(x))


class Head(nn.Module):
    """Global average pool, ``norm``, ``fc``."""

    def __init__(self, dim, num_classes):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x):
        """``(B, C, H, W)`` -> ``(B, num_classes)``."""
        return self.fc(self.norm(x.mean(dim=(2, 3))))


class ConvNeXt(nn.Module):
    """timm's ``ConvNeXt`` (default: ConvNeXt-T, ``convnext_tiny``).

    Parameters
    ----------
    depths, dims : sequences of 4 int, optional
        Default ``(3, 3, 9, 3)`` and ``(96, 192, 384, 768)``.
    num_classes : int, optional
        Default 1000.

    Examples
    --------
    >>> import torch
    >>> from analysis.torch_models.convnext import ConvNeXt
    >>> model = ConvNeXt(depths=(1, 1), dims=(8, 16), num_classes=3)
    >>> model.stages[1].blocks[0].mlp.fc1, model(torch.randn(2, 3, 32, 32)).shape
    (Linear(in_features=16, out_features=64, bias=True), torch.Size([2, 3]))
    """

    def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        self.stages = nn.Sequential(*[ConvNeXtStage(dims[max(i - 1, 0)], d, n, downsample=i > 0)
                                      for i, (n, d) in enumerate(zip(depths, dims, strict=True))])
        self.head = Head(dims[-1], num_classes)
        self.apply(init_linear)

    def forward(self, x):
        """Images ``(B, 3, H, W)`` -> logits ``(B, num_classes)``."""
        return self.head(self.stages(self.stem(x)))
