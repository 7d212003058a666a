"""Sums of per-chunk statistics over a batch larger than memory, computed by Dask.

:func:`reduce_batches` is the engine behind the streamed
:func:`analysis.spectrum.energy_maps` and :func:`analysis.errors.gradient_errors`.
It knows nothing about spectra or gradients: it cuts the batch of its inputs
into chunks that fit a memory budget (:mod:`analysis.budget`), maps a NumPy
function over the chunks (one Dask task reads a chunk and reduces it, so no
chunk outlives its task) and sums what the function returns.  The local
threaded scheduler runs it by default; an address runs it on a
``dask.distributed`` cluster.  Dask is imported only when a batch needs more
than one chunk or a cluster is named.  Usage and set-up are in :doc:`/large_data`.
"""

from __future__ import annotations

import collections
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from .budget import default_budget, format_bytes, parse_memory, plan_chunks, working_memory
from .progress import progress_bar
from .sources import BatchSource, as_source, is_source_like
from .threads import blas_limit

__all__ = ["SPLIT_EVERY", "WAVE_CHUNKS", "THREAD_ALLOWANCE", "StreamInfo", "reduce_batches", "as_batches",
           "is_streamed", "is_dask_array"]

#: Longest wait (s) for the TCP port of a scheduler address to answer, before Dask's own connection.
PROBE_SECONDS = 5.0
#: Partial results Dask adds up in one task of the summation tree.
SPLIT_EVERY = 2
#: Chunks per Dask graph (at least four per thread): a batch of any length is computed graph after
#: graph, so the memory the graphs take does not grow with the data.
WAVE_CHUNKS = 64
#: Memory allowed per worker thread beyond what :mod:`tracemalloc` measures: a tenth more per item
#: (allocations NumPy does not report) and 1 MiB (thread stack, BLAS and allocator buffers).
THREAD_ALLOWANCE = (1.1, 1 << 20)


def is_dask_array(obj) -> bool:
    """Whether ``obj`` is a Dask array (checked without importing Dask).

    Parameters
    ----------
    obj : object

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.stream import is_dask_array
    >>> is_dask_array(np.ones(3))
    False
    """
    return hasattr(obj, "__dask_graph__") and hasattr(obj, "chunks") and hasattr(obj, "shape")


def is_streamed(x, memory=None, scheduler=None) -> bool:
    """Whether a computation on ``x`` goes through :func:`reduce_batches`.

    Parameters
    ----------
    x : object
        The data argument of a streamed function.
    memory, scheduler : optional
        As for :func:`reduce_batches`; giving either asks for streaming.

    Returns
    -------
    bool
        True for paths, :class:`~analysis.sources.BatchSource` objects, Dask
        arrays, or when a memory budget or a scheduler is given.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.stream import is_streamed
    >>> is_streamed(np.ones((2, 3))), is_streamed(np.ones((2, 3)), memory="1GB"), is_streamed("x.npy")
    (False, True, True)
    """
    return memory is not None or scheduler is not None or is_source_like(x) or is_dask_array(x)


@dataclass(frozen=True)
class StreamInfo:
    """How a streamed reduction ran: the numbers of its throughput summary.

    Attributes
    ----------
    nbytes : int
        Bytes read (the inputs in their stored dtypes).
    seconds : float
        Wall time, from the first read to the summed result.
    chunks : int
        Number of chunks.
    rows : int
        Most batch items in a chunk.
    budget : int
        Memory budget (bytes per process).
    workers : int
        Chunks processed at the same time (threads).
    engine : str
        ``"in memory"`` (one chunk, no Dask), ``"threads"`` or the address
        of a ``dask.distributed`` scheduler.

    Examples
    --------
    >>> from analysis.stream import StreamInfo
    >>> info = StreamInfo(2_000_000_000, 4.0, 10, 100, 512_000_000, 2, "threads")
    >>> info.gb_per_s
    0.5
    >>> print(info.summary())
    read 2 GB in 4.00 s: 0.5 GB/s (10 chunks of at most 100 items, memory budget 512 MB, 2 threads)
    """

    nbytes: int
    seconds: float
    chunks: int
    rows: int
    budget: int
    workers: int
    engine: str

    @property
    def gb_per_s(self) -> float:
        """Throughput in GB/s (10^9 bytes per second)."""
        return self.nbytes / 1e9 / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        """One line: bytes, time, throughput, chunking, budget and engine."""
        where = {"in memory": "in memory", "threads": f"{self.workers} threads"}.get(
            self.engine, f"cluster {self.engine}, {self.workers} threads per worker")
        return (f"read {format_bytes(self.nbytes)} in {self.seconds:.2f} s: {self.gb_per_s:.3g} GB/s "
                f"({self.chunks} chunk{'s' if self.chunks != 1 else ''} of at most {self.rows} items, "
                f"memory budget {format_bytes(self.budget)}, {where})")


# ---------------------------------------------------------------------------
# the per-chunk task


class _Packed:
    """``chunk_stats`` with its dict of arrays packed into one ``(1, S)`` float64 row (a Dask block)."""

    def __init__(self, chunk_stats, names):
        self.chunk_stats = chunk_stats
        self.names = names

    def __call__(self, *blocks):
        stats = self.chunk_stats(*blocks)
        return np.concatenate([np.asarray(stats[k], dtype=np.float64).ravel() for k in self.names])[None, :]


class _Counted:
    """A :class:`_Packed` that advances a progress bar by the bytes of each chunk (threaded scheduler)."""

    def __init__(self, packed, bar):
        self.packed = packed
        self.bar = bar
        self.lock = threading.Lock()

    def __call__(self, *blocks):
        out = self.packed(*blocks)
        if self.bar is not None:
            with self.lock:
                self.bar.update(sum(b.nbytes for b in blocks))
        return out


class _ReadChunk:
    """Read chunk ``i`` of every source and reduce it, in one task: no chunk outlives its task."""

    def __init__(self, counted, bounds):
        self.counted = counted
        self.bounds = bounds

    def __call__(self, index, sources):
        i = int(index[0])
        start, stop = self.bounds[i], self.bounds[i + 1]
        return self.counted(*(x.read(start, stop) for x in sources))


def _unpack(vector, layout):
    out = {}
    pos = 0
    for name, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = vector[pos:pos + size].reshape(shape)
        pos += size
    return out


def _read(x, start, stop):
    return x.read(start, stop) if isinstance(x, BatchSource) else np.asarray(x[start:stop].compute())


def as_batches(x):
    """The form :func:`reduce_batches` reads: a Dask array as it is, anything else as a source.

    Parameters
    ----------
    x : path, BatchSource, dask.array.Array or array_like

    Returns
    -------
    BatchSource or dask.array.Array
        With ``shape`` and ``dtype`` known without reading the data.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.stream import as_batches
    >>> as_batches(np.zeros((3, 2))).shape
    (3, 2)
    """
    return x if is_dask_array(x) else as_source(x)


def _item_bytes(x) -> int:
    return int(np.prod(x.shape[1:], dtype=np.int64)) * np.dtype(x.dtype).itemsize


def _dask_input(x, bounds):
    import dask.array as da  # noqa: PLC0415 - optional (dask extra)

    chunks = (tuple(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)),) + tuple(
        (int(s),) for s in x.shape[1:])
    if is_dask_array(x):
        return x.rechunk(chunks)
    meta = np.empty((0,) * x.ndim, x.dtype)
    return da.from_array(x, chunks=chunks, asarray=False, lock=False, fancy=False, meta=meta)


# ---------------------------------------------------------------------------
# schedulers


def _probe(address, timeout):
    """Raise ConnectionError at once for a malformed ``address``, or when nothing answers at its TCP port.

    Dask's client retries a refused connection until its connect timeout (30 s
    unless configured); a scheduler that is not there fails in milliseconds
    here (or after ``timeout`` seconds for a host that does not answer).
    """
    from distributed.comm.addressing import parse_address, parse_host_port  # noqa: PLC0415 - optional (dask extra)

    scheme, location = parse_address(address)
    # not inproc:// (a scheduler of this same process) nor an unknown scheme: a Client made for those fails,
    # then hangs for 60 s when the interpreter exits
    if scheme not in ("tcp", "tls", "ws", "wss", "ucx"):
        raise ConnectionError(f"cannot reach the Dask scheduler at {address}: the address must be "
                              f"tcp://host:port (or tls, ws, wss, ucx), got the scheme {scheme!r}")
    host, port = parse_host_port(location)
    if scheme == "ucx":
        return
    if not 0 < port < 65536:
        raise ConnectionError(f"cannot reach the Dask scheduler at {address}: port {port} is out of range")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        raise ConnectionError(f"cannot reach the Dask scheduler at {address}: connection refused (no scheduler "
                              "listens there)") from None
    except TimeoutError:
        raise ConnectionError(f"cannot reach the Dask scheduler at {address}: no answer within {timeout:g} s") from None
    except (OSError, OverflowError) as exc:  # an unknown host, a port out of range, no route...
        raise ConnectionError(f"cannot reach the Dask scheduler at {address}: "
                              f"{' '.join(str(exc).split()) or type(exc).__name__}") from None


def _client(scheduler):
    try:
        import dask  # noqa: PLC0415 - optional (dask extra)
        from distributed import Client  # noqa: PLC0415 - optional (dask extra)
    except ImportError:
        raise ImportError("a Dask scheduler address needs dask.distributed: pip install 'lbpcore[dask]'") from None
    if isinstance(scheduler, Client):
        return scheduler, False
    try:  # Dask's connect timeout (distributed.comm.timeouts.connect, 30 s unless configured)
        timeout = dask.config.get("distributed.comm.timeouts.connect")
        _probe(str(scheduler), min(PROBE_SECONDS, dask.utils.parse_timedelta(timeout)))
        return Client(str(scheduler), timeout=timeout, set_as_default=False), True
    except ConnectionError:  # from _probe, already the whole story
        raise
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler}: "
                              f"{' '.join(str(exc).split()) or type(exc).__name__}") from None


def _workers(scheduler, client):
    if client is None:
        return os.cpu_count() or 1
    threads = client.nthreads()
    if not threads:
        raise ConnectionError(f"the Dask scheduler at {scheduler} has no workers")
    return max(threads.values())


# ---------------------------------------------------------------------------
# the reduction


def reduce_batches(inputs, chunk_stats, *, memory=None, scheduler=None, progress=False, desc="streaming"):
    """Sum ``chunk_stats`` over batch chunks of the inputs that fit a memory budget.

    Parameters
    ----------
    inputs : sequence
        Arrays with the same batch (first) axis: paths or
        :class:`~analysis.sources.BatchSource` objects (see
        :func:`~analysis.sources.open_source`), Dask arrays, or in-memory
        arrays.  Each chunk of items ``[a, b)`` is passed to ``chunk_stats``
        as one NumPy array per input, in the stored dtype.
    chunk_stats : callable
        ``chunk_stats(*chunks) -> dict`` of float64 arrays (or numbers) whose
        sums over the chunks are wanted; the same keys and shapes for every
        chunk.  It must be picklable (a module-level function, a
        :func:`functools.partial` of one) to run on a cluster.
    memory : int or str, optional
        Budget in bytes, or a size such as ``"512MB"`` (see
        :func:`~analysis.budget.parse_memory`): what one process (this one,
        or each worker of a cluster) may use for chunks and partial sums.
        Default :func:`~analysis.budget.default_budget`.
    scheduler : str or distributed.Client, optional
        Address of a ``dask.distributed`` scheduler (``"tcp://host:8786"``)
        or a client.  Default: Dask's local threaded scheduler, one thread
        per CPU, or no Dask at all when one chunk holds the whole batch.
    progress : bool, optional
        Show a progress bar in bytes on stderr (after 2 s) and, when the
        batch took more than one chunk or ran on a cluster, print the
        throughput summary (:meth:`StreamInfo.summary`) at the end; default
        False.
    desc : str, optional
        Label of the progress bar.

    Returns
    -------
    (dict, StreamInfo)
        The sums, with the keys and shapes of ``chunk_stats``' results, as
        float64 arrays; and how the run went.

    Raises
    ------
    ValueError
        If the inputs disagree on the batch size, the batch is empty, or the
        budget cannot hold one item per chunk.
    DataError
        As :meth:`~analysis.sources.BatchSource.read` (a NaN in a shard...).
    ConnectionError
        If the scheduler cannot be reached or has no workers.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.stream import reduce_batches
    >>> x = np.ones((500_000, 2))  # 8 MB
    >>> sums, info = reduce_batches([x], lambda c: {"sum": c.sum(axis=0), "n": len(c)}, memory="5MB")
    >>> sums["sum"].tolist(), float(sums["n"]), info.chunks > 1
    ([500000.0, 500000.0], 500000.0, True)
    """
    start = time.perf_counter()
    inputs = [as_batches(x) for x in inputs]
    length = int(inputs[0].shape[0])
    for x in inputs[1:]:
        if int(x.shape[0]) != length:
            raise ValueError(f"inputs disagree on the batch size: {length} and {int(x.shape[0])} items")
    if length == 0:
        raise ValueError("the batch is empty")
    budget = default_budget() if memory is None else parse_memory(memory)
    client, owned = _client(scheduler) if scheduler is not None else (None, False)
    try:
        workers = _workers(scheduler, client)
        probe = {}

        def run_items(k):
            probe["stats"] = chunk_stats(*(_read(x, 0, k) for x in inputs))

        if length > 1:
            fixed, per_item = working_memory(run_items, least_per_item=sum(_item_bytes(x) for x in inputs))
        else:
            run_items(1)
            fixed, per_item = 0, 1
        per_item = int(per_item * THREAD_ALLOWANCE[0])
        fixed += THREAD_ALLOWANCE[1]
        layout = [(k, np.shape(v)) for k, v in probe.pop("stats").items()]
        stat_bytes = 8 * sum(int(np.prod(s, dtype=np.int64)) for _, s in layout)
        reserve = stat_bytes * (2 * SPLIT_EVERY + 3 + workers)  # chunk results, concatenations, partial sums, total
        if client is None and fixed + per_item * length + reserve <= budget:
            workers = 1  # one chunk: the in-memory computation
        breaks = sorted({b for x in inputs if isinstance(x, BatchSource) for b in x.starts})
        aligns = {x.align for x in inputs if isinstance(x, BatchSource)}
        plan = plan_chunks(length, budget=budget, fixed=fixed, per_item=per_item, workers=workers,
                           reserve=reserve, breaks=breaks, align=aligns.pop() if len(aligns) == 1 else 1)
        rows = plan.chunks
        chunk_bytes = [r * sum(_item_bytes(x) for x in inputs) for r in rows]
        with progress_bar(sum(chunk_bytes), desc, enabled=None if progress else False, unit="B") as bar:
            if len(rows) == 1 and client is None:
                result = _Packed(chunk_stats, [k for k, _ in layout])(*(_read(x, 0, length) for x in inputs))[0]
                bar.update(chunk_bytes[0])
                engine = "in memory"
            else:
                result, engine = _run_dask(inputs, chunk_stats, layout, plan, client, chunk_bytes, bar)
    finally:
        if owned:
            client.close()
    info = StreamInfo(nbytes=sum(chunk_bytes), seconds=time.perf_counter() - start, chunks=len(rows),
                      rows=plan.rows, budget=budget, workers=plan.workers, engine=engine)
    if progress and engine != "in memory":
        print(info.summary(), file=sys.stderr)
    return _unpack(result, layout), info


def _run_dask(inputs, chunk_stats, layout, plan, client, chunk_bytes, bar):
    try:
        import dask  # noqa: PLC0415 - optional (dask extra)
        import dask.array as da  # noqa: PLC0415 - optional (dask extra)
    except ImportError:
        raise ImportError(f"the batch needs {len(plan.chunks)} chunks for a memory budget of "
                          f"{format_bytes(plan.budget)}, and streaming them needs Dask: pip install 'lbpcore[dask]' "
                          "(or give a budget that holds the whole batch)") from None

    packed = _Packed(chunk_stats, [k for k, _ in layout])
    size = sum(int(np.prod(s, dtype=np.int64)) for _, s in layout)
    threads = plan.workers * (len(client.nthreads()) if client is not None else 1)
    step = max(WAVE_CHUNKS, 4 * threads)
    waves = [(a, min(a + step, len(plan.chunks))) for a in range(0, len(plan.chunks), step)]
    counted = _Counted(packed, bar) if client is None else packed  # a progress bar does not travel to workers
    graphs = (_wave(da, dask, inputs, counted, plan.bounds, a, b, size) for a, b in waves)
    total = np.zeros(size)
    if client is None:
        with blas_limit(1 if plan.workers > 1 else None):  # one BLAS thread per Dask thread: no oversubscription
            for graph in graphs:
                total += dask.compute(graph, scheduler="threads", num_workers=plan.workers)[0]
        return total, "threads"
    pending = collections.deque()  # two waves in flight: the cluster never waits for the driver
    for (a, b), graph in zip(waves, graphs, strict=True):
        pending.append((client.compute(graph), sum(chunk_bytes[a:b])))
        while len(pending) > 1 or (pending and b == len(plan.chunks)):
            future, nbytes = pending.popleft()
            total += future.result()
            bar.update(nbytes)
    return total, client.scheduler.address


def _wave(da, dask, inputs, func, bounds, first, last, size):
    """The sum over chunks ``first:last`` as a Dask array of shape (size,), one task per chunk and a tree."""
    if all(isinstance(x, BatchSource) for x in inputs):  # a task per chunk index reads and reduces its chunk
        index = da.arange(first, last, chunks=1)
        stats = da.blockwise(_ReadChunk(func, bounds), "bs", index, "b", dask.delayed(tuple(inputs)), None,
                             new_axes={"s": size}, dtype=np.float64, concatenate=True, meta=np.empty((0, 0)))
    else:  # Dask arrays: their blocks, reduced
        args = []
        for i, x in enumerate(inputs):
            a = _dask_input(x, bounds)[bounds[first]:bounds[last]]
            args += [a, "b" + "".join(chr(ord("A") + 8 * i + j) for j in range(a.ndim - 1))]  # own letters per input
        stats = da.blockwise(func, "bs", *args, new_axes={"s": size}, adjust_chunks={"b": 1}, dtype=np.float64,
                             concatenate=True, meta=np.empty((0, 0)))
    return stats.sum(axis=0, split_every=SPLIT_EVERY)
