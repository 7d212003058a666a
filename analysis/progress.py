"""Progress bars for long analyses: one thin configuration of :mod:`tqdm`.

Every long-running function of :mod:`analysis` takes ``progress=True`` and
shows a bar on standard error only when the work lasts more than a couple of
seconds, so short runs (and the test suite) stay quiet.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar"]

#: Seconds before an automatic bar appears.
DELAY = 2.0


def progress_bar(total, desc="", *, enabled=None, file=None, unit="it"):
    """A :class:`tqdm.tqdm` bar configured the way every ``lbp`` command shows progress.

    Parameters
    ----------
    total : int or None
        Units of work (None when unknown: the bar shows a count).
    desc : str, optional
        Label printed before the bar.
    enabled : bool or None, optional
        None (default): show the bar once the work has run for :data:`DELAY`
        seconds; True: show it at once; False: never.
    file : file-like, optional
        Where to draw; default ``sys.stderr``, looked up at call time.
    unit : str, optional
        Unit of ``total``; ``"B"`` counts bytes and shows them (and the rate)
        in kB, MB, GB.  Default ``"it"``.

    Returns
    -------
    tqdm.tqdm
        Use it as a context manager and call ``update(n)``; ``set_description``
        changes the label.

    Examples
    --------
    >>> import io
    >>> from analysis.progress import progress_bar
    >>> out = io.StringIO()
    >>> with progress_bar(3, "demo", file=out) as bar:  # fast work: silent
    ...     bar.update(3)
    >>> out.getvalue()
    ''
    """
    return tqdm(
        total=total,
        desc=desc,
        file=sys.stderr if file is None else file,
        disable=enabled is False,
        delay=0.0 if enabled else DELAY,
        dynamic_ncols=True,
        leave=True,
        unit=unit,
        unit_scale=unit == "B",
    )
