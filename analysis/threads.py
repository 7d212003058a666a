"""BLAS threads of the analysis workloads: one switch for ``lbp report`` and ``lbp finetune``.

The workloads of :mod:`analysis` are many small matrix products, for which BLAS
threads cost more in wake-ups than they gain, badly so on a busy machine;
:func:`blas_limit` caps them for the duration of a run.
"""

from __future__ import annotations

import contextlib

__all__ = ["blas_limit"]


@contextlib.contextmanager
def blas_limit(threads):
    """Limit BLAS to ``threads`` threads inside the ``with`` block.

    Parameters
    ----------
    threads : int or None
        Thread count; None leaves BLAS alone.  Needs :mod:`threadpoolctl`
        (without it, BLAS is left alone).

    Yields
    ------
    None

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.threads import blas_limit
    >>> with blas_limit(1):
    ...     float(np.ones((64, 64)) @ np.ones(64) @ np.ones(64))
    4096.0
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
