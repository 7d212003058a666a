"""A small vision transformer in NumPy with manual backward, for end-to-end LBP-WHT fidelity.

* :mod:`analysis.vit.linear`, :mod:`analysis.vit.attention` and
  :mod:`analysis.vit.ops` – every operation as a pair
  ``op_forward(...) -> (out, cache)`` and ``op_backward(grad, cache)``; the
  linear layers backpropagate exactly or with LBP-WHT, the others exactly;
* :mod:`analysis.vit.config` and :mod:`analysis.vit.model` – :class:`ViTConfig`,
  :class:`LBPSetting` and the model :class:`TinyViT`;
* :mod:`analysis.vit.fidelity` – :func:`gradient_fidelity` and
  :func:`capture_linear_io`.

Everything here is NumPy (CPU); every public name is importable from
:mod:`analysis.vit` itself.
"""

from .attention import AttentionCache, attention_backward, attention_forward
from .config import LBPSetting, LinearLayerInfo, ViTConfig
from .fidelity import FidelityReport, LayerReport, ParameterError, capture_linear_io, gradient_fidelity
from .linear import (
    LinearCache,
    PatchEmbedCache,
    PatchifyCache,
    linear_backward,
    linear_forward,
    patch_embed_backward,
    patch_embed_forward,
    patchify_backward,
    patchify_forward,
)
from .model import BackwardResult, ForwardCache, LayerIO, TinyViT
from .ops import (
    CrossEntropyCache,
    GeluCache,
    LayerNormCache,
    MeanPoolCache,
    cls_token_backward,
    cls_token_forward,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    mean_pool_backward,
    mean_pool_forward,
    pos_embed_backward,
    pos_embed_forward,
    residual_backward,
    residual_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)

__all__ = [
    # ops
    "linear_forward",
    "linear_backward",
    "patchify_forward",
    "patchify_backward",
    "patch_embed_forward",
    "patch_embed_backward",
    "cls_token_forward",
    "cls_token_backward",
    "pos_embed_forward",
    "pos_embed_backward",
    "layernorm_forward",
    "layernorm_backward",
    "gelu_forward",
    "gelu_backward",
    "attention_forward",
    "attention_backward",
    "residual_forward",
    "residual_backward",
    "mean_pool_forward",
    "mean_pool_backward",
    "softmax_cross_entropy_forward",
    "softmax_cross_entropy_backward",
    # typed caches of the operations
    "LinearCache",
    "PatchifyCache",
    "PatchEmbedCache",
    "LayerNormCache",
    "GeluCache",
    "AttentionCache",
    "MeanPoolCache",
    "CrossEntropyCache",
    # model
    "ViTConfig",
    "LinearLayerInfo",
    "LBPSetting",
    "ForwardCache",
    "BackwardResult",
    "LayerIO",
    "TinyViT",
    # analysis
    "ParameterError",
    "LayerReport",
    "FidelityReport",
    "gradient_fidelity",
    "capture_linear_io",
]
