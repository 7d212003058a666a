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


def _exit_now(signum, frame):  # pragma: no cover - runs in the signal handler of a process that is leaving
    """A second Ctrl-C while the first is reported, or one after the run: leave at once, without a traceback."""
    import os  # noqa: PLC0415 - loaded long before; kept off the module's top (see the module docstring)

    os.write(2, _MESSAGE.encode())
    os._exit(EXIT_INTERRUPTED)


def _is_interrupt(exc) -> bool:
    """Whether ``exc`` is a KeyboardInterrupt, or was caused by one (an extension's failed initialization)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


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
    try:
        from .cli import main as run  # noqa: PLC0415 - inside the handler: Ctrl-C during the imports is caught

        return run(argv)
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


def console() -> int:
    """:func:`main` for the console script and ``python -m analysis``.

    After Ctrl-C the process leaves at once (``os._exit(130)``, the standard
    streams flushed): everything the run created was already removed, and an
    extension whose initialization was interrupted could crash the
    interpreter's finalization.  Otherwise a Ctrl-C while the process exits
    leaves it at once too, with the same line and status.

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
    status = main()
    import os  # noqa: PLC0415 - loaded long before
    import signal  # noqa: PLC0415 - loaded long before

    signal.signal(signal.SIGINT, _exit_now)  # the process is leaving: a late Ctrl-C must not print a traceback
    if status == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(EXIT_INTERRUPTED)
    return status
