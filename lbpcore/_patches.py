"""Projection of token grids onto selected 2D Walsh–Hadamard bases (SPEC sections 4–5).

Padding, patch extraction and the separable 2D transform are folded into two
*axis operators*, one per spatial axis.  Along the rows, patch ``p`` of the
padded grid reads a window of at most ``n`` original rows (reflection maps the
padded rows back inside the grid), so the coefficients of the selected
vertical sequencies ``i`` are ``A_p @ x[window_p]`` with a small ``(k_i, window)``
matrix ``A_p`` that already contains the padding.  The columns work the same
way.  The 2D coefficient of basis ``(i, j)`` is then row operator, then column
operator, then a gather of the selected pairs.  Reconstruction applies the
transposed Walsh rows restricted to the interior of each patch (the crop) in
the reverse order.  Nothing of the padded grid is ever materialized, channels
never move, and the full-size data is read or written once per operator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._backend import as_float_array, constant, device_of
from ._bases import BasisSet, select_bases
from ._validation import check_choice, check_grid, check_int, check_power_of_two
from ._wht import _natural_hadamard, sequency_permutation

__all__ = [
    "PADS",
    "LAYOUTS",
    "PatchPlan",
    "make_plan",
    "project",
    "reconstruct",
    "apply_projector",
    "padding",
]

PADS = ("reflect", "zero", "none")
LAYOUTS = ("tokens", "nchw")


def padding(length: int, patch: int) -> tuple[int, int, int]:
    """Patches and padding along one axis (SPEC section 4).

    Parameters
    ----------
    length : int
        Grid length ``h`` along the axis.
    patch : int
        Patch size ``n``.

    Returns
    -------
    count, before, after : int
        ``count = ceil(h / n)`` patches; ``before = ceil((count*n - h) / 2)``
        padded rows on top (left), ``after`` the rest.

    Examples
    --------
    >>> from lbpcore import padding
    >>> padding(14, 8)
    (2, 1, 1)
    >>> padding(7, 4)
    (2, 1, 0)
    """
    count = -(-length // patch)
    total = count * patch - length
    before = -(-total // 2)
    return count, before, total - before


@dataclass(frozen=True)
class _AxisOp:
    """Block operator along one axis: output block ``t`` is ``mats[t] @ x[lo_t:hi_t]``.

    ``uniform`` means every block uses the same matrix on consecutive,
    equal-length, non-overlapping input windows that tile ``[0, n_in)``.
    """

    n_in: int
    n_out: int
    lo: tuple
    hi: tuple
    mats: tuple  # numpy arrays (out_len, in_len)
    uniform: bool
    key: tuple


def _walsh_rows(n: int, rows) -> np.ndarray:
    w = _natural_hadamard(n)[sequency_permutation(n, "sequency")]
    return w[np.asarray(rows, dtype=np.int64)].astype(np.float64)


@lru_cache(maxsize=256)
def _axis_ops(length: int, n: int, pad: str, rows: tuple, scale: float):
    """Projection and reconstruction operators along one axis."""
    count, before, _ = padding(length, n)
    w = _walsh_rows(n, rows)  # (k, n)
    k = len(rows)
    if count * n == length:
        proj = _AxisOp(length, count * k, tuple(range(0, length, n)), tuple(range(n, length + 1, n)),
                       (w * scale,) * count, True, ("proj", length, n, pad, rows, scale))
        rec = _AxisOp(count * k, length, tuple(range(0, count * k, k)), tuple(range(k, count * k + 1, k)),
                      (w.T.copy(),) * count, True, ("rec", length, n, pad, rows))
        return proj, rec
    p_lo, p_hi, p_mats, r_lo, r_hi, r_mats = [], [], [], [], [], []
    for p in range(count):
        src = np.arange(p * n, p * n + n) - before
        inside = (src >= 0) & (src < length)
        if pad == "reflect":
            src = np.where(src < 0, -src, src)
            src = np.where(src >= length, 2 * (length - 1) - src, src)
            valid = np.ones(n, dtype=bool)
        else:  # zero
            valid = inside
        lo, hi = int(src[valid].min()), int(src[valid].max()) + 1
        a = np.zeros((k, hi - lo))
        for u in np.nonzero(valid)[0]:
            a[:, src[u] - lo] += w[:, u]
        p_lo.append(lo)
        p_hi.append(hi)
        p_mats.append(a * scale)
        # reconstruction: interior rows of this patch, in order
        u_in = np.nonzero(inside)[0]
        r_lo.append(p * k)
        r_hi.append(p * k + k)
        r_mats.append(w[:, u_in].T.copy())
    proj = _AxisOp(length, count * k, tuple(p_lo), tuple(p_hi), tuple(p_mats), False,
                   ("proj", length, n, pad, rows, scale))
    rec = _AxisOp(count * k, length, tuple(r_lo), tuple(r_hi), tuple(r_mats), False,
                  ("rec", length, n, pad, rows))
    return proj, rec


def _apply(xp, x3, op: _AxisOp):
    """Apply ``op`` along axis 1 of ``x3`` of shape ``(pre, n_in, post)``; ``post == 0`` means 2D."""
    dt = x3.dtype
    dev = device_of(x3)
    two_d = x3.ndim == 2
    if op.uniform:
        m = op.mats[0]
        mat = constant(op.key + ("T",) if two_d else op.key, (lambda: m.T) if two_d else (lambda: m), xp, dt, dev)
        count = len(op.lo)
        kin = op.hi[0] - op.lo[0]
        if two_d:
            pre = x3.shape[0]
            y = xp.matmul(xp.reshape(x3, (pre * count, kin)), mat)
            return xp.reshape(y, (pre, op.n_out))
        pre, _, post = x3.shape
        y = xp.matmul(mat, xp.reshape(x3, (pre * count, kin, post)))
        return xp.reshape(y, (pre, op.n_out, post))
    pieces = []
    for t, (lo, hi, m) in enumerate(zip(op.lo, op.hi, op.mats)):
        if two_d:
            mat = constant(op.key + (t, "T"), lambda m=m: m.T, xp, dt, dev)
            pieces.append(xp.matmul(x3[:, lo:hi], mat))
        else:
            mat = constant(op.key + (t,), lambda m=m: m, xp, dt, dev)
            pieces.append(xp.matmul(mat, x3[:, lo:hi, :]))
    return xp.concat(pieces, axis=1)


@dataclass(frozen=True)
class PatchPlan:
    """Everything needed to project a given grid onto a given basis set.

    Built (and cached) by :func:`make_plan`; holds no arrays of the caller's
    namespace.

    Attributes
    ----------
    grid : (int, int)
        Token grid ``(h, w)``.
    patch : int
        Patch size ``n``.
    pad : str
        Padding mode.
    basis : BasisSet
        Selected bases (rank ``r``).
    patches : (int, int)
        ``(ph, pw)`` patches along rows and columns.
    rect : (int, int)
        ``(k_i, k_j)``: distinct vertical and horizontal sequencies in the basis.
    """

    grid: tuple
    patch: int
    pad: str
    basis: BasisSet
    patches: tuple
    rect: tuple

    @property
    def num_patches(self) -> int:
        return self.patches[0] * self.patches[1]

    @property
    def rank(self) -> int:
        return self.basis.rank

    @property
    def dense_rect(self) -> bool:
        """True when the basis is a full rectangle of rows x columns (no gather needed)."""
        return self.rect[0] * self.rect[1] == self.basis.rank

    def ops(self, scale: float = 1.0):
        rows = tuple(int(v) for v in self.basis.rows)
        cols = tuple(int(v) for v in self.basis.cols)
        h, w = self.grid
        ph_, rh_ = _axis_ops(h, self.patch, self.pad, rows, float(scale))
        pw_, rw_ = _axis_ops(w, self.patch, self.pad, cols, 1.0)
        return ph_, pw_, rh_, rw_

    def gather_index(self) -> np.ndarray:
        """Flat indices into ``(ph, k_i, pw, k_j)`` of the selected coefficients, ordered ``(p, q, k)``."""
        return _gather_index(self)

    def scatter_index(self) -> np.ndarray:
        """Inverse of :meth:`gather_index`; unselected positions map to ``P * r`` (a zero slot)."""
        return _scatter_index(self)


@lru_cache(maxsize=256)
def _gather_index(plan: PatchPlan) -> np.ndarray:
    ph, pw = plan.patches
    ki, kj = plan.rect
    rows = {int(v): t for t, v in enumerate(plan.basis.rows)}
    cols = {int(v): t for t, v in enumerate(plan.basis.cols)}
    ii = np.array([rows[int(i)] for i in plan.basis.indices[:, 0]], dtype=np.int64)
    jj = np.array([cols[int(j)] for j in plan.basis.indices[:, 1]], dtype=np.int64)
    p = np.arange(ph)[:, None, None]
    q = np.arange(pw)[None, :, None]
    idx = ((p * ki + ii[None, None, :]) * pw + q) * kj + jj[None, None, :]
    return idx.reshape(-1)


@lru_cache(maxsize=256)
def _scatter_index(plan: PatchPlan) -> np.ndarray:
    ph, pw = plan.patches
    ki, kj = plan.rect
    g = _gather_index(plan)
    inv = np.full(ph * ki * pw * kj, g.size, dtype=np.int64)
    inv[g] = np.arange(g.size)
    return inv


def make_plan(grid, patch, bases, pad="reflect") -> PatchPlan:
    """Validate a grid/patch/basis/padding combination and return its :class:`PatchPlan`.

    Parameters
    ----------
    grid : (int, int)
        Token grid ``(h, w)``, positive.
    patch : int
        Patch size ``n``, a power of two.
    bases : str, sequence of pairs or BasisSet
        Selection, as for :func:`select_bases` (energy specs need a
        precomputed :class:`BasisSet`).
    pad : {"reflect", "zero", "none"}, optional
        ``"reflect"`` (default, the reference) mirrors without repeating the
        edge; ``"zero"`` pads with zeros; ``"none"`` requires ``n`` to divide
        both grid sides.

    Returns
    -------
    PatchPlan

    Raises
    ------
    ValueError
        If the grid is not positive, ``patch`` is not a power of two, ``pad``
        is unknown, ``pad="none"`` on a grid ``patch`` does not divide, or the
        reflect padding on one side is not smaller than the grid side.

    Examples
    --------
    >>> from lbpcore import make_plan
    >>> plan = make_plan((14, 14), 8, "lp_l1:6")
    >>> plan.patches, plan.rank
    ((2, 2), 21)
    """
    h, w = check_grid(grid)
    n = check_power_of_two(patch, "patch")
    check_choice(pad, "pad", PADS)
    basis = _as_basis(n, bases)
    for name, length in (("grid height", h), ("grid width", w)):
        count, before, after = padding(length, n)
        if pad == "none" and before + after:
            raise ValueError(
                f'pad="none" needs the patch size {n} to divide the {name} {length}; '
                f'use pad="reflect" or pad="zero"'
            )
        if pad == "reflect" and max(before, after) >= length:
            raise ValueError(
                f"reflect padding of {max(before, after)} is wider than the {name} {length} allows "
                f"(patch {n}); use a smaller patch or pad=\"zero\""
            )
    return _plan(h, w, n, pad, basis)


def _as_basis(n, bases):
    if isinstance(bases, str) and bases.split(":")[0].strip().startswith("energy"):
        raise ValueError(
            f"bases {bases!r} needs calibration data: call select_bases(n, {bases!r}, "
            "calibration=...) and pass the BasisSet"
        )
    return select_bases(n, bases)


@lru_cache(maxsize=256)
def _plan(h, w, n, pad, basis):
    ph, pw = -(-h // n), -(-w // n)
    return PatchPlan((h, w), n, pad, basis, (ph, pw), (len(basis.rows), len(basis.cols)))


# ---------------------------------------------------------------------------
# array-level kernels shared by project / reconstruct / lbp_backward


def split_tokens(xp, x, plan: PatchPlan, extra_tokens: int, name="x"):
    """Return ``(extra, grid3)``: ``(B, e, C)`` (or None) and the grid as ``(B, h, w*C)``."""
    b, length, c = x.shape
    h, w = plan.grid
    e = extra_tokens
    grid = x if e == 0 else x[:, e:, :]
    extra = None if e == 0 else x[:, :e, :]
    return extra, xp.reshape(grid, (b, h, w * c))


def check_tokens(x, grid, extra_tokens, name="x"):
    """Validate ``x`` of shape ``(B, L, C)`` against ``L == e + h*w``."""
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (B, L, C) for layout='tokens', got {tuple(x.shape)}")
    e = check_int(extra_tokens, "extra_tokens")
    if e < 0:
        raise ValueError(f"extra_tokens must be >= 0, got {e}")
    length = x.shape[1]
    if e > length:
        raise ValueError(f"extra_tokens={e} exceeds the {length} tokens of {name}")
    h, w = grid
    if length != e + h * w:
        raise ValueError(
            f"{name} has L={length} tokens but extra_tokens + h*w = {e} + {h}*{w} = {e + h * w} "
            f"for grid {grid}"
        )
    return e


def check_nchw(x, grid, extra_tokens, name="x"):
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W) for layout='nchw', got {tuple(x.shape)}")
    e = check_int(extra_tokens, "extra_tokens")
    if e != 0:
        raise ValueError(f"extra_tokens must be 0 for layout='nchw', got {e}")
    hw = (int(x.shape[2]), int(x.shape[3]))
    if grid is None:
        return hw
    g = check_grid(grid)
    if g != hw:
        raise ValueError(f"grid {g} does not match the spatial shape {hw} of {name}")
    return g


def resolve_grid(x, grid, layout, name="x"):
    """Grid for ``x``: given (tokens) or from its shape (nchw)."""
    if layout == "nchw":
        if x.ndim != 4:
            raise ValueError(f"{name} must have shape (B, C, H, W) for layout='nchw', got {tuple(x.shape)}")
        return check_nchw(x, grid, 0, name)
    if grid is None:
        raise ValueError("grid=(h, w) is required for layout='tokens'")
    return check_grid(grid)


def project_raw(xp, x, plan: PatchPlan, layout: str, extra_tokens: int = 0, scale: float = 1.0, gather=None):
    """Coefficients of the grid part of ``x`` (no validation).

    Returns ``(extra, coef)``.  Tokens: ``coef`` is ``(B, M, C)``; nchw: ``(B, C, M)``,
    with ``M = P * r`` in ``(p, q, k)`` order when gathered, else the full
    rectangle ``(ph, k_i, pw, k_j)``.  ``gather=None`` gathers only when needed.
    """
    if gather is None:
        gather = not plan.dense_rect
    oph, opw, _, _ = plan.ops(scale)
    if layout == "tokens":
        b, _, c = x.shape
        extra, g3 = split_tokens(xp, x, plan, extra_tokens)
        t = _apply(xp, g3, oph)  # (B, ph*ki, w*C)
        t = xp.reshape(t, (b * oph.n_out, plan.grid[1], c))
        t = _apply(xp, t, opw)  # (B*ph*ki, pw*kj, C)
        t = xp.reshape(t, (b, oph.n_out * opw.n_out, c))
        axis = 1
    else:
        extra = None
        b, c, h, w = x.shape
        t = _apply(xp, xp.reshape(x, (b * c, h, w)), oph)  # (B*C, ph*ki, w)
        t = _apply(xp, xp.reshape(t, (b * c * oph.n_out, w)), opw)  # (B*C*ph*ki, pw*kj)
        t = xp.reshape(t, (b, c, oph.n_out * opw.n_out))
        axis = 2
    if gather:
        idx = constant(("gather", plan), plan.gather_index, xp, xp.int64, device_of(x))
        t = xp.take(t, idx, axis=axis)
    return extra, t


def reconstruct_raw(xp, coef, plan: PatchPlan, layout: str, gathered=None):
    """Inverse of :func:`project_raw` up to the factor ``n**2`` and the crop.

    Tokens: ``(B, M, C)`` -> ``(B, h*w, C)``; nchw: ``(B, C, M)`` -> ``(B, C, h, w)``.
    """
    if gathered is None:
        gathered = not plan.dense_rect
    _, _, rh, rw = plan.ops()
    h, w = plan.grid
    dev = device_of(coef)
    if layout == "tokens":
        b, m, c = coef.shape
        if gathered:
            idx = constant(("scatter", plan), plan.scatter_index, xp, xp.int64, dev)
            zero = xp.zeros((b, 1, c), dtype=coef.dtype, device=dev)
            coef = xp.take(xp.concat([coef, zero], axis=1), idx, axis=1)
        t = xp.reshape(coef, (b * rh.n_in, rw.n_in, c))
        t = _apply(xp, t, rw)  # (B*ph*ki, w, C)
        t = xp.reshape(t, (b, rh.n_in, w * c))
        t = _apply(xp, t, rh)  # (B, h, w*C)
        return xp.reshape(t, (b, h * w, c))
    b, c, m = coef.shape
    if gathered:
        idx = constant(("scatter", plan), plan.scatter_index, xp, xp.int64, dev)
        zero = xp.zeros((b, c, 1), dtype=coef.dtype, device=dev)
        coef = xp.take(xp.concat([coef, zero], axis=2), idx, axis=2)
    t = _apply(xp, xp.reshape(coef, (b * c * rh.n_in, rw.n_in)), rw)  # (B*C*ph*ki, w)
    t = _apply(xp, xp.reshape(t, (b * c, rh.n_in, w)), rh)  # (B*C, h, w)
    return xp.reshape(t, (b, c, h, w))


# ---------------------------------------------------------------------------
# public functions


def _prepare(x, grid, patch, bases, pad, extra_tokens, layout, name="x"):
    check_choice(layout, "layout", LAYOUTS)
    xp, x = as_float_array(x, name)
    g = resolve_grid(x, grid, layout, name)
    plan = make_plan(g, patch, bases, pad)
    if layout == "tokens":
        e = check_tokens(x, plan.grid, extra_tokens, name)
    else:
        e = 0
        check_nchw(x, g, extra_tokens, name)
    return xp, x, plan, e


def project(x, *, grid=None, patch=8, bases="lp_l1:6", pad="reflect", extra_tokens=0, layout="tokens"):
    """Coefficients of every patch of a token grid on the selected basis images.

    For each batch item, patch and channel, ``c_ij = sum_{u,v} B[i, j][u, v] Z[u, v]``
    over the (padded) ``n x n`` patch ``Z`` (SPEC section 5, unnormalized).

    Parameters
    ----------
    x : array, shape (B, e + h*w, C) or (B, C, H, W)
        Tokens (``layout="tokens"``, the ``h x w`` grid in row-major order after
        ``e`` extra tokens) or feature maps (``layout="nchw"``).
    grid : (int, int), optional
        Token grid ``(h, w)``; required for tokens, defaults to ``(H, W)`` for nchw.
    patch : int, optional
        Patch size ``n``, a power of two; default 8.
    bases : str, sequence of pairs or BasisSet, optional
        Basis selection (see :func:`select_bases`); default ``"lp_l1:6"``.
    pad : {"reflect", "zero", "none"}, optional
        Padding of grids that ``n`` does not divide; default ``"reflect"``.
    extra_tokens : int, optional
        Number ``e`` of leading non-grid tokens (tokens layout); they are ignored.
    layout : {"tokens", "nchw"}, optional
        Default ``"tokens"``.

    Returns
    -------
    coef : array, shape (B, P, r, C) or (B, C, P, r)
        ``P = ceil(h/n) * ceil(w/n)`` patches in row-major order; the ``r``
        bases in the canonical order of ``BasisSet.indices``.  Same dtype,
        namespace and device as ``x``.

    Raises
    ------
    ValueError
        On shape/grid mismatches, a bad ``patch``, ``pad``, ``layout`` or
        ``bases``, or padding the grid does not allow.
    TypeError
        If ``x`` is not a real floating (or integer) array.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import project
    >>> x = np.ones((1, 16, 1))  # one channel, a 4x4 grid of ones
    >>> project(x, grid=(4, 4), patch=4, bases="lp_l1:2")[0, 0, :, 0]
    array([16.,  0.,  0.])
    """
    xp, x, plan, e = _prepare(x, grid, patch, bases, pad, extra_tokens, layout)
    _, coef = project_raw(xp, x, plan, layout, e, gather=True)
    pcount, r = plan.num_patches, plan.rank
    if layout == "tokens":
        return xp.reshape(coef, (x.shape[0], pcount, r, x.shape[2]))
    return xp.reshape(coef, (x.shape[0], x.shape[1], pcount, r))


def reconstruct(coef, *, grid, patch=8, bases="lp_l1:6", pad="reflect", layout="tokens"):
    """Grid values from patch coefficients: ``crop(sum_k B_k c_k) / n**2``.

    Parameters
    ----------
    coef : array, shape (B, P, r, C) or (B, C, P, r)
        Coefficients as returned by :func:`project`.
    grid : (int, int)
        Token grid ``(h, w)``.
    patch, bases, pad, layout
        As for :func:`project`.

    Returns
    -------
    z : array, shape (B, h*w, C) or (B, C, h, w)
        Grid tokens only (no extra tokens).  ``reconstruct(project(x))`` is the
        projector applied to the padded grid, then cropped; on a divisible grid
        with every basis selected it returns the grid part of ``x``.

    Raises
    ------
    ValueError
        If ``coef`` does not have the shape the plan implies.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import project, reconstruct
    >>> x = np.arange(16.0).reshape(1, 16, 1)
    >>> c = project(x, grid=(4, 4), patch=4, bases="lp_linf:4")
    >>> bool(np.allclose(reconstruct(c, grid=(4, 4), patch=4, bases="lp_linf:4"), x))
    True
    """
    check_choice(layout, "layout", LAYOUTS)
    xp, coef = as_float_array(coef, "coef")
    plan = make_plan(grid, patch, bases, pad)
    pcount, r = plan.num_patches, plan.rank
    if coef.ndim != 4:
        raise ValueError(f"coef must be 4-D, got shape {tuple(coef.shape)}")
    b = coef.shape[0]
    if layout == "tokens":
        if tuple(coef.shape[1:3]) != (pcount, r):
            raise ValueError(f"coef must have shape (B, {pcount}, {r}, C) for this plan, got {tuple(coef.shape)}")
        c = coef.shape[3]
        flat = xp.reshape(coef, (b, pcount * r, c))
    else:
        if tuple(coef.shape[2:]) != (pcount, r):
            raise ValueError(f"coef must have shape (B, C, {pcount}, {r}) for this plan, got {tuple(coef.shape)}")
        c = coef.shape[1]
        flat = xp.reshape(coef, (b, c, pcount * r))
    out = reconstruct_raw(xp, flat, plan, layout, gathered=True)
    n2 = plan.patch * plan.patch
    return out / xp.asarray(n2, dtype=out.dtype, device=device_of(out))


def apply_projector(x, *, grid=None, patch=8, bases="lp_l1:6", pad="reflect", extra_tokens=0, layout="tokens"):
    """Apply the patch projector: ``crop(P pad(x))`` on the grid, extra tokens unchanged.

    ``P`` is the orthogonal projector onto the span of the selected basis images
    in every patch of the padded grid (``P = P.T = P @ P``).

    Parameters
    ----------
    x : array, shape (B, e + h*w, C) or (B, C, H, W)
    grid, patch, bases, pad, extra_tokens, layout
        As for :func:`project`.

    Returns
    -------
    y : array, same shape, dtype, namespace and device as ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import apply_projector
    >>> x = np.array([[[1.0], [3.0], [5.0], [7.0]]])  # a 2x2 grid
    >>> apply_projector(x, grid=(2, 2), patch=2, bases="lp_l1:1")[0, :, 0]  # the patch mean
    array([4., 4., 4., 4.])
    """
    xp, x, plan, e = _prepare(x, grid, patch, bases, pad, extra_tokens, layout)
    extra, coef = project_raw(xp, x, plan, layout, e, scale=1.0 / (plan.patch * plan.patch))
    out = reconstruct_raw(xp, coef, plan, layout)
    if extra is not None:
        out = xp.concat([extra, out], axis=1)
    return out
