"""2D Walsh–Hadamard basis images: :class:`BasisSet`, spec parsing, low-pass and explicit sets (SPEC section 3).

The energy specs, which score the bases on data through a projection, are
selected in :mod:`lbpcore._select`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ._backend import compat_namespace, constant
from ._validation import check_choice, check_pairs, check_patch
from ._wht._walsh import ordered_hadamard

__all__ = ["BasisSet", "SPEC_KINDS", "as_basis", "canonical_order", "parse_spec"]

SPEC_KINDS = ("lp_l1", "lp_linf", "energy_l1", "energy_l2")
_SPEC_RE = re.compile(r"^\s*([a-z0-9_]+)\s*:\s*(.*?)\s*$")


def canonical_order(n: int) -> np.ndarray:
    """All ``(i, j)`` pairs of an ``n x n`` square sorted by ``(i + j, i, j)``."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    i = i.ravel()
    j = j.ravel()
    order = np.lexsort((j, i, i + j))
    return np.stack([i[order], j[order]], axis=1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class BasisSet:
    """An immutable selection of 2D sequency-ordered Walsh–Hadamard basis images.

    Basis image ``(i, j)`` of patch size ``n`` is ``outer(w_i, w_j)`` where ``w_i``
    is row ``i`` of ``walsh_matrix(n, ordering="sequency")``: ``i`` counts sign
    changes down the rows (vertical sequency) and ``j`` across the columns
    (horizontal sequency).  Build one with :func:`select_bases` or
    :meth:`from_indices`; the constructor ``BasisSet(patch, pairs, spec)`` checks
    its arguments as :meth:`from_indices` does.

    Attributes
    ----------
    patch : int
        Patch size ``n`` (a power of two).
    indices : ndarray of int64, shape (r, 2)
        Selected ``(i, j)`` pairs in canonical order, sorted by ``(i + j, i, j)``.
        Read-only.
    rank : int
        Number ``r`` of selected bases.
    spec : str
        How the set was made (``"lp_l1:6"``, ``"energy_l2:12"``, ``"explicit"``).

    Examples
    --------
    >>> from lbpcore import select_bases
    >>> b = select_bases(8, "lp_l1:3")
    >>> b.rank
    6
    >>> b.indices.tolist()
    [[0, 0], [0, 1], [1, 0], [0, 2], [1, 1], [2, 0]]
    """

    patch: int
    _pairs: tuple = field(repr=False)
    spec: str = "explicit"

    def __post_init__(self):
        n = check_patch(self.patch)
        if not isinstance(self.spec, str):
            raise TypeError(f"spec must be a str label, got {type(self.spec).__name__}")
        arr = check_pairs(self._pairs, n)
        order = np.lexsort((arr[:, 1], arr[:, 0], arr[:, 0] + arr[:, 1]))
        arr = arr[order]
        arr.flags.writeable = False
        mask = np.zeros((n, n), dtype=bool)
        mask[arr[:, 0], arr[:, 1]] = True
        mask.flags.writeable = False
        object.__setattr__(self, "patch", n)
        object.__setattr__(self, "_pairs", tuple(map(tuple, arr.tolist())))
        object.__setattr__(self, "_indices", arr)
        object.__setattr__(self, "_mask", mask)

    @classmethod
    def from_indices(cls, n, pairs, *, spec="explicit"):
        """Build a set from explicit ``(i, j)`` pairs.

        Parameters
        ----------
        n : int
            Patch size, a power of two.
        pairs : sequence of (int, int) or array of shape (r, 2)
            Distinct pairs with ``0 <= i, j < n``; at least one.
        spec : str, optional
            Label stored in :attr:`spec`.

        Returns
        -------
        BasisSet

        Raises
        ------
        ValueError
            If ``n`` is not a power of two, or the pairs are empty, malformed,
            out of range or duplicated.

        Examples
        --------
        >>> from lbpcore import BasisSet
        >>> BasisSet.from_indices(4, [(1, 0), (0, 0)]).indices.tolist()
        [[0, 0], [1, 0]]
        """
        return cls(check_patch(n, "n"), pairs, spec)  # the constructor checks the pairs

    @property
    def indices(self) -> np.ndarray:
        """Read-only ``(r, 2)`` int64 array of ``(i, j)`` pairs in canonical ``(i + j, i, j)`` order."""
        return self._indices

    @property
    def rank(self) -> int:
        """Number ``r`` of selected basis images."""
        return len(self._pairs)

    @property
    def mask(self) -> np.ndarray:
        """Read-only boolean ``(n, n)`` map, ``mask[i, j]`` when ``(i, j)`` is selected."""
        return self._mask

    @property
    def rows(self) -> np.ndarray:
        """Sorted distinct vertical sequencies ``i`` in the set."""
        return np.unique(self._indices[:, 0])

    @property
    def cols(self) -> np.ndarray:
        """Sorted distinct horizontal sequencies ``j`` in the set."""
        return np.unique(self._indices[:, 1])

    def images(self, *, dtype=None, xp=None, device=None):
        """The selected basis images.

        Parameters
        ----------
        dtype : dtype, optional
            Default float64 of ``xp``.
        xp : array namespace, optional
            Default NumPy.
        device : device, optional

        Returns
        -------
        images : array, shape (r, n, n)
            ``images[k] = outer(w_i, w_j)`` for ``(i, j) = indices[k]``; entries ±1.

        Examples
        --------
        >>> from lbpcore import select_bases
        >>> select_bases(2, "lp_linf:2").images()[3]
        array([[ 1., -1.],
               [-1.,  1.]])
        """
        xp = compat_namespace(xp)
        if dtype is None:
            dtype = xp.float64
        n = self.patch

        def build():
            w = ordered_hadamard(n, "sequency")
            return w[self._indices[:, 0], :, None] * w[self._indices[:, 1], None, :]

        return xp.asarray(constant(("images", n, self._pairs), build, xp, dtype, device), copy=True)

    def __len__(self) -> int:
        return self.rank

    def __contains__(self, pair) -> bool:
        try:
            i, j = (int(v) for v in pair)
        except (TypeError, ValueError):
            return False
        return 0 <= i < self.patch and 0 <= j < self.patch and bool(self._mask[i, j])

    def __eq__(self, other):
        if not isinstance(other, BasisSet):
            return NotImplemented
        return self.patch == other.patch and self._pairs == other._pairs

    def __hash__(self):
        return hash((self.patch, self._pairs))

    def __repr__(self):
        return f"BasisSet(patch={self.patch}, rank={self.rank}, spec={self.spec!r})"


def parse_spec(spec: str, n: int) -> tuple[str, int]:
    """``(kind, number)`` of a spec string such as ``"lp_l1:6"``, or raise ValueError."""
    m = _SPEC_RE.match(spec)
    if m is None:
        raise ValueError(
            f"spec must look like 'kind:number' with kind in {', '.join(SPEC_KINDS)}, got {spec!r}"
        )
    kind, num = m.group(1), m.group(2)
    check_choice(kind, "spec kind", SPEC_KINDS)
    if not re.fullmatch(r"[0-9]+", num):
        raise ValueError(f"spec {spec!r}: the number after ':' must be a positive integer, got {num!r}")
    value = int(num)
    if value < 1:
        raise ValueError(f"spec {spec!r}: the number after ':' must be >= 1, got {value}")
    if kind.startswith("energy") and value > n * n:
        raise ValueError(
            f"spec {spec!r}: rank {value} is above the {n * n} bases of patch size {n}"
        )
    return kind, value


def as_basis(n, spec) -> BasisSet:
    """The :class:`BasisSet` of a selection that needs no data.

    ``spec`` is a :class:`BasisSet` (its patch size checked), explicit ``(i, j)``
    pairs or a low-pass string (see :func:`~lbpcore.select_bases`).  Energy specs
    raise :class:`ValueError`: they need :func:`~lbpcore.select_bases` with
    calibration data.
    """
    n = check_patch(n, "n")
    if isinstance(spec, BasisSet):
        if spec.patch != n:
            raise ValueError(f"bases has patch size {spec.patch}, expected {n}")
        return spec
    if not isinstance(spec, str):
        return BasisSet.from_indices(n, spec)
    if spec.split(":")[0].strip().startswith("energy"):
        raise ValueError(
            f"bases {spec!r} needs calibration data: call select_bases(n, {spec!r}, "
            "calibration=...) and pass the BasisSet"
        )
    kind, value = parse_spec(spec, n)
    return _low_pass(n, kind, value)


@lru_cache(maxsize=256)
def _low_pass(n: int, kind: str, value: int) -> BasisSet:
    """The low-pass set ``lp_l1:value`` or ``lp_linf:value`` (immutable, so cached)."""
    canon = canonical_order(n)
    if kind == "lp_l1":
        sel = canon[canon.sum(axis=1) < value]
    else:  # lp_linf
        sel = canon[canon.max(axis=1) < value]
    return BasisSet(n, tuple(map(tuple, sel.tolist())), f"{kind}:{value}")
