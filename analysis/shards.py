"""Writing arrays shard by shard, so that a dataset never has to fit in memory.

:class:`ShardWriter` appends batch chunks of named arrays as ``.npy`` shards
(``NAME/000000.npy``, ``NAME/000001.npy``...), each written atomically, into a
hidden directory beside the destination; the directory is renamed to the
destination only when the writer is closed without error, so a dataset is
either complete or absent.  :func:`save_shards` is the one-call form.
:func:`analysis.sources.open_source` reads the result back (``key=NAME``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .budget import parse_memory
from .io import atomic_write_bytes
from .stream import is_dask_array

__all__ = ["DEFAULT_SHARD_SIZE", "ShardWriter", "save_shards"]

#: Largest shard :class:`ShardWriter` writes unless told otherwise.
DEFAULT_SHARD_SIZE = "128MB"


def _check_name(name) -> str:
    parts = str(name).replace("\\", "/").split("/")
    if not name or any(p in ("", ".", "..") for p in parts) or os.path.isabs(str(name)):
        raise ValueError(f"array name must be a relative path without '.' or '..' parts, got {name!r}")
    return "/".join(parts)


def _sync_directory(path):
    """Make a rename in ``path`` durable where the platform allows it."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ShardWriter:
    """Write named arrays as ``.npy`` shards; the dataset appears at ``path`` only when complete.

    Use it as a context manager: leaving the block normally calls
    :meth:`close` (the dataset appears), an exception calls :meth:`abort`
    (nothing is left behind).

    Parameters
    ----------
    path : str or os.PathLike
        Destination directory; its parent must exist.
    shard_size : int or str, optional
        Largest shard in bytes (``"128MB"``, see
        :func:`analysis.budget.parse_memory`); a larger chunk is split along
        its first axis.  Default :data:`DEFAULT_SHARD_SIZE`.
    overwrite : bool, optional
        Replace an existing ``path`` when closing (default False: refuse).

    Attributes
    ----------
    shapes : dict of str to tuple
        The shape so far of each array (shards concatenated).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from analysis.shards import ShardWriter
    >>> from analysis.sources import open_source
    >>> out = os.path.join(tempfile.mkdtemp(), "capture")
    >>> with ShardWriter(out) as w:
    ...     for step in range(3):
    ...         _ = w.append("fc1/x", np.full((2, 5), float(step)))
    >>> sorted(os.listdir(os.path.join(out, "fc1", "x")))
    ['000000.npy', '000001.npy', '000002.npy']
    >>> open_source(out, "fc1/x").shape
    (6, 5)
    """

    def __init__(self, path, *, shard_size=DEFAULT_SHARD_SIZE, overwrite=False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(17, "exists (pass overwrite=True to replace it)", str(self.path))
        self.overwrite = overwrite
        self.shard_bytes = parse_memory(shard_size)
        parent = self.path.parent if str(self.path.parent) else Path(".")
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial", dir=parent))
        self.shapes = {}
        self._dtypes = {}
        self._counts = {}

    def append(self, name, chunk):
        """Add batch items to array ``name`` as one or more shards.

        Parameters
        ----------
        name : str
            Array name; ``/`` makes sub-directories (``"blocks.0.fc1/x"``).
        chunk : array_like, shape (b, ...)
            Real numeric; ``...`` and the dtype must be those of the
            earlier chunks of ``name``.  A chunk with ``b = 0`` writes nothing.

        Returns
        -------
        ShardWriter
            ``self``.

        Raises
        ------
        ValueError
            On a bad name, a 0-d array, or a shape or dtype that differs from
            the earlier chunks.
        """
        name = _check_name(name)
        chunk = np.asarray(chunk)
        if chunk.ndim < 1 or chunk.dtype.kind not in "biuf":
            raise ValueError(f"{name}: expected a real numeric array with a batch axis, got {chunk.dtype} "
                             f"of shape {chunk.shape}")
        chunk = np.ascontiguousarray(chunk)
        if name in self.shapes:
            if chunk.shape[1:] != self.shapes[name][1:] or chunk.dtype != self._dtypes[name]:
                raise ValueError(f"{name}: chunk of shape {chunk.shape} and dtype {chunk.dtype} does not fit the "
                                 f"earlier shards ({self.shapes[name][1:]} items, {self._dtypes[name]})")
        else:
            self.shapes[name] = (0,) + chunk.shape[1:]
            self._dtypes[name] = chunk.dtype
            self._counts[name] = 0
        item = max(chunk[:1].nbytes, 1)
        rows = max(self.shard_bytes // item, 1)
        directory = self._tmp / name
        directory.mkdir(parents=True, exist_ok=True)
        for start in range(0, chunk.shape[0], rows):
            part = chunk[start:start + rows]
            atomic_write_bytes(directory / f"{self._counts[name]:06d}.npy",
                               lambda fh, part=part: np.lib.format.write_array(fh, part, allow_pickle=False))
            self._counts[name] += 1
        self.shapes[name] = (self.shapes[name][0] + chunk.shape[0],) + chunk.shape[1:]
        return self

    def write_file(self, name, data):
        """Add a small file (a manifest, say) to the dataset, atomically.

        Parameters
        ----------
        name : str
            Relative path in the dataset.
        data : bytes or str
            Content; text is written as UTF-8.

        Returns
        -------
        ShardWriter
            ``self``.
        """
        target = self._tmp / _check_name(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data.encode("utf-8") if isinstance(data, str) else data)
        return self

    def close(self) -> Path:
        """Move the complete dataset to its destination.

        Returns
        -------
        pathlib.Path
            The destination.
        """
        old = None
        if self.path.exists():
            if not self.overwrite:
                self.abort()
                raise FileExistsError(17, "appeared while writing", str(self.path))
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".old", dir=self._tmp.parent))
            os.replace(self.path, old / "data")
        os.replace(self._tmp, self.path)
        _sync_directory(self.path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self):
        """Remove everything written so far; the destination is untouched."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def save_shards(path, arrays, *, shard_size=DEFAULT_SHARD_SIZE, overwrite=False) -> Path:
    """Write named arrays as a sharded dataset, shard by shard; all or nothing.

    Parameters
    ----------
    path : str or os.PathLike
        Destination directory (it must not exist unless ``overwrite``).
    arrays : dict of str to (ndarray, dask.array.Array or iterable of ndarray)
        Name to an array (split into shards of at most ``shard_size``), a
        Dask array (computed one block of its first axis at a time), or an
        iterable of batch chunks (a generator, say: each chunk is written,
        then dropped, so the whole array never has to be in memory).
    shard_size : int or str, optional
        Largest shard; default :data:`DEFAULT_SHARD_SIZE`.
    overwrite : bool, optional
        Replace an existing dataset (default False).

    Returns
    -------
    pathlib.Path
        The destination, holding ``NAME/000000.npy``... for each name.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    ValueError
        As :meth:`ShardWriter.append`; nothing is left behind.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from analysis.shards import save_shards
    >>> from analysis.sources import open_source
    >>> out = os.path.join(tempfile.mkdtemp(), "layer")
    >>> chunks = (np.ones((4, 8, 3)) * i for i in range(5))  # never all in memory
    >>> _ = save_shards(out, {"x": chunks, "weight": np.eye(3)}, shard_size="256B")
    >>> open_source(out, "x").shape, len(open_source(out, "x").shards)
    ((20, 8, 3), 20)
    """
    with ShardWriter(path, shard_size=shard_size, overwrite=overwrite) as writer:
        for name, value in arrays.items():
            for chunk in _chunks_of(value):
                writer.append(name, chunk)
    return writer.path


def _chunks_of(value):
    """Batch chunks of an array (one), a Dask array (its blocks, computed one at a time) or an iterable."""
    if is_dask_array(value):
        return (value.blocks[i].compute() for i in range(value.numblocks[0]))
    if hasattr(value, "shape"):
        return (np.asarray(value),)
    return value
