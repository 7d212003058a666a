"""Patch plans: the grid, patch size, padding and basis of a projection (SPEC section 4).

Also the padding of one grid axis, folded into small 0/1 matrices (:func:`fold`),
which every projection kernel builds its operators from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .._bases import BasisSet, as_basis
from .._validation import (
    check_choice,
    check_grid,
    check_nchw,
    check_padding,
    check_patch,
    check_tokens,
    resolve_grid,
)

__all__ = ["PADS", "PatchFold", "PatchPlan", "fold", "make_plan", "padding", "plan_for", "plan_key"]

PADS = ("reflect", "zero", "none")


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


class PatchFold(NamedTuple):
    """One patch along one grid axis, padding folded in.

    ``matrix`` (``n x (hi - lo)``) maps the grid samples ``lo .. hi-1`` to the ``n``
    padded samples of the patch (a 0/1 matrix; all-zero rows are zero padding);
    ``interior`` lists the patch positions inside the grid, which cover the grid
    samples ``out_lo .. out_hi-1`` (the crop of the reconstruction).
    """

    lo: int
    hi: int
    matrix: np.ndarray
    interior: np.ndarray
    out_lo: int
    out_hi: int


def fold(length: int, n: int, pad: str) -> list[PatchFold]:
    """The :class:`PatchFold` of each patch along a grid axis of ``length`` samples."""
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
        interior = np.nonzero(inside)[0]
        out_lo = p * n - before + int(interior[0])
        out.append(PatchFold(lo, hi, f, interior, out_lo, out_lo + len(interior)))
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
        """Number ``P = ph * pw`` of patches."""
        return self.patches[0] * self.patches[1]

    @property
    def rank(self) -> int:
        """Number ``r`` of selected bases."""
        return self.basis.rank

    @property
    def dense_rect(self) -> bool:
        """True when the basis is a full rectangle of rows x columns (no gather needed)."""
        return self.rect[0] * self.rect[1] == self.basis.rank

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


def plan_key(plan: PatchPlan) -> tuple:
    """Hashable key that determines every operator of ``plan`` (independent of object identity)."""
    return (plan.grid, plan.patch, plan.pad, plan.basis.indices.tobytes())


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
    n = check_patch(patch, "patch")
    check_choice(pad, "pad", PADS)
    basis = as_basis(n, bases)
    for side, length in (("grid height", h), ("grid width", w)):
        _, before, after = padding(length, n)
        check_padding(pad, n, side, length, before, after)
    return _plan(h, w, n, pad, basis)


@lru_cache(maxsize=256)
def _plan(h, w, n, pad, basis):
    ph, pw = -(-h // n), -(-w // n)
    return PatchPlan((h, w), n, pad, basis, (ph, pw), (len(basis.rows), len(basis.cols)))


def plan_for(shape, grid, patch, bases, pad, extra_tokens, layout, name="x") -> tuple[PatchPlan, int]:
    """Validate an input of ``shape`` in ``layout`` and return its plan and extra-token count ``e``."""
    g = resolve_grid(shape, grid, layout, name)
    plan = make_plan(g, patch, bases, pad)
    if layout == "tokens":
        return plan, check_tokens(shape, plan.grid, extra_tokens, name)
    check_nchw(shape, g, extra_tokens, name)
    return plan, 0
