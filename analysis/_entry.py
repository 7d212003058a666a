"""The ``lbp`` console entry point: the one Ctrl-C handler, armed before anything heavy is imported.

The console script and ``python -m analysis`` call :func:`console`, which calls
:func:`main`, which imports :mod:`analysis.cli` (NumPy, lbpcore, matplotlib...)
only inside its handler: Ctrl-C at any moment (during the imports, the
computation or the writing) ends with ``lbp: interrupted`` on stderr and exit
status 130, without a traceback.  A Ctrl-C that lands in the initialization of
a compiled extension reaches Python as an ``ImportError`` caused by the
:class:`KeyboardInterrupt`; it is recognized by that cause.  (Importing
:mod:`analysis` itself imports nothing heavy: its names are loaded on first
use.)  The moments left uncovered are the interpreter's own start-up and the
console script's first lines, before :func:`console` runs (some tens of
milliseconds): this module imports nothing at its top for that reason.
"""

from __future__ import annotations

import sys

__all__ = ["EXIT_INTERRUPTED", "console", "main"]

#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
_MESSAGE = "lbp: interrupted\n"


def _is_interrupt(exc) -> bool:
    """Whether ``exc`` is a KeyboardInterrupt, or was caused by one (an extension's failed initialization)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _ignore_interrupts():
    """Ignore SIGINT from here to the process's end.

    Called by :func:`console` once the run has finished: every output is in
    place, so a late Ctrl-C must neither print a traceback nor end the process
    by the signal.  Ignoring (rather than blocking, which holds for one thread
    only) covers every thread, and the interpreter's finalization keeps an
    ignored signal ignored where it restores the default action of a handled one.
    """
    import signal  # noqa: PLC0415 - a builtin module, loaded at start-up

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(argv, finished):
    """Run :func:`analysis.cli.main`, call ``finished()`` inside the handler, report Ctrl-C."""
    try:
        from .cli import main as run  # noqa: PLC0415 - inside the handler: Ctrl-C during the imports is caught

        status = run(argv)
        finished()
        return status
    except BaseException as exc:
        if not _is_interrupt(exc):
            raise
        import signal  # noqa: PLC0415 - a builtin module, loaded at start-up

        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while this line is written
        try:
            sys.stderr.write(_MESSAGE)
            sys.stderr.flush()
        finally:
            signal.signal(signal.SIGINT, previous)
        return EXIT_INTERRUPTED


def main(argv=None) -> int:
    """Run the ``lbp`` command (:func:`analysis.cli.main`) with Ctrl-C handled.

    Parameters
    ----------
    argv : sequence of str, optional
        As for :func:`analysis.cli.main`.

    Returns
    -------
    int
        Its exit status, or 130 after Ctrl-C (with ``lbp: interrupted`` on stderr).

    Examples
    --------
    >>> from analysis._entry import main
    >>> main(["--help"])  # doctest: +ELLIPSIS
    usage: lbp ...
    0
    """
    return _run(argv, lambda: None)


def console() -> int:
    """:func:`main` for the console script and ``python -m analysis``.

    After Ctrl-C the process leaves at once (``os._exit(130)``, the standard
    streams flushed): everything the run created was already removed, and an
    extension whose initialization was interrupted could crash the
    interpreter's finalization.  Once the run has finished, SIGINT is ignored
    until the process ends (the outputs are complete; the exit status is the
    run's).

    Returns
    -------
    int
        The exit status, when not interrupted.

    Examples
    --------
    >>> from analysis._entry import console
    >>> callable(console)
    True
    """
    status = _run(None, _ignore_interrupts)
    if status == EXIT_INTERRUPTED:
        import os  # noqa: PLC0415 - loaded long before

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(EXIT_INTERRUPTED)
    return status
