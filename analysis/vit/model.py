"""A small vision transformer in NumPy with a manual backward.

The network (:class:`TinyViT`) is the usual pre-LayerNorm ViT: patch embedding
(a linear layer on flattened pixel patches), optional class token, learned
position embedding, ``depth`` blocks of ``x + Attn(LN(x))`` then
``x + MLP(LN(x))`` (multi-head self-attention with a fused ``qkv`` and a
``proj`` linear layer; MLP ``fc1`` -> GELU -> ``fc2``), a final LayerNorm, mean
pooling (or the class token), a linear ``head`` and softmax cross-entropy.  The
linear layers on the token grid may backpropagate with LBP-WHT; the head acts
on pooled features and is always exact.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import ops
from .attention import attention_backward, attention_forward
from .config import LBPSetting, LinearLayerInfo, ViTConfig
from .linear import linear_backward, linear_forward, patch_embed_forward, patchify_backward

__all__ = ["ForwardCache", "LayerIO", "BackwardResult", "TinyViT"]


@dataclass
class ForwardCache:
    """What :meth:`TinyViT.forward` keeps for the backward pass.

    Attributes
    ----------
    loss : float or None
        None when no labels were given.
    logits : ndarray, shape (B, num_classes)
    ops : dict
        Per-operation caches, keyed by operation name.

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> images, labels = image_batch(batch=2, size=16)
    >>> loss, cache = TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2)).forward(images, labels)
    >>> cache.logits.shape, cache.loss == loss
    ((2, 3), True)
    """

    loss: float | None
    logits: np.ndarray
    ops: dict = field(repr=False)


@dataclass(frozen=True)
class LayerIO:
    """The triple a linear layer sees in a backward pass.

    Attributes
    ----------
    name : str
    x : ndarray, shape (B, L, C_in), or (B, C_in) for the head
        Layer input.
    weight : ndarray, shape (C_out, C_in)
    grad_y : ndarray, shape (B, L, C_out), or (B, C_out) for the head
        Gradient of the loss with respect to the layer output.
    grid : (int, int) or None
        Token grid (None for the head).
    extra_tokens : int

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, capture_linear_io
    >>> images, labels = image_batch(batch=2, size=16)
    >>> io = capture_linear_io(TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2)), images, labels)
    >>> io["blocks.0.mlp.fc1"].to_dict()["grad_y_shape"], io["head"].grid
    ([2, 16, 32], None)
    """

    name: str
    x: np.ndarray = field(repr=False)
    weight: np.ndarray = field(repr=False)
    grad_y: np.ndarray = field(repr=False)
    grid: tuple | None
    extra_tokens: int

    def to_dict(self) -> dict:
        """Shapes and metadata only (no arrays)."""
        return {
            "name": self.name,
            "x_shape": list(self.x.shape),
            "weight_shape": list(self.weight.shape),
            "grad_y_shape": list(self.grad_y.shape),
            "grid": None if self.grid is None else list(self.grid),
            "extra_tokens": self.extra_tokens,
        }


@dataclass
class BackwardResult:
    """Gradients from :meth:`TinyViT.backward`.

    Attributes
    ----------
    grads : dict of str to ndarray
        Gradient of every parameter, keyed (and shaped) like :attr:`TinyViT.params`;
        with ``stop_at``, only of the parameters the backward pass reached.
    grad_images : ndarray of shape (B, in_chans, image_size, image_size), or None
        None when the backward pass stopped early (``stop_at``).
    lbp : dict of str to LBPSetting
        Layers that used LBP-WHT.
    captured : dict of str to LayerIO or None
        Per linear layer, what it saw (with ``capture=True``).

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2))
    >>> res = model.backward(model.forward(images, labels)[1], lbp="all", patch=4, bases="lp_l1:3")
    >>> list(res.grads) == list(model.params), res.grad_images.shape, len(res.lbp)
    (True, (2, 3, 16, 16), 5)
    >>> top = model.backward(model.forward(images, labels)[1], stop_at=1)  # the head and final norm only
    >>> sorted({TinyViT.layer_of(k) for k in top.grads}), top.grad_images
    (['head', 'norm'], None)
    """

    grads: dict
    grad_images: np.ndarray | None = field(repr=False)
    lbp: dict
    captured: dict | None = field(default=None, repr=False)


class TinyViT:
    """A small pre-LayerNorm vision transformer with a manual NumPy backward.

    Parameters
    ----------
    config : ViTConfig, optional
        Default ``ViTConfig()``: 64 x 64 images, 4 x 4 pixel patches (16 x 16
        token grid), width 64, 4 heads, depth 4, MLP ratio 4, 3 classes, float32.
    params : dict of str to ndarray, optional
        Parameters to use instead of the seeded initialisation (same names and
        shapes as :meth:`init_params`; cast to ``config.dtype``).

    Attributes
    ----------
    config : ViTConfig
    params : dict of str to ndarray
        ``patch_embed.weight`` (C, in_chans p p), ``patch_embed.bias``,
        ``cls_token`` (C,) with a class token, ``pos_embed`` (L, C), per block
        ``blocks.{i}.norm1.{weight,bias}``, ``blocks.{i}.attn.qkv.{weight,bias}``
        (3C, C), ``blocks.{i}.attn.proj.{weight,bias}`` (C, C),
        ``blocks.{i}.norm2.{weight,bias}``, ``blocks.{i}.mlp.fc1.{weight,bias}``
        (hidden, C), ``blocks.{i}.mlp.fc2.{weight,bias}`` (C, hidden), then
        ``norm.{weight,bias}`` and ``head.{weight,bias}`` (num_classes, C).
    layers : dict of str to LinearLayerInfo
        The linear layers in forward order.

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=16, depth=1, heads=2))
    >>> loss, cache = model.forward(images, labels)
    >>> res = model.backward(cache, lbp={"blocks.0.mlp.*": "lp_l1:3"}, patch=4)
    >>> sorted(res.lbp)
    ['blocks.0.mlp.fc1', 'blocks.0.mlp.fc2']
    >>> res.grads["blocks.0.mlp.fc1.weight"].shape
    (64, 16)
    """

    def __init__(self, config=None, *, params=None):
        self.config = ViTConfig() if config is None else config
        cfg = self.config
        ref = self.init_params(cfg)
        if params is None:
            self.params = ref
        else:
            params = dict(params)
            if set(params) != set(ref):
                raise ValueError(
                    f"params must have exactly the keys {sorted(ref)}; "
                    f"missing {sorted(set(ref) - set(params))}, unexpected {sorted(set(params) - set(ref))}"
                )
            self.params = {}
            for k, v in ref.items():
                a = np.asarray(params[k], dtype=cfg.dtype)
                if a.shape != v.shape:
                    raise ValueError(f"params[{k!r}] must have shape {v.shape}, got {a.shape}")
                self.params[k] = a
        c, hid, e = cfg.dim, cfg.hidden, cfg.extra_tokens
        pin = cfg.in_chans * cfg.patch_size**2
        layers = [LinearLayerInfo("patch_embed", pin, c, cfg.grid, 0)]
        for i in range(cfg.depth):
            p = f"blocks.{i}."
            layers += [
                LinearLayerInfo(p + "attn.qkv", c, 3 * c, cfg.grid, e),
                LinearLayerInfo(p + "attn.proj", c, c, cfg.grid, e),
                LinearLayerInfo(p + "mlp.fc1", c, hid, cfg.grid, e),
                LinearLayerInfo(p + "mlp.fc2", hid, c, cfg.grid, e),
            ]
        layers.append(LinearLayerInfo("head", c, cfg.num_classes, None, 0))
        self.layers = {info.name: info for info in layers}

    # ------------------------------------------------------------------ params

    @staticmethod
    def init_params(config):
        """Seeded parameter initialisation.

        Linear weights are LeCun-normal (standard deviation ``1/sqrt(C_in)``),
        linear biases ``N(0, 0.02^2)``, LayerNorm weights ``1 + N(0, 0.02^2)``
        and biases ``N(0, 0.02^2)``, position embedding and class token
        ``N(0, 0.02^2)``; all from ``numpy.random.default_rng(config.seed)``.

        Parameters
        ----------
        config : ViTConfig

        Returns
        -------
        dict of str to ndarray
            Of ``config.dtype``; see :class:`TinyViT` for names and shapes.
        """
        rng = np.random.default_rng(config.seed)
        c, hid = config.dim, config.hidden
        pin = config.in_chans * config.patch_size**2
        p = {}

        def linear_params(name, cout, cin):
            p[name + ".weight"] = rng.standard_normal((cout, cin)) / math.sqrt(cin)
            p[name + ".bias"] = 0.02 * rng.standard_normal(cout)

        def norm_params(name):
            p[name + ".weight"] = 1.0 + 0.02 * rng.standard_normal(c)
            p[name + ".bias"] = 0.02 * rng.standard_normal(c)

        linear_params("patch_embed", c, pin)
        if config.class_token:
            p["cls_token"] = 0.02 * rng.standard_normal(c)
        p["pos_embed"] = 0.02 * rng.standard_normal((config.num_tokens, c))
        for i in range(config.depth):
            b = f"blocks.{i}."
            norm_params(b + "norm1")
            linear_params(b + "attn.qkv", 3 * c, c)
            linear_params(b + "attn.proj", c, c)
            norm_params(b + "norm2")
            linear_params(b + "mlp.fc1", hid, c)
            linear_params(b + "mlp.fc2", c, hid)
        norm_params("norm")
        linear_params("head", config.num_classes, c)
        return {k: np.ascontiguousarray(v, dtype=config.dtype) for k, v in p.items()}

    @property
    def linear_layers(self) -> tuple:
        """Names of all linear layers, forward order (``patch_embed`` ... ``head``)."""
        return tuple(self.layers)

    @property
    def token_layers(self) -> tuple:
        """Names of the linear layers on the token grid (all but ``head``): LBP-WHT candidates."""
        return tuple(n for n, info in self.layers.items() if info.on_grid)

    @staticmethod
    def layer_of(param_name: str) -> str:
        """Module a parameter belongs to: ``"blocks.0.mlp.fc1.weight"`` -> ``"blocks.0.mlp.fc1"``."""
        if param_name in ("pos_embed", "cls_token"):
            return param_name
        return param_name.rsplit(".", 1)[0]

    # ---------------------------------------------------------------- forward

    def forward(self, images, labels=None):
        """Forward pass.

        Parameters
        ----------
        images : ndarray, shape (B, in_chans, image_size, image_size)
            Cast to ``config.dtype``.
        labels : ndarray of int, shape (B,), optional
            Classes for the cross-entropy loss.

        Returns
        -------
        loss : float or None
            Mean softmax cross-entropy (None without labels).
        cache : ForwardCache
            Holds the logits (B, num_classes) and every operation's cache.
        """
        cfg, p = self.config, self.params
        images = np.asarray(images, dtype=cfg.dtype)
        expect = (cfg.in_chans, cfg.image_size, cfg.image_size)
        if images.ndim != 4 or images.shape[1:] != expect:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expect))}), got {images.shape}")
        caches = {}
        x, caches["patch_embed"] = patch_embed_forward(
            images, p["patch_embed.weight"], p["patch_embed.bias"], cfg.patch_size
        )
        if cfg.class_token:
            x, caches["cls_token"] = ops.cls_token_forward(x, p["cls_token"])
        x, caches["pos_embed"] = ops.pos_embed_forward(x, p["pos_embed"])
        for i in range(cfg.depth):
            b = f"blocks.{i}."
            h, caches[b + "norm1"] = ops.layernorm_forward(x, p[b + "norm1.weight"], p[b + "norm1.bias"], cfg.ln_eps)
            h, caches[b + "attn.qkv"] = linear_forward(h, p[b + "attn.qkv.weight"], p[b + "attn.qkv.bias"])
            h, caches[b + "attn.core"] = attention_forward(h, cfg.heads)
            h, caches[b + "attn.proj"] = linear_forward(h, p[b + "attn.proj.weight"], p[b + "attn.proj.bias"])
            x, _ = ops.residual_forward(x, h)
            h, caches[b + "norm2"] = ops.layernorm_forward(x, p[b + "norm2.weight"], p[b + "norm2.bias"], cfg.ln_eps)
            h, caches[b + "mlp.fc1"] = linear_forward(h, p[b + "mlp.fc1.weight"], p[b + "mlp.fc1.bias"])
            h, caches[b + "mlp.act"] = ops.gelu_forward(h, cfg.gelu)
            h, caches[b + "mlp.fc2"] = linear_forward(h, p[b + "mlp.fc2.weight"], p[b + "mlp.fc2.bias"])
            x, _ = ops.residual_forward(x, h)
        x, caches["norm"] = ops.layernorm_forward(x, p["norm.weight"], p["norm.bias"], cfg.ln_eps)
        if cfg.pool == "cls":
            x, caches["pool"] = ops.mean_pool_forward(x, 0, 1)
        else:
            x, caches["pool"] = ops.mean_pool_forward(x, cfg.extra_tokens)
        logits, caches["head"] = linear_forward(x, p["head.weight"], p["head.bias"])
        loss = None
        if labels is not None:
            loss, caches["loss"] = ops.softmax_cross_entropy_forward(logits, labels)
        return loss, ForwardCache(loss, logits, caches)

    def predict(self, images):
        """Logits, shape (B, num_classes)."""
        return self.forward(images)[1].logits

    def loss(self, images, labels) -> float:
        """Mean softmax cross-entropy of ``images`` against ``labels``."""
        return self.forward(images, labels)[0]

    # --------------------------------------------------------------- backward

    def resolve_lbp(self, lbp, *, patch=8, bases="lp_l1:6", pad="reflect"):
        """Normalize a selection of LBP-WHT layers.

        Parameters
        ----------
        lbp : None, str, iterable of str, or mapping
            * None or empty: no layer (exact backward);
            * ``"all"``: every token-grid layer (:attr:`token_layers`);
            * a layer name or :mod:`fnmatch` pattern (``"blocks.*.mlp.fc1"``),
              or an iterable of them: those layers with the default setting;
            * a mapping from names/patterns to a setting: None (defaults), a
              bases spec (``"lp_l1:3"``, explicit pairs, a ``BasisSet``), an
              :class:`LBPSetting`, or a dict of ``bases``/``patch``/``pad``.
              Later keys override earlier ones for the layers they match.

            Patterns match token-grid layers only; naming ``"head"`` is an error.
        patch, bases, pad
            Defaults for layers whose setting does not give them.

        Returns
        -------
        dict of str to LBPSetting
            In forward order.

        Raises
        ------
        ValueError
            If a name or pattern matches no token-grid layer, names the head,
            or a setting is invalid.
        """
        if lbp is None:
            return {}
        if isinstance(lbp, str):
            lbp = {lbp: None}
        elif not isinstance(lbp, Mapping):
            lbp = {k: None for k in lbp}
        chosen = {}
        candidates = self.token_layers
        for key, value in lbp.items():
            if not isinstance(key, str):
                raise ValueError(f"lbp keys must be layer names or patterns, got {key!r}")
            if key == "head":
                raise ValueError("lbp: 'head' acts on pooled features, not a token grid; its backward is always exact")
            if key == "all":
                matched = list(candidates)
            else:
                matched = [n for n in candidates if fnmatch.fnmatchcase(n, key)]
            if not matched:
                raise ValueError(f"lbp: {key!r} matches no token-grid layer; layers are {list(candidates)}")
            setting = self._setting(value, patch, bases, pad)
            for n in matched:
                chosen[n] = setting
        return {n: chosen[n] for n in candidates if n in chosen}

    @staticmethod
    def _setting(value, patch, bases, pad):
        if value is None:
            return LBPSetting(bases, patch, pad)
        if isinstance(value, LBPSetting):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"bases", "patch", "pad"}
            if unknown:
                raise ValueError(f"lbp setting has unknown keys {sorted(unknown)}")
            return LBPSetting(value.get("bases", bases), value.get("patch", patch), value.get("pad", pad))
        return LBPSetting(value, patch, pad)

    def backward(self, cache, *, lbp=None, patch=8, bases="lp_l1:6", pad="reflect", capture=False,
                 grad_loss=1.0, grad_logits=None, backward_fns=None, stop_at=None):
        """Manual backward pass, with LBP-WHT on a chosen subset of linear layers.

        Parameters
        ----------
        cache : ForwardCache
            From :meth:`forward`.
        lbp : None, str, iterable or mapping, optional
            Layers that use :func:`lbpcore.lbp_backward` (see :meth:`resolve_lbp`);
            the others use :func:`lbpcore.dense_backward`.  Default None (exact).
        patch, bases, pad : optional
            Default LBP-WHT setting (``8``, ``"lp_l1:6"``, ``"reflect"``).
        capture : bool, optional
            Record each linear layer's ``(x, weight, grad_y)`` (default False).
        grad_loss : float, optional
            Gradient with respect to the loss (default 1.0).
        grad_logits : ndarray, shape (B, num_classes), optional
            Start from this gradient of the logits instead of the loss (needed
            when the forward pass had no labels).
        backward_fns : mapping of str to callable, optional
            Per linear layer (exact names, the head included), a function
            ``fn(grad_y, cache, info) -> (grad_x, grad_weight, grad_bias)``
            used instead of the exact or LBP-WHT backward; ``cache`` is the
            layer's :class:`LinearCache` and ``info`` its
            :class:`LinearLayerInfo`.  This is the hook for other approximate
            backward passes (a projection onto any per-patch subspace, say).
            A layer may not be both here and in ``lbp``.
        stop_at : int, optional
            Stop at the input of block ``stop_at`` (``0 <= stop_at <= depth``):
            the parameters below it (earlier blocks, position embedding, class
            token, patch embedding) get no gradient and ``grad_images`` is None,
            as when only the last ``depth - stop_at`` blocks and the head are
            trained.  Default None: the whole network.

        Returns
        -------
        BackwardResult
        """
        cfg, p, caches = self.config, self.params, cache.ops
        settings = self.resolve_lbp(lbp, patch=patch, bases=bases, pad=pad)
        backward_fns = dict(backward_fns or {})
        unknown = sorted(set(backward_fns) - set(self.layers))
        if unknown:
            raise ValueError(f"backward_fns: {unknown} are not linear layers; layers are {list(self.layers)}")
        both = sorted(set(backward_fns) & set(settings))
        if both:
            raise ValueError(f"layers {both} are both in lbp and in backward_fns")
        if stop_at is not None and not (isinstance(stop_at, (int, np.integer)) and 0 <= stop_at <= cfg.depth):
            raise ValueError(f"stop_at must be an integer between 0 and depth={cfg.depth}, got {stop_at!r}")
        grads = {}
        captured = {} if capture else None

        def linear_grad(name, grad, linear_cache):
            """Backward of linear layer ``name``: stores its parameter gradients, returns grad_x."""
            info = self.layers[name]
            if captured is not None:
                captured[name] = LayerIO(name, linear_cache.x, linear_cache.weight, grad, info.grid, info.extra_tokens)
            if name in backward_fns:
                gx, grads[name + ".weight"], grads[name + ".bias"] = backward_fns[name](grad, linear_cache, info)
                return gx
            gx, grads[name + ".weight"], grads[name + ".bias"] = linear_backward(
                grad, linear_cache, lbp=settings.get(name), grid=info.grid, extra_tokens=info.extra_tokens
            )
            return gx

        def norm_grad(name, grad):
            """Backward of LayerNorm ``name``: stores its parameter gradients, returns grad_x."""
            gx, grads[name + ".weight"], grads[name + ".bias"] = ops.layernorm_backward(grad, caches[name])
            return gx

        if grad_logits is None:
            if "loss" not in caches:
                raise ValueError("the forward pass had no labels: pass grad_logits=")
            g = ops.softmax_cross_entropy_backward(grad_loss, caches["loss"])
        else:
            g = np.asarray(grad_logits, dtype=cache.logits.dtype)
            if g.shape != cache.logits.shape:
                raise ValueError(f"grad_logits must have shape {cache.logits.shape}, got {g.shape}")
        g = linear_grad("head", g, caches["head"])
        g = ops.mean_pool_backward(g, caches["pool"])
        g = norm_grad("norm", g)
        first = 0 if stop_at is None else int(stop_at)
        for i in reversed(range(first, cfg.depth)):
            b = f"blocks.{i}."
            g, gh = ops.residual_backward(g)
            gh = linear_grad(b + "mlp.fc2", gh, caches[b + "mlp.fc2"])
            gh = ops.gelu_backward(gh, caches[b + "mlp.act"])
            gh = linear_grad(b + "mlp.fc1", gh, caches[b + "mlp.fc1"])
            g = g + norm_grad(b + "norm2", gh)
            g, gh = ops.residual_backward(g)
            gh = linear_grad(b + "attn.proj", gh, caches[b + "attn.proj"])
            gh = attention_backward(gh, caches[b + "attn.core"])
            gh = linear_grad(b + "attn.qkv", gh, caches[b + "attn.qkv"])
            g = g + norm_grad(b + "norm1", gh)
        g_img = None
        if stop_at is None:
            g, grads["pos_embed"] = ops.pos_embed_backward(g)
            if cfg.class_token:
                g, grads["cls_token"] = ops.cls_token_backward(g)
            embed = caches["patch_embed"]  # patch_embed_backward, with the linear layer's capture
            g_img = patchify_backward(linear_grad("patch_embed", g, embed.linear), embed.patchify)
        grads = {k: grads[k] for k in p if k in grads}  # parameter order
        if captured is not None:
            captured = {n: captured[n] for n in self.layers if n in captured}
        return BackwardResult(grads, g_img, settings, captured)

    def loss_and_grads(self, images, labels, **backward_kwargs):
        """Forward and backward in one call.

        Parameters
        ----------
        images : ndarray, shape (B, in_chans, image_size, image_size)
        labels : ndarray of int, shape (B,)
        **backward_kwargs
            Passed to :meth:`backward` (``lbp=``, ``patch=``, ``bases=`` ...).

        Returns
        -------
        loss : float
        grads : dict of str to ndarray
        """
        loss, cache = self.forward(images, labels)
        return loss, self.backward(cache, **backward_kwargs).grads

    def attention_backward_flops(self, batch: int) -> int:
        """FLOPs of the attention matrix products in one block's backward.

        Four batched GEMMs (gradients of ``A v`` and of ``q k^T``), each
        ``2 B L^2 C``: ``8 B L^2 C``.  These do not shrink under LBP-WHT.
        """
        cfg = self.config
        return 8 * int(batch) * cfg.num_tokens**2 * cfg.dim
