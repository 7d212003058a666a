"""Single-threaded BLAS calls and the thread pool of the NumPy kernels.

OpenBLAS hands a GEMM to several threads once ``m * n * k`` reaches twice its
threshold (``2 * 65536 * 4`` with the default build).  For the thin products of
the NumPy kernels (Hadamard blocks, patch operators) that only adds thread
wake-ups, which cost up to milliseconds on a busy machine, so every product is
kept below :data:`MNK_SINGLE` (:func:`matmul`) and the cores are used by running
independent chunks on a few Python threads instead (:func:`parallel`; NumPy
releases the GIL inside BLAS).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np

__all__ = ["MNK_SINGLE", "matmul", "parallel", "parallel_dynamic", "worker_limit"]

#: Largest ``m * n * k`` (exclusive) that OpenBLAS computes on the calling thread.
MNK_SINGLE = 1 << 19


def matmul(a, b, out=None):
    """``np.matmul(a, b, out=out)`` split so that every BLAS call stays single-threaded.

    Parameters
    ----------
    a : ndarray, shape (..., M, K)
    b : ndarray, shape (..., K, N)
        Broadcast against each other as by :func:`numpy.matmul`.
    out : ndarray, shape (..., M, N), optional
        Receives the product (a possibly strided view); a new array when omitted.

    Returns
    -------
    ndarray, shape (..., M, N)

    Notes
    -----
    When one product of ``M x K`` by ``K x N`` reaches :data:`MNK_SINGLE`, the
    larger of ``N`` (the columns of ``b``: ``a`` is a small operator) and ``M``
    (the rows of ``a``: ``b`` is a small operator) is cut into slices that stay
    below it.
    """
    m, k = a.shape[-2:]
    n = b.shape[-1]
    if m * n * k < MNK_SINGLE:
        return np.matmul(a, b, out=out)
    if out is None:
        lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        out = np.empty(lead + (m, n), dtype=np.result_type(a, b))
    if n >= m:
        step = max(1, (MNK_SINGLE - 1) // (m * k))
        for c0 in range(0, n, step):
            np.matmul(a, b[..., c0 : c0 + step], out=out[..., c0 : c0 + step])
    else:
        step = max(1, (MNK_SINGLE - 1) // (n * k))
        for r0 in range(0, m, step):
            np.matmul(a[..., r0 : r0 + step, :], b, out=out[..., r0 : r0 + step, :])
    return out


@cache
def _workers() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, min(8, os.cpu_count() or 1))


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="lbpcore")


_LIMIT = contextvars.ContextVar("lbpcore_worker_limit", default=None)


def _threads() -> int:
    """Threads the kernels may use now: the CPUs, or fewer inside :func:`worker_limit`."""
    limit = _LIMIT.get()
    return _workers() if limit is None else max(1, min(_workers(), limit))


@contextlib.contextmanager
def worker_limit(n: int):
    """Use at most ``n`` threads (the caller's included) for the kernels run inside the block.

    The PyTorch bridge runs lbpcore's kernels with as many threads as PyTorch's
    intra-op pool has (:func:`torch.get_num_threads`), so that the two pools
    never hold more threads busy than the user allowed.
    """
    token = _LIMIT.set(int(n))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def parallel(work, count: int, nbytes: int, min_bytes: int) -> None:
    """Run ``work(start, stop)`` over ``range(count)``, split over the CPUs for large inputs.

    Parameters
    ----------
    work : callable
        ``work(start, stop)`` processes items ``start .. stop - 1``; its BLAS calls
        must be single-threaded (:func:`matmul`).
    count : int
        Number of items.
    nbytes : int
        Size of the data ``work`` reads; below ``min_bytes`` everything runs on the
        calling thread.
    min_bytes : int
        Smallest ``nbytes`` worth the threads.
    """
    if count < 2 or nbytes < min_bytes or _threads() < 2:
        work(0, count)
        return
    k = min(_threads(), count)
    bounds = [count * t // k for t in range(k + 1)]
    futures = [_pool().submit(work, bounds[t], bounds[t + 1]) for t in range(1, k)]
    work(bounds[0], bounds[1])
    for f in futures:
        f.result()


def parallel_dynamic(work, count: int, nbytes: int, min_bytes: int) -> None:
    """Like :func:`parallel`, but the threads take the items one at a time from a shared counter.

    Parameters
    ----------
    work : callable
        ``work(items)`` processes every index that the iterable ``items`` yields (it
        may set up per-thread scratch first); its BLAS calls must be single-threaded.
    count, nbytes, min_bytes : int
        As for :func:`parallel`.

    Notes
    -----
    On a machine shared with other processes a thread may wait for a core; with
    a static split the call then lasts as long as the slowest thread's share,
    while here the other threads take over the remaining items.
    """
    if count < 2 or nbytes < min_bytes or _threads() < 2:
        work(range(count))
        return
    counter = itertools.count()
    lock = threading.Lock()

    def items():
        while True:
            with lock:
                c = next(counter)
            if c >= count:
                return
            yield c

    futures = [_pool().submit(work, items()) for _ in range(min(_threads(), count) - 1)]
    work(items())
    for f in futures:
        f.result()
