"""Per-layer token grids: a fixed pair, ``"auto"`` (from each input's shape), or glob patterns of layer names.

The settings ``grid`` and ``extra_tokens`` of :func:`lbpcore.torch.convert`,
:class:`lbpcore.torch.LBPLinear` and :func:`analysis.capture.capture` take a
value for every layer or a dict of :func:`fnmatch.fnmatchcase` patterns on
qualified layer names; :func:`for_layer` picks a layer's value from it and
:func:`linear_grid` turns a layer's value and its input shape into the grid.
Nothing here imports PyTorch.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

from ._validation import check_grid, check_int

__all__ = ["AUTO", "check_extra_spec", "check_grid_spec", "for_layer", "linear_grid", "map_grid"]

#: The grid value that takes each input's own grid from its shape.
AUTO = "auto"


def _check_grid_value(value, name):
    if value is None or (isinstance(value, str) and value == AUTO):
        return AUTO
    if isinstance(value, str):
        raise ValueError(f"{name} must be 'auto', a pair (h, w) or a dict of layer patterns, got {value!r}")
    return check_grid(value, name)


def _check_patterns(spec, name, check):
    if not spec:
        raise ValueError(f"{name} as a dict needs at least one 'pattern': value entry, got {{}}")
    out = {}
    for pattern, value in spec.items():
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{name}: the keys must be glob patterns of layer names (str), got {pattern!r}")
        out[pattern] = check(value, f"{name}[{pattern!r}]")
    return out


def check_grid_spec(grid, name: str = "grid"):
    """A validated grid setting: ``"auto"``, ``(h, w)``, or a dict of pattern -> ``"auto"`` / ``(h, w)``.

    None means ``"auto"``.  Raises ValueError on anything else.
    """
    if isinstance(grid, dict):
        return _check_patterns(grid, name, _check_grid_value)
    return _check_grid_value(grid, name)


def check_extra_spec(extra_tokens, name: str = "extra_tokens"):
    """A validated extra-token setting: an int >= 0, or a dict of pattern -> int."""
    if isinstance(extra_tokens, dict):
        return _check_patterns(extra_tokens, name, lambda v, n: check_int(v, n, minimum=0))
    return check_int(extra_tokens, name, minimum=0)


def for_layer(spec, layer: str, name: str):
    """The value of a checked setting for the layer named ``layer``: the first pattern that matches it.

    Raises
    ------
    ValueError
        If ``spec`` is a dict and no pattern matches ``layer`` (the message
        lists the patterns and suggests a ``"*"`` entry as the default).
    """
    if not isinstance(spec, dict):
        return spec
    for pattern, value in spec.items():
        if fnmatchcase(layer, pattern):
            return value
    raise ValueError(f"{name}: no pattern matches layer {layer!r} (patterns: {', '.join(map(repr, spec))}); "
                     "add a '*' entry for the other layers")


def linear_grid(shape, grid, extra_tokens: int, name: str = "x") -> tuple[str, tuple[int, int]]:
    """How an ``nn.Linear`` input of ``shape`` (channels last) lies on its grid.

    Parameters
    ----------
    shape : tuple of int
        ``(..., L, C)`` tokens or ``(B, H, W, C)`` channels-last maps.
    grid : "auto" or (int, int)
        The layer's grid setting.
    extra_tokens : int
        Leading tokens ``e`` before the grid (tokens only).
    name : str
        What to call the input in error messages.

    Returns
    -------
    kind : {"tokens", "maps"}
        ``"tokens"``: the grid is ``L - e`` row-major tokens of axis ``-2``;
        ``"maps"``: axes ``-3, -2`` are the grid rows and columns.
    grid : (int, int)

    Raises
    ------
    ValueError
        If the shape fits neither form: with ``"auto"``, an input that is not
        ``(B, N, C)`` with ``N - e`` a square, nor ``(B, H, W, C)``; with a
        pair, one whose token count is not ``e + h*w`` and whose axes ``-3, -2``
        are not ``(h, w)``.
    """
    shape = tuple(int(s) for s in shape)
    if grid == AUTO:
        if len(shape) == 4:
            if extra_tokens:
                raise ValueError(f"{name} of shape {shape} is a (B, H, W, C) map: extra_tokens must be 0 for it, "
                                 f"got {extra_tokens}")
            return "maps", (shape[1], shape[2])
        if len(shape) in (2, 3):
            n = shape[-2] - extra_tokens
            side = math.isqrt(n) if n > 0 else 0
            if side * side == n and n > 0:
                return "tokens", (side, side)
            raise ValueError(
                f"grid='auto' needs {name} of shape {shape} to hold extra_tokens + h*h tokens with a square grid, "
                f"but {shape[-2]} - {extra_tokens} = {n} is not a square; give grid=(h, w) for this layer "
                "(or the right extra_tokens)")
        raise ValueError(f"grid='auto' takes (B, N, C) tokens or (B, H, W, C) maps, but {name} has shape {shape}; "
                         "give grid=(h, w) for this layer")
    h, w = check_grid(grid)
    if len(shape) >= 2 and shape[-2] == extra_tokens + h * w:
        return "tokens", (h, w)
    if len(shape) >= 4 and shape[-3:-1] == (h, w) and extra_tokens == 0:
        return "maps", (h, w)
    if len(shape) < 2:
        raise ValueError(f"{name} must have shape (..., L, C) tokens or (B, H, W, C) maps, got {shape}")
    msg = (f"{name} has L={shape[-2]} tokens but extra_tokens + h*w = {extra_tokens} + {h}*{w} = "
           f"{extra_tokens + h * w} for grid {(h, w)}")
    if len(shape) >= 4:
        msg += f", nor is it a (B, {h}, {w}, C) map"
    raise ValueError(f"{msg} (shape {shape})")


def map_grid(shape, grid, name: str = "x") -> tuple[int, int]:
    """The grid ``(H, W)`` of NCHW maps of ``shape``; a pair ``grid`` must equal it (``"auto"`` takes it)."""
    hw = (int(shape[-2]), int(shape[-1]))
    if grid != AUTO and check_grid(grid) != hw:
        raise ValueError(f"grid {tuple(grid)} does not match the spatial shape {hw} of {name} {tuple(shape)}")
    return hw
