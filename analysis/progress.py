"""A dependency-free, one-line progress bar that stays quiet for short work.

:class:`Progress` prints nothing unless the work it tracks has already taken
longer than ``min_seconds`` (2 s by default), so quick analyses and the test
suite stay silent while long rank sweeps or dataset passes show where they are.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """One-line text progress bar, shown only when the work is slow.

    Use it as a context manager and call :meth:`update` after each unit of
    work.  The bar is redrawn in place (carriage return) at most every
    ``interval`` seconds and finished with a newline on exit, but only if it
    was ever shown.

    Parameters
    ----------
    total : int or None
        Number of units of work; None when unknown (the bar then shows a count).
    desc : str, optional
        Label printed before the bar.
    stream : file-like, optional
        Where to write; default ``sys.stderr`` (looked up at construction).
    enabled : bool or None, optional
        None (default): show the bar once ``min_seconds`` have passed since
        the start; True: always show it; False: never.
    min_seconds : float, optional
        Delay before an automatic bar appears; default 2.0.
    interval : float, optional
        Minimum seconds between redraws; default 0.1 on a terminal, 1.0 otherwise.
    width : int, optional
        Number of bar cells; default 30.
    clock : callable, optional
        Monotonic time source returning seconds (for tests); default
        :func:`time.monotonic`.

    Attributes
    ----------
    n : int
        Units done so far.
    shown : bool
        Whether anything has been written to ``stream``.

    Examples
    --------
    >>> import io
    >>> from analysis.progress import Progress
    >>> out = io.StringIO()
    >>> with Progress(3, "demo", stream=out) as bar:  # fast work: silent
    ...     for _ in range(3):
    ...         bar.update()
    >>> out.getvalue()
    ''
    >>> out = io.StringIO()
    >>> with Progress(4, "demo", stream=out, enabled=True, width=8) as bar:
    ...     bar.update(4)
    >>> out.getvalue().splitlines()[-1].split("\\r")[-1][:24]
    'demo |########| 4/4 100%'
    """

    def __init__(self, total, desc="", *, stream=None, enabled=None, min_seconds=2.0,
                 interval=None, width=30, clock=time.monotonic):
        if total is not None:
            total = int(total)
            if total < 0:
                raise ValueError(f"total must be >= 0 or None, got {total}")
        self.total = total
        self.desc = str(desc)
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.min_seconds = float(min_seconds)
        if interval is None:
            isatty = getattr(self.stream, "isatty", None)
            try:
                interval = 0.1 if (isatty is not None and isatty()) else 1.0
            except (OSError, ValueError):
                interval = 1.0
        self.interval = float(interval)
        self.width = max(1, int(width))
        self._clock = clock
        self.n = 0
        self.shown = False
        self._start = None
        self._last_draw = None
        self._closed = False

    # -- context manager -------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def start(self):
        """Start the clock (done by ``with``); returns ``self``."""
        if self._start is None:
            self._start = self._clock()
            if self.enabled is True:
                self._draw(self._start)
        return self

    @property
    def elapsed(self) -> float:
        """Seconds since :meth:`start` (0 before)."""
        return 0.0 if self._start is None else self._clock() - self._start

    def update(self, n=1):
        """Record ``n`` more units of work done and redraw if due.

        Parameters
        ----------
        n : int, optional
            Default 1.
        """
        if self._start is None:
            self.start()
        self.n += int(n)
        if self.enabled is False or self._closed:
            return
        now = self._clock()
        if not self.shown and self.enabled is None and now - self._start < self.min_seconds:
            return
        if self._last_draw is None or now - self._last_draw >= self.interval or self._done():
            self._draw(now)

    def close(self):
        """Draw the final state and end the line, if the bar was shown."""
        if self._closed:
            return
        self._closed = True
        if self.shown:
            self._draw(self._clock())
            self.stream.write("\n")
            self.stream.flush()

    # -- drawing ---------------------------------------------------------
    def _done(self) -> bool:
        return self.total is not None and self.n >= self.total

    def render(self, now=None) -> str:
        """The bar as a string (without carriage return)."""
        now = self._clock() if now is None else now
        elapsed = 0.0 if self._start is None else now - self._start
        prefix = f"{self.desc} " if self.desc else ""
        if self.total:
            frac = min(1.0, self.n / self.total)
            cells = int(frac * self.width)
            bar = "#" * cells + " " * (self.width - cells)
            eta = elapsed * (self.total - self.n) / self.n if 0 < self.n < self.total else 0.0
            return (f"{prefix}|{bar}| {self.n}/{self.total} {int(frac * 100):3d}% "
                    f"[{_format_seconds(elapsed)}<{_format_seconds(eta)}]")
        return f"{prefix}{self.n} done [{_format_seconds(elapsed)}]"

    def _draw(self, now):
        self.stream.write("\r" + self.render(now))
        self.stream.flush()
        self.shown = True
        self._last_draw = now
