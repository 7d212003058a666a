"""Memory budgets: sizes written ``512MB``, the memory available, and batch chunks that fit a budget.

A streamed computation (:mod:`analysis.stream`) reads its data in chunks of
batch items.  How many items a chunk holds follows from the budget and from the
working memory of one item, which :func:`working_memory` measures by running the
computation on one and on two items under :mod:`tracemalloc`.  The chunks never
cross the boundary of a shard (:func:`chunk_bounds`).
"""

from __future__ import annotations

import math
import os
import re
import tracemalloc
from dataclasses import dataclass

__all__ = [
    "DEFAULT_FRACTION",
    "ChunkPlan",
    "parse_memory",
    "format_bytes",
    "available_memory",
    "default_budget",
    "working_memory",
    "plan_chunks",
    "chunk_bounds",
]

#: Fraction of the available memory a streamed run uses when no budget is given.
DEFAULT_FRACTION = 0.25

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def parse_memory(text) -> int:
    """Parse a memory size such as ``"512MB"``, ``"1.5GiB"`` or ``"100000"`` into bytes.

    Parameters
    ----------
    text : str or int
        A number of bytes, optionally followed by ``KB``, ``MB``, ``GB``, ``TB``
        (powers of 1000, as Dask writes them) or ``KiB``, ``MiB``, ``GiB``,
        ``TiB`` (powers of 1024); the ``B`` may be left out and case does not
        matter.  An int is taken as bytes.

    Returns
    -------
    int
        Bytes, at least 1.

    Raises
    ------
    ValueError
        If the text is not of that form or the size is zero.

    Examples
    --------
    >>> from analysis.budget import parse_memory
    >>> parse_memory("512MB"), parse_memory("1.5 GiB"), parse_memory("2k"), parse_memory(4096)
    (512000000, 1610612736, 2000, 4096)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE_RE.match(str(text))
        if m is None:
            raise ValueError(f"memory size must look like 512MB, 2GiB or a number of bytes, got {text!r}")
        value = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    if value < 1:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return value


def format_bytes(n) -> str:
    """A byte count in decimal units, three significant digits.

    Parameters
    ----------
    n : int or float
        Bytes.

    Returns
    -------
    str

    Examples
    --------
    >>> from analysis.budget import format_bytes
    >>> format_bytes(512_000_000), format_bytes(1536), format_bytes(12)
    ('512 MB', '1.54 kB', '12 B')
    """
    n = float(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def available_memory() -> int:
    """Memory this process could still use, in bytes, read portably.

    Returns
    -------
    int
        ``psutil.virtual_memory().available`` when psutil is installed (it
        comes with the ``dask`` extra); otherwise ``MemAvailable`` of
        ``/proc/meminfo`` (Linux), otherwise free pages times the page size
        (``os.sysconf``, other POSIX systems); 1 GiB when none of these can be
        read.

    Examples
    --------
    >>> from analysis.budget import available_memory
    >>> available_memory() > 0
    True
    """
    try:
        import psutil  # noqa: PLC0415 - optional (installed with the dask extra)

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 1 << 30


def default_budget() -> int:
    """The budget of a streamed run when none is given: :data:`DEFAULT_FRACTION` of :func:`available_memory`.

    Returns
    -------
    int
        Bytes, at least 64 MiB.

    Examples
    --------
    >>> from analysis.budget import default_budget
    >>> default_budget() >= 64 * 2**20
    True
    """
    return max(int(DEFAULT_FRACTION * available_memory()), 64 << 20)


def working_memory(run_items, *, least_per_item=1) -> tuple:
    """Memory a computation over batch items allocates: ``(fixed, per_item)`` bytes.

    Parameters
    ----------
    run_items : callable
        ``run_items(k)`` runs the computation on the first ``k`` items (``k``
        is 1 or 2).  It is called three times: once to warm caches up, then
        under :mod:`tracemalloc` with one and with two items.
    least_per_item : int, optional
        Lower bound of ``per_item`` (the bytes of one stored item, say), for
        computations whose small allocations NumPy serves from its cache.

    Returns
    -------
    (int, int)
        ``fixed``: peak bytes that do not grow with the items (results,
        cached constants); ``per_item``: peak bytes each further item adds
        (at least ``least_per_item``).  Memory NumPy does not report to :mod:`tracemalloc`
        (BLAS work buffers) is not counted.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.budget import working_memory
    >>> fixed, per_item = working_memory(lambda k: np.ones((k, 1000)).sum())
    >>> 8000 <= per_item < 9000
    True
    """
    run_items(1)
    peaks = []
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        for k in (1, 2):
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            run_items(k)
            peaks.append(tracemalloc.get_traced_memory()[1] - start)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    per_item = max(peaks[1] - peaks[0], int(least_per_item), 1)
    return max(peaks[0] - per_item, 0), per_item


@dataclass(frozen=True)
class ChunkPlan:
    """How a batch is cut into chunks for a memory budget.

    Attributes
    ----------
    budget : int
        Bytes for the whole computation in one process.
    workers : int
        Chunks processed at the same time.
    rows : int
        Largest number of batch items in a chunk.
    bounds : tuple of int
        Chunk boundaries ``0 = b_0 < b_1 < ... < b_k = B`` along the batch.

    Examples
    --------
    >>> from analysis.budget import ChunkPlan
    >>> ChunkPlan(budget=100, workers=1, rows=4, bounds=(0, 4, 8, 10)).chunks
    (4, 4, 2)
    """

    budget: int
    workers: int
    rows: int
    bounds: tuple

    @property
    def chunks(self) -> tuple:
        """Items per chunk, in order (Dask's ``chunks`` along the batch)."""
        return tuple(b - a for a, b in zip(self.bounds[:-1], self.bounds[1:], strict=True))


def chunk_bounds(length, rows, breaks=(), align=1) -> tuple:
    """Boundaries of chunks of at most ``rows`` items that never cross a break.

    Parameters
    ----------
    length : int
        Batch size ``B``.
    rows : int
        Most items per chunk, at least 1.
    breaks : iterable of int, optional
        Positions a chunk must not cross (the starts of shards).
    align : int, optional
        Items per storage chunk (of a Zarr array): chunk sizes are rounded
        down to a multiple of it when ``rows`` is at least that large.

    Returns
    -------
    tuple of int
        ``(0, ..., length)``, strictly increasing; each segment between two
        breaks is cut into equal parts of at most ``rows`` items.

    Examples
    --------
    >>> from analysis.budget import chunk_bounds
    >>> chunk_bounds(10, 4)
    (0, 3, 6, 10)
    >>> chunk_bounds(10, 4, breaks=[6])
    (0, 3, 6, 10)
    >>> chunk_bounds(10, 5, align=2)
    (0, 4, 8, 10)
    """
    rows = max(int(rows), 1)
    if align > 1 and rows >= align:
        rows -= rows % align
    cuts = sorted({0, int(length), *(int(b) for b in breaks if 0 < b < length)})
    out = [0]
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        if align > 1 and rows % align == 0:
            out.extend(range(start + rows, stop, rows))
        else:
            parts = math.ceil((stop - start) / rows)
            out.extend(start + (stop - start) * i // parts for i in range(1, parts))
        out.append(stop)
    return tuple(out)


def plan_chunks(length, *, budget, fixed, per_item, workers=1, reserve=0, breaks=(), align=1) -> ChunkPlan:
    """Chunks of a batch for a memory budget.

    Parameters
    ----------
    length : int
        Batch size ``B``.
    budget : int
        Bytes for the whole computation in this process.
    fixed, per_item : int
        Working memory of one chunk: ``fixed + rows * per_item`` bytes (see
        :func:`working_memory`).
    workers : int, optional
        Chunks in memory at the same time (threads); default 1.
    reserve : int, optional
        Bytes held outside the chunks (partial results being summed).
    breaks, align
        As for :func:`chunk_bounds`.

    Returns
    -------
    ChunkPlan

    Raises
    ------
    ValueError
        If not even one item per chunk fits: the message gives the least
        budget that would do.

    Examples
    --------
    >>> from analysis.budget import plan_chunks
    >>> plan = plan_chunks(100, budget=10_000, fixed=1_000, per_item=100, workers=2)
    >>> plan.rows, plan.chunks[:3], len(plan.chunks)
    (40, (33, 33, 34), 3)
    """
    workers = max(int(workers), 1)
    per_worker = (int(budget) - int(reserve)) // workers
    rows = (per_worker - int(fixed)) // max(int(per_item), 1)
    if rows < 1:
        need = int(reserve) + workers * (int(fixed) + int(per_item))
        raise ValueError(f"memory budget {format_bytes(budget)} is too small: one batch item per chunk on "
                         f"{workers} worker(s) needs {format_bytes(need)}")
    rows = min(rows, max(int(length), 1))
    return ChunkPlan(budget=int(budget), workers=workers, rows=rows,
                     bounds=chunk_bounds(length, rows, breaks, align))
