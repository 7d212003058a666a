"""Tensors in and out of lbpcore's array kernels, without copies.

* CPU tensors: :meth:`torch.Tensor.numpy` (shared memory), so the fast NumPy
  kernels of :mod:`lbpcore._patches` run on the tensor's own buffer;
  :func:`torch.from_numpy` hands the results back.
* CUDA tensors: CuPy arrays by DLPack (:func:`cupy.from_dlpack`,
  :func:`torch.from_dlpack`), the work queued on PyTorch's current stream of
  the tensor's device: no host round trip and no synchronization.  Without
  CuPy, and on other devices, lbpcore's array-API path runs on the tensors
  themselves (:mod:`array_api_compat`'s ``torch`` namespace).

Tensors that are not contiguous (a sliced or transposed activation, the
expanded gradient of ``y.sum()``) are copied once into a contiguous tensor
(:meth:`torch.Tensor.contiguous`) first; contiguous ones are never copied.

On the CPU the kernels write into tensors of PyTorch's own allocator (NumPy's
asks the kernel for transparent huge pages on large arrays, and the compaction
that can cost stalled some calls tenfold).  NCHW maps go through the
channels-last (tokens) kernels: maps in
``torch.channels_last`` memory are read in place, others are copied once into
that order, and ``grad_x`` comes back in it (a ``channels_last`` tensor of the
NCHW shape).  lbpcore's kernel threads are limited to PyTorch's intra-op thread
count (:func:`torch.get_num_threads`), and none of their BLAS calls is large
enough to wake OpenBLAS's own threads: one pool's worth of threads at a time.
Where PyTorch runs on OpenMP with its own runtime library (the pip wheels'
``torch/lib/libgomp``), the compiled kernels run on PyTorch's OpenMP team
itself (:func:`lbpcore._patches._compiled.openmp_team`): the workers that
PyTorch leaves spinning after each operation take the kernel's rows at once,
instead of holding a core that lbpcore's pool then lacks.  Set the environment
variable ``LBPCORE_OPENMP=0`` to use lbpcore's pool instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from functools import cache
from pathlib import Path

import numpy as np
import torch
from array_api_compat import array_namespace

from .._blas import worker_limit
from .._linear import _grad_x, _saved_coefficients
from .._patches import PatchPlan
from .._patches._compiled import openmp_team

__all__ = ["ENGINES", "as_array", "as_tensor", "coefficients", "engine", "grid_values", "kernel_stream", "namespace"]

#: What runs lbpcore's kernels for a tensor: NumPy (CPU), CuPy (CUDA) or torch itself.
ENGINES = ("numpy", "cupy", "torch")


@cache
def _cupy():
    """The :mod:`cupy` module, or None when it cannot be imported."""
    try:
        import cupy  # noqa: PLC0415 - optional GPU dependency, only for CUDA tensors
    except Exception:  # ImportError, or a CuPy built for another CUDA
        return None
    return cupy


#: OpenMP runtimes that PyTorch may ship in ``torch/lib`` (GNU, LLVM, Intel; auditwheel may add a hash
#: to the name); each has the GNU entry points.
_OPENMP_LIBS = ("libgomp*.so*", "libomp*.so*", "libiomp5*.so*", "libomp*.dylib", "libiomp5*.dylib")


@cache
def torch_openmp():
    """``(path, GOMP_parallel)`` of PyTorch's own OpenMP runtime, or None (not OpenMP, not found, or
    ``LBPCORE_OPENMP=0``): the team the compiled kernels run on (benchmarks record the path)."""
    if os.environ.get("LBPCORE_OPENMP", "1").strip() == "0":
        return None
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    libdir = Path(torch.__file__).parent / "lib"
    for pattern in _OPENMP_LIBS:
        for path in sorted(libdir.glob(pattern)):
            try:
                fn = ctypes.CDLL(str(path)).GOMP_parallel  # the copy PyTorch has loaded: the same handle
            except (OSError, AttributeError):
                continue
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
            fn.restype = None
            return str(path), fn
    return None


def _torch_gomp_parallel():
    """``GOMP_parallel`` of :func:`torch_openmp`, or None."""
    found = torch_openmp()
    return None if found is None else found[1]


@contextlib.contextmanager
def _kernel_threads():
    """Limits of lbpcore's kernels on the CPU: PyTorch's thread count, and its OpenMP team where it has one."""
    n = torch.get_num_threads()
    fn = _torch_gomp_parallel()
    with worker_limit(n), openmp_team(None if fn is None else (fn, n)):
        yield


def engine(t: torch.Tensor) -> str:
    """The engine (one of :data:`ENGINES`) that runs lbpcore's kernels for tensor ``t``."""
    if t.device.type == "cpu":
        return "numpy"
    if t.device.type == "cuda" and _cupy() is not None:
        return "cupy"
    return "torch"


def as_array(t: torch.Tensor, kind: str):
    """The data of ``t`` as an array of engine ``kind``, sharing its memory when ``t`` is contiguous.

    Parameters
    ----------
    t : torch.Tensor
        Any shape; autograd history is dropped (:meth:`~torch.Tensor.detach`).
    kind : {"numpy", "cupy", "torch"}
        As returned by :func:`engine` for ``t``.

    Returns
    -------
    numpy.ndarray, cupy.ndarray or torch.Tensor
        C-contiguous, same shape and dtype as ``t``.
    """
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    if kind == "numpy":
        return t.numpy()
    if kind == "cupy":
        return _cupy().from_dlpack(t)
    return t


def as_tensor(a) -> torch.Tensor:
    """An array returned by lbpcore's kernels as a tensor on the same memory.

    Parameters
    ----------
    a : numpy.ndarray, cupy.ndarray or torch.Tensor

    Returns
    -------
    torch.Tensor
    """
    if isinstance(a, torch.Tensor):
        return a
    if type(a).__module__.startswith("cupy"):
        return torch.from_dlpack(a)
    return torch.from_numpy(a)


def namespace(a):
    """The array API namespace that lbpcore's internal functions take for array ``a``."""
    return array_namespace(a)


@contextlib.contextmanager
def kernel_stream(t: torch.Tensor, kind: str):
    """Run CuPy work on PyTorch's current CUDA stream of ``t``'s device (nothing to do otherwise)."""
    if kind != "cupy":
        yield
        return
    cp = _cupy()
    stream = torch.cuda.current_stream(t.device)
    with cp.cuda.Device(t.device.index), cp.cuda.ExternalStream(stream.cuda_stream, t.device.index):
        yield


def coefficients(t: torch.Tensor, plan: PatchPlan, e: int, layout: str) -> torch.Tensor:
    """``(B, e + M, C)``: the extra tokens of ``t``, then its patch coefficients divided by ``n``.

    ``t`` is ``(B, e + h*w, C)`` tokens or ``(B, C, h, w)`` maps; the rows are in
    the kernels' own order (see :func:`lbpcore._linear._saved_coefficients`).
    """
    kind = engine(t)
    if kind != "numpy":
        with kernel_stream(t, kind):
            a = as_array(t, kind)
            return as_tensor(_saved_coefficients(namespace(a), a, plan, e, layout))
    if layout == "nchw":
        b, c, h, w = t.shape
        t = t.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view of channels_last maps
    out = torch.empty((t.shape[0], e + plan.num_patches * plan.rank, t.shape[-1]), dtype=t.dtype)
    with _kernel_threads():
        _saved_coefficients(np, as_array(t, kind), plan, e, "tokens", out=out.numpy())
    return out


def grid_values(coef: torch.Tensor, plan: PatchPlan, e: int, layout: str, shape: tuple) -> torch.Tensor:
    """Inverse of :func:`coefficients` up to ``n**2`` and the crop: the tensor of ``shape`` they describe.

    Maps on the CPU come back in ``torch.channels_last`` memory.
    """
    kind = engine(coef)
    if kind != "numpy":
        with kernel_stream(coef, kind):
            a = as_array(coef, kind)
            return as_tensor(_grad_x(namespace(a), a, plan, e, layout))
    b, c = coef.shape[0], coef.shape[-1]
    h, w = plan.grid
    out = torch.empty((b, e + h * w, c), dtype=coef.dtype)
    with _kernel_threads():
        _grad_x(np, as_array(coef, kind), plan, e, "tokens", out=out.numpy())
    return out.view(b, h, w, c).permute(0, 3, 1, 2) if layout == "nchw" else out
