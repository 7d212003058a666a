"""BLAS threads of the analysis workloads: one switch for ``lbp report``, ``lbp finetune`` and the streaming engine.

The workloads of :mod:`analysis` are many small matrix products, for which BLAS
threads cost more in wake-ups than they gain, badly so on a busy machine, and
the streaming engine runs its own threads: :func:`blas_limit` caps BLAS for the
duration of a run.
"""

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
        :mod:`threadpoolctl` (in the ``dask``, ``plot``, ``bench`` and
        ``finetune`` extras); without it the block runs unchanged.

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
