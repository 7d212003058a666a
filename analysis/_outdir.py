"""All-or-nothing output directories: the whole set is built beside the target, then swapped in.

:func:`replace_directory` writes every file of an output set into a fresh
temporary directory beside the target (``.NAME.lbp-PID-XXXXXXXX``, a unique
name), then exchanges the two directories in one atomic step
(``renameat2(RENAME_EXCHANGE)`` on Linux) and removes the old set.  A reader,
a crash or a ``kill -9`` at any moment sees either the old set or the new one,
never a mixture.  Where the exchange is not available (other systems, some
network filesystems) two renames are used, with a window of microseconds in
which the directory is missing; a later run restores it if the process died
there.

Files of the target that are not part of the new set (your own files, another
command's output) are carried into the new directory as hard links: the same
files, never deleted, copied or modified.  Files of the old set that the new
set does not contain are kept the same way.  A target that holds
sub-directories, or that is the current directory, is refused before anything
is computed (:func:`check_output_dir`), as are targets whose parent is not
writable.

On any exception or Ctrl-C the temporary directory (and any parent directory
the call created) is removed and the target keeps its old content; the swap
and the cleanups run with Ctrl-C deferred (:func:`uninterrupted`).  Temporary
directories of killed runs (``kill -9`` cannot be caught) are cleared by the
next run into the same target, which deletes only what it can tell apart: the
set's own files and copies of the target's files.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import secrets
import signal
import tempfile
import threading
from pathlib import Path

__all__ = [
    "check_output_dir",
    "check_output_file",
    "created_directory",
    "file_mode",
    "path_option",
    "replace_directory",
    "uninterrupted",
]

_TAG = ".lbp-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


# ---------------------------------------------------------------------------
# Ctrl-C


@contextlib.contextmanager
def uninterrupted():
    """Defer SIGINT (Ctrl-C) until the block ends, then deliver it to the handler there was.

    For short critical sections: a swap and its cleanup.  Outside the main
    thread (where Python cannot install signal handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            signal.raise_signal(signal.SIGINT)


# ---------------------------------------------------------------------------
# checks, before anything is computed


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


def file_mode(directory: bool = False) -> int:
    """The mode of a new file (``0o666 & ~umask``) or directory (``0o777 & ~umask``)."""
    return (0o777 if directory else 0o666) & ~_umask()


def path_option(text: str) -> str:
    """The :mod:`argparse` ``type`` of ``--out`` and ``--json``: a path, which must not be empty.

    Examples
    --------
    >>> from analysis._outdir import path_option
    >>> path_option("report")
    'report'
    """
    if not str(text).strip():
        raise argparse.ArgumentTypeError("must not be empty (give a directory or file name)")
    return text


def _writable_ancestor(path: Path, what: str) -> Path:
    """The nearest existing ancestor of ``path``; raise unless a directory can be created in it.

    Tried for real (a probe directory, removed at once): permissions, read-only
    filesystems and pseudo-filesystems such as ``/proc`` all answer the same way.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"is not a directory, so {what} cannot be created", str(probe))
    try:
        with uninterrupted():
            os.rmdir(tempfile.mkdtemp(prefix=f"{_TAG}probe-", dir=probe))
    except OSError as exc:
        raise OSError(exc.errno, f"{what} cannot be created there ({exc.strerror})", str(probe)) from None
    return probe


def check_output_dir(path) -> Path:
    """Check that ``path`` can receive an output set, before anything is computed; return its real path.

    Parameters
    ----------
    path : str or os.PathLike
        The output directory; it may be missing (it and its parents are created).

    Returns
    -------
    pathlib.Path
        The absolute path with symbolic links resolved (a link to a directory
        keeps pointing to the new set).

    Raises
    ------
    ValueError
        If ``path`` is empty.
    OSError
        If ``path`` exists and is not a directory, is the current or the root
        directory, holds a sub-directory, is not writable, or its parent (or
        nearest existing ancestor) is not a writable directory.  The message
        names the path.

    Examples
    --------
    >>> import os, tempfile
    >>> from analysis._outdir import check_output_dir
    >>> d = tempfile.mkdtemp()
    >>> check_output_dir(os.path.join(d, "new", "report")).name
    'report'
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError("the output directory is an empty path")
    real = Path(os.path.realpath(text))
    if real.parent == real:
        raise OSError(errno.EINVAL, "is the root directory; choose a directory for the output", str(path))
    if real.exists():
        if not real.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(path))
        if os.path.samefile(real, os.getcwd()):
            raise OSError(errno.EINVAL, "is the current directory; lbp replaces its output directory as a whole: "
                                        "choose a new or other directory", str(path))
        for entry in os.scandir(real):
            if entry.is_dir(follow_symlinks=False):
                raise IsADirectoryError(errno.EISDIR, f"holds the sub-directory {entry.name!r}; lbp writes its "
                                                      "output into a directory of files only: choose another",
                                        str(path))
        if not os.access(real, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "is not writable", str(path))
    _writable_ancestor(real.parent, f"the output directory {path}")
    return real


def check_output_file(path) -> Path:
    """Check that the file ``path`` can be written (atomically), before anything is computed.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    pathlib.Path
        The absolute path.

    Raises
    ------
    ValueError
        If ``path`` is empty.
    OSError
        If ``path`` is a directory, or its directory (or nearest existing
        ancestor) is not a writable directory.

    Examples
    --------
    >>> import os, tempfile
    >>> from analysis._outdir import check_output_file
    >>> check_output_file(os.path.join(tempfile.mkdtemp(), "bench.json")).name
    'bench.json'
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError("the output file is an empty path")
    real = Path(os.path.abspath(text))
    if real.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file name", str(path))
    _writable_ancestor(real.parent, str(path))
    return real


# ---------------------------------------------------------------------------
# the swap


def _fsync_dir(path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write a new file of the set (in the private temporary directory: no atomic rename needed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _exchange(a: Path, b: Path) -> bool:
    """Swap the directories ``a`` and ``b`` atomically; False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(tmp: Path, target: Path) -> Path:
    """Put ``tmp`` in place of ``target``; return where the old content is now (``tmp`` or a new name)."""
    if not target.exists():
        os.rename(tmp, target)
        return tmp
    if _exchange(tmp, target):
        return tmp
    old = target.parent / f".{target.name}{_TAG}old-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    return old


def _retire(old: Path, target: Path, names) -> None:
    """Empty and remove ``old`` (a former or unfinished set), deleting only what is safe to delete.

    Deleted: files named in ``names`` (versions of the set's files) and copies
    (hard links) of files that ``target`` holds.  Anything else (a file that
    appeared in the directory during the swap) is moved into ``target`` when
    the name is free there, else left; ``old`` is removed only when empty.
    """
    if not old.exists():
        return
    for entry in os.scandir(old):
        mine = target / entry.name
        try:
            same = mine.exists() and os.path.samefile(entry.path, mine)
        except OSError:
            same = False
        if (entry.name in names or same) and not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
        elif target.is_dir() and not os.path.lexists(mine):
            os.rename(entry.path, mine)
    with contextlib.suppress(OSError):
        old.rmdir()


def _sweep(target: Path, names) -> None:
    """Temporary directories of killed runs beside ``target``: restore a missing target, retire the rest."""
    prefix = f".{target.name}{_TAG}"
    parent = target.parent
    try:
        stale = [p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return
    for path in stale:
        pid = path.name[len(prefix):].removeprefix("old-").split("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if path.name.startswith(prefix + "old-") and not target.exists():
            with contextlib.suppress(OSError):
                os.rename(path, target)  # killed between the two renames: the old set comes back
            continue
        with contextlib.suppress(OSError):
            _retire(path, target, names)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextlib.contextmanager
def created_directory(path):
    """Create the directory ``path`` and its missing parents; remove those again if the block fails.

    Examples
    --------
    >>> import os, tempfile
    >>> from analysis._outdir import created_directory
    >>> base = tempfile.mkdtemp()
    >>> try:
    ...     with created_directory(os.path.join(base, "a", "b")):
    ...         raise OSError("disk full")
    ... except OSError:
    ...     pass
    >>> os.listdir(base)
    []
    """
    made = []
    try:
        missing = []
        probe = Path(path)
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for p in reversed(missing):
            p.mkdir()
            made.insert(0, p)
        yield Path(path)
    except BaseException:
        with uninterrupted():
            for p in made:
                with contextlib.suppress(OSError):
                    p.rmdir()
        raise


def replace_directory(out, files) -> list:
    """Replace the output set in the directory ``out`` by ``files``, all or nothing.

    Parameters
    ----------
    out : str or os.PathLike
        The output directory, checked as by :func:`check_output_dir`; created
        with its parents if missing.
    files : dict of str to bytes or str
        File name (no directory part) to content; text is written as UTF-8.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of ``files``.

    Raises
    ------
    ValueError
        If a name is not a plain file name.
    OSError
        As :func:`check_output_dir`, or if a file cannot be written or a file
        of ``out`` cannot be carried over (hard links unsupported).  ``out``
        keeps its old content and nothing is left behind.

    Examples
    --------
    >>> import os, tempfile
    >>> from analysis._outdir import replace_directory
    >>> out = os.path.join(tempfile.mkdtemp(), "report")
    >>> [p.name for p in replace_directory(out, {"index.md": "# one\\n", "a.png": b"1"})]
    ['index.md', 'a.png']
    >>> _ = replace_directory(out, {"index.md": "# two\\n"})
    >>> sorted(os.listdir(out)), open(os.path.join(out, "index.md")).read()
    (['a.png', 'index.md'], '# two\\n')
    """
    target = check_output_dir(out)
    names = list(files)
    for name in names:
        if not name or name in (".", "..") or "/" in name or os.sep in name or _TAG in name:
            raise ValueError(f"output file names must be plain file names, got {name!r}")
    with created_directory(target.parent):
        return _replace(target, files, names)


def _replace(target: Path, files, names) -> list:
    tmp, swapped = None, False
    try:
        _sweep(target, names)
        with uninterrupted():  # the directory exists as soon as its name is known
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TAG}{os.getpid()}-", dir=target.parent))
        os.chmod(tmp, (target.stat().st_mode & 0o7777) if target.exists() else file_mode(directory=True))
        mode = file_mode()
        for name, data in files.items():
            _write_file(tmp / name, data.encode("utf-8") if isinstance(data, str) else data, mode)
        if target.exists():
            for entry in os.scandir(target):
                if entry.name not in names:
                    os.link(entry.path, tmp / entry.name, follow_symlinks=False)
        _fsync_dir(tmp)
        with uninterrupted():
            old = _swap(tmp, target)
            swapped = True
            _retire(old, target, names)
            _fsync_dir(target.parent)
    except BaseException:
        if tmp is not None and not swapped:
            with uninterrupted():
                _retire(tmp, target, names)
        raise
    return [target / name for name in names]
