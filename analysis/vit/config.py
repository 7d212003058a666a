"""What a :class:`~analysis.vit.TinyViT` is and how its linear layers backpropagate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import lbpcore

__all__ = ["ViTConfig", "LinearLayerInfo", "LBPSetting"]


@dataclass(frozen=True)
class ViTConfig:
    """Hyperparameters of :class:`TinyViT`.

    Attributes
    ----------
    image_size : int
        Square input side (default 64).
    patch_size : int
        Pixel patch side ``p`` (default 4, a 16 x 16 token grid on 64 x 64 images).
    in_chans : int
        Image channels (default 3).
    dim : int
        Token width ``C`` (default 64).
    depth : int
        Number of blocks (default 4).
    heads : int
        Attention heads; ``dim`` must be a multiple (default 4).
    mlp_ratio : float
        MLP hidden width is ``int(dim * mlp_ratio)`` (default 4).
    num_classes : int
        Output classes (default 3: the bundled sample images).
    class_token : bool
        Prepend a learned class token (one extra token outside the grid); default False.
    pool : {"mean", "cls"}
        Head input: mean over the grid tokens (default), or the class token.
    gelu : {"tanh", "none"}
        GELU form (see :func:`gelu_forward`); default "tanh".
    ln_eps : float
        LayerNorm epsilon (default 1e-6).
    dtype : str
        Parameter dtype, "float32" (default) or "float64".
    seed : int
        Seed of the parameter initialisation (default 0).

    Examples
    --------
    >>> from analysis.vit import ViTConfig
    >>> cfg = ViTConfig()
    >>> cfg.grid, cfg.num_tokens, cfg.hidden
    ((16, 16), 256, 256)
    >>> ViTConfig(class_token=True, pool="cls").num_tokens
    257
    """

    image_size: int = 64
    patch_size: int = 4
    in_chans: int = 3
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 3
    class_token: bool = False
    pool: str = "mean"
    gelu: str = "tanh"
    ln_eps: float = 1e-6
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self):
        for name in ("image_size", "patch_size", "in_chans", "dim", "depth", "heads", "num_classes"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide image_size {self.image_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        if self.hidden < 1:
            raise ValueError(f"mlp_ratio must give a positive hidden width, got {self.mlp_ratio}")
        if self.pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {self.pool!r}")
        if self.pool == "cls" and not self.class_token:
            raise ValueError("pool='cls' needs class_token=True")
        if self.gelu not in ("tanh", "none"):
            raise ValueError(f"gelu must be 'tanh' or 'none', got {self.gelu!r}")
        if np.dtype(self.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid ``(h, w) = (image_size / p, image_size / p)``."""
        g = self.image_size // self.patch_size
        return (g, g)

    @property
    def extra_tokens(self) -> int:
        """Tokens outside the grid: 1 with a class token, else 0."""
        return int(self.class_token)

    @property
    def num_tokens(self) -> int:
        """Sequence length ``L = extra_tokens + h * w`` inside the blocks."""
        h, w = self.grid
        return self.extra_tokens + h * w

    @property
    def hidden(self) -> int:
        """MLP hidden width."""
        return int(self.dim * self.mlp_ratio)

    def to_dict(self) -> dict:
        """Plain dict of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class LinearLayerInfo:
    """Where a linear layer sits and what it sees.

    Attributes
    ----------
    name : str
        ``"patch_embed"``, ``"blocks.{i}.attn.qkv"``, ``"blocks.{i}.attn.proj"``,
        ``"blocks.{i}.mlp.fc1"``, ``"blocks.{i}.mlp.fc2"`` or ``"head"``.
    in_features, out_features : int
    grid : (int, int) or None
        Token grid, None for the head (pooled features).
    extra_tokens : int
        Leading tokens outside the grid (the class token).

    Examples
    --------
    >>> from analysis.vit import TinyViT
    >>> info = TinyViT().layers["blocks.0.mlp.fc1"]
    >>> info.in_features, info.out_features, info.grid, info.on_grid
    (64, 256, (16, 16), True)
    >>> TinyViT().layers["head"].on_grid
    False
    """

    name: str
    in_features: int
    out_features: int
    grid: tuple | None
    extra_tokens: int

    @property
    def on_grid(self) -> bool:
        """Whether the layer acts on a token grid (and so may use LBP-WHT)."""
        return self.grid is not None


@dataclass(frozen=True)
class LBPSetting:
    """How one linear layer backpropagates with LBP-WHT.

    Attributes
    ----------
    bases : str or tuple of (int, int) or lbpcore.BasisSet
        Basis selection (see :func:`lbpcore.select_bases`); default ``"lp_l1:6"``.
    patch : int
        Patch size ``n`` of the token grid, a power of two; default 8.
    pad : {"reflect", "zero", "none"}
        Padding of grids ``n`` does not divide; default ``"reflect"``.

    Examples
    --------
    >>> from analysis.vit import LBPSetting
    >>> s = LBPSetting("lp_l1:3", patch=8)
    >>> s.basis.rank, s.to_dict()["indices"][:3]
    (6, [[0, 0], [0, 1], [1, 0]])
    """

    bases: Any = "lp_l1:6"
    patch: int = 8
    pad: str = "reflect"

    def __post_init__(self):
        b = self.bases
        if not isinstance(b, (str, lbpcore.BasisSet)):
            object.__setattr__(self, "bases", tuple(tuple(int(v) for v in pair) for pair in np.asarray(b).tolist()))
        self.basis  # validate now  # noqa: B018

    @property
    def basis(self):
        """The :class:`lbpcore.BasisSet` selected."""
        return lbpcore.select_bases(self.patch, self.bases)

    @property
    def spec(self) -> str:
        """Short text: the spec string, or ``"explicit"``."""
        if isinstance(self.bases, str):
            return self.bases
        if isinstance(self.bases, lbpcore.BasisSet):
            return self.bases.spec
        return "explicit"

    def to_dict(self) -> dict:
        """``bases`` (spec string), ``indices`` (list of pairs), ``rank``, ``patch``, ``pad``."""
        basis = self.basis
        return {
            "bases": self.spec,
            "indices": basis.indices.tolist(),
            "rank": int(basis.rank),
            "patch": int(self.patch),
            "pad": self.pad,
        }
