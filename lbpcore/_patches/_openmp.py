"""The compiled kernels run on an OpenMP team: the threads of the caller's own OpenMP runtime.

PyTorch runs its CPU operations on an OpenMP team; after each operation the
team's workers spin for a while before they sleep.  A kernel that then runs on
lbpcore's own thread pool finds a core taken by a spinning worker (measured in
``docs/benchmarks.md``: the caller's half of a projection right after a
convolution ran at half speed or less).  Run on that same team instead, the
spinning workers take the work at once: one pool of threads, as many as
PyTorch's intra-op setting.

:func:`run_on_team` starts one parallel region of the runtime whose
``GOMP_parallel`` entry point it is given (libgomp's, or any runtime with the
GNU entry points), each thread of which calls a Numba ``cfunc`` that takes
chunks of patch rows from a shared atomic counter and runs
:func:`._numba_kernels.project8` or :func:`._numba_kernels.reconstruct8` on
them.  The arguments travel as one int64 array of addresses and sizes (read
back with :func:`numba.carray`); the ``cfunc`` touches no Python object, so the
call releases the GIL for its whole length.  Imported only by
:mod:`._compiled`, when a team is set (:func:`._compiled.openmp_team`).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

from ._numba_kernels import _JIT, project8, reconstruct8

__all__ = ["run_on_team"]

# Slots of the int64 argument array (both kernels).
(_A, _B, _R, _C, _AE, _W, _PR, _PH, _PC, _PW, _NEED, _NNEED, _SELI, _SELROW, _BLOCK, _OUT, _RO, _OE, _ROWS,
 _CHUNK, _COUNTER, _SCALE) = range(22)
_SLOTS = 22


@intrinsic
def _ptr(typingctx, addr):
    """The address ``addr`` (int64) as a ``void *``."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return types.voidptr(types.int64), codegen


@intrinsic
def _fetch_add(typingctx, addr, value):
    """Atomically add ``value`` to the int64 at address ``addr``; the value before."""
    def codegen(context, builder, sig, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", ptr, args[1], "monotonic")

    return types.int64(types.int64, types.int64), codegen


@njit(**_JIT)
def _tables(m):
    """The plan's index arrays from the argument array ``m``."""
    src_r = carray(_ptr(m[_PR]), (m[_PH], 8), np.int64)
    src_c = carray(_ptr(m[_PC]), (m[_PW], 8), np.int64)
    need = carray(_ptr(m[_NEED]), (m[_NNEED],), np.int64)
    sel_i = carray(_ptr(m[_SELI]), (m[_NNEED], 8), np.int64)
    sel_row = carray(_ptr(m[_SELROW]), (m[_NNEED], 8, 2), np.int64)
    return src_r, src_c, need, sel_i, sel_row


@njit(**_JIT)
def _project_chunks(m, a, out):
    src_r, src_c, need, sel_i, sel_row = _tables(m)
    scale = carray(_ptr(m[_SCALE]), (1,), a.dtype)[0]
    buf = np.empty((8, 8, a.shape[2]), dtype=a.dtype)
    rows, chunk = m[_ROWS], m[_CHUNK]
    while True:
        start = _fetch_add(m[_COUNTER], 1) * chunk
        if start >= rows:
            return
        project8(a, m[_AE], m[_W], src_r, src_c, need, sel_i, sel_row, m[_BLOCK], scale, out, m[_OE], start,
                 min(rows, start + chunk), buf)


@njit(**_JIT)
def _reconstruct_chunks(m, a, out):
    dst_r, dst_c, need, sel_i, sel_row = _tables(m)
    scale = carray(_ptr(m[_SCALE]), (1,), a.dtype)[0]
    c = a.shape[2]
    buf = np.empty((8, 8, c), dtype=a.dtype)
    tmp = np.empty((8, 8, c), dtype=a.dtype)
    row = np.empty((8, c), dtype=a.dtype)
    rows, chunk = m[_ROWS], m[_CHUNK]
    while True:
        start = _fetch_add(m[_COUNTER], 1) * chunk
        if start >= rows:
            return
        reconstruct8(a, m[_AE], m[_W], dst_r, dst_c, need, sel_i, sel_row, m[_BLOCK], scale, out, m[_OE], start,
                     min(rows, start + chunk), buf, tmp, row)


@cfunc(types.void(types.voidptr), nopython=True, cache=True)
def _project_f32(data):
    m = carray(data, (_SLOTS,), np.int64)
    a = carray(_ptr(m[_A]), (m[_B], m[_R], m[_C]), np.float32)
    _project_chunks(m, a, carray(_ptr(m[_OUT]), (m[_B], m[_RO], m[_C]), np.float32))


@cfunc(types.void(types.voidptr), nopython=True, cache=True)
def _project_f64(data):
    m = carray(data, (_SLOTS,), np.int64)
    a = carray(_ptr(m[_A]), (m[_B], m[_R], m[_C]), np.float64)
    _project_chunks(m, a, carray(_ptr(m[_OUT]), (m[_B], m[_RO], m[_C]), np.float64))


@cfunc(types.void(types.voidptr), nopython=True, cache=True)
def _reconstruct_f32(data):
    m = carray(data, (_SLOTS,), np.int64)
    a = carray(_ptr(m[_A]), (m[_B], m[_R], m[_C]), np.float32)
    _reconstruct_chunks(m, a, carray(_ptr(m[_OUT]), (m[_B], m[_RO], m[_C]), np.float32))


@cfunc(types.void(types.voidptr), nopython=True, cache=True)
def _reconstruct_f64(data):
    m = carray(data, (_SLOTS,), np.int64)
    a = carray(_ptr(m[_A]), (m[_B], m[_R], m[_C]), np.float64)
    _reconstruct_chunks(m, a, carray(_ptr(m[_OUT]), (m[_B], m[_RO], m[_C]), np.float64))


_BODIES = {("project", np.dtype(np.float32)): _project_f32, ("project", np.dtype(np.float64)): _project_f64,
           ("reconstruct", np.dtype(np.float32)): _reconstruct_f32,
           ("reconstruct", np.dtype(np.float64)): _reconstruct_f64}


def run_on_team(team, kind: str, a, a_extra: int, width: int, tables, block: int, scale: float, out, o_extra: int,
                rows: int, chunks: int) -> None:
    """Run ``kind`` ("project" or "reconstruct") over ``rows`` patch rows on an OpenMP team.

    Parameters
    ----------
    team : (GOMP_parallel, int)
        The runtime's ``GOMP_parallel`` (a :mod:`ctypes` function) and the team size.
    a, out : ndarray
        C-contiguous, of one dtype (float32 or float64): the kernel's input
        ``(B, a_extra + ..., C)`` and output ``(B, o_extra + ..., C)``.
    a_extra, width, block, o_extra
        As the kernels' ``xe``/``ce``, ``w``, ``block`` and ``oe``.
    tables : tuple of ndarray
        ``(rows_index, cols_index, need_a, sel_i, sel_row)``: C-contiguous int64.
    scale : float
    rows, chunks : int
        Patch rows ``B * ph``; at most ``chunks`` chunks of them.
    """
    gomp_parallel, threads = team
    dtype = a.dtype
    scale_arr = np.array([scale], dtype=dtype)
    counter = np.zeros(1, dtype=np.int64)
    r_idx, c_idx, need, sel_i, sel_row = tables
    m = np.zeros(_SLOTS, dtype=np.int64)
    m[_A], m[_B], m[_R], m[_C], m[_AE], m[_W] = a.ctypes.data, a.shape[0], a.shape[1], a.shape[2], a_extra, width
    m[_PR], m[_PH], m[_PC], m[_PW] = r_idx.ctypes.data, r_idx.shape[0], c_idx.ctypes.data, c_idx.shape[0]
    m[_NEED], m[_NNEED], m[_SELI], m[_SELROW] = need.ctypes.data, need.shape[0], sel_i.ctypes.data, sel_row.ctypes.data
    m[_BLOCK], m[_OUT], m[_RO], m[_OE] = block, out.ctypes.data, out.shape[1], o_extra
    m[_ROWS], m[_CHUNK] = rows, max(1, -(-rows // chunks))
    m[_COUNTER], m[_SCALE] = counter.ctypes.data, scale_arr.ctypes.data
    gomp_parallel(_BODIES[kind, dtype].address, m.ctypes.data, min(threads, rows), 0)
    # ``m``, ``counter``, ``scale_arr`` and the arrays stay referenced until here: the region has ended.

