"""Captures of many steps written shard by shard into one directory, so that a capture never has to fit in memory.

A :class:`~analysis.capture.Capture` holds one training step.  Over a
validation set, :class:`CaptureWriter` appends each step's capture to a
directory, layer by layer and shard by shard (:class:`analysis.shards.ShardWriter`:
``<layer>/x/000000.npy``, ``<layer>/grad_y/...``, ``<layer>/weight/...``), and
writes the manifest (:data:`analysis.capture.MANIFEST`: layers, grid, extra
tokens) last; the directory appears only when the writer closes without error.
:func:`analysis.capture.load_capture` reads it back, and ``lbp report --capture``,
``lbp spectrum --layer`` and ``lbp error --layer`` stream it (:doc:`/large_data`).
"""

from __future__ import annotations

import numpy as np

from .capture import FIELDS, MANIFEST
from .io import json_text
from .shards import DEFAULT_SHARD_SIZE, ShardWriter, _check_name
from .sources import BatchSource

__all__ = ["CaptureWriter"]


def _chunks(array):
    """A captured array as chunks: a sharded source shard by shard, anything else whole."""
    if isinstance(array, BatchSource):
        for start, shard in zip(array.starts, array.shards, strict=True):
            yield array.read(start, start + int(shard.shape[0]))
    else:
        yield np.asarray(array)


def _check_layer_name(name) -> None:
    """Raise unless layer ``name`` is a directory path that reads back as the same name."""
    try:
        ok = _check_name(name) == name
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"layer name {name!r} cannot name a directory of a sharded capture (empty, '.' or '..' "
                         "parts, a leading or doubled '/', a backslash): save this capture as a .npz (Capture.save)")


class CaptureWriter(ShardWriter):
    """Append the captures of many steps to a sharded capture directory.

    A :class:`~analysis.shards.ShardWriter` that knows captures.  Use it as a
    context manager; leaving the block normally writes the manifest and moves
    the directory into place, an exception leaves nothing.

    Parameters
    ----------
    path : str or os.PathLike
        Destination directory (it must not exist unless ``overwrite``).
    grid : (int, int), optional
        Token grid of every ``nn.Linear`` input; default the first capture's
        (its layers' own grids, which may differ from layer to layer).
    extra_tokens : int, optional
        Leading tokens outside the grid; default the first capture's.
    shard_size : int or str, optional
        Largest shard (see :class:`analysis.shards.ShardWriter`).
    overwrite : bool, optional
        Replace an existing directory (default False).

    Attributes
    ----------
    steps : int
        Captures added so far.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from analysis.capture import Capture, CapturedLayer, load_capture
    >>> from analysis.capture_writer import CaptureWriter
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((4, 3))
    >>> def step():  # what analysis.capture.capture returns for one batch
    ...     arrays = {"x": rng.standard_normal((2, 16, 3)), "weight": w, "grad_y": rng.standard_normal((2, 16, 4))}
    ...     return Capture({"fc1": CapturedLayer.from_arrays("fc1", arrays, grid=(4, 4))}, grid=(4, 4),
    ...                    extra_tokens=0)
    >>> out = os.path.join(tempfile.mkdtemp(), "capture")
    >>> with CaptureWriter(out) as writer:
    ...     for _ in range(3):
    ...         writer.add(step())
    >>> back = load_capture(out)
    >>> back["fc1"].x.shape, back["fc1"].weight.shape, back.grid
    ((6, 16, 3), (4, 3), (4, 4))
    """

    def __init__(self, path, *, grid=None, extra_tokens=None, shard_size=DEFAULT_SHARD_SIZE, overwrite=False):
        super().__init__(path, shard_size=shard_size, overwrite=overwrite)
        self.grid = None if grid is None else tuple(int(v) for v in grid)
        self.extra_tokens = None if extra_tokens is None else int(extra_tokens)
        self.steps = 0
        self._weights = {}
        self._layer_grids = {}
        self._explicit = grid is not None or extra_tokens is not None  # then it overrides the layers' own

    def add(self, capture):
        """Append one step's capture, layer by layer and shard by shard.

        Parameters
        ----------
        capture : analysis.capture.Capture
            The same layers at every step, each with the same weight (a
            step that updates the weights records another model).

        Raises
        ------
        ValueError
            If the layers or a weight differ from the first step's, a
            shape does not fit the earlier shards, or a layer name cannot be
            a directory (see :func:`analysis.shards.ShardWriter.append`).
        """
        if self.steps == 0:
            for name in capture.layers:
                _check_layer_name(name)
            self.grid = capture.grid if self.grid is None else self.grid
            self.extra_tokens = capture.extra_tokens if self.extra_tokens is None else self.extra_tokens
            if not self._explicit:
                self._layer_grids = {n: (lay.grid, lay.extra_tokens) for n, lay in capture.layers.items()
                                     if lay.layout == "tokens" and lay.grid is not None
                                     and (lay.grid, lay.extra_tokens) != (capture.grid, capture.extra_tokens)}
        elif list(capture.layers) != list(self._weights):
            raise ValueError(f"step {self.steps} captured layers {list(capture.layers)}, the first step "
                             f"{list(self._weights)}")
        for name, layer in capture.layers.items():
            weight = np.asarray(layer.weight)
            if name not in self._weights:
                self._weights[name] = weight
                self.append(f"{name}/weight", weight)
            elif not np.array_equal(weight, self._weights[name]):
                raise ValueError(f"the weight of layer {name!r} changed at step {self.steps}: capture steps that "
                                 "do not update the model (no optimizer step)")
            for f in FIELDS:
                if f != "weight":
                    for chunk in _chunks(getattr(layer, f)):
                        self.append(f"{name}/{f}", chunk)
        self.steps += 1

    def close(self):
        """Write the manifest and move the complete directory into place.

        Returns
        -------
        pathlib.Path
            The destination.
        """
        manifest = {"layers": list(self._weights), "grid": self.grid, "extra_tokens": self.extra_tokens or 0,
                    "steps": self.steps}
        if self._layer_grids:  # layers on grids of their own
            manifest["layer_grids"] = {n: g for n, (g, _) in self._layer_grids.items()}
            manifest["layer_extra_tokens"] = {n: e for n, (_, e) in self._layer_grids.items()}
        self.write_file(MANIFEST, json_text(manifest))
        return super().close()
