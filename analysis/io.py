"""File output and checked array input of the analysis tools.

Writers: :func:`atomic_write_bytes` is the one atomic writer (temporary file in
the destination's directory, flushed, synced, renamed over the destination);
:func:`write_files` writes several files into a directory and removes them again
if one fails.  :func:`to_jsonable` is the one conversion of results to plain JSON
data, :func:`figure_bytes` renders a figure in memory, :func:`text_table` and
:func:`markdown_table` lay out tables.

Input: :func:`load_array` reads ``.npy`` / ``.npz`` files, each header checked
before the data (:mod:`analysis._arrayfile`), and turns every problem into a
one-line :class:`DataError` naming the file.

A crash in the middle of a write never leaves a partial file behind: the
destination keeps its previous content or gets the complete new one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import tempfile
from io import BytesIO, StringIO
from pathlib import Path

import numpy as np

from ._arrayfile import DataError, read_npy, read_npz
from ._outdir import file_mode, replace_directory, uninterrupted

__all__ = [
    "DataError",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_files",
    "to_jsonable",
    "json_text",
    "write_json",
    "write_csv",
    "figure_bytes",
    "save_figure",
    "text_table",
    "markdown_table",
    "load_array",
]


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
    >>> from analysis.io import atomic_write_bytes
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
        mode = file_mode()
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
        with uninterrupted(), contextlib.suppress(OSError):  # a second Ctrl-C must not leave the file behind
            os.unlink(tmp)
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
    >>> from analysis.io import atomic_write_text
    >>> p = atomic_write_text(os.path.join(tempfile.mkdtemp(), "a.txt"), "héllo\\n")
    >>> p.read_text(encoding="utf-8")
    'héllo\\n'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode(encoding))


def write_files(out, files) -> list:
    """Write a set of files into a directory, all or nothing.

    The whole set is written into a temporary directory beside ``out`` and
    swapped in at once (:func:`analysis._outdir.replace_directory`): readers,
    crashes and Ctrl-C see either the old set or the new one.  Other files
    already in ``out`` stay, unchanged (carried over as hard links).

    Parameters
    ----------
    out : str or os.PathLike
        The directory; created (with its parents) if missing.  It must not
        hold sub-directories nor be the current directory.
    files : dict of str to (bytes or str)
        File name to content; text is written as UTF-8.

    Returns
    -------
    list of pathlib.Path
        The paths written, in the order of ``files``.

    Raises
    ------
    NotADirectoryError
        If ``out`` exists and is not a directory.
    OSError
        If ``out`` cannot take the set (see
        :func:`analysis._outdir.check_output_dir`) or a file cannot be
        written; ``out`` keeps its old content and nothing is left behind.

    Examples
    --------
    >>> import tempfile
    >>> from analysis.io import write_files
    >>> d = tempfile.mkdtemp()
    >>> [p.read_bytes() for p in write_files(d, {"a.txt": "1", "b.bin": b"\\x02"})]
    [b'1', b'\\x02']
    """
    return replace_directory(out, files)


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
    >>> from analysis.io import to_jsonable
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


def json_text(obj, *, indent=2) -> str:
    """``obj`` as JSON text (via :func:`to_jsonable`), ending with a newline.

    Parameters
    ----------
    obj : object
        Plain data, NumPy values, or results with ``to_dict()``.
    indent : int or None, optional
        Default 2.

    Returns
    -------
    str

    Raises
    ------
    TypeError
        As :func:`to_jsonable`.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.io import json_text
    >>> json_text({"rank": np.int64(21), "kept": float("nan")}, indent=None)
    '{"rank": 21, "kept": null}\\n'
    """
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n"


def write_json(path, obj, *, indent=2) -> Path:
    """Write ``obj`` as JSON (:func:`json_text`), atomically.

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
    >>> from analysis.io import write_json
    >>> p = write_json(os.path.join(tempfile.mkdtemp(), "r.json"), {"kept": 0.75})
    >>> json.loads(p.read_text())
    {'kept': 0.75}
    """
    return atomic_write_text(path, json_text(obj, indent=indent))


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
    >>> from analysis.io import write_csv
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
    buf = StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_cell(v) for k, v in r.items()})
    return atomic_write_text(path, buf.getvalue())


def figure_bytes(fig, format="png", **kwargs) -> bytes:
    """Render a matplotlib figure in memory.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    format : str, optional
        Any format of :meth:`~matplotlib.figure.Figure.savefig`; default ``"png"``.
    **kwargs
        Passed to :meth:`~matplotlib.figure.Figure.savefig` (``dpi``,
        ``bbox_inches``...).

    Returns
    -------
    bytes
        The file content.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> from analysis.io import figure_bytes
    >>> figure_bytes(Figure(figsize=(1, 1)))[:4]
    b'\\x89PNG'
    """
    buf = BytesIO()
    fig.savefig(buf, format=format, **kwargs)
    return buf.getvalue()


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
    >>> from analysis.io import save_figure
    >>> fig = Figure(figsize=(1, 1))
    >>> p = save_figure(fig, os.path.join(tempfile.mkdtemp(), "f.png"))
    >>> p.read_bytes()[:4]
    b'\\x89PNG'
    """
    path = Path(path)
    fmt = kwargs.pop("format", None) or (path.suffix[1:].lower() if path.suffix else "png")
    return atomic_write_bytes(path, figure_bytes(fig, fmt, **kwargs))


# ---------------------------------------------------------------------------
# tables


def _alignment(align, columns):
    """One letter per column; default: first column left, the others right."""
    align = "l" + "r" * (columns - 1) if align is None else align
    if len(align) != columns:
        raise ValueError(f"align needs one letter per column ({columns}), got {align!r}")
    return align


def text_table(headers, rows, align=None, *, sep="  ") -> str:
    """A plain-text table: header, a rule of dashes, one line per row.

    Parameters
    ----------
    headers : sequence of str
    rows : sequence of sequence
        Cells, converted with :class:`str`.
    align : str, optional
        One letter per column, ``l`` or ``r``; default: first column left,
        the others right.
    sep : str, optional
        Between columns; default two spaces.

    Returns
    -------
    str
        Lines joined by newlines, without a trailing newline; every column
        as wide as its widest cell.

    Examples
    --------
    >>> from analysis.io import text_table
    >>> print(text_table(["method", "rel err"], [["lbp", "1.2e-01"], ["svd", "3.0e-02"]]))
    method  rel err
    ------  -------
    lbp     1.2e-01
    svd     3.0e-02
    """
    cells = [[str(h) for h in headers]] + [[str(v) for v in row] for row in rows]
    align = _alignment(align, len(headers))
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        cells = (v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(row, widths, align, strict=True))
        return sep.join(cells).rstrip()

    return "\n".join([line(cells[0]), sep.join("-" * w for w in widths)] + [line(row) for row in cells[1:]])


def markdown_table(headers, rows, align=None) -> str:
    """A GitHub-flavoured Markdown table.

    Parameters
    ----------
    headers : sequence of str
    rows : sequence of sequence
        Cells, converted with :class:`str`; ``|`` is escaped.
    align : str, optional
        One letter per column, ``l``, ``r`` or ``c``; default: first column
        left, the others right.

    Returns
    -------
    str
        Lines joined by newlines, without a trailing newline.

    Examples
    --------
    >>> from analysis.io import markdown_table
    >>> print(markdown_table(["layer", "kept"], [["fc1", "91.0%"]]))
    | layer | kept |
    | :--- | ---: |
    | fc1 | 91.0% |
    """
    marks = {"l": ":---", "r": "---:", "c": ":---:"}

    def line(cells):
        return "| " + " | ".join(cells) + " |"

    lines = [line(str(h).replace("|", "\\|") for h in headers),
             line(marks[a] for a in _alignment(align, len(headers)))]
    lines += [line(str(v).replace("|", "\\|") for v in row) for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# input


def _check_array(arr, where: str, *, chunk=1 << 22):
    """``arr`` if all its values are finite (its dtype was checked with its header)."""
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
        unsupported suffix, not ``.npy`` data (a text file, an archive member
        of other bytes), a header that claims more bytes than the file holds
        or than the machine's memory, missing or ambiguous key,
        object/complex/string dtype, or NaN/inf values.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from analysis.io import DataError, load_array
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
        return _check_array(read_npy(path, mmap=mmap), name)
    key, arr = read_npz(path, key)
    return _check_array(arr, f"{name}: array {key!r}")
