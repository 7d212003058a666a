"""Projection of token grids onto selected 2D Walsh–Hadamard bases (SPEC sections 4–5).

Padding, patch extraction, the 2D transform and the selection are folded into
small constant matrices, so the padded grid is never materialized and channels
never move.  Three kernels share them:

* **cache-blocked separable** (NumPy, tokens, ``order="internal"``: the
  backward passes).  A row operator ``(k_i, window)`` per patch row, then per
  selected vertical sequency ``i`` a column operator that keeps only the
  horizontal sequencies selected with it; the coefficients stay in the internal
  order ``(p, i, q, j)`` so no gather is needed.  Chunks of the batch go
  through both stages while their scratch sits in the L2 cache, every BLAS
  call is kept single-threaded (OpenBLAS threads thin products badly) and the
  chunks are spread over a few Python threads.
* **direct strip** (everything else when ``pw * r`` is small): one matrix per
  patch row maps a whole ``n``-row strip to the ``pw * r`` coefficients in
  canonical ``(p, q, k)`` order, a single batched product per strip that suits
  GPUs and the NCHW layout (read through a transposed view).  Its structural
  zeros would spread a NaN to the neighbouring patches of the strip, so results
  with non-finite values are recomputed with the separable operators.
* **separable + gather** (the general fallback, any namespace): row and column
  operators over the full rectangle of sequencies, then a gather of the pairs.

Reconstruction applies the transposed Walsh rows restricted to the interior of
each patch (the crop) in the reverse order.
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
from ._wht import _parallel as _wht_parallel

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
    numpy = isinstance(x3, np.ndarray)
    if op.uniform:
        m = op.mats[0]
        mat = constant(op.key + ("T",) if two_d else op.key, (lambda: m.T) if two_d else (lambda: m), xp, dt, dev)
        count = len(op.lo)
        kin = op.hi[0] - op.lo[0]
        if two_d:
            pre = x3.shape[0]
            a = xp.reshape(x3, (pre * count, kin))
            y = _np_matmul_rows(a, mat) if numpy else xp.matmul(a, mat)
            return xp.reshape(y, (pre, op.n_out))
        pre, _, post = x3.shape
        a = xp.reshape(x3, (pre * count, kin, post))
        y = _np_matmul_left(mat, a) if numpy else xp.matmul(mat, a)
        return xp.reshape(y, (pre, op.n_out, post))
    pieces = []
    for t, (lo, hi, m) in enumerate(zip(op.lo, op.hi, op.mats)):
        if two_d:
            mat = constant(op.key + (t, "T"), lambda m=m: m.T, xp, dt, dev)
            a = x3[:, lo:hi]
            pieces.append(_np_matmul_rows(a, mat) if numpy else xp.matmul(a, mat))
        else:
            mat = constant(op.key + (t,), lambda m=m: m, xp, dt, dev)
            a = x3[:, lo:hi, :]
            pieces.append(_np_matmul_left(mat, a) if numpy else xp.matmul(mat, a))
    return xp.concat(pieces, axis=1)


#: OpenBLAS hands a GEMM to several threads once ``m * n * k`` reaches twice its
#: threshold (``2 * 65536 * 4`` with the default build).  For the thin products of
#: the patch operators (``k <= n``) that only adds thread wake-ups, which cost
#: milliseconds on a busy machine; NumPy products are split below this size.
_MNK_SINGLE = 1 << 19


def _np_matmul_left(m, a):
    """``m @ a`` for stacked ``a`` of shape ``(S, K, N)``, split along ``N`` into single-threaded calls."""
    k_out, k_in = m.shape
    s, _, n = a.shape
    step = max(1, (_MNK_SINGLE - 1) // max(1, k_out * k_in))
    if n <= step:
        return np.matmul(m, a)
    out = np.empty((s, k_out, n), dtype=np.result_type(m, a))
    for c0 in range(0, n, step):
        np.matmul(m, a[:, :, c0 : c0 + step], out=out[:, :, c0 : c0 + step])
    return out


def _np_matmul_rows(a, m):
    """``a @ m`` for a 2D ``a`` of shape ``(M, K)``, split along ``M`` into single-threaded calls."""
    rows, k_in = a.shape
    step = max(1, (_MNK_SINGLE - 1) // max(1, k_in * m.shape[1]))
    if rows <= step:
        return np.matmul(a, m)
    out = np.empty((rows, m.shape[1]), dtype=np.result_type(a, m))
    for r0 in range(0, rows, step):
        np.matmul(a[r0 : r0 + step], m, out=out[r0 : r0 + step])
    return out


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

    Examples
    --------
    >>> from lbpcore import make_plan
    >>> plan = make_plan((14, 14), 8, "lp_l1:3")
    >>> plan.patches, plan.num_patches, plan.rank, plan.rect
    ((2, 2), 4, 6, (3, 3))
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


def _plan_key(plan: PatchPlan) -> tuple:
    """Hashable key that determines every operator of ``plan`` (independent of object identity)."""
    return (plan.grid, plan.patch, plan.pad, plan.basis.indices.tobytes())


def _fold(length: int, n: int, pad: str):
    """Per patch along one axis: ``(lo, hi, F, interior)``.

    ``F`` (``n x (hi - lo)``) maps the original samples ``lo .. hi-1`` to the ``n``
    padded samples of the patch (a 0/1 matrix; all-zero rows are zero padding);
    ``interior`` lists the patch positions that lie inside the grid.
    """
    count, before, _ = padding(length, n)
    out = []
    for p in range(count):
        src = np.arange(p * n, p * n + n) - before
        inside = (src >= 0) & (src < length)
        if pad == "reflect":
            src = np.where(src < 0, -src, src)
            src = np.where(src >= length, 2 * (length - 1) - src, src)
            valid = np.ones(n, dtype=bool)
        else:  # zero (and "none", where nothing is padded)
            valid = inside
        lo, hi = int(src[valid].min()), int(src[valid].max()) + 1
        f = np.zeros((n, hi - lo))
        u = np.nonzero(valid)[0]
        f[u, src[u] - lo] = 1.0
        out.append((lo, hi, f, np.nonzero(inside)[0]))
    return out


@dataclass(frozen=True, eq=False)
class _StripOps:
    """Direct operators on horizontal strips of patches (one strip per patch row ``p``).

    ``proj[p]`` (``pw*r x win_p*w``) maps the original rows ``win[p]`` of the grid
    (all columns, row-major) to the coefficients of the ``pw`` patches of row ``p``
    in ``(q, k)`` order: padding, the 2D transform and the selection in one matrix.
    ``rec[p]`` (``nint_p*w x pw*r``) maps them back to the grid rows ``out_rows[p]``
    (the crop of the padded strip).  ``uniform``: no padding along the rows, so
    every strip uses the same matrices on consecutive, equal windows.
    """

    uniform: bool
    win: tuple
    proj: tuple
    out_rows: tuple
    rec: tuple


@lru_cache(maxsize=128)
def _strip_ops(key: tuple, scale: float) -> _StripOps:
    (h, w), n, pad, raw = key
    idx = np.frombuffer(raw, dtype=np.int64).reshape(-1, 2)
    ii, jj = idx[:, 0], idx[:, 1]
    wal = _walsh_rows(n, range(n))  # (n, n), sequency order
    rows = _fold(h, n, pad)
    cols = _fold(w, n, pad)
    pw = len(cols)
    acol = np.zeros((pw, n, w))  # projection along the columns, padding folded in
    ccrop = np.zeros((pw, n, w))  # reconstruction along the columns, cropped
    for q, (lo, hi, f, inner) in enumerate(cols):
        acol[q, :, lo:hi] = wal @ f
        start = q * n - padding(w, n)[1]
        ccrop[q][:, start + inner] = wal[:, inner]
    acol = acol[:, jj, :]  # (pw, r, w)
    ccrop = ccrop[:, jj, :]
    win, proj, out_rows, rec = [], [], [], []
    before = padding(h, n)[1]
    for p, (lo, hi, f, inner) in enumerate(rows):
        arow = (wal @ f)[ii, :]  # (r, win)
        g = np.einsum("ks,qkt->qkst", arow, acol).reshape(pw * len(ii), (hi - lo) * w)
        win.append((lo, hi))
        proj.append(g * scale)
        rrow = wal[:, inner][ii, :]  # (r, nint)
        o = p * n - before + int(inner[0])
        out_rows.append((o, o + len(inner)))
        rec.append(np.einsum("ks,qkt->stqk", rrow, ccrop).reshape(len(inner) * w, pw * len(ii)))
    return _StripOps(h % n == 0, tuple(win), tuple(proj), tuple(out_rows), tuple(rec))


def _use_direct(plan: PatchPlan) -> bool:
    """Direct strip contraction (``2 pw r`` flops per element, one pass) or separable operators."""
    return plan.patches[1] * plan.rank <= _DIRECT_MAX


#: The direct strip contraction costs ``2 * pw * r`` flops per input element; above
#: this ``pw * r`` the separable row/column operators (a few flops per element but
#: more passes over memory) are used instead.
_DIRECT_MAX = 128


def _token_major(xp, x, layout, e=0):
    """Grid part of ``x`` as ``(B, h*w, C)`` (a transposed view for NCHW on NumPy)."""
    if layout == "tokens":
        return x if e == 0 else x[:, e:, :]
    b, c, h, w = x.shape
    return xp.permute_dims(xp.reshape(x, (b, c, h * w)), (0, 2, 1))


def _project_direct(xp, x, plan, layout, e, scale, out):
    """Coefficients ``(B, M, C)`` in ``(p, q, k)`` order; NumPy writes into ``out`` if given."""
    ops = _strip_ops(_plan_key(plan), float(scale))
    h, w = plan.grid
    ph, pw = plan.patches
    r = plan.rank
    n = plan.patch
    numpy = isinstance(x, np.ndarray)
    dt = x.dtype
    dev = device_of(x)
    key = ("strip", _plan_key(plan), float(scale))
    if layout == "tokens":
        b, _, c = x.shape
    else:
        b, c = x.shape[:2]
    if numpy:
        if out is None:
            out = np.empty((b, ph * pw * r, c), dtype=dt)
        xv = _token_major(np, x, layout, e)  # (B, h*w, C), possibly strided
        if ops.uniform:
            g = _np_const(key + (0,), ops.proj[0], dt)
            np.matmul(g, xv.reshape(b, ph, n * w, c), out=out.reshape(b, ph, pw * r, c))
        else:
            o4 = out.reshape(b, ph, pw * r, c)
            for p, (lo, hi) in enumerate(ops.win):
                g = _np_const(key + (p,), ops.proj[p], dt)
                np.matmul(g, xv[:, lo * w : hi * w, :], out=o4[:, p])
        return out
    if layout == "tokens":
        xv = x if e == 0 else x[:, e:, :]
        if ops.uniform:
            g = constant(key + (0,), lambda: ops.proj[0], xp, dt, dev)
            y = xp.matmul(g, xp.reshape(xv, (b, ph, n * w, c)))
            return xp.reshape(y, (b, ph * pw * r, c))
        pieces = []
        for p, (lo, hi) in enumerate(ops.win):
            g = constant(key + (p,), lambda p=p: ops.proj[p], xp, dt, dev)
            pieces.append(xp.matmul(g, xv[:, lo * w : hi * w, :]))
        return xp.concat(pieces, axis=1)
    # NCHW, generic: (B, ph, C, n*w) @ G.T, then channels last
    x3 = xp.reshape(x, (b, c, h * w))
    if ops.uniform:
        gt = constant(key + (0, "T"), lambda: ops.proj[0].T, xp, dt, dev)
        y = xp.matmul(xp.permute_dims(xp.reshape(x3, (b, c, ph, n * w)), (0, 2, 1, 3)), gt)  # (B, ph, C, pw*r)
        y = xp.permute_dims(y, (0, 1, 3, 2))
        return xp.reshape(y, (b, ph * pw * r, c))
    pieces = []
    for p, (lo, hi) in enumerate(ops.win):
        gt = constant(key + (p, "T"), lambda p=p: ops.proj[p].T, xp, dt, dev)
        y = xp.matmul(x3[:, :, lo * w : hi * w], gt)  # (B, C, pw*r)
        pieces.append(xp.permute_dims(y, (0, 2, 1)))
    return xp.concat(pieces, axis=1)


def _reconstruct_direct(xp, coef, plan, layout, out):
    """Grid ``(B, h*w, C)`` (tokens) or ``(B, C, h, w)`` from ``(B, M, C)`` coefficients in canonical order."""
    ops = _strip_ops(_plan_key(plan), 1.0)
    h, w = plan.grid
    ph, pw = plan.patches
    r = plan.rank
    n = plan.patch
    b, _, c = coef.shape
    dt = coef.dtype
    dev = device_of(coef)
    key = ("strip", _plan_key(plan), 1.0)
    c4 = xp.reshape(coef, (b, ph, pw * r, c))
    if isinstance(coef, np.ndarray):
        if out is None:
            out = np.empty((b, h * w, c) if layout == "tokens" else (b, c, h, w), dtype=dt)
        if layout == "tokens":
            if ops.uniform:
                rm = _np_const(key + ("rec", 0), ops.rec[0], dt)
                np.matmul(rm, c4, out=out.reshape(b, ph, n * w, c))
            else:
                for p, (lo, hi) in enumerate(ops.out_rows):
                    rm = _np_const(key + ("rec", p), ops.rec[p], dt)
                    np.matmul(rm, c4[:, p], out=out[:, lo * w : hi * w, :])
            return out
        # NCHW: out^T = coef^T @ R^T writes rows of (C, strip) directly
        o3 = out.reshape(b, c, h * w)
        ct = c4.transpose(0, 1, 3, 2)  # (B, ph, C, pw*r)
        if ops.uniform:
            rt = _np_const(key + ("rec", 0, "T"), ops.rec[0].T, dt)
            np.matmul(ct, rt, out=o3.reshape(b, c, ph, n * w).transpose(0, 2, 1, 3))
        else:
            for p, (lo, hi) in enumerate(ops.out_rows):
                rt = _np_const(key + ("rec", p, "T"), ops.rec[p].T, dt)
                np.matmul(ct[:, p], rt, out=o3[:, :, lo * w : hi * w])
        return out
    if layout == "tokens":
        if ops.uniform:
            rm = constant(key + ("rec", 0), lambda: ops.rec[0], xp, dt, dev)
            return xp.reshape(xp.matmul(rm, c4), (b, h * w, c))
        pieces = []
        for p in range(ph):
            rm = constant(key + ("rec", p), lambda p=p: ops.rec[p], xp, dt, dev)
            pieces.append(xp.matmul(rm, c4[:, p, :, :]))
        return xp.concat(pieces, axis=1)
    ct = xp.permute_dims(c4, (0, 1, 3, 2))  # (B, ph, C, pw*r)
    if ops.uniform:
        rt = constant(key + ("rec", 0, "T"), lambda: ops.rec[0].T, xp, dt, dev)
        y = xp.matmul(ct, rt)  # (B, ph, C, n*w)
        y = xp.permute_dims(y, (0, 2, 1, 3))
        return xp.reshape(y, (b, c, h, w))
    pieces = []
    for p in range(ph):
        rt = constant(key + ("rec", p, "T"), lambda p=p: ops.rec[p].T, xp, dt, dev)
        pieces.append(xp.matmul(ct[:, p, :, :], rt))  # (B, C, nint*w)
    return xp.reshape(xp.concat(pieces, axis=2), (b, c, h, w))


_np_cache: dict = {}


def _np_const(key, arr, dtype):
    """NumPy copy of a float64 operator in ``dtype``, cached (read-only)."""
    ck = (key, dtype.str)
    hit = _np_cache.get(ck)
    if hit is None:
        if len(_np_cache) > 1024:
            _np_cache.clear()
        hit = np.ascontiguousarray(arr, dtype=dtype)
        hit.flags.writeable = False
        _np_cache[ck] = hit
    return hit


def _project_separable(xp, x, plan, layout, e, scale):
    """Separable row/column operators, then a gather: ``(B, M, C)`` in ``(p, q, k)`` order."""
    oph, opw, _, _ = plan.ops(scale)
    if layout == "tokens":
        b, _, c = x.shape
        _, g3 = split_tokens(xp, x, plan, e)
        t = _apply(xp, g3, oph)  # (B, ph*ki, w*C)
        t = xp.reshape(t, (b * oph.n_out, plan.grid[1], c))
        t = _apply(xp, t, opw)  # (B*ph*ki, pw*kj, C)
        t = xp.reshape(t, (b, oph.n_out * opw.n_out, c))
        axis = 1
    else:
        b, c, h, w = x.shape
        t = _apply(xp, xp.reshape(x, (b * c, h, w)), oph)  # (B*C, ph*ki, w)
        t = _apply(xp, xp.reshape(t, (b * c * oph.n_out, w)), opw)  # (B*C*ph*ki, pw*kj)
        t = xp.reshape(t, (b, c, oph.n_out * opw.n_out))
        axis = 2
    idx = constant(("gather", _plan_key(plan)), plan.gather_index, xp, xp.int64, device_of(x))
    t = xp.take(t, idx, axis=axis)
    if layout == "nchw":
        t = xp.permute_dims(t, (0, 2, 1))
    return t


def _reconstruct_separable(xp, coef, plan, layout):
    _, _, rh, rw = plan.ops()
    h, w = plan.grid
    dev = device_of(coef)
    b, m, c = coef.shape
    idx = constant(("scatter", _plan_key(plan)), plan.scatter_index, xp, xp.int64, dev)
    zero = xp.zeros((b, 1, c), dtype=coef.dtype, device=dev)
    coef = xp.take(xp.concat([coef, zero], axis=1), idx, axis=1)
    if layout == "tokens":
        t = xp.reshape(coef, (b * rh.n_in, rw.n_in, c))
        t = _apply(xp, t, rw)  # (B*ph*ki, w, C)
        t = xp.reshape(t, (b, rh.n_in, w * c))
        t = _apply(xp, t, rh)  # (B, h, w*C)
        return xp.reshape(t, (b, h * w, c))
    coef = xp.permute_dims(coef, (0, 2, 1))
    t = _apply(xp, xp.reshape(coef, (b * c * rh.n_in, rw.n_in)), rw)  # (B*C*ph*ki, w)
    t = _apply(xp, xp.reshape(t, (b * c, rh.n_in, w)), rh)  # (B*C, h, w)
    return xp.reshape(t, (b, c, h, w))


@dataclass(frozen=True, eq=False)
class _SepOps:
    """Separable operators for the cache-blocked NumPy path (tokens layout).

    Coefficients are kept in the *internal* order ``(p, i, q, j)``: patch row, then
    each selected vertical sequency ``i`` (the ``t``-th of ``rows``), then patch
    column, then the horizontal sequencies ``cols[t]`` selected with that ``i``.
    Every coefficient row is a selected basis, so no gather is needed; the
    backward GEMMs do not care about the order of their rows.
    """

    rows: tuple  # selected vertical sequencies I (k_i of them)
    cols: tuple  # per t: selected horizontal sequencies J_t with I[t]
    offsets: tuple  # per t: first row of J_t's block inside a patch-row block
    block: int  # rows per patch row: pw * r
    row_uniform: bool
    col_uniform: bool
    prow: tuple  # per p: (lo, hi, (k_i, hi-lo) matrix), scaled
    pcol: tuple  # per t: per q: (lo, hi, (|J_t|, hi-lo) matrix)
    rrow: tuple  # per p: (lo, hi, (hi-lo, k_i) matrix): output grid rows
    rcol: tuple  # per t: per q: (lo, hi, (hi-lo, |J_t|) matrix): output grid columns


@lru_cache(maxsize=128)
def _sep_ops(key: tuple, scale: float) -> _SepOps:
    (h, w), n, pad, raw = key
    idx = np.frombuffer(raw, dtype=np.int64).reshape(-1, 2)
    rows = tuple(int(v) for v in np.unique(idx[:, 0]))
    cols = tuple(tuple(int(j) for j in np.sort(idx[idx[:, 0] == i, 1])) for i in rows)
    wal = _walsh_rows(n, range(n))
    pw = padding(w, n)[0]
    offsets, off = [], 0
    for js in cols:
        offsets.append(off)
        off += pw * len(js)
    wr = wal[list(rows)]
    prow, rrow = [], []
    before = padding(h, n)[1]
    for p, (lo, hi, f, inner) in enumerate(_fold(h, n, pad)):
        prow.append((lo, hi, (wr @ f) * scale))
        o = p * n - before + int(inner[0])
        rrow.append((o, o + len(inner), wr[:, inner].T.copy()))
    pcol, rcol = [], []
    cbefore = padding(w, n)[1]
    folds = _fold(w, n, pad)
    for js in cols:
        wc = wal[list(js)]
        pc, rc = [], []
        for q, (lo, hi, f, inner) in enumerate(folds):
            pc.append((lo, hi, wc @ f))
            o = q * n - cbefore + int(inner[0])
            rc.append((o, o + len(inner), wc[:, inner].T.copy()))
        pcol.append(tuple(pc))
        rcol.append(tuple(rc))
    return _SepOps(rows, cols, tuple(offsets), off, h % n == 0, w % n == 0,
                   tuple(prow), tuple(pcol), tuple(rrow), tuple(rcol))


#: Working-set target of one batch chunk of the cache-blocked NumPy path (bytes).
_CHUNK_BYTES = 1 << 20


def _chunks(b, ph, per_p):
    """Batch and patch-row chunk sizes so that a chunk's scratch is about ``_CHUNK_BYTES``."""
    nb = max(1, _CHUNK_BYTES // max(1, per_p * ph))
    if nb >= 2:
        return min(nb, b), ph
    return 1, max(1, min(ph, _CHUNK_BYTES // max(1, per_p)))


def _mm(a, b, out, axis_len, k):
    """``np.matmul(a, b, out=out)`` split along the last axis so every BLAS call is single-threaded."""
    step = max(1, (_MNK_SINGLE - 1) // max(1, a.shape[-2] * k))
    if axis_len <= step:
        np.matmul(a, b, out=out)
        return
    for c0 in range(0, axis_len, step):
        np.matmul(a, b[..., c0 : c0 + step], out=out[..., c0 : c0 + step])


def _mm_left(a, b, out):
    """``a @ b`` (``a`` a small 2D operator, ``b`` stacked) into ``out``, single-threaded calls."""
    _mm(a, b, out, b.shape[-1], a.shape[-1])


def _sep_mats(plan, ops, scale, dt, row_ops, col_ops, rtag, ctag):
    """NumPy constants of one direction of the cache-blocked kernels: per-patch-row
    matrices and, per selected vertical sequency, per-patch-column matrices."""
    key = ("sep", _plan_key(plan), scale)
    rmats = [_np_const(key + (rtag, p), m, dt) for p, (_, _, m) in enumerate(row_ops)]
    cmats = [[_np_const(key + (ctag, t, q), m, dt) for q, (_, _, m) in enumerate(cq)]
             for t, cq in enumerate(col_ops)]
    return rmats, cmats


def _sep_tiles(ops, plan, bs, be, b, inner, dt):
    """Tiles ``(b0, b1, p0, p1, scratch)`` of batch items ``[bs, be)`` and patch rows for
    the cache-blocked kernels, with an L2-sized scratch ``(b1-b0, p1-p0) + inner``
    (``inner = (k_i, w*C)``) reused across tiles (one per worker)."""
    ph = plan.patches[0]
    nb, npp = _chunks(b, ph, inner[0] * inner[1] * np.dtype(dt).itemsize)
    if not ops.row_uniform:
        npp = 1
    scratch = np.empty((min(nb, be - bs), npp) + tuple(inner), dtype=dt)
    for b0 in range(bs, be, nb):
        b1 = min(be, b0 + nb)
        for p0 in range(0, ph, npp):
            p1 = min(ph, p0 + npp)
            yield b0, b1, p0, p1, scratch[: b1 - b0, : p1 - p0]


def _project_sep_np(x, plan, e, scale, out):
    """Cache-blocked separable projection of tokens into ``out`` ``(B, M, C)``, internal order."""
    ops = _sep_ops(_plan_key(plan), float(scale))
    dt = x.dtype
    b, _, c = x.shape
    h, w = plan.grid
    n = plan.patch
    ph, pw = plan.patches
    ki = len(ops.rows)
    wc = w * c
    xv = (x if e == 0 else x[:, e:, :]).reshape(b, h, wc)
    o4 = out.reshape(b, ph, ops.block, c)
    pmats, cmats = _sep_mats(plan, ops, float(scale), dt, ops.prow, ops.pcol, "r", "c")
    x4 = xv.reshape(b, ph, n, wc) if ops.row_uniform else None

    def work(bs, be):
        for b0, b1, p0, p1, t4 in _sep_tiles(ops, plan, bs, be, b, (ki, wc), dt):
            if ops.row_uniform:
                _mm_left(pmats[0], x4[b0:b1, p0:p1], t4)
            else:
                lo, hi, _ = ops.prow[p0]
                _mm_left(pmats[p0], xv[b0:b1, lo:hi][:, None], t4)
            t5 = t4.reshape(b1 - b0, p1 - p0, ki, w, c)
            for t, js in enumerate(ops.cols):
                kj = len(js)
                off = ops.offsets[t]
                dst = o4[b0:b1, p0:p1, off : off + pw * kj].reshape(b1 - b0, p1 - p0, pw, kj, c)
                src = t5[:, :, t]
                if ops.col_uniform:
                    _mm_left(cmats[t][0], src.reshape(b1 - b0, p1 - p0, pw, n, c), dst)
                else:
                    for q, (lo, hi, _) in enumerate(ops.pcol[t]):
                        _mm_left(cmats[t][q], src[:, :, lo:hi], dst[:, :, q])

    _parallel(work, b, x.nbytes)
    return out


def _reconstruct_sep_np(coef, plan, out):
    """Inverse of :func:`_project_sep_np` (crop, no ``1/n**2``): ``(B, M, C)`` -> ``out`` ``(B, h*w, C)``."""
    ops = _sep_ops(_plan_key(plan), 1.0)
    dt = coef.dtype
    b, _, c = coef.shape
    h, w = plan.grid
    n = plan.patch
    ph, pw = plan.patches
    ki = len(ops.rows)
    wc = w * c
    ov = out.reshape(b, h, wc)
    c4 = coef.reshape(b, ph, ops.block, c)
    rmats, cmats = _sep_mats(plan, ops, 1.0, dt, ops.rrow, ops.rcol, "R", "C")
    o4 = ov.reshape(b, ph, n, wc) if ops.row_uniform else None

    def work(bs, be):
        for b0, b1, p0, p1, t4 in _sep_tiles(ops, plan, bs, be, b, (ki, wc), dt):
            t5 = t4.reshape(b1 - b0, p1 - p0, ki, w, c)
            for t, js in enumerate(ops.cols):
                kj = len(js)
                off = ops.offsets[t]
                src = c4[b0:b1, p0:p1, off : off + pw * kj].reshape(b1 - b0, p1 - p0, pw, kj, c)
                dst = t5[:, :, t]
                if ops.col_uniform:
                    _mm_left(cmats[t][0], src, dst.reshape(b1 - b0, p1 - p0, pw, n, c))
                else:
                    for q, (lo, hi, _) in enumerate(ops.rcol[t]):
                        _mm_left(cmats[t][q], src[:, :, q], dst[:, :, lo:hi])
            if ops.row_uniform:
                _mm_left(rmats[0], t4, o4[b0:b1, p0:p1])
            else:
                lo, hi, _ = ops.rrow[p0]
                _mm_left(rmats[p0], t4[:, 0], ov[b0:b1, lo:hi])

    _parallel(work, b, b * h * wc * dt.itemsize)
    return out


#: Smallest input (bytes) for which the cache-blocked kernels split the batch over threads.
_PARALLEL_MIN_BYTES = 1 << 22


def _parallel(work, b, nbytes):
    """Run ``work(bs, be)`` over ``[0, b)``, split over the CPUs for inputs of at least
    ``_PARALLEL_MIN_BYTES`` (the thread pool of :mod:`lbpcore._wht`)."""
    if nbytes < _PARALLEL_MIN_BYTES:
        work(0, b)
        return
    _wht_parallel(work, b, nbytes)


def _internal_order(xp, x, layout) -> bool:
    """Whether ``order="internal"`` means the cache-blocked ``(p, i, q, j)`` order here."""
    return layout == "tokens" and isinstance(x, np.ndarray)


def _all_finite(xp, a) -> bool:
    """Whether ``a`` holds only finite values (one reduction; an overflowing sum says no).

    The direct strip operators hold structural zeros between the patches of a
    strip, and ``0 * nan`` is nan: a non-finite value would leak into the
    neighbouring patches.  When this returns False the separable operators, which
    never mix patches, are used instead.
    """
    if isinstance(a, np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):
            return bool(np.isfinite(np.sum(a)))
    return bool(xp.all(xp.isfinite(xp.sum(a))))


def project_raw(xp, x, plan: PatchPlan, layout: str, extra_tokens: int = 0, scale: float = 1.0,
                keep_extra: bool = False, order: str = "canonical"):
    """Coefficients of the grid part of ``x`` (no validation), channels last.

    Returns ``(extra, coef)``: ``coef`` is ``(B, M, C)`` for both layouts, ``M = P * r``,
    each coefficient multiplied by ``scale``; ``extra`` is ``x[:, :e]`` (a view) or None.
    ``order="canonical"``: ``(p, q, k)`` (patches row-major, bases in canonical
    order).  ``order="internal"``: whatever order is fastest here; only
    :func:`reconstruct_raw` with ``order="internal"`` (and row-order-agnostic
    products) may consume it.  With ``keep_extra=True`` returns ``(None, full)``
    where ``full`` is ``(B, e + M, C)``: the extra tokens (unscaled) followed by
    the coefficients, so that one GEMM covers both.
    """
    e = extra_tokens if layout == "tokens" else 0
    extra = None if e == 0 else x[:, :e, :]
    numpy = isinstance(x, np.ndarray)
    if numpy:
        b, c = (x.shape[0], x.shape[2]) if layout == "tokens" else x.shape[:2]
        m = plan.num_patches * plan.rank
        full = np.empty((b, (e if keep_extra else 0) + m, c), dtype=x.dtype)
        grid = full
        if keep_extra and e:
            full[:, :e] = extra
            grid = full[:, e:]
        if order == "internal" and _internal_order(xp, x, layout):
            _project_sep_np(x, plan, e, scale, grid)
        elif _use_direct(plan):
            _project_direct(xp, x, plan, layout, e, scale, grid)
            if not _all_finite(xp, grid):
                grid[...] = _project_separable(xp, x, plan, layout, e, scale)
        else:
            grid[...] = _project_separable(xp, x, plan, layout, e, scale)
        return (None, full) if keep_extra else (extra, full)
    if _use_direct(plan):
        coef = _project_direct(xp, x, plan, layout, e, scale, None)
        if not _all_finite(xp, coef):
            coef = _project_separable(xp, x, plan, layout, e, scale)
    else:
        coef = _project_separable(xp, x, plan, layout, e, scale)
    if keep_extra:
        if e:
            coef = xp.concat([extra, coef], axis=1)
        return None, coef
    return extra, coef


def reconstruct_raw(xp, coef, plan: PatchPlan, layout: str, out=None, order: str = "canonical"):
    """Inverse of :func:`project_raw` up to the factor ``n**2`` and the crop.

    ``(B, M, C)`` -> tokens ``(B, h*w, C)`` or nchw ``(B, C, h, w)``; ``order`` as
    given to :func:`project_raw`.  NumPy only: the result is written into ``out``
    (a possibly strided view of the right shape) when given.
    """
    if order == "internal" and _internal_order(xp, coef, layout):
        if out is None:
            out = np.empty((coef.shape[0], plan.grid[0] * plan.grid[1], coef.shape[2]), dtype=coef.dtype)
        return _reconstruct_sep_np(coef, plan, out)
    if _use_direct(plan) and _all_finite(xp, coef):
        return _reconstruct_direct(xp, coef, plan, layout, out)
    res = _reconstruct_separable(xp, coef, plan, layout)
    if out is not None:
        out[...] = res
        return out
    return res


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
    _, coef = project_raw(xp, x, plan, layout, e)
    pcount, r = plan.num_patches, plan.rank
    if layout == "tokens":
        return xp.reshape(coef, (x.shape[0], pcount, r, x.shape[2]))
    return xp.reshape(xp.permute_dims(coef, (0, 2, 1)), (x.shape[0], x.shape[1], pcount, r))


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
        flat = xp.permute_dims(xp.reshape(coef, (b, c, pcount * r)), (0, 2, 1))
    out = reconstruct_raw(xp, flat, plan, layout)
    n2 = plan.patch * plan.patch
    if isinstance(out, np.ndarray):
        out *= out.dtype.type(1.0 / n2)  # a fresh array: scale in place (n2 is a power of two: exact)
        return out
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
    extra, coef = project_raw(xp, x, plan, layout, e, scale=1.0 / (plan.patch * plan.patch), order="internal")
    if isinstance(coef, np.ndarray) and extra is not None:
        out = np.empty(x.shape, dtype=x.dtype)
        out[:, :e] = extra
        reconstruct_raw(xp, coef, plan, layout, out=out[:, e:], order="internal")
        return out
    out = reconstruct_raw(xp, coef, plan, layout, order="internal")
    if extra is not None:
        out = xp.concat([extra, out], axis=1)
    return out
