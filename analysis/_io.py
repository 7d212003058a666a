"""Atomic file output and checked array input for the analysis tools.

Every writer here writes to a temporary file in the destination's directory,
flushes and syncs it, then renames it over the destination with
:func:`os.replace` (atomic on POSIX and Windows).  A crash or an exception in
the middle of a write therefore never leaves a partial or empty file behind:
the destination either keeps its previous content or gets the complete new one.

:func:`load_array` reads ``.npy`` / ``.npz`` files and turns every problem
(missing file, unreadable data, missing key, non-numeric or non-finite values)
into a :class:`DataError` with a one-line message naming the file.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "write_csv",
    "save_figure",
    "to_jsonable",
    "load_array",
]


class DataError(ValueError):
    """Bad input data: unreadable file, missing key, wrong dtype, NaN or inf.

    The message is always a single line that names the file, suitable for a
    command-line error without a traceback.

    Parameters
    ----------
    message : str
        The message; runs of whitespace (newlines included) become one space.

    Examples
    --------
    >>> from analysis._io import DataError
    >>> str(DataError("x.npy: no such file"))
    'x.npy: no such file'
    >>> issubclass(DataError, ValueError)
    True
    """

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


def _umask() -> int:
    """The process umask, read without changing it where possible."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def atomic_write_bytes(path, data) -> Path:
    """Write ``data`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory must exist.
    data : bytes-like, or callable
        The content, or a callable ``write(fh)`` that writes it to a binary
        file object (for large or streamed output).

    Returns
    -------
    pathlib.Path
        The destination.

    Raises
    ------
    OSError
        If the directory is missing or not writable; nothing is left behind.
    Exception
        Whatever ``data(fh)`` raises; the temporary file is removed and the
        destination left untouched.

    Notes
    -----
    The new file gets the permissions of the file it replaces, or
    ``0o666 & ~umask`` for a new file (not the ``0o600`` of temporary files).

    Examples
    --------
    >>> import os, tempfile
    >>> from analysis._io import atomic_write_bytes
    >>> d = tempfile.mkdtemp()
    >>> p = atomic_write_bytes(os.path.join(d, "a.bin"), b"abc")
    >>> p.read_bytes(), sorted(os.listdir(d))
    (b'abc', ['a.bin'])
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.chmod(tmp, mode)
        except OSError:  # pragma: no cover - filesystems without chmod
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path, text, *, encoding="utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (newlines written as ``\\n``).

    Parameters
    ----------
    path : str or os.PathLike
    text : str
    encoding : str, optional
        Default ``"utf-8"``.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import os, tempfile
    >>> from analysis._io import atomic_write_text
    >>> p = atomic_write_text(os.path.join(tempfile.mkdtemp(), "a.txt"), "héllo\\n")
    >>> p.read_text(encoding="utf-8")
    'héllo\\n'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode(encoding))


def to_jsonable(obj):
    """Convert results to plain JSON data.

    Objects with a ``to_dict()`` method and dataclasses become dicts, NumPy
    arrays and tuples become lists, NumPy scalars Python numbers, paths
    strings, and non-finite floats (NaN, inf) ``None`` (JSON has no NaN).

    Parameters
    ----------
    obj : object

    Returns
    -------
    object
        Built from dict (str keys), list, str, int, float, bool and None only.

    Raises
    ------
    TypeError
        For objects with no JSON form.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis._io import to_jsonable
    >>> to_jsonable({"a": np.arange(3), "b": (np.float32(0.5), float("nan")), 1: None})
    {'a': [0, 1, 2], 'b': [0.5, None], '1': None}
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_jsonable(to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def write_json(path, obj, *, indent=2) -> Path:
    """Write ``obj`` as JSON (via :func:`to_jsonable`), atomically.

    Parameters
    ----------
    path : str or os.PathLike
    obj : object
        Plain data, NumPy values, or results with ``to_dict()``.
    indent : int or None, optional
        Default 2.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import json, os, tempfile
    >>> from analysis._io import write_json
    >>> p = write_json(os.path.join(tempfile.mkdtemp(), "r.json"), {"kept": 0.75})
    >>> json.loads(p.read_text())
    {'kept': 0.75}
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (dict, list, tuple, np.ndarray)):
        return json.dumps(to_jsonable(value))
    return value


def write_csv(path, rows, *, fieldnames=None) -> Path:
    """Write a list of dicts as CSV with a header row, atomically.

    Parameters
    ----------
    path : str or os.PathLike
    rows : iterable of dict
        One dict per row.  Missing keys are written as empty cells; floats
        with ``repr`` (exact round trip); lists and dicts as JSON text.
    fieldnames : sequence of str, optional
        Column order; default every key in order of first appearance.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If a row has a key not in ``fieldnames``.

    Examples
    --------
    >>> import os, tempfile
    >>> from analysis._io import write_csv
    >>> p = write_csv(os.path.join(tempfile.mkdtemp(), "r.csv"),
    ...               [{"rank": 6, "kept": 0.5}, {"rank": 10, "note": "x"}])
    >>> p.read_text().splitlines()
    ['rank,kept,note', '6,0.5,', '10,,x']
    """
    rows = [dict(r) for r in rows]
    if fieldnames is None:
        fieldnames = []
        seen = set()
        for r in rows:
            for k in r:
                if k not in seen:
                    seen.add(k)
                    fieldnames.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_cell(v) for k, v in r.items()})
    return atomic_write_text(path, buf.getvalue())


def save_figure(fig, path, **kwargs) -> Path:
    """Save a matplotlib figure atomically; the format follows the suffix.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or os.PathLike
        Destination, e.g. ``"spectrum.png"`` or ``"curves.svg"``.
    **kwargs
        Passed to :meth:`~matplotlib.figure.Figure.savefig` (``dpi``,
        ``bbox_inches``...).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import os, tempfile
    >>> from matplotlib.figure import Figure
    >>> from analysis._io import save_figure
    >>> fig = Figure(figsize=(1, 1))
    >>> p = save_figure(fig, os.path.join(tempfile.mkdtemp(), "f.png"))
    >>> p.read_bytes()[:4]
    b'\\x89PNG'
    """
    path = Path(path)
    fmt = kwargs.pop("format", None) or (path.suffix[1:].lower() if path.suffix else "png")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------
# input


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_array(arr, where: str, *, chunk=1 << 22):
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {arr.dtype}; expected a real numeric array")
    if arr.dtype.kind == "f":
        flat = arr.reshape(-1)
        bad = 0
        for start in range(0, flat.size, chunk):  # bounded memory for memory-mapped files
            bad += int(np.count_nonzero(~np.isfinite(flat[start:start + chunk])))
        if bad:
            raise DataError(f"{where} has {bad} non-finite value(s) (NaN or inf)")
    return arr


def load_array(path, key=None, *, mmap=False):
    """Load one numeric array from a ``.npy`` or ``.npz`` file, checked.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy`` file, or a ``.npz`` archive.
    key : str, optional
        Name of the array in a ``.npz`` archive; may be omitted when the
        archive holds exactly one array.  Not allowed for ``.npy``.
    mmap : bool, optional
        Memory-map a ``.npy`` file read-only instead of reading it (for data
        larger than memory; the finiteness check then streams through it).

    Returns
    -------
    ndarray
        Real numeric (bool, integer or floating), all values finite.

    Raises
    ------
    DataError
        With a one-line message naming the file: missing or unreadable file,
        unsupported suffix, missing or ambiguous key, object/complex/string
        dtype, or NaN/inf values.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from analysis._io import DataError, load_array
    >>> d = tempfile.mkdtemp()
    >>> np.savez(os.path.join(d, "g.npz"), x=np.ones((2, 3)), w=np.zeros(3))
    >>> load_array(os.path.join(d, "g.npz"), "x").shape
    (2, 3)
    >>> try:
    ...     load_array(os.path.join(d, "g.npz"), "grad_y")
    ... except DataError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    no array 'grad_y' (it has: w, x)
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise DataError(f"{name}: no such file")
    if path.is_dir():
        raise DataError(f"{name}: is a directory, expected a .npy or .npz file")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"{name}: unsupported file type {path.suffix or '(none)'!r}; expected .npy or .npz")
    if suffix == ".npy":
        if key is not None:
            raise DataError(f"{name}: a .npy file holds one array; key={key!r} is only for .npz")
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{name}: cannot read as .npy: {_first_line(exc)}") from None
        if not isinstance(arr, np.ndarray):
            raise DataError(f"{name}: not a .npy array file")
        return _check_array(arr, name)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            if key is None:
                if len(keys) != 1:
                    listed = ", ".join(keys) if keys else "none"
                    raise DataError(f"{name}: holds {len(keys)} arrays ({listed}); choose one with a key")
                key = keys[0]
            elif key not in archive.files:
                raise DataError(f"{name}: no array {key!r} (it has: {', '.join(keys) or 'nothing'})")
            arr = archive[key]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{name}: cannot read as .npz: {_first_line(exc)}") from None
    return _check_array(arr, f"{name}: array {key!r}")
