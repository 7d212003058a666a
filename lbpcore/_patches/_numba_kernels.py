"""Numba kernels of the compiled projection (patch size 8): imported only by :mod:`._compiled`.

Each kernel walks patches ``(b, p, q)`` of a tokens array ``(B, rows, C)`` and
keeps the channels innermost: every loop over ``c`` is a straight run of
vector instructions.  The 8-point Walsh–Hadamard transform is the butterfly
of :func:`_wht8` (natural order, 24 additions per 8 values, exact for any
input: no products), applied along the patch columns, then along the patch
rows of the columns that the selection needs.  Padding, the crop and the
order of the coefficients come in as small index arrays (built by
:mod:`._compiled`); compiled once per dtype and cached on disk
(``cache=True``).
"""

from __future__ import annotations

from numba import njit

__all__ = ["project8", "reconstruct8"]

_JIT = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False}


@njit(inline="always", **_JIT)
def _wht8(v0, v1, v2, v3, v4, v5, v6, v7):
    """The natural-order (Sylvester) 8-point Walsh–Hadamard transform of eight values."""
    a0, a1, a2, a3 = v0 + v1, v0 - v1, v2 + v3, v2 - v3
    a4, a5, a6, a7 = v4 + v5, v4 - v5, v6 + v7, v6 - v7
    b0, b1, b2, b3 = a0 + a2, a1 + a3, a0 - a2, a1 - a3
    b4, b5, b6, b7 = a4 + a6, a5 + a7, a4 - a6, a5 - a7
    return b0 + b4, b1 + b5, b2 + b6, b3 + b7, b0 - b4, b1 - b5, b2 - b6, b3 - b7


@njit(**_JIT)
def _columns_of_row(x, b, r0, src, scale, buf, s):
    """``buf[s, a, :]``: the transform along the patch columns of grid row ``r0`` times ``scale``
    (``src``: the 8 columns, -1 zero).  The scale comes first, as in the blocked kernel's first
    operator, so that the coefficients overflow only where their scaled values do."""
    n_c = x.shape[2]
    if src[0] >= 0 and src[1] >= 0 and src[2] >= 0 and src[3] >= 0 and \
            src[4] >= 0 and src[5] >= 0 and src[6] >= 0 and src[7] >= 0:
        i0, i1, i2, i3 = r0 + src[0], r0 + src[1], r0 + src[2], r0 + src[3]
        i4, i5, i6, i7 = r0 + src[4], r0 + src[5], r0 + src[6], r0 + src[7]
        for c in range(n_c):
            y = _wht8(x[b, i0, c] * scale, x[b, i1, c] * scale, x[b, i2, c] * scale, x[b, i3, c] * scale,
                      x[b, i4, c] * scale, x[b, i5, c] * scale, x[b, i6, c] * scale, x[b, i7, c] * scale)
            buf[s, 0, c], buf[s, 1, c], buf[s, 2, c], buf[s, 3, c] = y[0], y[1], y[2], y[3]
            buf[s, 4, c], buf[s, 5, c], buf[s, 6, c], buf[s, 7, c] = y[4], y[5], y[6], y[7]
        return
    for a in range(8):  # zero padding on this patch column: gather, then transform in place
        ia = src[a]
        for c in range(n_c):
            buf[s, a, c] = x[b, r0 + ia, c] * scale if ia >= 0 else 0.0
    for c in range(n_c):
        y = _wht8(buf[s, 0, c], buf[s, 1, c], buf[s, 2, c], buf[s, 3, c],
                  buf[s, 4, c], buf[s, 5, c], buf[s, 6, c], buf[s, 7, c])
        buf[s, 0, c], buf[s, 1, c], buf[s, 2, c], buf[s, 3, c] = y[0], y[1], y[2], y[3]
        buf[s, 4, c], buf[s, 5, c], buf[s, 6, c], buf[s, 7, c] = y[4], y[5], y[6], y[7]


@njit(**_JIT)
def project8(x, xe, w, src_r, src_c, need_a, sel_i, sel_row, block, scale, out, oe, start, stop, buf):
    """Coefficients of patch rows ``start .. stop-1`` (flat ``b * ph + p``) of tokens ``x`` into ``out``.

    ``x`` ``(B, xe + h*w, C)``; ``src_r`` ``(ph, 8)``, ``src_c`` ``(pw, 8)``: the grid
    row (column) of each padded patch position, -1 for a zero; for each needed
    natural column ``need_a[k]``, the natural rows ``sel_i[k, :]`` (-1 ends the
    list), times ``scale``, go to row ``oe + p*block + base + q*length`` of ``out``, where
    ``sel_row[k, m] = (base, length)``.  ``buf`` ``(8, 8, C)`` is scratch.
    """
    ph = src_r.shape[0]
    pw = src_c.shape[0]
    n_c = x.shape[2]
    for bp in range(start, stop):
        b = bp // ph
        p = bp - b * ph
        for q in range(pw):
            for s in range(8):
                rs = src_r[p, s]
                if rs < 0:
                    for a in range(8):
                        for c in range(n_c):
                            buf[s, a, c] = 0.0
                else:
                    _columns_of_row(x, b, xe + rs * w, src_c[q], scale, buf, s)
            for k in range(need_a.shape[0]):
                a = need_a[k]
                for c in range(n_c):
                    y = _wht8(buf[0, a, c], buf[1, a, c], buf[2, a, c], buf[3, a, c],
                              buf[4, a, c], buf[5, a, c], buf[6, a, c], buf[7, a, c])
                    buf[0, a, c], buf[1, a, c], buf[2, a, c], buf[3, a, c] = y[0], y[1], y[2], y[3]
                    buf[4, a, c], buf[5, a, c], buf[6, a, c], buf[7, a, c] = y[4], y[5], y[6], y[7]
                m = 0
                while m < 8 and sel_i[k, m] >= 0:
                    i = sel_i[k, m]
                    r = oe + p * block + sel_row[k, m, 0] + q * sel_row[k, m, 1]
                    for c in range(n_c):
                        out[b, r, c] = buf[i, a, c]
                    m += 1


@njit(**_JIT)
def reconstruct8(coef, ce, w, dst_r, dst_c, need_a, sel_i, sel_row, block, scale, out, oe, start, stop, buf, tmp,
                 row):
    """Inverse of :func:`project8` for patch rows ``start .. stop-1``: the crop of each patch into ``out``.

    ``coef`` ``(B, ce + M, C)``; ``dst_r`` ``(ph, 8)``, ``dst_c`` ``(pw, 8)``: the grid
    row (column) of each patch position, -1 outside the grid (cropped); ``out``
    ``(B, oe + h*w, C)``.  ``buf`` and ``tmp`` ``(8, 8, C)`` and ``row`` ``(8, C)`` are
    scratch; the rows of ``tmp[k]`` that column ``k`` does not select stay zero.
    """
    ph = dst_r.shape[0]
    pw = dst_c.shape[0]
    n_c = coef.shape[2]
    tmp[:] = 0.0
    buf[:] = 0.0  # the columns no selected basis uses stay zero
    for bp in range(start, stop):
        b = bp // ph
        p = bp - b * ph
        for q in range(pw):
            for k in range(need_a.shape[0]):
                a = need_a[k]
                m = 0
                while m < 8 and sel_i[k, m] >= 0:
                    r = ce + p * block + sel_row[k, m, 0] + q * sel_row[k, m, 1]
                    i = sel_i[k, m]
                    for c in range(n_c):
                        tmp[k, i, c] = coef[b, r, c] * scale
                    m += 1
                for c in range(n_c):
                    y = _wht8(tmp[k, 0, c], tmp[k, 1, c], tmp[k, 2, c], tmp[k, 3, c],
                              tmp[k, 4, c], tmp[k, 5, c], tmp[k, 6, c], tmp[k, 7, c])
                    buf[0, a, c], buf[1, a, c], buf[2, a, c], buf[3, a, c] = y[0], y[1], y[2], y[3]
                    buf[4, a, c], buf[5, a, c], buf[6, a, c], buf[7, a, c] = y[4], y[5], y[6], y[7]
            cols = dst_c[q]
            full = cols[0] >= 0 and cols[1] >= 0 and cols[2] >= 0 and cols[3] >= 0 and \
                cols[4] >= 0 and cols[5] >= 0 and cols[6] >= 0 and cols[7] >= 0
            for s in range(8):
                rs = dst_r[p, s]
                if rs < 0:
                    continue
                r0 = oe + rs * w
                if full:
                    j0, j1, j2, j3 = r0 + cols[0], r0 + cols[1], r0 + cols[2], r0 + cols[3]
                    j4, j5, j6, j7 = r0 + cols[4], r0 + cols[5], r0 + cols[6], r0 + cols[7]
                    for c in range(n_c):
                        y = _wht8(buf[s, 0, c], buf[s, 1, c], buf[s, 2, c], buf[s, 3, c],
                                  buf[s, 4, c], buf[s, 5, c], buf[s, 6, c], buf[s, 7, c])
                        out[b, j0, c], out[b, j1, c], out[b, j2, c], out[b, j3, c] = y[0], y[1], y[2], y[3]
                        out[b, j4, c], out[b, j5, c], out[b, j6, c], out[b, j7, c] = y[4], y[5], y[6], y[7]
                else:  # a patch that sticks out of the grid: transformed into ``row``, its interior copied
                    for c in range(n_c):
                        y = _wht8(buf[s, 0, c], buf[s, 1, c], buf[s, 2, c], buf[s, 3, c],
                                  buf[s, 4, c], buf[s, 5, c], buf[s, 6, c], buf[s, 7, c])
                        row[0, c], row[1, c], row[2, c], row[3, c] = y[0], y[1], y[2], y[3]
                        row[4, c], row[5, c], row[6, c], row[7, c] = y[4], y[5], y[6], y[7]
                    for a in range(8):
                        if cols[a] >= 0:
                            j = r0 + cols[a]
                            for c in range(n_c):
                                out[b, j, c] = row[a, c]
