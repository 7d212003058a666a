"""Thread limits of the BLAS library NumPy calls, for code that runs its own threads."""

from __future__ import annotations

import contextlib

__all__ = ["blas_limit"]


@contextlib.contextmanager
def blas_limit(threads):
    """Limit the BLAS threads of this process while the block runs.

    Parameters
    ----------
    threads : int or None
        Threads each BLAS call may use; None changes nothing.  Needs
        :mod:`threadpoolctl` (in the ``dask``, ``plot`` and ``bench``
        extras); without it the block runs unchanged.

    Yields
    ------
    None

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.threads import blas_limit
    >>> with blas_limit(1):  # several Python threads each calling BLAS: one BLAS thread each
    ...     float(np.ones((2, 2)) @ np.ones(2) @ np.ones(2))
    4.0
    """
    if threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - threadpoolctl is optional
    except ImportError:  # pragma: no cover - threadpoolctl is optional
        yield
        return
    with threadpool_limits(limits=int(threads), user_api="blas"):
        yield
