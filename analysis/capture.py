"""What chosen linear layers of a PyTorch model see in one training step, as NumPy arrays and a ``.npz`` file.

:func:`capture` runs the user's ``step()`` with hooks on the layers and returns a
:class:`Capture`: per layer the exact input ``x``, ``weight`` and output gradient
``grad_y``.  :meth:`Capture.save` streams it into one ``.npz`` archive, layer by
layer (``<layer>/x``, ``<layer>/weight``, ``<layer>/grad_y``, plus ``grid`` and
``extra_tokens``); :class:`analysis.capture_writer.CaptureWriter` writes the
captures of many steps into a directory of ``.npy`` shards instead, step by step,
so that a capture never has to fit in memory.  :func:`load_capture` is the one
reader of both: it returns the same :class:`Capture` whose arrays load only when
used (a sharded capture's ``x`` and ``grad_y`` as
:class:`~analysis.sources.BatchSource` objects, which the analyses stream).
``lbp spectrum``, ``lbp error`` and ``lbp report --capture`` read captures
through it.

Importing this module does not import PyTorch; :func:`capture` does.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from lbpcore._grids import AUTO, check_extra_spec, check_grid_spec, for_layer, linear_grid
from lbpcore._validation import check_grid, check_int

from ._arrayfile import read_header
from .io import DataError, atomic_write_bytes, load_array
from .sources import open_source

__all__ = ["FIELDS", "MANIFEST", "Capture", "CapturedLayer", "capture", "load_capture"]

#: The arrays of each layer in a capture.
FIELDS = ("x", "weight", "grad_y")
#: The file of a sharded capture directory that lists its layers, grid and extra tokens.
MANIFEST = "capture.json"


@dataclass(frozen=True)
class CapturedLayer:
    """One layer of a :class:`Capture`: its exact input, weight and output gradient.

    Attributes
    ----------
    name : str
        Qualified name in the model.
    layout : {"tokens", "nchw"}
        ``"nchw"`` for a 1x1 convolution's maps, ``"tokens"`` otherwise.
    shapes : dict of str to tuple of int
        Shape of each array of :data:`FIELDS` (known without loading them).
    grid : (int, int) or None
        Token grid of the layer: the capture's for tokens, ``(H, W)`` for maps.
    extra_tokens : int
        Leading tokens outside the grid (0 for maps).
    x : ndarray, shape (B, L, C_in), (B, C_in, H, W) or (B, C_in)
        Layer input (loaded when first read, not kept).
    weight : ndarray, shape (C_out, C_in)
    grad_y : ndarray, shape of ``x`` with ``C_out`` channels
        Gradient of the loss with respect to the layer output.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.capture import CapturedLayer
    >>> arrays = {"x": np.ones((2, 16, 3)), "weight": np.ones((4, 3)), "grad_y": np.ones((2, 16, 4))}
    >>> layer = CapturedLayer.from_arrays("fc1", arrays, grid=(4, 4))
    >>> layer.layout, layer.shapes["grad_y"], layer.on_grid
    ('tokens', (2, 16, 4), True)
    """

    name: str
    layout: str
    shapes: dict
    grid: tuple | None
    extra_tokens: int
    _load: Callable = field(repr=False, compare=False)

    @classmethod
    def from_arrays(cls, name, arrays, *, grid=None, extra_tokens=0):
        """A layer holding ``arrays`` (a dict of :data:`FIELDS`) in memory.

        Parameters
        ----------
        name : str
        arrays : dict of str to ndarray
        grid : (int, int), optional
            Token grid (ignored for 4-D maps, whose grid is their ``(H, W)``).
        extra_tokens : int, optional

        Returns
        -------
        CapturedLayer
        """
        return cls.lazy(name, {k: tuple(arrays[k].shape) for k in FIELDS}, arrays.__getitem__, grid=grid,
                        extra_tokens=extra_tokens)

    @classmethod
    def lazy(cls, name, shapes, load, *, grid=None, extra_tokens=0):
        """A layer whose arrays come from ``load(field)`` when read.

        Parameters
        ----------
        name : str
        shapes : dict of str to tuple of int
        load : callable
            ``load(field)`` returns the array of that field.
        grid : (int, int), optional
        extra_tokens : int, optional

        Returns
        -------
        CapturedLayer
        """
        nchw = len(shapes["x"]) == 4
        if nchw:
            grid, extra_tokens = tuple(int(s) for s in shapes["x"][2:]), 0
        return cls(name, "nchw" if nchw else "tokens", dict(shapes), None if grid is None else tuple(grid),
                   int(extra_tokens), load)

    @property
    def x(self) -> np.ndarray:
        """The layer input (read now)."""
        return self._load("x")

    @property
    def weight(self) -> np.ndarray:
        """The weight ``(C_out, C_in)`` (read now)."""
        return self._load("weight")

    @property
    def grad_y(self) -> np.ndarray:
        """The output gradient (read now)."""
        return self._load("grad_y")

    @property
    def on_grid(self) -> bool:
        """Whether the layer's tokens fit its grid (``L == extra_tokens + h*w``); maps always do."""
        if self.layout == "nchw":
            return True
        shape = self.shapes["x"]
        return (self.grid is not None and len(shape) == 3
                and shape[1] == self.extra_tokens + self.grid[0] * self.grid[1])

    def why_off_grid(self) -> str:
        """Why :attr:`on_grid` is False (empty when it is True)."""
        shape = self.shapes["x"]
        if self.on_grid:
            return ""
        if len(shape) != 3:
            return f"its input {shape} has no token axis"
        if self.grid is None:
            return "no token grid was given"
        h, w = self.grid
        return f"its {shape[1]} tokens are not {self.extra_tokens} extra tokens + {h}x{w}"


@dataclass(frozen=True)
class Capture:
    """Per layer, what a linear layer saw in one training step (see :func:`capture`).

    Attributes
    ----------
    layers : dict of str to CapturedLayer
        In model order.
    grid : (int, int) or None
        Token grid of the ``nn.Linear`` layers' inputs, if given.
    extra_tokens : int
        Leading tokens outside the grid.
    source : str or None
        The file it was read from (None in memory).

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.capture import Capture, CapturedLayer
    >>> arrays = {"x": np.ones((2, 17, 3)), "weight": np.ones((4, 3)), "grad_y": np.ones((2, 17, 4))}
    >>> cap = Capture({"fc1": CapturedLayer.from_arrays("fc1", arrays)}, grid=None, extra_tokens=0)
    >>> cap["fc1"].on_grid, cap.with_grid((4, 4), 1)["fc1"].on_grid
    (False, True)
    """

    layers: dict
    grid: tuple | None
    extra_tokens: int
    source: str | None = None

    def __getitem__(self, name) -> CapturedLayer:
        try:
            return self.layers[name]
        except KeyError:
            where = self.source or "capture"
            raise DataError(f"{where}: no layer {name!r} (it has: {', '.join(self.layers)})") from None

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def with_grid(self, grid=None, extra_tokens=None) -> Capture:
        """The same capture on other token grids or extra-token counts (None keeps the current ones).

        Parameters
        ----------
        grid : "auto", (int, int) or dict, optional
            For every tokens layer: a pair, ``"auto"`` (the square grid of its
            ``L - extra_tokens`` tokens; a layer whose count is not a square is
            left off the grid), or a dict of glob patterns on layer names to
            either, as for :func:`lbpcore.torch.convert` (every tokens layer
            must match a pattern).
        extra_tokens : int or dict, optional
            Likewise.

        Returns
        -------
        Capture

        Raises
        ------
        ValueError
            On a malformed setting, or a layer that no pattern of a dict matches.
        """
        gspec = None if grid is None else check_grid_spec(grid)
        espec = None if extra_tokens is None else check_extra_spec(extra_tokens)
        layers = {}
        for n, lay in self.layers.items():
            if lay.layout != "tokens":
                layers[n] = lay
                continue
            e = lay.extra_tokens if espec is None else for_layer(espec, n, "extra_tokens")
            g = lay.grid if gspec is None else _tokens_grid(lay.shapes["x"], for_layer(gspec, n, "grid"), e)
            layers[n] = replace(lay, grid=g, extra_tokens=e)
        return replace(self, layers=layers, grid=gspec if isinstance(gspec, tuple) else (None if gspec else self.grid),
                       extra_tokens=espec if isinstance(espec, int) else (0 if espec else self.extra_tokens))

    def save(self, path) -> Path:
        """Write the capture to one ``.npz`` archive, one array at a time, atomically.

        Parameters
        ----------
        path : str or os.PathLike
            Destination (``.npz``); its directory must exist.

        Returns
        -------
        pathlib.Path

        Notes
        -----
        Members ``<layer>/x.npy``, ``<layer>/weight.npy``, ``<layer>/grad_y.npy``
        (so :func:`numpy.load` keys ``<layer>/x``...), the capture's
        ``extra_tokens.npy`` and, if one grid serves all layers, ``grid.npy``,
        and for each tokens layer with a grid and extra tokens of its own
        ``<layer>/grid.npy`` and ``<layer>/extra_tokens.npy``.  Each array is streamed into the archive with
        :func:`numpy.lib.format.write_array` (no second copy in memory); the archive
        is written to a temporary file and renamed, so a failure leaves nothing.
        """
        def write(fh):
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                meta = {"extra_tokens": np.asarray(self.extra_tokens, dtype=np.int64)}
                if self.grid is not None:
                    meta["grid"] = np.asarray(self.grid, dtype=np.int64)
                for key, value in meta.items():
                    _write_member(zf, key, value)
                for name, layer in self.layers.items():
                    for f in FIELDS:
                        _write_member(zf, f"{name}/{f}", getattr(layer, f))
                    for key, value in _layer_meta(layer, self).items():
                        _write_member(zf, f"{name}/{key}", np.asarray(value, dtype=np.int64))

        return atomic_write_bytes(path, write)


def _layer_meta(layer, capture) -> dict:
    """The grid and extra tokens stored with a tokens layer whose own differ from the capture's (else nothing)."""
    if layer.layout != "tokens" or layer.grid is None or (layer.grid, layer.extra_tokens) == (capture.grid,
                                                                                            capture.extra_tokens):
        return {}
    return {"grid": layer.grid, "extra_tokens": layer.extra_tokens}


def _tokens_grid(shape, grid, e):
    """The grid of a captured ``(B, L, C)`` tokens layer for the setting ``grid`` (a pair or "auto"), or None.

    A pair is kept as it is (the layer is then off its grid if ``L != e + h*w``);
    ``"auto"`` that finds no square grid gives None (no grid).
    """
    if grid != AUTO:
        return check_grid(grid)
    try:
        return linear_grid(shape, AUTO, e)[1]
    except ValueError:
        return None


def _write_member(zf, key, array):
    with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def _headers(path: Path) -> dict:
    """``key -> shape`` of every ``.npy`` member of an archive, from the headers only (checked as on reading)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".npy"):
                    with zf.open(info) as fh:
                        header = read_header(fh, info.file_size, f"{path}: member {info.filename!r}")
                    out[info.filename[:-4]] = header.shape
    except DataError:
        raise
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, NotImplementedError) as exc:
        # RuntimeError: zipfile's 'encrypted, password required' (a flipped flag bit)
        raise DataError(f"{path}: cannot read as a capture (.npz): {exc}") from None
    return out


def load_capture(path) -> Capture:
    """Read a capture written by :meth:`Capture.save` (arrays load only when used).

    The one reader of capture files: ``lbp spectrum``, ``lbp error`` and
    ``lbp report --capture`` go through it.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` archive with ``<layer>/x``, ``<layer>/weight`` and
        ``<layer>/grad_y`` for each layer (and optionally ``grid`` and
        ``extra_tokens``), or a directory written by
        :class:`analysis.capture_writer.CaptureWriter` (:data:`MANIFEST` and
        ``<layer>/<array>/`` shards).

    Returns
    -------
    Capture
        Layers in the archive's order; each array is read and checked
        (:func:`analysis.io.load_array`: numeric, finite) when first used.  For
        a directory, ``x`` and ``grad_y`` are
        :class:`~analysis.sources.BatchSource` objects (read chunk by chunk
        by the analyses, whole by :func:`numpy.asarray`) and ``weight`` an
        array.

    Raises
    ------
    DataError
        If the file is missing or not an archive, holds no layer, a layer lacks
        one of the three arrays, or ``grid`` / ``extra_tokens`` are malformed.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from analysis.capture import Capture, CapturedLayer, load_capture
    >>> arrays = {"x": np.ones((2, 16, 3)), "weight": np.ones((4, 3)), "grad_y": np.ones((2, 16, 4))}
    >>> cap = Capture({"fc1": CapturedLayer.from_arrays("fc1", arrays, grid=(4, 4))}, grid=(4, 4), extra_tokens=0)
    >>> path = cap.save(os.path.join(tempfile.mkdtemp(), "capture.npz"))
    >>> back = load_capture(path)
    >>> list(back), back.grid, back["fc1"].weight.shape
    (['fc1'], (4, 4), (4, 3))
    """
    path = Path(path)
    if path.is_dir():
        return _load_sharded(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    shapes = _headers(path)
    names = list(dict.fromkeys(k.rpartition("/")[0] for k in shapes if "/" in k))
    if not names:
        raise DataError(f"{path}: holds no captured layer (arrays <layer>/x, <layer>/weight, <layer>/grad_y)")
    grid, e = None, 0
    try:
        if "grid" in shapes:
            grid = check_grid(tuple(int(v) for v in load_array(path, "grid").reshape(-1)))
        if "extra_tokens" in shapes:
            e = check_int(int(load_array(path, "extra_tokens").reshape(-1)[0]), "extra_tokens", minimum=0)
    except (ValueError, TypeError, IndexError) as exc:
        raise DataError(f"{path}: bad grid or extra_tokens: {exc}") from None
    layers = {}
    for name in names:
        missing = [f for f in FIELDS if f"{name}/{f}" not in shapes]
        if missing:
            raise DataError(f"{path}: layer {name!r} lacks {', '.join(missing)}")

        def load(f, name=name):
            return load_array(path, f"{name}/{f}")

        layer_grid, layer_e = grid, e
        try:
            if f"{name}/grid" in shapes:
                layer_grid = check_grid(tuple(int(v) for v in load_array(path, f"{name}/grid").reshape(-1)))
            if f"{name}/extra_tokens" in shapes:
                layer_e = check_int(int(load_array(path, f"{name}/extra_tokens").reshape(-1)[0]),
                                    "extra_tokens", minimum=0)
        except (ValueError, TypeError, IndexError) as exc:
            raise DataError(f"{path}: bad grid or extra_tokens of layer {name!r}: {exc}") from None
        layer_shapes = {f: shapes[f"{name}/{f}"] for f in FIELDS}
        layers[name] = CapturedLayer.lazy(name, layer_shapes, load, grid=layer_grid, extra_tokens=layer_e)
    return Capture(layers, grid, e, str(path))


def _load_sharded(path: Path) -> Capture:
    """A capture directory: its manifest, then every array's shard headers (:func:`~analysis.sources.open_source`)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        names = [str(n) for n in manifest["layers"]]
        grid = None if manifest.get("grid") is None else check_grid(tuple(manifest["grid"]))
        e = check_int(manifest.get("extra_tokens", 0), "extra_tokens", minimum=0)
        layer_grids = {str(n): None if g is None else check_grid(tuple(g))
                       for n, g in dict(manifest.get("layer_grids", {})).items()}
        layer_extra = {str(n): check_int(v, "extra_tokens", minimum=0)
                       for n, v in dict(manifest.get("layer_extra_tokens", {})).items()}
    except FileNotFoundError:
        raise DataError(f"{path}: a directory without {MANIFEST}: not a sharded capture (or not complete)") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{path}/{MANIFEST}: not a capture manifest: {exc}") from None
    if not names:
        raise DataError(f"{path}: holds no captured layer")
    layers = {}
    for name in names:
        sources = {f: open_source(path, f"{name}/{f}") for f in FIELDS}

        def load(f, sources=sources):
            return sources[f].read() if f == "weight" else sources[f]

        shapes = {f: tuple(src.shape) for f, src in sources.items()}
        layers[name] = CapturedLayer.lazy(name, shapes, load, grid=layer_grids.get(name, grid),
                                          extra_tokens=layer_extra.get(name, e))
    return Capture(layers, grid, e, str(path))


# ---------------------------------------------------------------------------
# recording with PyTorch hooks


def _host(t) -> np.ndarray:
    """A NumPy copy of tensor ``t`` (half precision as float32, which NumPy can hold)."""
    t = t.detach()
    if t.dtype.is_floating_point and t.element_size() < 4:
        t = t.float()
    return t.to("cpu", copy=True).numpy()


class _Recorder:
    """Forward hook of one layer: stores ``x`` and hooks the output's gradient, call after call.

    Tokens of a linear layer are kept as ``(B, L, C)`` (leading dimensions
    flattened into the batch), channels-last maps ``(B, H, W, C)`` of a linear
    layer whose grid setting finds them (``"auto"``, or a pair ``(H, W)``) as
    ``(B, H*W, C)`` tokens on their grid, the maps of a 1x1 convolution as they
    are.  ``grid`` is the layer's setting (a pair,
    ``"auto"``, or None: not given) and ``e`` its extra tokens; the first call
    resolves them into :attr:`grid`.
    """

    def __init__(self, name, maps: bool, grid=None, e: int = 0):
        self.name = name
        self.maps = maps
        self.setting = grid
        self.e = e
        self.kind = None  # "tokens" or "maps" (channels-last) for linear layers, from the first call
        self.grid = None
        self.xs, self.grads, self.weight = [], [], None

    def _resolve(self, shape):
        if self.setting is None:  # no grid given: the token axis is -2, whatever the rank
            self.kind, self.grid = "tokens", None
            return
        try:
            self.kind, self.grid = linear_grid(shape, self.setting, self.e)
        except ValueError:  # kept off the grid: the report says why
            self.kind = "maps" if len(shape) == 4 and self.setting == AUTO else "tokens"
            self.grid = None if self.setting == AUTO else check_grid(self.setting)

    def _host(self, t) -> np.ndarray:
        if self.maps or t.dim() < 3:
            return _host(t)
        if self.kind is None:
            self._resolve(tuple(t.shape))
        if self.kind == "maps" and t.dim() >= 4:
            return _host(t.reshape(-1, t.shape[-3] * t.shape[-2], t.shape[-1]))
        return _host(t.reshape(-1, *t.shape[-2:]))

    def __call__(self, module, inputs, output):
        self.xs.append(self._host(inputs[0]))
        if self.weight is None:
            self.weight = _host(module.weight).reshape(module.weight.shape[0], -1)
        self.grads.append(None)
        if output.requires_grad:
            output.register_hook(partial(self._grad, len(self.grads) - 1))

    def _grad(self, call, g):
        self.grads[call] = self._host(g)

    def arrays(self) -> dict:
        if not self.xs:
            raise ValueError(f"layer {self.name!r} was not called by step()")
        if any(g is None for g in self.grads):
            raise ValueError(f"no gradient reached the output of layer {self.name!r}: step() must run the forward "
                             "pass and call backward() on a loss that depends on it")
        if len({x.shape[1:] for x in self.xs}) > 1:
            raise ValueError(f"layer {self.name!r} saw inputs of different shapes in one step: "
                             f"{sorted({x.shape for x in self.xs})}")
        return {"x": np.concatenate(self.xs), "weight": self.weight, "grad_y": np.concatenate(self.grads)}


def capture(model, step, include, *, grid=None, extra_tokens=0) -> Capture:
    """Run ``step()`` and record the input, weight and output gradient of the chosen linear layers.

    Parameters
    ----------
    model : torch.nn.Module
    step : callable
        ``step()`` runs the forward pass and ``backward()`` of a loss (an
        optimizer step after the backward does not change what is recorded).
    include : str or sequence of str
        Glob patterns on qualified names of ``nn.Linear`` and 1x1 ``nn.Conv2d``
        layers (as :func:`lbpcore.torch.convert`), e.g. ``"blocks.*.mlp.*"``.
    grid : "auto", (int, int) or dict, optional
        Token grid of the ``nn.Linear`` inputs ``(..., e + h*w, C_in)``, stored
        with each layer (``lbp report --capture`` can also be given it): a
        pair, ``"auto"`` (each input's own, as for
        :func:`lbpcore.torch.convert`; a layer whose tokens are not ``e`` plus a
        square is stored without a grid), or a dict of glob patterns on layer
        names to either.  Default None: no grid is stored, and axis ``-2`` of
        every ``nn.Linear`` input is its token axis.  With ``"auto"`` (or a
        pair ``(H, W)`` that fits), channels-last maps ``(B, H, W, C)`` are
        stored as ``(B, H*W, C)`` tokens on their grid.
    extra_tokens : int or dict, optional
        Leading tokens outside the grid (a class token...), default 0; a dict
        of patterns as for ``grid``.

    Returns
    -------
    Capture
        Per layer, in model order: ``x`` ``(B, L, C_in)`` (leading dimensions
        flattened into the batch; ``(B, C_in, H, W)`` for 1x1 convolutions,
        ``(B, H*W, C_in)`` for channels-last maps),
        ``weight`` ``(C_out, C_in)`` as of the forward pass, and ``grad_y``
        (the shape of the output).  A layer called several times contributes
        every call, concatenated along the batch (its gradient sums over them).
        NumPy copies; half-precision tensors are stored as float32.

    Raises
    ------
    ValueError
        If a pattern matches no linear layer, a layer is not called, no
        gradient reaches its output, or the grid setting is malformed (a
        layer that no pattern of a dict matches included).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from analysis.capture import capture
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    >>> x = torch.randn(3, 16, 4)
    >>> cap = capture(model, lambda: model(x).square().sum().backward(), "*", grid=(4, 4))
    >>> list(cap), cap["2"].x.shape, cap["2"].grad_y.shape
    (['0', '2'], (3, 16, 8), (3, 16, 2))
    """
    from lbpcore.torch import linear_layers, match_layers  # noqa: PLC0415 - PyTorch is optional: only capture needs it

    gspec = None if grid is None else check_grid_spec(grid)
    espec = check_extra_spec(extra_tokens)
    names = match_layers(model, include)
    modules = linear_layers(model)
    recorders = {}
    for name in names:
        maps = modules[name].weight.dim() == 4
        setting = None if gspec is None or maps else for_layer(gspec, name, "grid")
        recorders[name] = _Recorder(name, maps, setting, 0 if maps else for_layer(espec, name, "extra_tokens"))
    handles = [modules[name].register_forward_hook(recorders[name]) for name in names]
    try:
        step()
    finally:
        for h in handles:
            h.remove()
    layers = {name: CapturedLayer.from_arrays(name, rec.arrays(), grid=rec.grid, extra_tokens=rec.e)
              for name, rec in recorders.items()}
    return Capture(layers, gspec if isinstance(gspec, tuple) else None, espec if isinstance(espec, int) else 0)
