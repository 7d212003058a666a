"""Array inputs read batch chunk by batch chunk: ``.npy``, ``.npz``, shard directories, globs, Zarr stores.

:func:`open_source` is the one function that opens an input; it returns a
:class:`BatchSource`, which knows the shape and dtype of the whole array (the
shards concatenated along the batch axis) after reading only the file headers,
and reads any range of batch items on demand.  ``.npy`` shards and the
uncompressed members of ``.npz`` archives are memory-mapped one chunk at a time
(the mapping is dropped once the chunk is copied), so the resident memory stays
that of the chunk.  The layouts, and how :func:`analysis.shards.save_shards`
writes them, are described in :doc:`/large_data`.
"""

from __future__ import annotations

import glob
import os
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._arrayfile import npz_member, read_header
from .io import DataError, _check_array, load_array

__all__ = ["BatchSource", "open_source", "as_source", "is_source_like"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


def _natural_key(path):
    """Sort key that orders ``x_2.npy`` before ``x_10.npy``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", Path(path).name)]


# ---------------------------------------------------------------------------
# shards: one piece of the batch, stored contiguously


@dataclass(frozen=True)
class _MappedShard:
    """A C-ordered array at a byte offset of a file (a ``.npy`` file or a stored ``.npz`` member)."""

    label: str
    path: str
    offset: int
    shape: tuple
    dtype: np.dtype
    fortran: bool = False

    def read(self, start, stop):
        if stop <= start:
            return np.empty((0,) + self.shape[1:], self.dtype)
        if self.fortran:  # rows are not contiguous: map the whole array, copy the rows
            mm = np.memmap(self.path, self.dtype, "r", offset=self.offset, shape=self.shape, order="F")
            return np.array(mm[start:stop], order="C")
        row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        mm = np.memmap(self.path, self.dtype, "r", offset=self.offset + start * row,
                       shape=(stop - start,) + self.shape[1:])
        return np.array(mm)


@dataclass(frozen=True)
class _LoadedShard:
    """An array already in memory (a compressed ``.npz`` member, loaded once, or a caller's array)."""

    label: str
    array: np.ndarray = field(repr=False)

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    def read(self, start, stop):
        return np.array(self.array[start:stop])


@dataclass(frozen=True)
class _ZarrShard:
    """A Zarr array, opened again wherever it is read (so that it travels to Dask workers as a path)."""

    label: str
    path: str
    key: str | None
    shape: tuple
    dtype: np.dtype

    def read(self, start, stop):
        return np.asarray(_open_zarr(self.path, self.key, self.label)[start:stop])


def _open_zarr(path, key, label):
    import zarr  # noqa: PLC0415 - optional (zarr extra)

    try:
        node = zarr.open(path, mode="r")
        if key is not None:
            node = node[key]
    except KeyError:
        raise DataError(f"{label}: no such array in the Zarr store") from None
    except Exception as exc:  # zarr raises many types for unreadable stores
        raise DataError(f"{label}: cannot open as a Zarr store: {' '.join(str(exc).split())}") from None
    return node


# ---------------------------------------------------------------------------
# the source


class BatchSource:
    """An array stored in shards along its first (batch) axis, read a range of items at a time.

    Build one with :func:`open_source` (files) or :func:`as_source` (arrays).
    It has ``shape``, ``dtype``, ``ndim`` and slicing, so
    :func:`dask.array.from_array` accepts it, and :func:`numpy.asarray` reads
    it whole; every read checks that the values are finite.

    Parameters
    ----------
    name : str
        What messages call the whole array (a path, ``file.npz[key]``...).
    shards : sequence
        The pieces in batch order, each with ``label``, ``shape``, ``dtype``
        and ``read(start, stop)``; all agree on every axis but the first and
        on the dtype.
    kind : str
        ``"npy"``, ``"npz"``, ``"shards"``, ``"zarr"`` or ``"array"``.
    align : int, optional
        Items per storage chunk (Zarr): reads of whole storage chunks are
        cheapest.

    Attributes
    ----------
    shape : tuple of int
        ``(B, ...)``: the sum of the shards' first axes, then their common axes.
    dtype : numpy.dtype
    starts : tuple of int
        Batch index at which each shard starts.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.sources import as_source
    >>> src = as_source(np.arange(12.0).reshape(6, 2))
    >>> src.shape, src.read(4, 6).tolist(), src[1:2].tolist()
    ((6, 2), [[8.0, 9.0], [10.0, 11.0]], [[2.0, 3.0]])
    """

    def __init__(self, name, shards, kind, *, align=1):
        if not shards:
            raise DataError(f"{name}: no arrays to read")
        first = shards[0]
        for shard in shards[1:]:
            if len(shard.shape) != len(first.shape) or tuple(shard.shape[1:]) != tuple(first.shape[1:]):
                raise DataError(f"{shard.label}: shape {tuple(shard.shape)} does not fit {first.label} "
                                f"(shape {tuple(first.shape)}): shards must agree on every axis but the first")
            if shard.dtype != first.dtype:
                raise DataError(f"{shard.label}: dtype {shard.dtype} differs from {first.label} ({first.dtype})")
        if len(first.shape) < 1:
            raise DataError(f"{first.label}: a 0-d array has no batch axis")
        if first.dtype.kind not in "biuf":
            raise DataError(f"{first.label} has dtype {first.dtype}; expected a real numeric array")
        self.name = str(name)
        self.shards = tuple(shards)
        self.kind = kind
        self.align = int(align)
        sizes = [int(s.shape[0]) for s in self.shards]
        self.starts = tuple(int(v) for v in np.cumsum([0] + sizes[:-1]))
        self.shape = (sum(sizes),) + tuple(int(v) for v in first.shape[1:])
        self.dtype = np.dtype(first.dtype)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array in its stored dtype."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def item_bytes(self) -> int:
        """Bytes of one batch item in its stored dtype."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"BatchSource({self.name!r}, shape={self.shape}, dtype={self.dtype}, shards={len(self.shards)})"

    def read(self, start=0, stop=None) -> np.ndarray:
        """Items ``start:stop`` of the batch as an in-memory array.

        Parameters
        ----------
        start : int, optional
            First item; default 0.
        stop : int, optional
            One past the last item; default the end.

        Returns
        -------
        ndarray, shape (stop - start, ...)
            In the stored dtype; a copy, never a view of a file.

        Raises
        ------
        DataError
            If a value is NaN or inf (the message names the shard and the
            items), or a file cannot be read.
        """
        stop = self.shape[0] if stop is None else min(int(stop), self.shape[0])
        start = max(int(start), 0)
        pieces = []
        for shard, first in zip(self.shards, self.starts, strict=True):
            lo, hi = max(start, first), min(stop, first + int(shard.shape[0]))
            if lo < hi:
                try:
                    part = shard.read(lo - first, hi - first)
                except DataError:
                    raise
                except (OSError, ValueError) as exc:
                    raise DataError(f"{shard.label}: cannot read: {' '.join(str(exc).split())}") from None
                whole = lo == first and hi == first + int(shard.shape[0])
                where = shard.label if whole else f"{shard.label} (items {lo - first} to {hi - first - 1})"
                pieces.append(_check_array(part, where))
        if not pieces:
            return np.empty((0,) + self.shape[1:], self.dtype)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def __array__(self, dtype=None, copy=None):
        """The whole array, read into memory (so that NumPy functions accept a source)."""
        out = self.read()
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        batch, rest = index[0], index[1:]
        if not isinstance(batch, slice) or batch.step not in (None, 1):
            raise IndexError("a BatchSource is indexed with a slice of batch items")
        start, stop, _ = batch.indices(self.shape[0])
        out = self.read(start, max(start, stop))
        return out[(slice(None),) + rest] if rest else out

    def describe(self) -> dict:
        """What a result file records about its input.

        Returns
        -------
        dict
            ``path``, ``format`` (:attr:`kind`), ``shards``, ``shape`` and ``dtype``.
        """
        return {"path": self.name, "format": self.kind, "shards": len(self.shards), "shape": list(self.shape),
                "dtype": str(self.dtype)}


# ---------------------------------------------------------------------------
# opening


def _npy_shard(path, label=None):
    """A ``.npy`` file, its header read and checked (:func:`analysis._arrayfile.read_header`), to be mapped."""
    label = label or str(path)
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            header = read_header(fh, size, label)
            offset = fh.tell()
    except OSError as exc:
        raise DataError(f"{label}: cannot read: {exc.strerror or exc}") from None
    return _MappedShard(label, os.path.abspath(path), offset, header.shape, header.dtype, header.fortran)


def _stored_data_start(fh, info):
    """File offset of the data of an uncompressed zip member (after its local header), or None."""
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _npz_shard(path, key):
    """A member of a ``.npz`` archive: mapped where it is stored uncompressed, else read (and checked) whole."""
    where = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            key, info = npz_member(zf, key, where)
        label = f"{where}[{key}]"
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as fh:
                start = _stored_data_start(fh, info)
                if start is not None:
                    fh.seek(start)
                    header = read_header(fh, start + info.file_size, f"{where}: member {info.filename!r}")
                    return _MappedShard(label, os.path.abspath(path), fh.tell(), header.shape, header.dtype,
                                        header.fortran)
    except DataError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as exc:  # RuntimeError: 'encrypted'
        raise DataError(f"{where}: cannot read as .npz: {' '.join(str(exc).split())}") from None
    return _LoadedShard(label, load_array(path, key))


def _check_numbering(files, name):
    """Raise if the shards of a directory are numbered as :class:`analysis.shards.ShardWriter` numbers them
    (``000000.npy``, ``000001.npy``...) with a number missing: a lost shard, not a smaller batch."""
    stems = [Path(f).stem for f in files]
    if not stems or not all(len(t) == 6 and t.isdigit() for t in stems):
        return
    missing = sorted(set(range(max(int(t) for t in stems) + 1)) - {int(t) for t in stems})
    if missing:
        shown = ", ".join(f"{m:06d}.npy" for m in missing[:5]) + (f", ... ({len(missing)} in all)"
                                                                 if len(missing) > 5 else "")
        raise DataError(f"{name}: shard(s) {shown} missing: the shards are numbered from 000000.npy without gaps")


def _shard_files(files, name):
    files = sorted((str(f) for f in files), key=_natural_key)
    if not files:
        raise DataError(f"{name}: no .npy shards found")
    bad = [f for f in files if not f.lower().endswith(".npy")]
    if bad:
        raise DataError(f"{bad[0]}: not a .npy shard")
    return BatchSource(name, [_npy_shard(f) for f in files], "shards")


def _zarr_source(path, key):
    label = f"{path}[{key}]" if key else str(path)
    node = _open_zarr(str(path), key, label)
    if not hasattr(node, "shape"):  # a group
        arrays = sorted(name for name, _ in node.arrays())
        if len(arrays) != 1:
            raise DataError(f"{path}: Zarr group holds {len(arrays)} arrays ({', '.join(arrays) or 'none'}); "
                            "choose one with a key")
        key = arrays[0]
        label = f"{path}[{key}]"
        node = node[key]
    shard = _ZarrShard(label, os.path.abspath(path), key, tuple(int(v) for v in node.shape), np.dtype(node.dtype))
    return BatchSource(label, [shard], "zarr", align=int(node.chunks[0]) if node.chunks else 1)


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or any((path / m).exists() for m in _ZARR_MARKERS)


def open_source(path, key=None) -> BatchSource:
    """Open an array input for reading batch chunk by batch chunk.

    Parameters
    ----------
    path : str or os.PathLike
        One of:

        * a ``.npy`` file (memory-mapped);
        * a ``.npz`` archive (its uncompressed members are memory-mapped,
          compressed ones read whole);
        * a directory of ``.npy`` shards, or a glob pattern such as
          ``"capture/x_*.npy"``: the shards, in natural order of their names
          (``x_2`` before ``x_10``), concatenated along the batch axis;
        * a directory of such arrays (as :func:`analysis.shards.save_shards`
          writes them: ``x/`` shards, ``weight.npy``...), with ``key``
          naming one;
        * a Zarr store (a directory ending in ``.zarr`` or holding Zarr
          metadata; needs the ``zarr`` extra), with ``key`` naming an array
          of a group.
    key : str, optional
        The array in an archive, dataset directory or Zarr group; may be left
        out when there is only one.

    Returns
    -------
    BatchSource
        Only the headers have been read.

    Raises
    ------
    DataError
        With a one-line message naming the file or shard: no such file, no
        shards, a shard whose shape (beyond the first axis) or dtype differs
        from the first shard's, an unreadable header, a missing key, a
        non-numeric dtype.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from analysis.sources import open_source
    >>> d = tempfile.mkdtemp()
    >>> for i in range(3):
    ...     np.save(os.path.join(d, f"x_{i}.npy"), np.full((2, 4), float(i)))
    >>> src = open_source(d)
    >>> src.shape, src.kind, len(src.shards), src.read(3, 5)[:, 0].tolist()
    ((6, 4), 'shards', 3, [1.0, 2.0])
    """
    text = os.fspath(path)
    p = Path(text)
    if not p.exists() and _GLOB_CHARS.search(text):
        if key is not None:
            raise DataError(f"{text}: a key selects an array of an archive, dataset directory or Zarr store, "
                            "not of a glob of shards")
        return _shard_files(glob.glob(text), text)
    if not p.exists():
        raise DataError(f"{text}: no such file or directory")
    if p.is_dir():
        if _is_zarr(p):
            return _zarr_source(p, key)
        if key is not None:
            for candidate in (p / key, p / f"{key}.npy"):
                if candidate.exists():
                    return open_source(candidate)
            names = sorted({c.stem for c in p.iterdir() if c.is_dir() or c.suffix.lower() == ".npy"})
            raise DataError(f"{text}: no array {key!r} (it has: {', '.join(names) or 'nothing'})")
        files = [c for c in p.iterdir() if not c.is_dir() and c.suffix.lower() == ".npy"]  # a dangling link too
        if any(c.is_dir() for c in p.iterdir()):  # a dataset: x/, grad_y/, weight.npy...
            names = sorted({c.stem if c.is_file() else c.name for c in p.iterdir() if c.is_dir() or c in files})
            raise DataError(f"{text}: holds arrays {', '.join(names)}; choose one with a key")
        _check_numbering(files, text)
        return _shard_files(files, text)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        if key is not None:
            raise DataError(f"{text}: a .npy file holds one array; key={key!r} is only for archives and stores")
        return BatchSource(text, [_npy_shard(p)], "npy")
    if suffix == ".npz":
        shard = _npz_shard(p, key)
        return BatchSource(shard.label, [shard], "npz")
    raise DataError(f"{text}: unsupported file type {p.suffix or '(none)'!r}; expected .npy, .npz, "
                    "a directory of .npy shards or a Zarr store")


def is_source_like(obj) -> bool:
    """Whether ``obj`` is read through :func:`open_source`: a path or a :class:`BatchSource`.

    Parameters
    ----------
    obj : object

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.sources import is_source_like
    >>> is_source_like("data/x/"), is_source_like(np.ones(3))
    (True, False)
    """
    return isinstance(obj, (str, os.PathLike, BatchSource))


def as_source(obj, key=None) -> BatchSource:
    """A :class:`BatchSource` for a path, an existing source or an in-memory array.

    Parameters
    ----------
    obj : str, os.PathLike, BatchSource or array_like
        Paths go through :func:`open_source`; arrays (NumPy arrays, memory
        maps) are read in place.
    key : str, optional
        For paths, as for :func:`open_source`.

    Returns
    -------
    BatchSource

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.sources import as_source
    >>> as_source(np.zeros((4, 3), np.float32)).describe()
    {'path': 'array', 'format': 'array', 'shards': 1, 'shape': [4, 3], 'dtype': 'float32'}
    """
    if isinstance(obj, BatchSource):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return open_source(obj, key)
    arr = obj if isinstance(obj, np.ndarray) else np.asarray(obj)
    return BatchSource("array", [_LoadedShard("array", arr)], "array")
