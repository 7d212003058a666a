"""An on-disk cache of pretrained parameters, keyed by configuration and library version.

Pretraining runs once per configuration: :func:`load_or_build` stores the
parameters and a small JSON summary in one ``.npz`` file whose name is a hash
of the configuration and of :data:`lbpcore.__version__`, and returns them on
later calls.  An entry that cannot be read, or whose recorded key does not
match (a stale or foreign file under the same name), or whose parameters fail
the caller's check, is rebuilt; entries are written atomically, so an
interrupted run never leaves a half-written file behind.

The cache lives in :func:`default_cache_dir` (``$LBP_CACHE_DIR``, else
``$XDG_CACHE_HOME/lbpcore``, else ``~/.cache/lbpcore``) unless a directory is
given.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

import lbpcore

from ..io import atomic_write_bytes, to_jsonable

__all__ = ["CACHE_FORMAT", "default_cache_dir", "cache_key", "cache_path", "load_or_build"]

#: Version of the entry layout; part of every key.
CACHE_FORMAT = 1

_META = "__meta__"


def default_cache_dir() -> Path:
    """Where pretrained parameters are cached by default.

    Returns
    -------
    pathlib.Path
        ``$LBP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/lbpcore``, else
        ``~/.cache/lbpcore`` (not created here).

    Examples
    --------
    >>> import os
    >>> from pathlib import Path
    >>> from analysis.finetune import default_cache_dir
    >>> d = default_cache_dir()
    >>> d.name == "lbpcore" or d == Path(os.environ["LBP_CACHE_DIR"])
    True
    """
    env = os.environ.get("LBP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lbpcore"


def cache_key(spec) -> dict:
    """The full key of an entry: the configuration, the library version and the format.

    Parameters
    ----------
    spec : dict
        JSON-serializable description of what is built (model, data, training).

    Returns
    -------
    dict
        ``{"spec": ..., "lbpcore": lbpcore.__version__, "format": CACHE_FORMAT}``
        in plain JSON types.

    Examples
    --------
    >>> from analysis.finetune import cache_key
    >>> sorted(cache_key({"steps": 3}))
    ['format', 'lbpcore', 'spec']
    """
    return to_jsonable({"spec": spec, "lbpcore": lbpcore.__version__, "format": CACHE_FORMAT})


def cache_path(spec, cache_dir=None, *, prefix="pretrain") -> Path:
    """File of the entry for ``spec``: ``<cache_dir>/<prefix>-<16 hex digits of SHA-256 of the key>.npz``.

    Parameters
    ----------
    spec : dict
    cache_dir : str or os.PathLike, optional
        Default :func:`default_cache_dir`.
    prefix : str, optional
        Default ``"pretrain"``.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> from analysis.finetune import cache_path
    >>> p = cache_path({"steps": 3}, "/tmp/c")
    >>> p.parent.as_posix(), p.name.startswith("pretrain-"), p.suffix, p == cache_path({"steps": 3}, "/tmp/c")
    ('/tmp/c', True, '.npz', True)
    >>> p == cache_path({"steps": 4}, "/tmp/c")
    False
    """
    text = json.dumps(cache_key(spec), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Path(default_cache_dir() if cache_dir is None else cache_dir) / f"{prefix}-{digest}.npz"


def _read(path, key, check):
    """Arrays and info of a valid entry, or None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z[_META]))
            if meta.get("key") != key:
                return None
            arrays = {k: np.array(z[k]) for k in z.files if k != _META}
        if check is not None:
            check(arrays)
    except (OSError, ValueError, KeyError, TypeError, EOFError, RuntimeError, zipfile.BadZipFile,
            NotImplementedError, json.JSONDecodeError):  # RuntimeError: zipfile's 'encrypted' (a flipped flag bit)
        return None
    return arrays, meta.get("info", {})


def _check_writable(directory: Path) -> None:
    """Raise OSError naming ``directory`` unless an entry can be written in it (created if missing)."""
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is not a directory, so the pretraining cache cannot be written "
                                 "there: give another directory (--cache-dir DIR or $LBP_CACHE_DIR)", str(directory))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", suffix=".tmp", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(exc.errno, f"the pretraining cache cannot be written there ({exc.strerror or exc}): give "
                                 "another directory (--cache-dir DIR or $LBP_CACHE_DIR)", str(directory)) from None


def load_or_build(spec, build, *, cache_dir=None, check=None):
    """Arrays built once per ``spec`` and cached on disk.

    Parameters
    ----------
    spec : dict
        JSON-serializable configuration; with the library version, it keys the entry.
    build : callable
        ``build() -> (arrays, info)``: a dict of str to ndarray and a
        JSON-serializable dict (test accuracy, curves...).  Called on a miss.
    cache_dir : str or os.PathLike, optional
        Default :func:`default_cache_dir`; created if missing.
    check : callable, optional
        ``check(arrays)`` raising ValueError if cached arrays are unusable
        (wrong names or shapes): the entry is then rebuilt.

    Returns
    -------
    arrays : dict of str to ndarray
    info : dict
    status : {"hit", "built", "rebuilt"}
        ``"rebuilt"`` when an unreadable, stale or failing entry was replaced.

    Raises
    ------
    OSError
        On a miss, if ``cache_dir`` cannot be created or written (checked
        before ``build`` runs; a valid entry in a read-only directory is a
        hit).
    path : pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from analysis.finetune import load_or_build
    >>> d = tempfile.mkdtemp()
    >>> build = lambda: ({"w": np.arange(3.0)}, {"accuracy": 0.5})
    >>> load_or_build({"steps": 3}, build, cache_dir=d)[2]
    'built'
    >>> arrays, info, status, path = load_or_build({"steps": 3}, build, cache_dir=d)
    >>> status, arrays["w"].tolist(), info
    ('hit', [0.0, 1.0, 2.0], {'accuracy': 0.5})
    """
    key = cache_key(spec)
    path = cache_path(spec, cache_dir)
    existed = path.exists()
    if existed:
        found = _read(path, key, check)
        if found is not None:
            return found[0], found[1], "hit", path
    _check_writable(path.parent)  # before the build, not after it
    arrays, info = build()
    arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
    if _META in arrays:
        raise ValueError(f"{_META!r} is reserved")
    meta = json.dumps({"key": key, "info": to_jsonable(info)}, sort_keys=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{_META: np.array(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return arrays, to_jsonable(info), "rebuilt" if existed else "built", path
