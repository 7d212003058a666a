"""A plain-PyTorch port of the NumPy :class:`~analysis.vit.TinyViT`, with the same parameter layout.

:class:`TorchViT` computes what :meth:`analysis.vit.TinyViT.forward` computes
(patch embedding as a linear layer on flattened pixel patches, optional class
token, learned position embedding, pre-LayerNorm blocks with a fused ``qkv``,
tanh or exact GELU, final LayerNorm, mean or class-token pooling, linear head),
with ordinary ``nn.Linear`` / ``nn.LayerNorm`` modules and autograd instead of
a manual backward.  Its ``state_dict`` keys and shapes are exactly
:attr:`TinyViT.params`'s (``"patch_embed.weight"``, ``"pos_embed"``,
``"blocks.0.attn.qkv.weight"``...), so :meth:`TorchViT.from_numpy` loads the
NumPy model's initial or pretrained parameters and :meth:`TorchViT.numpy_params`
hands them back.  Every linear layer is an ``nn.Linear`` that
:func:`lbpcore.torch.convert` can replace; the token layers' inputs are
``(B, e + h*w, C)`` tokens on the ``config.grid`` grid.

Importing this module imports PyTorch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..vit import TinyViT, ViTConfig

__all__ = ["TorchViT"]


class _Attention(nn.Module):
    """``proj(softmax(q k^T / sqrt(d)) v)`` per head, from a fused ``qkv`` (the layout of :mod:`analysis.vit`)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        """``(B, L, C)`` -> ``(B, L, C)``."""
        b, length, c = x.shape
        d = c // self.heads
        q, k, v = self.qkv(x).reshape(b, length, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        a = torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d)), dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, length, c))


class _Mlp(nn.Module):
    def __init__(self, dim, hidden, gelu):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.gelu = gelu

    def forward(self, x):
        """``fc2(GELU(fc1(x)))``."""
        return self.fc2(F.gelu(self.fc1(x), approximate=self.gelu))


class _Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.attn = _Attention(cfg.dim, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.mlp = _Mlp(cfg.dim, cfg.hidden, cfg.gelu)

    def forward(self, x):
        """``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TorchViT(nn.Module):
    """:class:`analysis.vit.TinyViT` in plain PyTorch (autograd backward).

    Parameters
    ----------
    config : ViTConfig, optional
        Default ``ViTConfig()``; its ``dtype`` is the parameters' dtype.
    params : mapping of str to ndarray, optional
        Parameters in :attr:`TinyViT.params` layout; default the NumPy model's
        seeded initialisation (:meth:`TinyViT.init_params`), so that both
        engines start from the same weights.

    Attributes
    ----------
    config : ViTConfig
    grid : (int, int)
        Token grid of the linear layers' inputs.
    extra_tokens : int
        Tokens in front of the grid (1 with a class token).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from analysis.finetune.torch_model import TorchViT
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> cfg = ViTConfig(image_size=8, patch_size=2, in_chans=1, dim=8, depth=1, heads=2, dtype="float64")
    >>> model = TorchViT(cfg)
    >>> images = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    >>> logits = model(torch.from_numpy(images))
    >>> bool(np.allclose(logits.detach().numpy(), TinyViT(cfg).predict(images), rtol=1e-12, atol=1e-12))
    True
    >>> sorted(model.numpy_params()) == sorted(TinyViT(cfg).params)
    True
    """

    def __init__(self, config=None, params=None):
        super().__init__()
        cfg = ViTConfig() if config is None else config
        self.config = cfg
        self.grid = cfg.grid
        self.extra_tokens = cfg.extra_tokens
        self.patch_embed = nn.Linear(cfg.in_chans * cfg.patch_size**2, cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(cfg.dim)) if cfg.class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(cfg.num_tokens, cfg.dim))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.to(getattr(torch, cfg.dtype))
        params = TinyViT.init_params(cfg) if params is None else params
        self._names = list(params)  # TinyViT's order (named_parameters lists pos_embed before patch_embed)
        self.load_numpy(params)

    @classmethod
    def from_numpy(cls, model) -> TorchViT:
        """The port of a :class:`~analysis.vit.TinyViT`, with a copy of its current parameters."""
        return cls(model.config, params=model.params)

    def load_numpy(self, params) -> None:
        """Copy parameters in :attr:`TinyViT.params` layout into this model (names and shapes must match).

        Raises
        ------
        ValueError
            If a name is missing or extra, or a shape differs.
        """
        own = dict(self.named_parameters())
        if set(own) != set(params):
            raise ValueError(f"params: expected the names {sorted(own)}, got {sorted(params)}")
        with torch.no_grad():
            for name, p in own.items():
                value = np.asarray(params[name])
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(f"params[{name!r}] has shape {value.shape}, the model {tuple(p.shape)}")
                p.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(p.dtype))

    def numpy_params(self) -> dict:
        """The parameters as NumPy arrays in :attr:`TinyViT.params` order and layout (copies)."""
        own = dict(self.named_parameters())
        return {name: own[name].detach().cpu().numpy().copy() for name in self._names}

    def forward(self, images):
        """Images ``(B, in_chans, S, S)`` -> logits ``(B, num_classes)``."""
        cfg = self.config
        b, c, h, w = images.shape
        p = cfg.patch_size
        tokens = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(
            b, (h // p) * (w // p), c * p * p)  # the layout of analysis.vit.patchify_forward
        x = self.patch_embed(tokens)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(b, 1, -1), x], dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        x = x[:, 0] if cfg.pool == "cls" else x[:, self.extra_tokens:].mean(dim=1)
        return self.head(x)
