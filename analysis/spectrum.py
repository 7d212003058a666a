"""Walsh–Hadamard energy spectra of token grids and the energy a basis selection keeps.

For each batch item, patch and channel of a token grid (padded as in
:func:`lbpcore.project`), :func:`full_coefficients` gives the ``n*n``
unnormalized coefficients on *every* 2D Walsh basis image.  The **energy map**
sums their squares (the L2 map), the **L1 map** their absolute values, over
batch, patches and channels (or per channel / per patch).  By Parseval the
energy a selection keeps is the sum of the map over the selected pairs
(:func:`energy_kept`); the identity and what it means are explained in
:ref:`method-energy`.

Everything is accumulated in float64 whatever the input dtype;
:class:`SpectrumAccumulator` processes a dataset chunk by chunk in bounded
memory (a memory-mapped array can be passed whole).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import lbpcore

from .metrics import energy_fraction

__all__ = [
    "PER_CHOICES",
    "POLICIES",
    "SpectrumResult",
    "SpectrumAccumulator",
    "energy_maps",
    "energy_kept",
    "energy_curves",
    "full_basis",
    "full_coefficients",
]

#: Breakdowns of :func:`energy_maps` (``per=``): none, per channel, per patch.
PER_CHOICES = (None, "channel", "patch")
#: Selection policies :func:`energy_curves` knows.
POLICIES = ("lp_l1", "lp_linf", "energy", "energy_l1", "random")

#: Elements of float64 coefficients processed at once (32 MiB).
_MAX_ELEMENTS = 1 << 22


def full_basis(n: int) -> lbpcore.BasisSet:
    """All ``n*n`` Walsh basis images, in canonical ``(i + j, i, j)`` order.

    Parameters
    ----------
    n : int
        Patch size, a power of two.

    Returns
    -------
    lbpcore.BasisSet
        ``lp_linf:n``; ``indices[k]`` is the ``(i, j)`` of coefficient ``k``.

    Examples
    --------
    >>> from analysis.spectrum import full_basis
    >>> full_basis(2).indices.tolist()
    [[0, 0], [0, 1], [1, 0], [1, 1]]
    """
    return lbpcore.select_bases(n, f"lp_linf:{n}")


def full_coefficients(x, *, grid=None, patch=8, pad="reflect", extra_tokens=0, layout="tokens"):
    """Unnormalized coefficients of every padded patch on all ``n*n`` Walsh basis images.

    Parameters
    ----------
    x : array_like, shape (B, e + h*w, C) or (B, C, H, W)
        Converted to float64.
    grid, patch, pad, extra_tokens, layout
        As for :func:`lbpcore.project` (``grid`` is required for tokens).

    Returns
    -------
    ndarray of float64, shape (B, P, n*n, C)
        ``[b, p, k, c]``: coefficient of patch ``p`` (row-major over the padded
        grid) of channel ``c`` on basis ``full_basis(n).indices[k]``, for both
        layouts.  Divided by ``n``, these are the patch vectors in an
        orthonormal basis.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.spectrum import full_coefficients
    >>> c = full_coefficients(np.ones((2, 3, 8, 8)), patch=4, layout="nchw")
    >>> c.shape, float(c[0, 0, 0, 0]), float(abs(c[..., 1:, :]).max())
    ((2, 4, 16, 3), 16.0, 0.0)
    """
    basis = full_basis(patch)
    coef = lbpcore.project(np.asarray(x, dtype=np.float64), grid=grid, patch=basis.patch, bases=basis, pad=pad,
                           extra_tokens=extra_tokens, layout=layout)
    return coef.transpose(0, 2, 3, 1) if layout == "nchw" else coef


@dataclass(frozen=True, eq=False)
class SpectrumResult:
    """Energy spectrum of a token grid on the 2D Walsh basis.

    Attributes
    ----------
    patch : int
        Patch size ``n``.
    grid : (int, int)
        Token grid ``(h, w)``.
    l2 : ndarray of float64, shape (n, n), (C, n, n) or (P, n, n)
        ``l2[..., i, j]``: sum of squared unnormalized coefficients of basis
        ``(i, j)`` (``i`` vertical, ``j`` horizontal sequency), summed over
        batch, patches and channels, or kept per channel / per patch
        according to :attr:`per`.
    l1 : ndarray of float64, same shape as ``l2``
        Sum of absolute coefficients.
    total_energy : float
        ``l2.sum() / n**2``: the squared Frobenius norm of the padded grid
        (of the grid itself when ``n`` divides it).  Extra tokens excluded.
    count : int
        Number of patch-channel samples summed, ``B * P * C``.
    per : {None, "channel", "patch"}
        Breakdown of ``l2`` and ``l1``.
    batch : int
        Number of batch items seen.
    pad, layout : str
        As passed to :func:`energy_maps`.
    extra_tokens : int

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.spectrum import energy_maps
    >>> res = energy_maps(np.ones((2, 64, 3)), grid=(8, 8), patch=8)
    >>> float(res.energy_map[0, 0]), float(res.total_energy), int(res.count)
    (24576.0, 384.0, 6)
    """

    patch: int
    grid: tuple
    l2: np.ndarray = field(repr=False)
    l1: np.ndarray = field(repr=False)
    total_energy: float
    count: int
    per: str | None = None
    batch: int = 0
    pad: str = "reflect"
    layout: str = "tokens"
    extra_tokens: int = 0

    @property
    def energy_map(self) -> np.ndarray:
        """Total L2 map, shape (n, n) (summed over the :attr:`per` axis if any)."""
        return self.l2 if self.l2.ndim == 2 else self.l2.sum(axis=0)

    @property
    def l1_map(self) -> np.ndarray:
        """Total L1 map, shape (n, n)."""
        return self.l1 if self.l1.ndim == 2 else self.l1.sum(axis=0)

    @property
    def fractions(self) -> np.ndarray:
        """``energy_map / energy_map.sum()``, shape (n, n) (zeros for an all-zero map)."""
        m = self.energy_map
        s = m.sum()
        return m / s if s > 0 else np.zeros_like(m)

    def kept(self, bases) -> float:
        """Fraction of energy kept by a selection; see :func:`energy_kept`."""
        return energy_kept(self, bases)

    def curves(self, **kwargs) -> dict:
        """Energy kept versus rank; see :func:`energy_curves`."""
        return energy_curves(self, **kwargs)

    def to_dict(self) -> dict:
        """JSON-serializable summary.

        Returns
        -------
        dict
            ``patch``, ``grid`` ``[h, w]``, ``per``, ``energy_map`` and
            ``l1_map`` (total ``n x n`` nested lists), ``total_energy``,
            ``count``, ``batch``, ``pad``, ``layout``, ``extra_tokens``, and
            with a breakdown ``energy_maps_per`` / ``l1_maps_per``
            (``K x n x n`` lists).
        """
        d = {
            "patch": int(self.patch),
            "grid": [int(v) for v in self.grid],
            "per": self.per,
            "energy_map": self.energy_map.tolist(),
            "l1_map": self.l1_map.tolist(),
            "total_energy": float(self.total_energy),
            "count": int(self.count),
            "batch": int(self.batch),
            "pad": self.pad,
            "layout": self.layout,
            "extra_tokens": int(self.extra_tokens),
        }
        if self.per is not None:
            d["energy_maps_per"] = self.l2.tolist()
            d["l1_maps_per"] = self.l1.tolist()
        return d


class SpectrumAccumulator:
    """Streaming energy spectrum: feed batch chunks, read one result.

    Memory is bounded by the ``(n, n)`` (or ``(K, n, n)``) float64 sums plus
    one sub-batch of coefficients (at most about 32 MiB), whatever the number
    or size of the chunks.  The result equals :func:`energy_maps` over the
    concatenation of all chunks along the batch axis (up to float64 rounding
    of the summation order).

    Parameters
    ----------
    patch : int, optional
        Patch size ``n``, a power of two; default 8.
    grid : (int, int), optional
        Token grid ``(h, w)``; required for ``layout="tokens"``, taken from the
        first chunk for ``"nchw"``.
    pad : {"reflect", "zero", "none"}, optional
        Padding, as in :func:`lbpcore.project`; default ``"reflect"``.
    extra_tokens : int, optional
        Leading non-grid tokens, ignored; default 0.
    layout : {"tokens", "nchw"}, optional
        Default ``"tokens"``.
    per : {None, "channel", "patch"}, optional
        Breakdown of the maps; default None (one ``(n, n)`` map).

    Attributes
    ----------
    batch : int
        Batch items seen so far.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.spectrum import SpectrumAccumulator, energy_maps
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((6, 64, 2))
    >>> acc = SpectrumAccumulator(4, grid=(8, 8))
    >>> for chunk in np.split(x, 3):
    ...     _ = acc.update(chunk)
    >>> bool(np.allclose(acc.result().l2, energy_maps(x, grid=(8, 8), patch=4).l2))
    True
    """

    def __init__(self, patch=8, *, grid=None, pad="reflect", extra_tokens=0, layout="tokens", per=None):
        if per not in PER_CHOICES:
            raise ValueError(f"per must be one of None, 'channel', 'patch', got {per!r}")
        if layout not in ("tokens", "nchw"):
            raise ValueError(f"layout must be one of 'tokens', 'nchw', got {layout!r}")
        if pad not in ("reflect", "zero", "none"):
            raise ValueError(f"pad must be one of 'reflect', 'zero', 'none', got {pad!r}")
        self.basis = full_basis(patch)
        self.patch = self.basis.patch
        if grid is not None:
            grid = tuple(lbpcore.make_plan(grid, self.patch, self.basis, pad).grid)
        elif layout == "tokens":
            raise ValueError("grid=(h, w) is required for layout='tokens'")
        self.grid = grid
        self.pad = pad
        self.extra_tokens = extra_tokens
        self.layout = layout
        self.per = per
        self.batch = 0
        self._channels = None
        self._l2 = None
        self._l1 = None

    def update(self, chunk):
        """Add a chunk of batch items.

        Parameters
        ----------
        chunk : array_like, shape (b, e + h*w, C) or (b, C, H, W)
            Any real numeric dtype (converted to float64 a sub-batch at a
            time); ``C`` must stay the same across chunks.  A chunk with
            ``b = 0`` is ignored.

        Returns
        -------
        SpectrumAccumulator
            ``self``, so calls can be chained.

        Raises
        ------
        ValueError
            On a shape that does not fit the grid, or a channel count or
            spatial shape that differs from earlier chunks.
        """
        if not hasattr(chunk, "shape") or not hasattr(chunk, "__getitem__"):
            chunk = np.asarray(chunk)
        if len(chunk.shape) < 1:
            raise ValueError(f"chunk must be 3-D (tokens) or 4-D (nchw), got shape {tuple(chunk.shape)}")
        b = int(chunk.shape[0])
        if b == 0:
            return self
        per_item = max(1, int(np.prod(chunk.shape[1:])) * 2)  # padding at most doubles the size
        step = max(1, _MAX_ELEMENTS // per_item)
        for start in range(0, b, step):
            self._add(np.asarray(chunk[start:start + step], dtype=np.float64))
        return self

    def _add(self, x):
        coef = full_coefficients(x, grid=self.grid, patch=self.patch, pad=self.pad, extra_tokens=self.extra_tokens,
                                 layout=self.layout)  # (b, P, K, C)
        if self.grid is None:  # nchw: the grid is the spatial shape
            self.grid = (int(x.shape[2]), int(x.shape[3]))
        c = coef.shape[3]
        if self._channels is None:
            self._channels = c
        elif c != self._channels:
            raise ValueError(f"chunk has {c} channels but earlier chunks had {self._channels}")
        with np.errstate(over="ignore"):  # an overflow is reported by result(), in words
            sq = coef * coef
            ab = np.abs(coef)
            if self.per is None:
                s2, s1 = sq.sum(axis=(0, 1, 3)), ab.sum(axis=(0, 1, 3))  # (K,)
            elif self.per == "channel":
                s2, s1 = sq.sum(axis=(0, 1)).T, ab.sum(axis=(0, 1)).T  # (C, K)
            else:
                s2, s1 = sq.sum(axis=(0, 3)), ab.sum(axis=(0, 3))  # (P, K)
        if self._l2 is None:
            self._l2 = np.zeros(s2.shape)
            self._l1 = np.zeros(s1.shape)
        self._l2 += s2
        self._l1 += s1
        self.batch += x.shape[0]

    def result(self) -> SpectrumResult:
        """The spectrum of everything seen so far.

        Returns
        -------
        SpectrumResult

        Raises
        ------
        ValueError
            If no data has been added, the data has no channels (an empty
            spectrum: no energy to keep or lose), or its energy (a sum of
            squares) overflows float64.
        """
        if self._l2 is None:
            raise ValueError("SpectrumAccumulator.result() called before any data was added")
        if self._channels == 0:
            raise ValueError("x has no channels: its spectrum is empty (no energy to keep or lose)")
        if not (np.all(np.isfinite(self._l2)) and np.all(np.isfinite(self._l1))):
            raise ValueError("the energy of x (a sum of squares) overflows float64: its values are too large "
                             "(rescale the data, e.g. divide by its maximum)")
        n = self.patch
        idx = self.basis.indices
        lead = self._l2.shape[:-1]
        l2 = np.zeros(lead + (n, n))
        l1 = np.zeros(lead + (n, n))
        l2[..., idx[:, 0], idx[:, 1]] = self._l2
        l1[..., idx[:, 0], idx[:, 1]] = self._l1
        plan = lbpcore.make_plan(self.grid, n, self.basis, self.pad)
        return SpectrumResult(
            patch=n,
            grid=tuple(int(v) for v in self.grid),
            l2=l2,
            l1=l1,
            total_energy=float(l2.sum() / (n * n)),
            count=int(self.batch * plan.num_patches * self._channels),
            per=self.per,
            batch=int(self.batch),
            pad=self.pad,
            layout=self.layout,
            extra_tokens=int(self.extra_tokens),
        )


def energy_maps(x, *, grid=None, patch=8, pad="reflect", extra_tokens=0, layout="tokens", per=None):
    """Per-basis energy (L2) and L1 maps of a token grid.

    Parameters
    ----------
    x : array_like, shape (B, e + h*w, C) or (B, C, H, W)
        Tokens (``layout="tokens"``) or feature maps (``"nchw"``); float32,
        float64 or integer (computed in float64).  A memory-mapped array is
        read in sub-batches.
    grid : (int, int), optional
        Token grid; required for tokens, ``(H, W)`` by default for nchw.
    patch : int, optional
        Patch size ``n``, a power of two; default 8.
    pad : {"reflect", "zero", "none"}, optional
        Padding of grids ``n`` does not divide; default ``"reflect"``.
    extra_tokens : int, optional
        Leading non-grid tokens (ignored); default 0.
    layout : {"tokens", "nchw"}, optional
    per : {None, "channel", "patch"}, optional
        None: ``(n, n)`` maps summed over batch, patches and channels;
        ``"channel"``: ``(C, n, n)``; ``"patch"``: ``(P, n, n)`` with the
        ``P`` patches in row-major order.

    Returns
    -------
    SpectrumResult

    Raises
    ------
    ValueError
        On shapes that do not fit the grid, a bad patch size, padding, layout
        or ``per``.

    Examples
    --------
    A smooth field puts most of its energy in the low sequencies:

    >>> import numpy as np
    >>> from analysis.spectrum import energy_kept, energy_maps
    >>> u = np.linspace(0.0, 1.0, 16)
    >>> field = np.sin(2 * u)[:, None] + np.cos(3 * u)[None, :]  # (16, 16)
    >>> res = energy_maps(field.reshape(1, 256, 1), grid=(16, 16), patch=8)
    >>> res.energy_map.shape, round(float(res.total_energy), 6) == round(float((field ** 2).sum()), 6)
    ((8, 8), True)
    >>> round(float(energy_kept(res, "lp_l1:2")), 4)
    0.9712
    """
    acc = SpectrumAccumulator(patch, grid=grid, pad=pad, extra_tokens=extra_tokens, layout=layout, per=per)
    if not hasattr(x, "shape") or not hasattr(x, "__getitem__"):
        x = np.asarray(x)
    if len(x.shape) and x.shape[0] == 0:
        raise ValueError("x has an empty batch")
    return acc.update(x).result()


def _maps(energy_map):
    """(l2, l1 or None) as float64 arrays from a SpectrumResult or an array."""
    if isinstance(energy_map, SpectrumResult):
        return energy_map.l2, energy_map.l1
    m = np.asarray(energy_map, dtype=np.float64)
    return m, None


def _check_map(m, name="energy_map"):
    if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
        raise ValueError(f"{name} must have shape (..., n, n), got {m.shape}")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    return m.shape[-1]


def energy_kept(energy_map, bases):
    """Fraction of the (L2) energy a basis selection keeps.

    Parameters
    ----------
    energy_map : SpectrumResult or array_like, shape (n, n) or (K, n, n)
        Energy map(s), e.g. ``SpectrumResult.energy_map``.  A result with a
        per-channel/per-patch breakdown gives one fraction per entry.
    bases : str, sequence of (int, int), or lbpcore.BasisSet
        Selection as for :func:`lbpcore.select_bases`.  ``"energy_l2:r"``
        ranks by this map itself (the per-tensor optimum among Walsh bases);
        ``"energy_l1:r"`` by the L1 map of a :class:`SpectrumResult` (by the
        given map when only an array is given).

    Returns
    -------
    float or ndarray of shape (K,)
        ``sum_{(i, j) in S} map[i, j] / sum map`` in ``[0, 1]``; 1.0 for an
        all-zero map (nothing to lose).

    Raises
    ------
    ValueError
        If the map is not square, not finite or has negative entries, or the
        selection does not fit its size.

    Notes
    -----
    With the map of a grid ``g`` and ``P`` the patch projector of the
    selection, this is ``1 - ||pad(g) - P pad(g)||^2 / ||pad(g)||^2``
    (Parseval), i.e. ``1 - ||g - P g||^2 / ||g||^2`` on divisible grids.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.spectrum import energy_kept
    >>> m = np.zeros((4, 4)); m[0, 0] = 3.0; m[2, 1] = 1.0
    >>> energy_kept(m, "lp_l1:1")
    0.75
    >>> energy_kept(m, "energy_l2:2")
    1.0
    """
    l2, l1 = _maps(energy_map)
    n = _check_map(l2)
    if isinstance(bases, str) and bases.strip().startswith("energy"):
        cal = l2 if (l1 is None or not bases.strip().startswith("energy_l1")) else l1
        cal = cal if cal.ndim == 2 else cal.sum(axis=0)
        basis = lbpcore.select_bases(n, bases, calibration=cal)
    else:
        basis = lbpcore.select_bases(n, bases)
    return energy_fraction(l2[..., basis.mask].sum(axis=-1), l2.sum(axis=(-2, -1)))


def energy_curves(energy_map, *, policies=("lp_l1", "lp_linf", "energy", "random"), seed=0, trials=16):
    """Energy kept versus rank for several selection policies.

    Parameters
    ----------
    energy_map : SpectrumResult or array_like, shape (n, n)
        Total energy map (a result's breakdown is summed).
    policies : sequence of str, optional
        Any of ``"lp_l1"`` (``lp_l1:k`` for ``k = 1 .. 2n-1``), ``"lp_linf"``
        (``lp_linf:k``, ``k = 1 .. n``), ``"energy"`` (the ``r`` bases of
        largest energy, ``r = 1 .. n*n``: the per-tensor optimum of any
        ``r`` Walsh bases), ``"energy_l1"`` (``energy_l1:r`` ranked by the L1
        map; needs a :class:`SpectrumResult`) and ``"random"`` (``r`` bases
        drawn uniformly, mean over ``trials`` seeded draws).
    seed : int, optional
        Seed of the random draws; default 0.
    trials : int, optional
        Random draws averaged per rank; default 16.

    Returns
    -------
    dict
        ``policy -> list of {"param": k or r, "rank": r, "kept": fraction}``
        by increasing ``param``; ``"random"`` entries also carry ``"std"``
        (standard deviation over the draws).  Plain Python numbers.

    Raises
    ------
    ValueError
        On an unknown policy, or ``"energy_l1"`` without an L1 map.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.spectrum import energy_curves
    >>> m = np.array([[4.0, 2.0], [1.0, 1.0]])
    >>> c = energy_curves(m, policies=("lp_l1", "energy"))
    >>> [(e["rank"], e["kept"]) for e in c["lp_l1"]]
    [(1, 0.5), (3, 0.875), (4, 1.0)]
    >>> [e["kept"] for e in c["energy"]]
    [0.5, 0.75, 0.875, 1.0]
    """
    l2, l1 = _maps(energy_map)
    if l2.ndim == 3:
        l2 = l2.sum(axis=0)
        l1 = None if l1 is None else l1.sum(axis=0)
    if l2.ndim != 2:
        raise ValueError(f"energy_map must have shape (n, n), got {l2.shape}")
    n = _check_map(l2)
    for p in policies:
        if p not in POLICIES:
            raise ValueError(f"unknown policy {p!r}; choose from {', '.join(POLICIES)}")
    total = float(l2.sum())
    out = {}
    for policy in policies:
        rows = []
        if policy in ("lp_l1", "lp_linf"):
            last = 2 * n - 1 if policy == "lp_l1" else n
            for k in range(1, last + 1):
                b = lbpcore.select_bases(n, f"{policy}:{k}")
                rows.append({"param": k, "rank": b.rank, "kept": energy_fraction(l2[b.mask].sum(), total)})
        elif policy == "energy":
            cum = np.cumsum(np.sort(l2.ravel())[::-1])
            rows = [{"param": r, "rank": r, "kept": energy_fraction(cum[r - 1], total)} for r in range(1, n * n + 1)]
        elif policy == "energy_l1":
            if l1 is None:
                raise ValueError("policy 'energy_l1' needs a SpectrumResult (with its L1 map)")
            for r in range(1, n * n + 1):
                b = lbpcore.select_bases(n, f"energy_l1:{r}", calibration=l1)
                rows.append({"param": r, "rank": r, "kept": energy_fraction(l2[b.mask].sum(), total)})
        else:  # random
            rng = np.random.default_rng(seed)
            flat = l2.ravel()
            draws = np.stack([np.cumsum(flat[rng.permutation(n * n)]) for _ in range(int(trials))])
            fr = energy_fraction(draws, total)
            mean, std = fr.mean(axis=0), fr.std(axis=0)
            rows = [{"param": r, "rank": r, "kept": float(mean[r - 1]), "std": float(std[r - 1])}
                    for r in range(1, n * n + 1)]
        out[policy] = rows
    return out
