"""Replace a model's linear layers by their LBP-WHT versions, by qualified name, and back."""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from .._grids import check_extra_spec, check_grid_spec, for_layer
from ._modules import LBPConv2d, LBPLinear, is_pointwise_conv

__all__ = ["convert", "linear_layers", "match_layers", "revert"]

_LBP_TYPES = (LBPLinear, LBPConv2d)


def linear_layers(model: nn.Module) -> dict:
    """Every ``nn.Linear`` and 1x1 ``nn.Conv2d`` of ``model`` (converted or not) by qualified name.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    dict of str to torch.nn.Module
        In the order of :meth:`~torch.nn.Module.named_modules`; a module reachable
        under several names is listed under each.  The ``out_proj`` of an
        ``nn.MultiheadAttention`` is left out: the attention uses its weight
        directly and never calls it, so it can be neither converted nor captured.

    Examples
    --------
    >>> from torch import nn
    >>> from lbpcore.torch import linear_layers
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 2, 1))
    >>> list(linear_layers(model))
    ['0', '3']
    """
    modules = dict(model.named_modules(remove_duplicate=False))
    return {name: m for name, m in modules.items()
            if name and (isinstance(m, nn.Linear) or is_pointwise_conv(m))
            and not isinstance(modules.get(name.rpartition(".")[0]), nn.MultiheadAttention)}


def _patterns(include) -> list:
    patterns = [include] if isinstance(include, str) else list(include)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"include must be a glob pattern or a non-empty list of them, got {include!r}")
    return patterns


def _listing(names, limit=12) -> str:
    names = list(names)
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return shown or "none"


def match_layers(model: nn.Module, include) -> list:
    """Qualified names of the linear layers of ``model`` that glob patterns select.

    Parameters
    ----------
    model : torch.nn.Module
    include : str or sequence of str
        :func:`fnmatch.fnmatchcase` patterns on qualified names, e.g.
        ``"blocks.*.mlp.*"``; ``"*"`` selects every layer.

    Returns
    -------
    list of str
        The names :func:`linear_layers` lists that some pattern matches, in
        model order.

    Raises
    ------
    ValueError
        If a pattern matches no ``nn.Linear`` or 1x1 ``nn.Conv2d``; the message
        lists the layers there are.

    Examples
    --------
    >>> from torch import nn
    >>> from lbpcore.torch import match_layers
    >>> model = nn.ModuleDict({"fc1": nn.Linear(4, 8), "fc2": nn.Linear(8, 4)})
    >>> match_layers(model, "fc*")
    ['fc1', 'fc2']
    """
    patterns = _patterns(include)
    layers = linear_layers(model)
    for p in patterns:
        if not any(fnmatchcase(name, p) for name in layers):
            other = [name for name, _ in model.named_modules() if name and fnmatchcase(name, p)]
            hint = f" (it matches {_listing(other)}: none of them a layer it calls)" if other else ""
            raise ValueError(
                f"pattern {p!r} matches no nn.Linear or 1x1 nn.Conv2d of the model{hint}; "
                f"its linear layers are: {_listing(layers)}"
            )
    return [name for name in layers if any(fnmatchcase(name, p) for p in patterns)]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def convert(model, include, *, grid="auto", patch=8, bases="lp_l1:6", pad="reflect", extra_tokens=0):
    """Replace, in place, the linear layers of ``model`` that ``include`` selects by LBP-WHT layers.

    ``nn.Linear`` layers become :class:`LBPLinear` (tokens or channels-last
    maps on their grid) and 1x1 ``nn.Conv2d`` layers :class:`LBPConv2d` (the
    grid is each map's ``(H, W)``).  Every layer may have its own grid and
    extra tokens: a model whose layers live at several resolutions and layouts
    (windowed attention next to channels-last MLPs, NCHW stages next to token
    blocks) converts with ``grid="auto"``.  The new layers share the parameters
    of the old ones (an optimizer built before or after keeps working), so the
    ``state_dict`` is unchanged; :func:`revert` puts the old layers back.

    Parameters
    ----------
    model : torch.nn.Module
    include : str or sequence of str
        Glob patterns on qualified names (see :func:`match_layers`), e.g.
        ``"blocks.*.mlp.*"``.
    grid : "auto", (int, int) or dict, optional
        Token grid of the layers' inputs.  ``"auto"`` (default; None is the
        same) takes each input's own: ``(H, W)`` of NCHW maps and of
        channels-last maps ``(B, H, W, C)``, and the square grid of the
        ``N - extra_tokens`` tokens of ``(B, N, C)`` inputs (anything else is a
        ValueError at the first forward pass naming the layer and the shape).
        A pair ``(h, w)`` fixes the grid of every ``nn.Linear`` layer (1x1
        convolutions always take their maps' own ``(H, W)``, which a dict
        entry can state and so check).  A dict maps glob
        patterns on qualified names to ``"auto"`` or a pair; a layer takes the
        value of the first pattern that matches it, and every converted layer
        must match one (``"*"`` makes a default), e.g.
        ``{"blocks.*.attn.*": (7, 7), "*": "auto"}``.
    patch, bases, pad
        As for :func:`lbpcore.lbp_backward`.
    extra_tokens : int or dict, optional
        Leading tokens before the grid of the ``nn.Linear`` layers' inputs (a
        class token...), default 0; a dict of patterns as for ``grid``.

    Returns
    -------
    list of str
        Qualified names of the layers replaced (already converted ones are
        left as they are and not listed).

    Raises
    ------
    ValueError
        If a pattern matches no linear layer, a converted layer matches no
        pattern of a ``grid`` or ``extra_tokens`` dict, or the grid, patch,
        basis or padding is invalid (before anything is replaced).  An input
        that does not fit its layer's grid raises in the forward pass, naming
        the layer.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from lbpcore.torch import convert, revert
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
    >>> convert(model, "*", grid=(4, 4), patch=4, bases="lp_l1:2")
    ['0', '2']
    >>> model[0]
    LBPLinear(in_features=8, out_features=16, bias=True, grid=(4, 4), patch=4, bases='lp_l1:2', pad='reflect')
    >>> model(torch.randn(3, 16, 8)).sum().backward()
    >>> revert(model)
    ['0', '2']
    """
    grid = check_grid_spec(grid)
    extra_tokens = check_extra_spec(extra_tokens)
    names = match_layers(model, include)
    layers = linear_layers(model)
    todo = [n for n in names if not isinstance(layers[n], _LBP_TYPES)]
    made = {}  # one LBP-WHT layer per dense module, even where it has several names
    for name in todo:
        dense = layers[name]
        if id(dense) not in made:
            if isinstance(dense, nn.Linear):
                made[id(dense)] = LBPLinear.from_linear(dense, grid=grid, patch=patch, bases=bases, pad=pad,
                                                        extra_tokens=extra_tokens, name=name)
            else:
                conv_grid = for_layer(grid, name, "grid") if isinstance(grid, dict) else "auto"
                made[id(dense)] = LBPConv2d.from_conv(dense, grid=conv_grid, patch=patch, bases=bases, pad=pad,
                                                      name=name)
    for name in todo:
        _set(model, name, made[id(layers[name])])
    return todo


def revert(model):
    """Put back, in place, the dense layers that :func:`convert` replaced.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    list of str
        Qualified names of the layers restored.  Each gets the current
        parameters of its LBP-WHT layer (the same objects, trained or moved
        with the model).

    Examples
    --------
    >>> from torch import nn
    >>> from lbpcore.torch import convert, revert
    >>> model = nn.Sequential(nn.Linear(8, 8))
    >>> convert(model, "0", grid=(2, 2), patch=2), revert(model), type(model[0]).__name__
    (['0'], ['0'], 'Linear')
    """
    done = [(name, m) for name, m in model.named_modules(remove_duplicate=False)
            if name and isinstance(m, _LBP_TYPES)]
    dense = {id(m): m.to_dense() for _, m in done}
    for name, m in done:
        _set(model, name, dense[id(m)])
    return [name for name, _ in done]
