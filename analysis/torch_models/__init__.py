"""Plain-PyTorch replicas of the timm architectures users fine-tune (needs PyTorch; no timm).

Each replica has timm's module names, parameter shapes, token layouts and
resolutions, so that the patterns and grids a user writes for timm's model
(``"blocks.*"``, ``"stages.*"``...) work here unchanged; weights are random
(nothing is downloaded).  :func:`build` makes one by name; :data:`MODELS`
lists them with the layers LBP-WHT converts by default and their extra tokens.

Examples
--------
>>> from analysis.torch_models import build, MODELS
>>> sorted(MODELS)
['convnext_t', 'deit_s_distilled', 'efficientformer_l1', 'swin_t', 'vit_b16', 'vit_s16', 'vit_ti16']
>>> model = build("vit_s16", depth=1, num_classes=10)
>>> [name for name, _ in model.named_modules() if name.startswith("blocks.0.") and "." not in name[9:]]
['blocks.0.norm1', 'blocks.0.attn', 'blocks.0.norm2', 'blocks.0.mlp']
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MODELS", "ModelInfo", "build"]


@dataclass(frozen=True)
class ModelInfo:
    """A replica: its timm name, the converted layers and the extra tokens before their grids.

    Attributes
    ----------
    timm_name : str
        The timm model it replicates.
    include : str
        Glob pattern of the layers converted by default (the paper's choice
        for EfficientFormer: every linear layer of ``stages``).
    extra_tokens : int
        Tokens in front of the token grid of the converted ``nn.Linear`` layers.
    kwargs : dict
        Constructor arguments of the full-size model.

    Examples
    --------
    >>> from analysis.torch_models import MODELS
    >>> MODELS["deit_s_distilled"].extra_tokens, MODELS["efficientformer_l1"].include
    (2, 'stages.*')
    """

    timm_name: str
    include: str
    extra_tokens: int
    kwargs: dict = field(default_factory=dict)


#: The replicas by name: ViT-Ti/S/B 16 and distilled DeiT-S (224, 14x14 tokens after 1 or 2 extra tokens),
#: EfficientFormer-L1, Swin-T and ConvNeXt-T (224).
MODELS = {
    "vit_ti16": ModelInfo("vit_tiny_patch16_224", "blocks.*", 1, dict(embed_dim=192, depth=12, num_heads=3)),
    "vit_s16": ModelInfo("vit_small_patch16_224", "blocks.*", 1, dict(embed_dim=384, depth=12, num_heads=6)),
    "vit_b16": ModelInfo("vit_base_patch16_224", "blocks.*", 1, dict(embed_dim=768, depth=12, num_heads=12)),
    "deit_s_distilled": ModelInfo("deit_small_distilled_patch16_224", "blocks.*", 2,
                                  dict(embed_dim=384, depth=12, num_heads=6, distilled=True)),
    "efficientformer_l1": ModelInfo("efficientformer_l1", "stages.*", 0, {}),
    "swin_t": ModelInfo("swin_tiny_patch4_window7_224", "layers.*", 0, {}),
    "convnext_t": ModelInfo("convnext_tiny", "stages.*", 0, {}),
}


def build(name, **overrides):
    """A replica by name, with random weights.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    **overrides
        Constructor arguments replacing the full-size ones (``depth``,
        ``embed_dim``, ``img_size``, ``num_classes``...: smaller models for tests).

    Returns
    -------
    torch.nn.Module
        In training mode, float32, on the CPU.

    Raises
    ------
    ValueError
        If ``name`` is not a key of :data:`MODELS`.

    Examples
    --------
    >>> from analysis.torch_models import build
    >>> model = build("swin_t", img_size=56, depths=(2, 2), num_heads=(3, 6), num_classes=10)
    >>> model.head.fc
    Linear(in_features=192, out_features=10, bias=True)
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(sorted(MODELS))}, got {name!r}")
    from . import convnext, efficientformer, swin, vit  # noqa: PLC0415 - PyTorch is optional

    cls = {"vit": vit.VisionTransformer, "deit": vit.VisionTransformer,
           "efficientformer": efficientformer.EfficientFormer, "swin": swin.SwinTransformer,
           "convnext": convnext.ConvNeXt}[name.split("_")[0]]
    return cls(**{**MODELS[name].kwargs, **overrides})
