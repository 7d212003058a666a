"""End-to-end fidelity of an LBP-WHT backward through a :class:`~analysis.vit.TinyViT`.

:func:`gradient_fidelity` compares every parameter gradient of an LBP-WHT
backward with the exact one, layer by layer (errors of one layer propagate into
the gradients of every layer before it), next to the backward FLOPs of each
linear layer from :func:`lbpcore.backward_cost`.  :func:`capture_linear_io`
records the ``(x, weight, grad_y)`` each linear layer sees in the exact backward.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import numpy as np

import lbpcore

from ..io import text_table, to_jsonable
from ..metrics import cosine, energy_fraction, relative_error

__all__ = ["ParameterError", "LayerReport", "FidelityReport", "capture_linear_io", "gradient_fidelity"]


@dataclass(frozen=True)
class ParameterError:
    """Error of one parameter gradient against the exact backward.

    Attributes
    ----------
    name : str
        Parameter name (see :class:`TinyViT`).
    layer : str
        Module it belongs to (``"blocks.0.mlp.fc1"``, ``"blocks.0.norm1"``, ``"pos_embed"``...).
    shape : tuple of int
    exact_norm : float
        Frobenius norm of the exact gradient.
    rel_error : float
        ``||g_lbp - g_exact||_F / ||g_exact||_F`` (0 when both vanish, inf if only the exact one does).
    cosine : float
        Cosine similarity of the flattened gradients
        (:func:`analysis.metrics.cosine`: 1.0 when both vanish, 0.0 when one does).
    max_abs_error : float

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, gradient_fidelity
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2))
    >>> rep = gradient_fidelity(model, images, labels, "blocks.0.mlp.fc2", patch=4, bases="lp_l1:2")
    >>> pe = rep.parameters[0]
    >>> pe.name, pe.layer, pe.rel_error > 0
    ('patch_embed.weight', 'patch_embed', True)
    """

    name: str
    layer: str
    shape: tuple
    exact_norm: float
    rel_error: float
    cosine: float
    max_abs_error: float

    def to_dict(self) -> dict:
        """JSON-ready dict (an infinite error becomes None)."""
        return to_jsonable(asdict(self))


@dataclass(frozen=True)
class LayerReport:
    """One linear layer: how it backpropagated, its cost and its weight-gradient error.

    Attributes
    ----------
    name : str
    method : {"dense", "lbp"}
    bases : str or None
        Spec of the selected bases (LBP-WHT layers).
    patch, rank : int or None
        ``n`` and ``r`` (LBP-WHT layers).
    grid : (int, int) or None
    extra_tokens : int
    x_shape : tuple of int
    out_features : int
    dense_flops : int
        FLOPs of the exact backward GEMMs, ``4 B L C_in C_out``.
    backward_flops : int
        FLOPs of the backward actually used (LBP-WHT: GEMMs on coefficients plus
        projections, :attr:`lbpcore.BackwardCost.lbp_flops`).
    gemm_flops, projection_flops : int
        The two parts of ``backward_flops`` (``projection_flops`` is 0 when dense).
    flops_saved : int
        ``dense_flops - backward_flops`` (negative if projections cost more).
    ideal_speedup : float
        ``dense_flops / gemm_flops``.
    weight_rel_error, weight_cosine : float
        Of the weight gradient in the full LBP-WHT backward: includes the
        error propagated from every later LBP-WHT layer.
    bias_rel_error : float
        Of the bias gradient (exact locally; nonzero only through propagation).
    local_weight_rel_error : float or None
        Error of this layer's LBP-WHT weight gradient computed from the exact
        ``(x, grad_y)`` alone: the layer's own contribution.
    grad_y_energy_kept : float or None
        ``||P grad_y||^2 / ||grad_y||^2`` of the exact output gradient's grid
        part (SPEC 5): 1 means nothing dropped.

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, gradient_fidelity
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2))
    >>> rep = gradient_fidelity(model, images, labels, "blocks.0.mlp.fc2", patch=4, bases="lp_l1:2")
    >>> lr = rep.layers[4]
    >>> lr.name, lr.method, lr.rank, lr.dense_flops == 4 * 2 * 16 * 32 * 8
    ('blocks.0.mlp.fc2', 'lbp', 3, True)
    """

    name: str
    method: str
    bases: str | None
    patch: int | None
    rank: int | None
    grid: tuple | None
    extra_tokens: int
    x_shape: tuple
    out_features: int
    dense_flops: int
    backward_flops: int
    gemm_flops: int
    projection_flops: int
    flops_saved: int
    ideal_speedup: float
    weight_rel_error: float
    weight_cosine: float
    bias_rel_error: float
    local_weight_rel_error: float | None
    grad_y_energy_kept: float | None

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return to_jsonable(asdict(self))


@dataclass(frozen=True)
class FidelityReport:
    """Result of :func:`gradient_fidelity`.

    Attributes
    ----------
    config : dict
        The model's :class:`ViTConfig`.
    batch : int
    loss : float
    lbp : dict of str to dict
        The LBP-WHT layers and their settings (:meth:`LBPSetting.to_dict`).
    parameters : list of ParameterError
        Every parameter, forward order.
    layers : list of LayerReport
        Every linear layer, forward order.
    dense_linear_flops : int
        Backward FLOPs of all linear layers, exact.
    lbp_linear_flops : int
        Backward FLOPs of all linear layers with the selection.
    attention_flops : int
        Backward FLOPs of the attention matrix products (unchanged by LBP-WHT).

    Examples
    --------
    >>> import json
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, gradient_fidelity
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2))
    >>> rep = gradient_fidelity(model, images, labels, "all", patch=4, bases="lp_l1:3")
    >>> rep.max_rel_error > 0, rep.errors()["head.weight"]
    (True, 0.0)
    >>> sorted(json.loads(rep.to_json()))[:3]
    ['attention_flops', 'batch', 'config']
    """

    config: dict
    batch: int
    loss: float
    lbp: dict
    parameters: list
    layers: list
    dense_linear_flops: int
    lbp_linear_flops: int
    attention_flops: int

    @property
    def linear_flops_saved_fraction(self) -> float:
        """Fraction of the linear layers' backward FLOPs saved."""
        return 1.0 - self.lbp_linear_flops / self.dense_linear_flops

    @property
    def total_flops_saved_fraction(self) -> float:
        """Fraction saved of linear plus attention-GEMM backward FLOPs."""
        total = self.dense_linear_flops + self.attention_flops
        return (self.dense_linear_flops - self.lbp_linear_flops) / total

    @property
    def max_rel_error(self) -> float:
        """Largest relative error over all parameter gradients."""
        return max(pe.rel_error for pe in self.parameters)

    def errors(self) -> dict:
        """``{parameter name: relative error}``."""
        return {pe.name: pe.rel_error for pe in self.parameters}

    def to_dict(self) -> dict:
        """JSON-ready dict, with the derived fractions and ``max_rel_error``."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["parameters"] = [pe.to_dict() for pe in self.parameters]
        d["layers"] = [lr.to_dict() for lr in self.layers]
        d["linear_flops_saved_fraction"] = self.linear_flops_saved_fraction
        d["total_flops_saved_fraction"] = self.total_flops_saved_fraction
        d["max_rel_error"] = self.max_rel_error
        return to_jsonable(d)

    def to_json(self, **kwargs) -> str:
        """:func:`json.dumps` of :meth:`to_dict` (keyword arguments passed on)."""
        return json.dumps(self.to_dict(), **kwargs)

    def table(self) -> str:
        """Plain-text table: one row per parameter, with each linear layer's method and cost."""
        by_layer = {lr.name: lr for lr in self.layers}
        rows = []
        for pe in self.parameters:
            lr = by_layer.get(pe.layer)
            method = "" if lr is None else ("dense" if lr.method == "dense" else f"lbp {lr.bases}/{lr.patch}")
            cost = ("", "") if lr is None or not pe.name.endswith(".weight") else (
                f"{lr.backward_flops / 1e6:.2f}", f"{lr.dense_flops / 1e6:.2f}")
            rows.append([pe.name, method, f"{pe.rel_error:.2e}", f"{pe.cosine:.5f}", *cost])
        lines = [text_table(["parameter", "method", "rel err", "cosine", "bwd MFLOP", "dense"], rows, align="llrrrr")]
        lines.append(
            f"linear backward: {self.lbp_linear_flops / 1e6:.2f} / {self.dense_linear_flops / 1e6:.2f} MFLOP "
            f"({100 * self.linear_flops_saved_fraction:.1f}% saved; attention GEMMs "
            f"{self.attention_flops / 1e6:.2f} MFLOP unchanged)"
        )
        return "\n".join(lines)


def _parameter_error(name, layer, approx, exact) -> ParameterError:
    """Error of gradient ``approx`` against ``exact`` (both converted to float64)."""
    a = np.asarray(approx, dtype=np.float64)
    b = np.asarray(exact, dtype=np.float64)
    max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    return ParameterError(name, layer, tuple(b.shape), float(np.linalg.norm(b.ravel())), relative_error(a, b),
                          cosine(a, b), max_abs)


def capture_linear_io(model, images, labels):
    """The ``(x, weight, grad_y)`` every linear layer sees in the exact backward.

    Parameters
    ----------
    model : TinyViT
    images : ndarray, shape (B, in_chans, image_size, image_size)
    labels : ndarray of int, shape (B,)

    Returns
    -------
    dict of str to LayerIO
        Forward order (``patch_embed``, blocks, ``head``).  Token layers have
        ``x`` (B, L, C_in) and ``grad_y`` (B, L, C_out) on ``grid``; the head
        has ``x`` (B, C) and ``grad_y`` (B, num_classes).

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, capture_linear_io
    >>> images, labels = image_batch(batch=2, size=16)
    >>> io = capture_linear_io(TinyViT(ViTConfig(image_size=16, dim=8, depth=1, heads=2)), images, labels)
    >>> list(io)
    ['patch_embed', 'blocks.0.attn.qkv', 'blocks.0.attn.proj', 'blocks.0.mlp.fc1', 'blocks.0.mlp.fc2', 'head']
    >>> io["patch_embed"].x.shape, io["head"].x.shape
    ((2, 16, 48), (2, 8))
    """
    _, cache = model.forward(images, labels)
    return model.backward(cache, capture=True).captured


def gradient_fidelity(model, images, labels, lbp, *, patch=8, bases="lp_l1:6", pad="reflect"):
    """Every parameter gradient under LBP-WHT against the exact backward, with costs.

    One forward pass; one exact backward (capturing each layer's
    ``(x, weight, grad_y)``) and one backward with the selected LBP-WHT layers.
    Errors are reported for every parameter, so the effect of an approximate
    layer on all the layers before it (the backward order) is visible.

    Parameters
    ----------
    model : TinyViT
    images : ndarray, shape (B, in_chans, image_size, image_size)
    labels : ndarray of int, shape (B,)
    lbp : None, str, iterable or mapping
        The LBP-WHT layers (see :meth:`TinyViT.resolve_lbp`).
    patch, bases, pad : optional
        Default setting of the selected layers (``8``, ``"lp_l1:6"``, ``"reflect"``).

    Returns
    -------
    FidelityReport

    Examples
    --------
    >>> from analysis.images import image_batch
    >>> from analysis.vit import TinyViT, ViTConfig, gradient_fidelity
    >>> images, labels = image_batch(batch=2, size=16)
    >>> model = TinyViT(ViTConfig(image_size=16, dim=16, depth=1, heads=2, dtype="float64"))
    >>> rep = gradient_fidelity(model, images, labels, "all", patch=4, bases="lp_l1:7")
    >>> rep.max_rel_error < 1e-12  # every basis: exact
    True
    """
    loss, cache = model.forward(images, labels)
    exact = model.backward(cache, capture=True)
    approx = model.backward(cache, lbp=lbp, patch=patch, bases=bases, pad=pad)
    batch = int(cache.logits.shape[0])
    itemsize = np.dtype(model.config.dtype).itemsize
    params = [_parameter_error(name, model.layer_of(name), approx.grads[name], exact.grads[name])
              for name in model.params]
    errors = {pe.name: pe for pe in params}
    layers = [
        _layer_report(info, exact, approx.lbp.get(name), errors, itemsize) for name, info in model.layers.items()
    ]
    return FidelityReport(
        config=model.config.to_dict(),
        batch=batch,
        loss=float(loss),
        lbp={n: s.to_dict() for n, s in approx.lbp.items()},
        parameters=params,
        layers=layers,
        dense_linear_flops=sum(lr.dense_flops for lr in layers),
        lbp_linear_flops=sum(lr.backward_flops for lr in layers),
        attention_flops=model.config.depth * model.attention_backward_flops(batch),
    )


def _layer_report(info, exact, setting, errors, itemsize) -> LayerReport:
    """Cost and errors of one linear layer (``setting`` None: exact backward).

    ``exact`` is the exact :class:`~analysis.vit.BackwardResult` (with what
    each layer saw), ``errors`` the :class:`ParameterError` of every parameter.
    """
    name = info.name
    io = exact.captured[name]
    x_shape = tuple(io.x.shape)
    selection = {} if setting is None else {"patch": setting.patch, "bases": setting.bases, "pad": setting.pad}
    if info.on_grid:  # LBP-WHT settings exist only for these
        cost = lbpcore.backward_cost(x_shape, info.out_features, grid=info.grid, extra_tokens=info.extra_tokens,
                                     itemsize=itemsize, **selection)
        dense = int(cost.dense_flops)
    else:
        dense = 4 * int(np.prod(x_shape)) * info.out_features
    weight, bias = errors[name + ".weight"], errors[name + ".bias"]
    common = dict(name=name, grid=info.grid, extra_tokens=info.extra_tokens, x_shape=x_shape,
                  out_features=info.out_features, dense_flops=dense, weight_rel_error=weight.rel_error,
                  weight_cosine=weight.cosine, bias_rel_error=bias.rel_error)
    if setting is None:
        return LayerReport(method="dense", bases=None, patch=None, rank=None, backward_flops=dense, gemm_flops=dense,
                           projection_flops=0, flops_saved=0, ideal_speedup=1.0, local_weight_rel_error=None,
                           grad_y_energy_kept=None, **common)
    on_grid = dict(grid=info.grid, extra_tokens=info.extra_tokens, **selection)
    local = lbpcore.lbp_backward(io.x, io.weight, io.grad_y, **on_grid).grad_weight
    grad_y = np.asarray(io.grad_y, dtype=np.float64)
    kept = lbpcore.apply_projector(grad_y, **on_grid)
    e = info.extra_tokens
    used = int(cost.lbp_flops)
    return LayerReport(
        method="lbp",
        bases=setting.spec,
        patch=int(setting.patch),
        rank=int(setting.basis.rank),
        backward_flops=used,
        gemm_flops=int(cost.lbp_gemm_flops),
        projection_flops=int(cost.projection_flops),
        flops_saved=dense - used,
        ideal_speedup=float(cost.ideal_speedup),
        local_weight_rel_error=relative_error(local, exact.grads[name + ".weight"]),
        grad_y_energy_kept=energy_fraction(np.sum(kept[:, e:] ** 2), np.sum(grad_y[:, e:] ** 2)),
        **common,
    )
