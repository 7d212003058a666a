"""Independent NumPy oracles of the SPEC, for the tests (``from oracles import ...``).

Written straight from ``SPEC.md`` with dense NumPy products; they share no code
with :mod:`lbpcore` (nor with :mod:`lbpcore.testing`): Walsh matrices come from
Sylvester's recursion and a sign-change sort, padding from ``numpy.pad`` with the
SPEC's split of the pad widths, and the LBP-WHT backward from an explicit
per-patch projector ``P = B^T B / n^2``.  ``tests/`` has no ``__init__.py``, so
pytest puts it on ``sys.path``.
"""

from __future__ import annotations

import math

import numpy as np

#: The parameter domains of the SPEC.
ORDERINGS = ("natural", "sequency", "dyadic")
NORMS = ("backward", "ortho", "forward")
PATCHES = (1, 2, 4, 8, 16)


def sylvester(n: int) -> np.ndarray:
    """Natural-order Hadamard matrix by Sylvester's recursion (int64)."""
    h = np.ones((1, 1), dtype=np.int64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    assert h.shape == (n, n)
    return h


def sign_changes(row) -> int:
    row = np.asarray(row)
    return int(np.count_nonzero(row[1:] != row[:-1]))


def bit_reverse(i: int, bits: int) -> int:
    if bits == 0:
        return 0
    return int(format(i, f"0{bits}b")[::-1], 2)


def walsh_oracle(n: int, ordering: str = "sequency") -> np.ndarray:
    """Walsh matrix from the SPEC definitions (int64)."""
    h = sylvester(n)
    if ordering == "natural":
        return h
    if ordering == "sequency":
        counts = [sign_changes(r) for r in h]
        assert sorted(counts) == list(range(n))
        return h[np.argsort(counts, kind="stable")]
    if ordering == "dyadic":
        bits = n.bit_length() - 1
        return h[[bit_reverse(s, bits) for s in range(n)]]
    raise AssertionError(ordering)


def norm_scale(n: int, norm: str, inverse: bool = False) -> float:
    if norm == "ortho":
        return 1.0 / math.sqrt(n)
    if norm == "backward":
        return 1.0 / n if inverse else 1.0
    if norm == "forward":
        return 1.0 if inverse else 1.0 / n
    raise AssertionError(norm)


def fwht_oracle(x, axis=-1, ordering="sequency", norm="backward", inverse=False):
    """Dense ``scale * M @ x`` along ``axis`` in float64 (a naive oracle)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[axis]
    m = walsh_oracle(n, ordering).astype(np.float64) * norm_scale(n, norm, inverse)
    moved = np.moveaxis(x, axis, -1)
    return np.moveaxis(moved @ m.T, -1, axis)


def pad_widths(size: int, n: int) -> tuple[int, int]:
    """(before, after) padding of one grid axis of length ``size`` (SPEC 4)."""
    total = -(-size // n) * n - size
    before = -(-total // 2)
    return before, total - before


def reflect_ok(grid, n) -> bool:
    """Whether a single mirror (numpy's reflect, edge not repeated) fits."""
    return all(max(pad_widths(s, n)) <= s - 1 for s in grid)


def draw_grid_and_pad(draw, st, n, divisible, max_side):
    """Draw ``(h, w, pad)`` for patch ``n``: a divisible or arbitrary grid and a padding it allows."""
    if divisible is None:
        divisible = draw(st.booleans())
    if divisible:
        h = n * draw(st.integers(1, max(1, max_side // n)))
        w = n * draw(st.integers(1, max(1, max_side // n)))
    else:
        h = draw(st.integers(1, max_side))
        w = draw(st.integers(1, max_side))
    pads = ["reflect", "zero"] + (["none"] if h % n == 0 and w % n == 0 else [])
    pad = draw(st.sampled_from(pads))
    if pad == "reflect" and not reflect_ok((h, w), n):
        pad = "zero"
    return h, w, pad


def pad_oracle(a, grid_axes, n, pad):
    """Pad the two ``grid_axes`` of ``a`` to multiples of ``n`` per SPEC 4."""
    widths = [(0, 0)] * a.ndim
    for ax in grid_axes:
        widths[ax] = pad_widths(a.shape[ax], n)
    if pad == "reflect":
        for ax in grid_axes:
            assert max(widths[ax]) <= a.shape[ax] - 1, "oracle: reflect too wide"
        return np.pad(a, widths, mode="reflect")
    if pad == "zero":
        return np.pad(a, widths, mode="constant")
    if pad == "none":
        assert all(w == (0, 0) for w in widths)
        return a.copy()
    raise AssertionError(pad)


def basis_images_oracle(n, indices) -> np.ndarray:
    w = walsh_oracle(n, "sequency").astype(np.float64)
    return np.stack([np.outer(w[i], w[j]) for i, j in indices]).reshape(len(indices), n, n)


def patch_projector_oracle(n, indices) -> np.ndarray:
    """``(n*n, n*n)`` orthogonal projector onto the selected images of one patch."""
    b = basis_images_oracle(n, indices).reshape(len(indices), n * n)
    return b.T @ b / n**2


def lp_l1_oracle(n, k):
    return sorted(
        ((i, j) for i in range(n) for j in range(n) if i + j < k), key=lambda p: (p[0] + p[1], p[0], p[1])
    )


def lp_linf_oracle(n, k):
    return sorted(
        ((i, j) for i in range(n) for j in range(n) if max(i, j) < k), key=lambda p: (p[0] + p[1], p[0], p[1])
    )


def _to_patches(a, n):
    """(B, Hp, Wp, C) -> (B, ph, pw, n*n, C), patches row-major."""
    b, hp, wp, c = a.shape
    ph, pw = hp // n, wp // n
    return a.reshape(b, ph, n, pw, n, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, n * n, c)


def _from_patches(a, n):
    b, ph, pw, _, c = a.shape
    return a.reshape(b, ph, pw, n, n, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, ph * n, pw * n, c)


def tokens_from_nchw(a):
    b, c, h, w = a.shape
    return np.ascontiguousarray(a.reshape(b, c, h * w).transpose(0, 2, 1))


def nchw_from_tokens(a, grid):
    b, _, c = a.shape
    h, w = grid
    return np.ascontiguousarray(a.transpose(0, 2, 1).reshape(b, c, h, w))


def _padded_grid(tokens, grid, n, pad, extra_tokens):
    """Grid part of tokens ``(B, e + h*w, C)`` as ``(B, Hp, Wp, C)``, padded per SPEC 4."""
    b, _, c = tokens.shape
    h, w = grid
    return pad_oracle(tokens[:, extra_tokens:].reshape(b, h, w, c), (1, 2), n, pad)


def _crop(padded, grid, n):
    """``(B, Hp, Wp, C)`` -> the ``(B, h*w, C)`` tokens of the original grid."""
    h, w = grid
    top, _ = pad_widths(h, n)
    left, _ = pad_widths(w, n)
    return padded[:, top : top + h, left : left + w].reshape(padded.shape[0], h * w, padded.shape[3])


def coefficients_oracle(x, *, grid, n, indices, pad="reflect", extra_tokens=0):
    """Coefficients c_ij of tokens ``x`` (B, e + h*w, C) -> (B, P, r, C)."""
    x = np.asarray(x, dtype=np.float64)
    patches = _to_patches(_padded_grid(x, grid, n, pad, extra_tokens), n)  # (B, ph, pw, n*n, C)
    bm = basis_images_oracle(n, indices).reshape(len(indices), n * n)
    coef = np.einsum("ru,bpquc->bpqrc", bm, patches)
    return coef.reshape(x.shape[0], -1, len(indices), x.shape[2])


def projector_apply_oracle(x, *, grid, n, indices, pad="reflect", extra_tokens=0):
    """Tokens (B, e + h*w, C): grid part -> crop(P pad(x)); extra tokens unchanged."""
    x = np.asarray(x, dtype=np.float64)
    pp = patch_projector_oracle(n, indices)
    patches = _to_patches(_padded_grid(x, grid, n, pad, extra_tokens), n)
    proj = _from_patches(np.einsum("uv,bpqvc->bpquc", pp, patches), n)
    return np.concatenate([x[:, :extra_tokens], _crop(proj, grid, n)], axis=1)


def dense_backward_oracle(x, weight, grad_y, *, layout="tokens", bias=False):
    """SPEC 1, by einsum. Returns (grad_x, grad_weight, grad_bias or None)."""
    x = np.asarray(x, dtype=np.float64)
    wt = np.asarray(weight, dtype=np.float64)
    gy = np.asarray(grad_y, dtype=np.float64)
    if layout == "nchw":
        gx = np.einsum("bohw,oi->bihw", gy, wt)
        gw = np.einsum("bohw,bihw->oi", gy, x)
        gb = gy.sum(axis=(0, 2, 3)) if bias else None
    else:
        gx = np.einsum("blo,oi->bli", gy, wt)
        gw = np.einsum("blo,bli->oi", gy, x)
        gb = gy.sum(axis=(0, 1)) if bias else None
    return gx, gw, gb


def lbp_backward_oracle(
    x, weight, grad_y, *, grid=None, n, indices, pad="reflect", extra_tokens=0, layout="tokens", bias=False
):
    """SPEC 5 with an explicit per-patch projector (float64).

    ``grad_W = (P pad(gy)).T @ pad(x)`` over the grid plus the dense extra-token
    part; ``grad_x = crop(P pad(gy)) @ W`` on the grid, dense on extra tokens;
    ``grad_b`` exact.
    """
    x = np.asarray(x, dtype=np.float64)
    wt = np.asarray(weight, dtype=np.float64)
    gy = np.asarray(grad_y, dtype=np.float64)
    if layout == "nchw":
        grid = x.shape[2:]
        x, gy = tokens_from_nchw(x), tokens_from_nchw(gy)
        extra_tokens = 0
    e = extra_tokens
    xg = _padded_grid(x, grid, n, pad, e)
    gg = _padded_grid(gy, grid, n, pad, e)
    pp = patch_projector_oracle(n, indices)
    pg = np.einsum("uv,bpqvo->bpquo", pp, _to_patches(gg, n))
    gw = np.einsum("bpquo,bpqui->oi", pg, _to_patches(xg, n))
    gw = gw + np.einsum("blo,bli->oi", gy[:, :e], x[:, :e])
    gx_grid = _crop(_from_patches(pg, n) @ wt, grid, n)
    gx = np.concatenate([gy[:, :e] @ wt, gx_grid], axis=1)
    gb = gy.sum(axis=(0, 1)) if bias else None
    if layout == "nchw":
        gx = nchw_from_tokens(gx, grid)
    return gx, gw, gb
