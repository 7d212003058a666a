"""Backward methods of a fine-tuning run, and how each turns into a backward pass and a cost.

A :class:`Method` is parsed from a short spec:

* ``dense``: full backpropagation;
* ``lp_l1:k``, ``lp_linf:k``: LBP-WHT with that Walsh selection
  (:func:`lbpcore.select_bases`); ``lp_linf:n`` is every basis, exact on a
  divisible grid;
* ``energy_l2:r`` (``energy_l1:r``): LBP-WHT with the ``r`` Walsh bases of most
  energy, per layer, calibrated on output gradients of a pretraining batch;
* ``dct:r``, ``random:r``: the same-rank per-patch baselines of
  :mod:`analysis.baselines` (low-pass DCT, a random subspace), through
  :func:`analysis.errors.subspace_backward`;
* ``budget:k``: exact gradients for the last ``k`` blocks, the final norm and
  the head only; nothing below is trained or backpropagated;
* any published method of :mod:`analysis.methods` (``velora:G``,
  ``compact:rho``, ``wtacrs:rho``, ``crs:rho``, ``meprop:rho``, ``rad:rho``,
  ``hot``, ``calibrated:r``; ``lbp:<bases>`` is the LBP-WHT method of that
  selection): its backward on every approximated layer, the stochastic ones
  drawing from one generator per layer and seed, the calibrated ones (VeLoRA,
  ``calibrated``) fitted on the first fine-tuning batch and frozen.

:func:`build_plan` binds a method to a model: which layers approximate their
backward and how (the ``lbp``, ``backward_fns`` and ``stop_at`` arguments of
:meth:`analysis.vit.TinyViT.backward`), which parameters are trained, the
per-patch subspace of each approximated layer (for the energy it keeps) and the
backward FLOPs of every trained linear layer from :func:`lbpcore.backward_cost`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

import lbpcore

from ..baselines import dct_basis, random_basis, walsh_basis
from ..errors import patch_vectors, subspace_backward
from ..labels import method_name
from ..methods import available_methods, get_method
from ..metrics import energy_fraction
from ..spectrum import full_basis
from ..vit import LBPSetting

__all__ = ["METHOD_KINDS", "Method", "parse_method", "BackwardPlan", "build_plan", "layer_flops"]

#: Kinds of :class:`Method`, in the order tables list them.
METHOD_KINDS = ("dense", "lbp", "subspace", "budget", "published")

_SPEC_RE = re.compile(r"^\s*(?P<family>[a-z_0-9]+)(?::(?P<arg>\d+))?\s*$")
_WALSH = ("lp_l1", "lp_linf", "energy_l1", "energy_l2")
_SUBSPACES = ("dct", "random")


@dataclass(frozen=True)
class Method:
    """One backward method of a fine-tuning run.

    Attributes
    ----------
    name : str
        The spec, normalized (``"dense"``, ``"lp_l1:4"``, ``"dct:10"``, ``"budget:1"``...).
    kind : {"dense", "lbp", "subspace", "budget", "published"}
    bases : str or None
        The Walsh selection spec of an LBP-WHT method.
    rank : int or None
        Bases per patch ``r`` of an LBP-WHT or subspace method.
    patch : int
        LBP patch size ``n``.
    subspace : str or None
        ``"dct"`` or ``"random"`` for a subspace baseline.
    blocks : int or None
        Blocks trained by a budget method.
    published : str or None
        The :func:`analysis.methods.get_method` spec of a published method.

    Examples
    --------
    >>> from analysis.finetune import parse_method
    >>> m = parse_method("lp_l1:4")
    >>> m.kind, m.bases, m.rank, m.label
    ('lbp', 'lp_l1:4', 10, 'LBP-WHT lp_l1:4 (r=10)')
    >>> parse_method("budget:1").to_dict()["blocks"]
    1
    """

    name: str
    kind: str
    bases: str | None = None
    rank: int | None = None
    patch: int = 8
    subspace: str | None = None
    blocks: int | None = None
    published: str | None = None

    @property
    def label(self) -> str:
        """Human-readable name for tables and legends (names from :mod:`analysis.labels`)."""
        if self.kind == "dense":
            return method_name("dense")
        if self.kind == "lbp":
            return f"{method_name('lbp')} {self.bases} (r={self.rank})"
        if self.kind == "subspace":
            return f"{method_name(self.subspace)} subspace (r={self.rank})"
        if self.kind == "published":
            return self.published
        return f"last {self.blocks} block{'s' if self.blocks != 1 else ''} + head"

    @property
    def style_key(self) -> str:
        """Key of its line style in :data:`analysis.labels.PLOT_STYLES`."""
        if self.kind == "lbp":
            if self.rank == self.patch**2:
                return "full_basis"
            return "lbp" if self.bases.startswith("lp_l1") else self.bases.split(":")[0]
        if self.kind == "published":
            return self.published.split(":")[0]
        return self.subspace if self.kind == "subspace" else self.kind

    def to_dict(self) -> dict:
        """Plain dict of the fields plus ``label`` and ``style_key``."""
        return {"name": self.name, "kind": self.kind, "label": self.label, "style_key": self.style_key,
                "bases": self.bases, "rank": self.rank, "patch": self.patch, "subspace": self.subspace,
                "blocks": self.blocks, "published": self.published}


def parse_method(spec, *, patch=8) -> Method:
    """Parse a method spec (see the table of :mod:`analysis.finetune.methods`).

    Parameters
    ----------
    spec : str or Method
    patch : int, optional
        LBP patch size ``n`` (default 8).

    Returns
    -------
    Method

    Raises
    ------
    ValueError
        On an unknown family, a missing or out-of-range argument.

    Examples
    --------
    >>> from analysis.finetune import parse_method
    >>> [parse_method(s).rank for s in ("lp_l1:2", "lp_linf:8", "energy_l2:6", "random:6")]
    [3, 64, 6, 6]
    >>> parse_method("dense").rank is None
    True
    """
    if isinstance(spec, Method):
        return spec
    family, _, rest = str(spec).strip().partition(":")
    if family.lower() == "lbp":
        return parse_method(rest, patch=patch)
    if family.lower() in available_methods():
        published = get_method(str(spec).strip()).spec  # validates, naming the accepted forms
        return Method(published, "published", patch=patch, published=published)
    m = _SPEC_RE.match(str(spec).lower())
    family, arg = (m.group("family"), m.group("arg")) if m else (None, None)
    if family == "dense" and arg is None:
        return Method("dense", "dense", patch=patch)
    if family is None or arg is None or (family not in _WALSH + _SUBSPACES and family != "budget"):
        published = ", ".join(form for form, _ in available_methods().values())
        raise ValueError(f"unknown method {spec!r}; use dense, lp_l1:k, lp_linf:k, energy_l2:r, energy_l1:r, "
                         f"dct:r, random:r, budget:k or a published method ({published})")
    value = int(arg)
    name = f"{family}:{value}"
    if family == "budget":
        return Method(name, "budget", patch=patch, blocks=value)
    if family in _SUBSPACES:
        if not 1 <= value <= patch * patch:
            raise ValueError(f"{name}: rank must be between 1 and {patch * patch} for patch {patch}")
        return Method(name, "subspace", rank=value, patch=patch, subspace=family)
    calibration = np.ones((patch, patch)) if family.startswith("energy") else None
    rank = lbpcore.select_bases(patch, name, calibration=calibration).rank  # validates
    return Method(name, "lbp", bases=name, rank=int(rank), patch=patch)


def layer_flops(info, batch, tokens, *, basis=None, subspace_rank=None, patch=8):
    """Backward FLOPs of one linear layer per step, from :func:`lbpcore.backward_cost`.

    Parameters
    ----------
    info : analysis.vit.LinearLayerInfo
    batch : int
        Mini-batch size ``B``.
    tokens : int
        Sequence length ``L`` of the token layers.
    basis : lbpcore.BasisSet, optional
        Walsh selection of an LBP-WHT layer: its ``lbp_flops`` (two GEMMs on
        coefficients plus the butterfly projections).
    subspace_rank : int, optional
        Rank of a DCT or random subspace layer: the same coefficient GEMMs
        plus projections by direct products, ``2 B P r n^2`` FLOPs for each of
        ``x``, ``grad_y`` and the reconstruction of ``grad_x``
        (``2 C_in + C_out`` channels).
    patch : int, optional
        LBP patch size ``n`` (default 8).

    Returns
    -------
    int
        ``dense_flops`` (both GEMMs) when neither ``basis`` nor
        ``subspace_rank`` is given; the head counts as one token.

    Examples
    --------
    >>> from analysis.finetune import layer_flops
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> info = TinyViT(ViTConfig(image_size=16, patch_size=1, dim=8, depth=1, heads=2)).layers["blocks.0.mlp.fc1"]
    >>> layer_flops(info, 2, 256) == 4 * 2 * 256 * 8 * 32
    True
    >>> layer_flops(info, 2, 256, subspace_rank=10)  # at width 8 the projections cost more than they save
    573440
    """
    c_in, c_out = info.in_features, info.out_features
    if info.grid is None:
        return int(lbpcore.backward_cost((batch, 1, c_in), c_out, grid=(1, 1), patch=1, bases="lp_l1:1").dense_flops)
    shape = (batch, tokens, c_in)
    kw = dict(grid=info.grid, patch=patch, pad="none", extra_tokens=info.extra_tokens)
    if basis is not None:
        return int(lbpcore.backward_cost(shape, c_out, bases=basis, **kw).lbp_flops)
    if subspace_rank is not None:
        any_rank_r = full_basis(patch).indices[:subspace_rank]  # the GEMMs depend on the rank only
        cost = lbpcore.backward_cost(shape, c_out, bases=any_rank_r, **kw)
        direct = 2 * batch * cost.patches * subspace_rank * patch * patch * (2 * c_in + c_out)
        return int(cost.lbp_gemm_flops + direct)
    return int(lbpcore.backward_cost(shape, c_out, bases="lp_l1:1", **kw).dense_flops)


class PlanCosts:
    """The cost properties of a bound plan with ``flops`` and ``dense_flops`` (layer name to FLOPs per step)."""

    @property
    def backward_mflops(self) -> float:
        """Backward MFLOPs per step of the adapted layers."""
        return sum(self.flops.values()) / 1e6

    @property
    def dense_mflops(self) -> float:
        """Backward MFLOPs per step of full backpropagation (every linear layer)."""
        return sum(self.dense_flops.values()) / 1e6

    @property
    def fraction_of_dense(self) -> float:
        """``backward_mflops / dense_mflops``."""
        return self.backward_mflops / self.dense_mflops


def _published_fn(spec, patch, rng, dtype):
    """A ``backward_fns`` entry running the published method ``spec`` (bias exact).

    A method that needs calibration is fitted on the first batch it sees, then frozen.
    """
    method = get_method(spec)

    def fn(grad_y, cache, info):
        kw = dict(grid=info.grid, patch=patch, extra_tokens=info.extra_tokens)
        if method.needs_calibration and not method.calibrated:
            method.calibrate(cache.x, cache.weight, grad_y, **kw)
        gx, gw = method.backward(cache.x, cache.weight, grad_y, rng=rng, **kw)
        grad_bias = None if cache.bias is None else grad_y.sum(axis=tuple(range(grad_y.ndim - 1)))
        return gx.astype(dtype, copy=False), gw.astype(dtype, copy=False), grad_bias

    return fn


def _subspace_fn(q, dtype):
    """A ``backward_fns`` entry projecting ``grad_y`` per patch onto the rows of ``q`` (bias exact)."""

    def fn(grad_y, cache, info):
        g = subspace_backward(cache.x, cache.weight, grad_y, q, grid=info.grid, pad="none",
                              extra_tokens=info.extra_tokens)
        grad_bias = None if cache.bias is None else grad_y.sum(axis=tuple(range(grad_y.ndim - 1)))
        return g.grad_x.astype(dtype, copy=False), g.grad_weight.astype(dtype, copy=False), grad_bias

    return fn


@dataclass
class BackwardPlan(PlanCosts):
    """A :class:`Method` bound to a model: the backward pass, the trained parameters, the cost.

    Attributes
    ----------
    method : Method
    approximated : tuple of str
        Linear layers whose backward is approximated (LBP-WHT or subspace).
    adapted : tuple of str
        Linear layers that are trained (their weight gradient is used).
    trainable : tuple of str
        Parameter names the optimizer updates.
    lbp : dict of str to LBPSetting
    backward_fns : dict of str to callable
    stop_at : int or None
    projectors : dict of str to ndarray
        Per approximated layer, the orthonormal rows ``(r, n*n)`` of its per-patch subspace.
    flops : dict of str to int
        Backward FLOPs per step of every adapted layer.
    dense_flops : dict of str to int
        The same layers' FLOPs under full backpropagation of the whole network.

    Examples
    --------
    >>> from analysis.finetune import build_plan
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> model = TinyViT(ViTConfig(image_size=16, patch_size=2, dim=8, depth=2, heads=2))
    >>> plan = build_plan("budget:1", model, batch=4)
    >>> plan.stop_at, plan.adapted[0], plan.trainable[-1], plan.approximated
    (1, 'blocks.1.attn.qkv', 'head.bias', ())
    >>> 0 < plan.fraction_of_dense < 1
    True
    """

    method: Method
    approximated: tuple
    adapted: tuple
    trainable: tuple
    lbp: dict = field(default_factory=dict)
    backward_fns: dict = field(default_factory=dict, repr=False)
    stop_at: int | None = None
    projectors: dict = field(default_factory=dict, repr=False)
    flops: dict = field(default_factory=dict, repr=False)
    dense_flops: dict = field(default_factory=dict, repr=False)

    def backward(self, model, cache, *, capture=False):
        """Run this plan's backward pass.

        Parameters
        ----------
        model : analysis.vit.TinyViT
        cache : analysis.vit.ForwardCache
            From ``model.forward(images, labels)``.
        capture : bool, optional
            Passed to :meth:`~analysis.vit.TinyViT.backward`.

        Returns
        -------
        analysis.vit.BackwardResult

        Examples
        --------
        >>> import numpy as np
        >>> from analysis.finetune import build_plan
        >>> from analysis.vit import TinyViT, ViTConfig
        >>> model = TinyViT(ViTConfig(image_size=16, patch_size=2, dim=8, depth=1, heads=2, num_classes=2))
        >>> images, labels = np.ones((2, 3, 16, 16)), np.array([0, 1])
        >>> plan = build_plan("dct:3", model, batch=2)
        >>> res = plan.backward(model, model.forward(images, labels)[1])
        >>> sorted(res.grads) == sorted(plan.trainable)
        True
        """
        return model.backward(cache, lbp=self.lbp, backward_fns=self.backward_fns, stop_at=self.stop_at,
                              capture=capture)

    def energy_kept(self, name, grad_y, info) -> float:
        """Energy of ``grad_y`` that the per-patch subspace of layer ``name`` keeps.

        Parameters
        ----------
        name : str
            An approximated layer.
        grad_y : ndarray, shape (B, L, C_out)
            Its output gradient (from an exact backward).
        info : analysis.vit.LinearLayerInfo

        Returns
        -------
        float
            ``||Q grad_y||^2 / ||grad_y||^2`` over the grid tokens
            (:func:`analysis.metrics.energy_fraction`).

        Examples
        --------
        >>> import numpy as np
        >>> from analysis.finetune import build_plan
        >>> from analysis.vit import TinyViT, ViTConfig
        >>> model = TinyViT(ViTConfig(image_size=16, patch_size=2, dim=8, depth=1, heads=2))
        >>> plan = build_plan("lp_l1:1", model, batch=1)
        >>> info = model.layers["blocks.0.mlp.fc2"]
        >>> plan.energy_kept("blocks.0.mlp.fc2", np.ones((1, 64, 8)), info)  # constant: all DC
        1.0
        """
        q = self.projectors[name]
        v = patch_vectors(grad_y, grid=info.grid, patch=self.method.patch, pad="none",
                          extra_tokens=info.extra_tokens)
        return float(energy_fraction(float(np.sum((v @ q.T) ** 2)), float(np.sum(v * v))))


def build_plan(method, model, *, batch, layers="all", seed=0, calibration=None) -> BackwardPlan:
    """Bind a method to a model.

    Parameters
    ----------
    method : str or Method
        See :func:`parse_method` (with the patch size 8 unless a
        :class:`Method` says otherwise).
    model : analysis.vit.TinyViT
        Its token grid must be divisible by the patch size (no padding).
    batch : int
        Mini-batch size, for the FLOP counts.
    layers : str or iterable of str, optional
        Token-grid layers (names or patterns, as
        :meth:`~analysis.vit.TinyViT.resolve_lbp`) that an LBP-WHT or subspace
        method approximates; default ``"all"``.  The head is always exact.
    seed : int, optional
        Seed of the random subspaces (one draw per layer).
    calibration : mapping of str to ndarray, optional
        Per approximated layer, output gradients ``(B, L, C_out)`` that rank the
        Walsh bases of an ``energy_*`` method.

    Returns
    -------
    BackwardPlan

    Raises
    ------
    ValueError
        On a grid the patch size does not divide, an energy method without
        calibration for a layer, or more budget blocks than the model has.

    Examples
    --------
    >>> from analysis.finetune import build_plan
    >>> from analysis.vit import TinyViT, ViTConfig
    >>> model = TinyViT(ViTConfig(image_size=16, patch_size=1, dim=8, depth=1, heads=2))
    >>> plan = build_plan("lp_linf:8", model, batch=2)  # every basis of 8 x 8
    >>> len(plan.approximated), plan.lbp["blocks.0.mlp.fc1"].basis.rank
    (5, 64)
    """
    m = parse_method(method)
    cfg = model.config
    n = m.patch
    if any(g % n for g in cfg.grid):
        raise ValueError(f"the token grid {cfg.grid} must be divisible by the patch size {n} (no padding)")
    infos = model.layers
    dense = {k: layer_flops(info, batch, cfg.num_tokens, patch=n) for k, info in infos.items()}
    plan = BackwardPlan(m, (), tuple(infos), tuple(model.params), dense_flops=dense, flops=dict(dense))
    if m.kind == "budget":
        if not 0 <= m.blocks <= cfg.depth:
            raise ValueError(f"{m.name}: the model has {cfg.depth} blocks")
        plan.stop_at = cfg.depth - m.blocks
        top = tuple(f"blocks.{i}." for i in range(plan.stop_at, cfg.depth)) + ("norm.", "head.")
        plan.trainable = tuple(k for k in model.params if k.startswith(top))
        plan.adapted = tuple(k for k in infos if (k + ".").startswith(top))
        plan.flops = {k: dense[k] for k in plan.adapted}
        return plan
    if m.kind == "dense":
        return plan
    plan.approximated = tuple(model.resolve_lbp(layers, patch=n))
    for i, name in enumerate(plan.approximated):
        info = infos[name]
        if m.kind == "lbp":
            if m.bases.startswith("energy"):
                if calibration is None or name not in calibration:
                    raise ValueError(f"{m.name} needs calibration gradients for layer {name!r}")
                basis = lbpcore.select_bases(n, m.bases, calibration=calibration[name], grid=info.grid,
                                             extra_tokens=info.extra_tokens, pad="none")
            else:
                basis = lbpcore.select_bases(n, m.bases)
            plan.lbp[name] = LBPSetting(basis, n, "none")
            plan.projectors[name] = walsh_basis(n, basis)
            plan.flops[name] = layer_flops(info, batch, cfg.num_tokens, basis=basis, patch=n)
        elif m.kind == "published":
            plan.backward_fns[name] = _published_fn(m.published, n, np.random.default_rng([int(seed), i]),
                                                    np.dtype(cfg.dtype))
            plan.flops[name] = get_method(m.published).backward_flops(
                (batch, cfg.num_tokens, info.in_features), info.out_features, grid=info.grid, patch=n,
                extra_tokens=info.extra_tokens)
        else:
            if m.subspace == "dct":
                q = dct_basis(n, m.rank)
            else:
                q = random_basis(n, m.rank, np.random.default_rng([int(seed), i]))
            plan.projectors[name] = q
            plan.backward_fns[name] = _subspace_fn(q, np.dtype(cfg.dtype))
            plan.flops[name] = layer_flops(info, batch, cfg.num_tokens, subspace_rank=m.rank, patch=n)
    return plan
