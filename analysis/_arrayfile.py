"""Defensive reading of array files: the ``.npy`` header first, its claims checked against the file.

:func:`read_npy` and :func:`read_npz` never hand a file to NumPy before its
header has been read and checked: the magic string (a text file named ``.npy``
is "not a .npy file", not NumPy's advice about ``allow_pickle``), the dtype (no
Python objects, so no pickle is ever loaded; real numbers only), and the size
the header claims against the bytes that follow it and against the machine's
memory (a header that claims terabytes is refused before anything is
allocated).  Every problem is a :class:`DataError` whose one-line message names
the file (and the archive member).  :func:`analysis.io.load_array` is the
public entry point.
"""

from __future__ import annotations

import math
import zipfile
from typing import NamedTuple

import numpy as np

from lbpcore import _validation

__all__ = ["ArrayHeader", "DataError", "read_header", "read_npy", "read_npz", "npz_member"]

#: Dtype kinds an analysis accepts: bool, signed and unsigned integers, floating.
REAL_KINDS = "biuf"


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
    >>> from analysis.io import DataError
    >>> str(DataError("x.npy: no such file"))
    'x.npy: no such file'
    >>> issubclass(DataError, ValueError)
    True
    """

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


class ArrayHeader(NamedTuple):
    """What a ``.npy`` header claims: ``shape``, ``dtype``, ``fortran`` order, and the data's ``nbytes``."""

    shape: tuple
    dtype: np.dtype
    fortran: bool
    nbytes: int


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_header(fh, size: int, where: str) -> ArrayHeader:
    """Read and check the header of the ``.npy`` data of ``size`` bytes that ``fh`` starts at.

    Parameters
    ----------
    fh : binary file object
        Positioned at the start of the ``.npy`` data; left after the header.
    size : int
        Bytes of the whole ``.npy`` data (header included).
    where : str
        How to name the data in messages (``"x.npy"``, ``"l.npz: member 'x'"``).

    Returns
    -------
    ArrayHeader

    Raises
    ------
    DataError
        No NumPy magic string, an unknown version or malformed header, a
        dtype that is not a real number (objects, strings, complex, records),
        fewer bytes than the header claims, or more than the machine's memory.

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> from analysis._arrayfile import read_header
    >>> buf = io.BytesIO(); np.save(buf, np.zeros((2, 3), dtype=np.float32))
    >>> read_header(io.BytesIO(buf.getvalue()), len(buf.getvalue()), "a.npy")[:2]
    ((2, 3), dtype('float32'))
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
    except (ValueError, EOFError):
        raise DataError(f"{where}: not a .npy array (it does not start with NumPy's magic string)") from None
    try:
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):  # 3.0 differs only by a UTF-8 header, which real dtypes do not need
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise DataError(f"{where}: unsupported .npy format version {version[0]}.{version[1]}")
    except DataError:
        raise
    except (ValueError, EOFError, TypeError, SyntaxError) as exc:
        raise DataError(f"{where}: malformed .npy header: {_first_line(exc)}") from None
    if any(int(s) < 0 for s in shape):
        raise DataError(f"{where}: malformed .npy header: negative dimension in shape {tuple(shape)}")
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects (dtype {dtype}); pickles are never loaded")
    if dtype.kind not in REAL_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{where} has dtype {dtype}; expected a real numeric array")
    nbytes = math.prod(shape) * dtype.itemsize
    available = size - fh.tell()
    if nbytes > available:
        raise DataError(
            f"{where}: truncated or corrupt: its header claims shape {tuple(shape)} of {dtype} "
            f"({nbytes} bytes) but only {max(0, available)} bytes follow"
        )
    return ArrayHeader(tuple(shape), dtype, bool(fortran), nbytes)


def _check_memory(header: ArrayHeader, where: str) -> None:
    limit = _validation.memory_limit()
    if header.nbytes > limit:
        raise DataError(
            f"{where}: shape {header.shape} of {header.dtype} needs {header.nbytes} bytes, "
            f"more than the {limit} bytes of memory of this machine"
        )


def read_npy(path, *, mmap: bool = False) -> np.ndarray:
    """The array of the ``.npy`` file ``path``, its header checked first (see :func:`read_header`).

    With ``mmap=True`` the data is memory-mapped read-only (no memory check).
    """
    where = str(path)
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            header = read_header(fh, size, where)
            if mmap:
                return np.load(path, mmap_mode="r", allow_pickle=False)
            _check_memory(header, where)
            fh.seek(0)
            return np.lib.format.read_array(fh, allow_pickle=False)
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{where}: cannot read as .npy: {_first_line(exc)}") from None


def npz_member(zf, key, where) -> tuple[str, zipfile.ZipInfo]:
    """The member of an open ``.npz`` archive that ``key`` names (without ``.npy``): ``(key, info)``.

    ``key`` may be None when the archive holds exactly one member; a missing
    or ambiguous key is a :class:`DataError` that lists the members.
    """
    infos = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i
             for i in zf.infolist() if not i.is_dir()}
    keys = sorted(infos)
    if key is None:
        if len(keys) != 1:
            listed = ", ".join(keys) if keys else "none"
            raise DataError(f"{where}: holds {len(keys)} arrays ({listed}); choose one with a key")
        key = keys[0]
    elif key not in infos:
        raise DataError(f"{where}: no array {key!r} (it has: {', '.join(keys) or 'nothing'})")
    return key, infos[key]


def read_npz(path, key=None) -> tuple[str, np.ndarray]:
    """One array of the ``.npz`` archive ``path``: ``(key, array)``, each member's header checked first.

    ``key`` names the member without its ``.npy`` suffix and may be omitted
    when the archive holds exactly one member.  A member that does not hold
    ``.npy`` data (a text file, other bytes) is a :class:`DataError`, as in
    ``read_header``; so are a missing or ambiguous key and a damaged archive.
    """
    where = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            key, info = npz_member(zf, key, where)
            member = f"{where}: member {info.filename!r}"
            with zf.open(info) as fh:
                header = read_header(fh, info.file_size, member)
            _check_memory(header, member)
            with zf.open(info) as fh:
                return key, np.lib.format.read_array(fh, allow_pickle=False)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, RuntimeError, zipfile.BadZipFile, NotImplementedError) as exc:
        # RuntimeError: zipfile's 'encrypted, password required' (a flipped flag bit)
        raise DataError(f"{where}: cannot read as .npz: {_first_line(exc)}") from None
