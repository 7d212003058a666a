"""Backward methods bound to any PyTorch model: which layers change, how, which parameters train, at what cost.

The torch counterpart of :mod:`analysis.finetune.methods`: the same method
specs (:func:`~analysis.finetune.parse_method`), bound to an ``nn.Module``
instead of the NumPy ViT.

* ``dense``: nothing changes.
* ``lp_l1:k``, ``lp_linf:k``, ``energy_l2:r``, ``energy_l1:r``: the selected
  layers are replaced by :func:`lbpcore.torch.convert` (``nn.Linear`` on
  tokens or channels-last maps, 1x1 ``nn.Conv2d`` on NCHW maps), each with the
  grid its input has (``grid="auto"``, a pair or a dict of patterns), its extra
  tokens and ``pad`` for grids the patch does not divide.  The ``energy_*``
  selections rank the Walsh bases per layer on calibration output gradients.
* ``dct:r``, ``random:r``: the same-rank subspace baselines, as an autograd
  function that projects each patch of ``grad_y`` onto the ``r`` orthonormal
  rows (low-pass DCT, :func:`analysis.baselines.dct_basis`, or a random
  subspace, :func:`analysis.baselines.random_basis`, drawn per layer and seed
  as the NumPy engine draws it) before both products; the bias gradient and the
  extra tokens stay exact.  Supported for ``nn.Linear`` layers whose grid the
  patch size divides (no padding), on any device.
* ``budget:k``: exact gradients for the last ``k`` entries of the model's
  block container (``blocks="blocks"``: an ``nn.Sequential`` or
  ``nn.ModuleList`` attribute) and every parameter registered after it (the
  final norm and the head of a timm-style ViT); nothing below is trained, so
  autograd stops at the lowest trained block.

Backward FLOPs per step come from :func:`lbpcore.backward_cost` for every
trained linear layer, counted as in :func:`~analysis.finetune.layer_flops`;
layers off any grid (the head) count as dense products of their input rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lbpcore
from lbpcore._grids import check_extra_spec, check_grid_spec, for_layer, linear_grid, map_grid
from lbpcore.torch import convert, linear_layers, match_layers

from ..baselines import dct_basis, random_basis, walsh_basis
from ..errors import patch_vectors
from ..metrics import energy_fraction
from ..spectrum import full_basis
from .methods import PlanCosts, parse_method

__all__ = ["LayerSite", "TorchPlan", "find_sites", "build_torch_plan", "capture_grad_y"]


@dataclass(frozen=True)
class LayerSite:
    """What one linear layer of a PyTorch model sees in a forward pass.

    Attributes
    ----------
    name : str
        Qualified module name.
    kind : {"linear", "conv"}
        ``nn.Linear`` or 1x1 ``nn.Conv2d``.
    in_features, out_features : int
    x_shape : tuple of int
        Its input's shape in the observed pass.
    grid : (int, int) or None
        Token grid (None for a layer outside ``include``, or off any grid).
    extra_tokens : int
    layout : {"tokens", "nchw"}
        How :func:`lbpcore.backward_cost` reads ``token_shape``.
    token_shape : tuple of int
        ``(B, e + h*w, C_in)`` tokens (channels-last maps flattened), or the
        NCHW shape of a 1x1 convolution's input.

    Examples
    --------
    >>> from analysis.finetune.torch_plan import LayerSite
    >>> s = LayerSite("fc", "linear", 4, 8, (2, 16, 4), (4, 4), 0, "tokens", (2, 16, 4))
    >>> s.rows, s.on_grid
    (32, True)
    """

    name: str
    kind: str
    in_features: int
    out_features: int
    x_shape: tuple
    grid: tuple | None
    extra_tokens: int
    layout: str
    token_shape: tuple

    @property
    def rows(self) -> int:
        """Rows summed in ``grad_W``: every input position (``numel / C_in``)."""
        return int(np.prod(self.x_shape)) // self.in_features

    @property
    def on_grid(self) -> bool:
        """Whether the layer was given a grid (and so may be approximated)."""
        return self.grid is not None

    def dense_flops(self) -> int:
        """Both GEMMs of the dense backward, ``4 rows C_in C_out``."""
        return 4 * self.rows * self.in_features * self.out_features


def _escape(name):
    """A glob pattern matching exactly ``name``."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def find_sites(model, sample, *, include, grid="auto", extra_tokens=0) -> dict:
    """Run ``model(sample)`` once and record what each linear layer sees.

    Parameters
    ----------
    model : torch.nn.Module
    sample : torch.Tensor
        A training batch, as ``model`` takes it.
    include : str, sequence of str or None
        Glob patterns of the layers that may be approximated (see
        :func:`lbpcore.torch.match_layers`); they get a grid.  None: no layer.
    grid, extra_tokens
        As for :func:`lbpcore.torch.convert` (``"auto"``, a pair or a dict of patterns).

    Returns
    -------
    dict of str to LayerSite
        Every linear layer the forward pass called, in model order.

    Raises
    ------
    ValueError
        If a pattern matches no layer, an included layer is not called by the
        forward pass, or its input does not fit its grid.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from analysis.finetune.torch_plan import find_sites
    >>> model = nn.Sequential(nn.Linear(3, 8), nn.GELU(), nn.Linear(8, 2))
    >>> sites = find_sites(model, torch.zeros(2, 1 + 64, 3), include="0", extra_tokens=1)
    >>> sites["0"].grid, sites["0"].extra_tokens, sites["1" if "1" in sites else "2"].grid
    ((8, 8), 1, None)
    """
    grid = check_grid_spec(grid)
    extra_tokens = check_extra_spec(extra_tokens)
    chosen = set() if include is None else set(match_layers(model, include))
    layers = linear_layers(model)
    shapes = {}

    def record(name, args):
        shapes.setdefault(name, tuple(args[0].shape))  # returns None: the output is left as it is

    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: record(name, args))
             for name, m in layers.items()]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
    missing = sorted(chosen - set(shapes))
    if missing:
        raise ValueError(f"include: layers {missing} are not called by the model's forward pass")
    sites = {}
    for name, m in layers.items():
        if name not in shapes:
            continue
        shape = shapes[name]
        conv = isinstance(m, nn.Conv2d)
        cin, cout = (m.in_channels, m.out_channels) if conv else (m.in_features, m.out_features)
        g, e, layout, tshape = None, 0, "tokens", shape
        if name in chosen:
            if conv:
                g, layout = map_grid(shape, for_layer(grid, name, "grid"), name=name), "nchw"
            else:
                e = for_layer(extra_tokens, name, "extra_tokens")
                try:
                    kind, g = linear_grid(shape, for_layer(grid, name, "grid"), e, name=f"the input of {name}")
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from exc
                b = int(np.prod(shape[:-3 if kind == "maps" else -2]))
                tshape = (b, e + g[0] * g[1], cin)
        sites[name] = LayerSite(name, "conv" if conv else "linear", cin, cout, shape, g, e, layout, tshape)
    return sites


def _token_view(t, site):
    """A layer's output gradient as ``(B, e + h*w, C)`` tokens, or NCHW maps for a convolution."""
    if site.layout == "nchw":
        return t
    return t.reshape(-1, site.token_shape[1], t.shape[-1])


def capture_grad_y(model, x, y, names, loss_fn=F.cross_entropy) -> dict:
    """Output gradients of the named layers in one exact forward and backward pass.

    Parameters
    ----------
    model : torch.nn.Module
    x, y : torch.Tensor
        A batch and its labels.
    names : iterable of str
        Qualified names of linear layers.
    loss_fn : callable, optional
        ``loss_fn(model(x), y)``, default :func:`torch.nn.functional.cross_entropy`.

    Returns
    -------
    dict of str to torch.Tensor
        ``grad_y`` of each layer, shaped like its output (detached).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from analysis.finetune.torch_plan import capture_grad_y
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> g = capture_grad_y(model, torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]), ["0"])
    >>> g["0"].shape
    torch.Size([5, 4])
    """
    grads = {}
    mods = dict(model.named_modules())

    def hook(mod, args, out, name):
        if out.requires_grad:
            out.register_hook(lambda g: grads.__setitem__(name, g.detach()))

    hooks = [mods[n].register_forward_hook(lambda m, a, o, n=n: hook(m, a, o, n)) for n in names]
    try:
        with torch.enable_grad():
            loss = loss_fn(model(x), y)
            params = [p for p in model.parameters() if p.requires_grad]
            torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
    return grads


class _SubspaceFunction(torch.autograd.Function):
    """``x @ W^T`` forward; backward with the grid part of ``grad_y`` projected per patch by ``P = Q^T Q``."""

    @staticmethod
    def forward(ctx, x, weight, projector, grid, e, n):
        ctx.save_for_backward(x, weight, projector)
        ctx.setting = (grid, e, n)
        return F.linear(x, weight)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, proj = ctx.saved_tensors
        (h, w), e, n = ctx.setting
        shape = grad_y.shape
        g = grad_y.reshape(-1, e + h * w, shape[-1])
        b, c = g.shape[0], g.shape[-1]
        grid = g[:, e:].reshape(b, h // n, n, w // n, n, c).permute(0, 1, 3, 5, 2, 4).reshape(-1, n * n)
        grid = (grid @ proj).reshape(b, h // n, w // n, c, n, n).permute(0, 1, 4, 2, 5, 3).reshape(b, h * w, c)
        gp = torch.cat([g[:, :e], grid], dim=1) if e else grid
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = (gp @ weight).reshape(*shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            gw = gp.reshape(-1, c).t() @ x.reshape(-1, x.shape[-1])
        return gx, gw, None, None, None, None


class SubspaceLinear(nn.Module):
    """An ``nn.Linear`` whose backward projects ``grad_y`` per patch onto a subspace (parameters shared).

    Parameters
    ----------
    dense : torch.nn.Linear
    basis : ndarray, shape (r, n*n)
        Orthonormal rows, each a flattened (row-major) ``n x n`` patch.
    grid : (int, int)
        The token grid, divisible by ``n``.
    extra_tokens : int
    """

    def __init__(self, dense, basis, grid, extra_tokens):
        super().__init__()
        q = torch.as_tensor(np.asarray(basis), dtype=dense.weight.dtype, device=dense.weight.device)
        self.register_buffer("projector", q.t() @ q, persistent=False)
        self.n = int(round(np.sqrt(q.shape[1])))
        self.grid, self.extra_tokens = tuple(grid), int(extra_tokens)
        self.weight, self.bias = dense.weight, dense.bias
        object.__setattr__(self, "_dense", dense)

    def to_dense(self):
        """The ``nn.Linear`` this layer was built from (same parameter objects)."""
        return self._dense

    def forward(self, x):
        """``x @ weight.T + bias``; the bias gradient is exact."""
        if not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return F.linear(x, self.weight, self.bias)
        y = _SubspaceFunction.apply(x, self.weight, self.projector, self.grid, self.extra_tokens, self.n)
        return y if self.bias is None else y + self.bias


def _set(model, name, module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@dataclass
class TorchPlan(PlanCosts):
    """A :class:`~analysis.finetune.Method` bound to a PyTorch model (see :func:`build_torch_plan`).

    Attributes
    ----------
    method : Method
    sites : dict of str to LayerSite
    approximated, adapted, trainable : tuple of str
        Approximated linear layers, trained linear layers, trained parameter names.
    bases : dict of str to lbpcore.BasisSet
        Walsh selection per approximated layer (LBP-WHT methods).
    projectors : dict of str to ndarray
        Orthonormal rows ``(r, n*n)`` of each approximated layer's per-patch subspace.
    flops, dense_flops : dict of str to int
        Backward FLOPs per step of the trained layers, and of every layer under full backpropagation.
    pad : str
    seed : int

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from analysis.finetune.torch_plan import build_torch_plan
    >>> model = nn.Sequential(nn.Linear(3, 8), nn.GELU(), nn.Linear(8, 2))
    >>> plan = build_torch_plan("lp_l1:2", model, torch.zeros(2, 64, 3), include="*", patch=4)
    >>> plan.approximated, plan.apply(model), round(plan.fraction_of_dense, 3)  # tiny widths: projections dominate
    (('0', '2'), ['0', '2'], 1.387)
    """

    method: object
    sites: dict = field(repr=False)
    approximated: tuple
    adapted: tuple
    trainable: tuple
    bases: dict = field(default_factory=dict, repr=False)
    projectors: dict = field(default_factory=dict, repr=False)
    flops: dict = field(default_factory=dict, repr=False)
    dense_flops: dict = field(default_factory=dict, repr=False)
    pad: str = "reflect"
    seed: int = 0

    def apply(self, model) -> list:
        """Put the method into ``model`` in place: convert or wrap layers, freeze untrained parameters.

        Returns
        -------
        list of str
            The layers replaced.
        """
        m = self.method
        trained = set(self.trainable)
        for name, p in model.named_parameters():
            p.requires_grad_(name in trained)
        done = []
        for name in self.approximated:
            site = self.sites[name]
            if m.kind == "lbp":
                done += convert(model, _escape(name), grid={"*": site.grid}, patch=m.patch, bases=self.bases[name],
                                pad=self.pad, extra_tokens=site.extra_tokens)
            else:
                dense = model.get_submodule(name)
                _set(model, name, SubspaceLinear(dense, self.projectors[name], site.grid, site.extra_tokens))
                done.append(name)
        return done

    @contextlib.contextmanager
    def exact(self, model):
        """Within the block, ``model``'s approximated layers are their dense originals (same parameters)."""
        swapped = {name: model.get_submodule(name) for name in self.approximated}
        for name, layer in swapped.items():
            _set(model, name, layer.to_dense() if hasattr(layer, "to_dense") else layer)
        try:
            yield model
        finally:
            for name, layer in swapped.items():
                _set(model, name, layer)

    def energy_kept(self, name, grad_y) -> float:
        """Energy of an exact ``grad_y`` (the layer's output shape) that layer ``name``'s subspace keeps.

        Returns
        -------
        float
            ``||Q v||^2 / ||v||^2`` over the (padded) patches of the grid tokens.
        """
        site = self.sites[name]
        g = _token_view(grad_y, site).detach().cpu().numpy().astype(np.float64)
        v = patch_vectors(g, grid=site.grid, patch=self.method.patch, pad=self.pad,
                          extra_tokens=site.extra_tokens, layout=site.layout)
        q = self.projectors[name]
        return float(energy_fraction(float(np.sum((v @ q.T) ** 2)), float(np.sum(v * v))))


def _lbp_flops(site, basis, n, pad):
    return int(lbpcore.backward_cost(site.token_shape, site.out_features, grid=site.grid, patch=n, bases=basis,
                                     pad=pad, extra_tokens=site.extra_tokens, layout=site.layout).lbp_flops)


def _subspace_flops(site, rank, n):
    """The coefficient GEMMs of rank ``rank`` plus direct projections, as :func:`~analysis.finetune.layer_flops`."""
    any_rank = full_basis(n).indices[:rank]
    cost = lbpcore.backward_cost(site.token_shape, site.out_features, grid=site.grid, patch=n, bases=any_rank,
                                 pad="none", extra_tokens=site.extra_tokens)
    direct = 2 * site.token_shape[0] * cost.patches * rank * n * n * (2 * site.in_features + site.out_features)
    return int(cost.lbp_gemm_flops + direct)


def _budget(plan, model, blocks, k):
    container = getattr(model, blocks, None) if isinstance(blocks, str) else None
    if not isinstance(container, (nn.Sequential, nn.ModuleList)):
        raise ValueError(f"{plan.method.name}: the model needs a block container model.{blocks} "
                         f"(nn.Sequential or nn.ModuleList; see blocks=), got {type(container).__name__}")
    depth = len(container)
    if not 0 <= k <= depth:
        raise ValueError(f"{plan.method.name}: the model has {depth} blocks")
    names = [n for n, _ in model.named_parameters()]
    inside = [i for i, n in enumerate(names) if n.startswith(blocks + ".")]
    top = tuple(f"{blocks}.{i}." for i in range(depth - k, depth))
    after = names[inside[-1] + 1:] if inside else []
    plan.trainable = tuple(n for n in names if n.startswith(top) or n in after)
    trained = set(plan.trainable)
    plan.adapted = tuple(s for s in plan.sites if f"{s}.weight" in trained)
    plan.flops = {s: plan.dense_flops[s] for s in plan.adapted}
    return plan


def build_torch_plan(method, model, sample, *, include, grid="auto", extra_tokens=0, patch=8, pad="reflect",
                     seed=0, calibration=None, blocks="blocks", sites=None) -> TorchPlan:
    """Bind a method to a PyTorch model.

    Parameters
    ----------
    method : str or Method
        See :func:`~analysis.finetune.parse_method` (with ``patch``).
    model : torch.nn.Module
        Not modified here (:meth:`TorchPlan.apply` does that).
    sample : torch.Tensor
        A training batch (the FLOP counts are per step of this batch size).
    include, grid, extra_tokens
        The layers an approximate method replaces and their grids (see :func:`find_sites`).
    patch : int, optional
        LBP patch size ``n`` (default 8).
    pad : {"reflect", "zero", "none"}, optional
        Padding of grids ``n`` does not divide (LBP-WHT methods; default ``"reflect"``).
    seed : int, optional
        Seed of the random subspaces (one draw per layer, as the NumPy engine).
    calibration : mapping of str to torch.Tensor or ndarray, optional
        Per included layer, output gradients that rank the bases of an ``energy_*`` method.
    blocks : str, optional
        Attribute holding the blocks, for ``budget:k`` (default ``"blocks"``).
    sites : dict of str to LayerSite, optional
        From :func:`find_sites` (computed if not given).

    Returns
    -------
    TorchPlan

    Raises
    ------
    ValueError
        On an energy method without calibration for a layer, a subspace method
        on a convolution or a grid the patch does not divide, or a budget the
        model's blocks cannot give.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from analysis.finetune.torch_plan import build_torch_plan
    >>> model = nn.Sequential(nn.Linear(3, 8), nn.GELU(), nn.Linear(8, 2))
    >>> plan = build_torch_plan("dct:3", model, torch.zeros(2, 16, 3), include="0", patch=4)
    >>> plan.approximated, plan.projectors["0"].shape, plan.trainable
    (('0',), (3, 16), ('0.weight', '0.bias', '2.weight', '2.bias'))
    """
    m = parse_method(method, patch=patch)
    n = m.patch
    if sites is None:
        sites = find_sites(model, sample, include=include, grid=grid, extra_tokens=extra_tokens)
    dense = {k: s.dense_flops() for k, s in sites.items()}
    names = tuple(n_ for n_, _ in model.named_parameters())
    plan = TorchPlan(m, sites, (), tuple(sites), names, flops=dict(dense), dense_flops=dense, pad=pad, seed=seed)
    if m.kind == "budget":
        return _budget(plan, model, blocks, m.blocks)
    if m.kind == "dense":
        return plan
    if m.kind == "published":
        raise ValueError(f"{m.name}: the published methods of analysis.methods run in the NumPy engine only "
                         "(lbp finetune --engine numpy); the torch engine takes dense, LBP-WHT, dct:r, random:r "
                         "and budget:k")
    plan.approximated = tuple(k for k, s in sites.items() if s.on_grid)
    for i, name in enumerate(plan.approximated):
        site = sites[name]
        if m.kind == "lbp":
            if m.bases.startswith("energy"):
                if calibration is None or name not in calibration:
                    raise ValueError(f"{m.name} needs calibration gradients for layer {name!r}")
                g = calibration[name]
                g = _token_view(torch.as_tensor(g), site).detach().cpu().numpy()
                basis = lbpcore.select_bases(n, m.bases, calibration=g, grid=site.grid, pad=pad,
                                             extra_tokens=site.extra_tokens, layout=site.layout)
            else:
                basis = lbpcore.select_bases(n, m.bases)
            plan.bases[name] = basis
            plan.projectors[name] = walsh_basis(n, basis)
            plan.flops[name] = _lbp_flops(site, basis, n, pad)
        else:
            if site.kind != "linear" or any(g % n for g in site.grid):
                raise ValueError(f"{m.name}: layer {name!r} (grid {site.grid}, {site.kind}) is not supported: the "
                                 f"subspace baselines need nn.Linear layers on grids divisible by the patch {n}")
            q = dct_basis(n, m.rank) if m.subspace == "dct" else random_basis(n, m.rank,
                                                                              np.random.default_rng([int(seed), i]))
            plan.projectors[name] = q
            plan.flops[name] = _subspace_flops(site, m.rank, n)
    return plan
