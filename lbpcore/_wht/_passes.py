"""Pass plans of the factored NumPy transform along rows: one stacked matrix product per digit.

A chunk of ``rc`` rows of length ``n = d_0 d_1 ... d_{K-1}`` (``d_0`` the most
significant digit of the column index) is a tensor with axes ``r, 0, ..., K-1``.
A *pass* multiplies one digit axis ``T`` by a ``(d, d)`` Walsh block.  Each pass
reads its tensor in one memory layout and writes it in another, so that every
product is a BLAS call (stacked over the remaining *batch* axes) whose operand
has unit stride either along ``T`` or along a *partner* run of axes ``P`` that
is contiguous in both layouts.

The natural order keeps the layout (or, with one row per chunk, rotates the
digits back into place).  The sequency and dyadic orders need the
digits of the output index reversed (``s = S_{K-1} ... S_0``): the passes move
each transformed digit behind the previous ones, so the permutation costs no
pass of its own.  Per digit the block is the ordered Walsh matrix of size ``d``;
the sequency order adds a sign ``(-1)^{(J_t & 1)(S_{t+1} & 1)}`` between
neighbouring digits, which is the block of digit ``t + 1`` with its columns
reversed for odd ``J_t`` (a parity axis split off ``J_t`` selects between two
blocks).  See ``docs/benchmarks.md`` for the measurements behind the choices.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .._blas import MNK_SINGLE
from ._walsh import ordered_hadamard, split_blocks

__all__ = ["BLOCK", "Pass", "row_plan"]

#: Largest Hadamard block of a pass.  Blocks of 4 to 16 cost about the same per
#: radix-2 stage on AVX-512 (the product is bound by its multiply-adds at 16,
#: by loads and stores below); 32 and 64 cost 1.5-2x more per stage.
BLOCK = 16

# buffer ids of a pass: the chunk of the input, two scratch buffers, the chunk of the output
SRC, S1, S2, DST = 0, 1, 2, 3


class Pass(NamedTuple):
    """One stacked product ``out = op @ x`` (``right=False``) or ``out = x @ op`` (``right=True``)."""

    src: int  # buffer read (SRC, S1, S2)
    dst: int  # buffer written (S1, S2, DST)
    in_shape: tuple  # reshape of the flat buffer in memory order (partner run merged, parity axes split)
    in_perm: tuple  # transpose to (batch..., T, P) or (batch..., P, T)
    out_shape: tuple
    out_perm: tuple
    op: np.ndarray  # (..., d, d) blocks, broadcast over the batch axes; transposed when right
    right: bool


def _size(u, sizes):
    """Size of an axis or of a ``(axis, "h")`` / ``(axis, "p")`` half of a split one."""
    if isinstance(u, tuple):
        return sizes[u[0]] // 2 if u[1] == "h" else 2
    return sizes[u]


def _units(layout, sizes, partner, splits):
    """Memory-order units of ``layout``: parity axes split in ``(half, parity)``, the partner run merged."""
    expanded = [v for a in layout for v in ([(a, "h"), (a, "p")] if a in splits else [a])]
    i = expanded.index(partner[0])
    assert tuple(expanded[i : i + len(partner)]) == partner, (layout, partner)
    units = [*expanded[:i], "P", *expanded[i + len(partner) :]]
    shape = [*(_size(u, sizes) for u in expanded[:i]), math.prod(_size(u, sizes) for u in partner),
             *(_size(u, sizes) for u in expanded[i + len(partner) :])]
    return units, tuple(shape)


def _make_pass(src, dst, sizes, lin, lout, t, partner, twists, block):
    """A :class:`Pass` transforming digit ``t`` from layout ``lin`` to ``lout``.

    ``partner``: a run of axes (or the half ``(axis, "h")`` of a split one) that is
    contiguous in both layouts.  ``twists``: ``(axis, kind)`` pairs; the block is
    reversed along its columns (``"col"``) or rows (``"row"``) where the parity of
    ``axis`` (a batch axis, split in half and parity) is odd.
    """
    d = sizes[t]
    # keep every BLAS call below OpenBLAS' threading threshold: move outer partner axes to the batch
    partner = tuple(partner)
    while len(partner) > 1 and math.prod(_size(u, sizes) for u in partner) * d * d >= MNK_SINGLE:
        partner = partner[1:]
    splits = {a for a, _ in twists}
    uin, in_shape = _units(lin, sizes, partner, splits)
    uout, out_shape = _units(lout, sizes, partner, splits)
    batch = [u for u in uout if u not in ("P", t)]
    right = lin[-1] == t
    tail = ["P", t] if right else [t, "P"]
    in_perm = tuple(uin.index(u) for u in batch + tail)
    out_perm = tuple(uout.index(u) for u in batch + tail)
    stack = np.broadcast_to(block, tuple(2 if isinstance(u, tuple) and u[1] == "p" else 1 for u in batch) + (d, d))
    stack = stack.copy()
    for axis, kind in twists:
        odd = tuple(1 if u == (axis, "p") else slice(None) for u in batch)
        stack[odd] = stack[odd][..., :, ::-1] if kind == "col" else stack[odd][..., ::-1, :]
    if right:
        stack = np.ascontiguousarray(np.swapaxes(stack, -1, -2))
    stack.flags.writeable = False
    return Pass(src, dst, in_shape, in_perm, out_shape, out_perm, stack, right)


def _natural_specs(k, rotate):
    """(t, lin, lout, partner, twists) per pass for the natural order.

    Many rows per chunk: the layout is kept, the outer digits first (one product
    per row), the innermost last (one product for the chunk, whose output goes to
    memory as one stream).  One row: each pass transforms the outermost digit and
    moves it behind the others (products of the whole row), ``K`` rotations
    restoring the order.
    """
    lay = ["r", *range(k)]
    if rotate:
        return [(t, ["r", *range(t, k), *range(t)], ["r", *range(t + 1, k), *range(t + 1)],
                 (*range(t + 1, k), *range(t)), []) for t in range(k)]
    specs = [(t, lay, lay, tuple(range(t + 1, k)), []) for t in range(k - 1)]
    specs.append((k - 1, lay, lay, tuple(lay[:-1]), []))  # one product, written as one stream
    return specs


def _reversed_specs(k, rows_first, twist, parity=False):
    """Passes for the sequency/dyadic order: digits ``K-1 .. 0``, each moved behind the ones done.

    ``rows_first``: the first pass pairs the innermost digit with the rows and
    later passes pair the rows with the digits done (many rows per chunk).
    Otherwise the first pass pairs it with the rows and the outer digits, and the
    rows stay in front (few, long rows).  ``parity``: odd rows transformed
    reversed.  Reversing a row multiplies its sequency coefficient ``s`` by
    ``(-1)^s``; digit by digit the reversals cancel but for the last digit's, so
    only the last block is column-reversed for odd rows (the row parity a batch
    axis).  With the rows ``(i, J)`` of the ``(a, b)`` view of a long vector this
    is the sign between the row digit ``J`` and the row transform.
    """

    def tw(a):
        return [(a, "col")] if twist and a >= 0 else []

    digits = list(range(k))
    if rows_first:
        specs = [(k - 1, ["r", *digits], [*range(k - 1), "r", k - 1], ("r",), tw(k - 2))]
    else:
        head = ("r", *range(k - 2), (k - 2, "h")) if twist and k >= 2 else ("r", *range(k - 1))
        specs = [(k - 1, ["r", *digits], ["r", *digits], head, tw(k - 2))]
    for t in range(k - 2, -1, -1):
        done = list(range(k - 1, t, -1))
        if rows_first:
            specs.append((t, [*range(t + 1), "r", *done], [*range(t), "r", *done, t], ("r", *done), tw(t - 1)))
        else:
            specs.append((t, ["r", *range(t + 1), *done], ["r", *range(t), *done, t], tuple(done), tw(t - 1)))
    if parity:
        t, lin, lout, partner, twists = specs[-1]
        if rows_first:
            done = tuple(range(k - 1, 0, -1))
            lin, partner = [0, "r", *done], done
        specs[-1] = (t, lin, lout, partner, [*twists, ("r", "col")])
    return specs


def _column_specs(k, ordering):
    """Passes along the rows of an ``(n, rc)`` block (the ``rc`` columns innermost, unit stride).

    The block may be a strided view: the first pass reads it and the natural
    order's last pass writes it with the columns as the only partner axis.  The
    other orders write a contiguous ``(rc, n)`` chunk with the digits reversed.
    """
    lay = [*range(k), "r"]
    if ordering == "natural":
        return [(t, lay, lay, ("r",) if t in (0, k - 1) else (*range(t + 1, k), "r"), [])
                for t in range(k - 1, -1, -1)]
    tw = ordering == "sequency"
    specs = [(k - 1, lay, [*range(k - 1), "r", k - 1], ("r",), [(k - 2, "col")] if tw and k >= 2 else [])]
    for t in range(k - 2, -1, -1):
        done = list(range(k - 1, t, -1))
        specs.append((t, [*range(t + 1), "r", *done], [*range(t), "r", *done, t], ("r", *done),
                      [(t - 1, "col")] if tw and t >= 1 else []))
    return specs


@lru_cache(maxsize=128)
def row_plan(n: int, ordering: str, scale: float, dtype, rc: int, kind: str = "rows") -> tuple:
    """The passes transforming a chunk of ``rc`` rows of length ``n`` (a power of two, ``n >= 4``).

    Parameters
    ----------
    n, ordering, scale, dtype
        The transform (``scale`` folded into the last pass).
    rc : int
        Rows per chunk (even for ``kind="parity"``).
    kind : {"rows", "parity", "odd", "cols"}
        ``"rows"``: a C-contiguous ``(rc, n)`` chunk into one.  ``"parity"``: the
        same with odd rows transformed reversed, ``"odd"``: with every row reversed
        (sequency only; see :func:`_reversed_specs`).  ``"cols"``: an ``(n, rc)``
        block, possibly strided, into the same block (natural) or into a
        C-contiguous ``(rc, n)`` chunk (sequency, dyadic).

    Returns
    -------
    tuple of Pass
    """
    blocks = split_blocks(n, BLOCK)
    k = len(blocks)
    sizes = {"r": rc, **dict(enumerate(blocks))}
    if kind == "cols":
        specs = _column_specs(k, ordering)
    elif ordering == "natural":
        specs = _natural_specs(k, rc == 1 and k >= 2)
    else:
        assert kind != "parity" or (k >= 2 and rc % 2 == 0), (n, rc, kind)
        # pair the rows with the innermost digit when there are at least as many as the next digit's size
        rows_first = k < 2 or rc >= blocks[-2]
        specs = _reversed_specs(k, rows_first, ordering == "sequency", kind == "parity")
    bufs = [SRC] + [S1 if i % 2 == 0 else S2 for i in range(k - 1)] + [DST]
    passes = []
    for i, (t, lin, lout, partner, twists) in enumerate(specs):
        block = ordered_hadamard(sizes[t], ordering).astype(dtype)
        if i == k - 1:
            block = block * dtype.type(scale)
            if kind == "odd":
                block = block[:, ::-1]
        passes.append(_make_pass(bufs[i], bufs[i + 1], sizes, lin, lout, t, partner, twists, block))
    return tuple(passes)
