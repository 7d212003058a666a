"""Basis selection, including the energy rankings, which score the bases through a projection."""

from __future__ import annotations

import numpy as np

from ._backend import as_float_array, to_numpy
from ._bases import BasisSet, as_basis, canonical_order, parse_spec
from ._patches import project
from ._validation import check_calibration, check_patch

__all__ = ["select_bases"]


def select_bases(n, spec, *, calibration=None, grid=None, extra_tokens=0, pad="reflect", layout="tokens"):
    """Select 2D Walsh–Hadamard basis images for patches of size ``n``.

    Parameters
    ----------
    n : int
        Patch size, a power of two.
    spec : str, sequence of (int, int), or BasisSet
        * ``"lp_l1:k"``: low-pass in the L1 ball, pairs with ``i + j < k``
          (``k(k+1)/2`` bases for ``k <= n``; the paper's LP_L1-k);
        * ``"lp_linf:k"``: pairs with ``max(i, j) < k`` (``k*k`` bases);
        * ``"energy_l1:r"`` / ``"energy_l2:r"``: the ``r`` pairs whose
          coefficients have the largest L1 norm / sum of squares over
          ``calibration``;
        * explicit distinct ``(i, j)`` pairs, or a :class:`BasisSet` (returned
          as is after checking its patch size).

        ``k > n`` clips to the full ``n x n`` square.
    calibration : array, optional
        Needed by the energy specs.  Either a precomputed ``(n, n)`` score map
        (``score[i, j]`` for basis ``(i, j)``), or data: tokens ``(B, e + h*w, C)``
        on ``grid`` (``layout="tokens"``) or maps ``(B, C, H, W)``
        (``layout="nchw"``), padded and cut into patches as in
        :func:`~lbpcore.project`.
    grid : (int, int), optional
        Token grid ``(h, w)`` of token calibration data.
    extra_tokens : int, optional
        Leading non-grid tokens of token calibration data (ignored for scoring).
    pad : {"reflect", "zero", "none"}, optional
        Padding of calibration data (default ``"reflect"``).
    layout : {"tokens", "nchw"}, optional
        Layout of calibration data.

    Returns
    -------
    BasisSet

    Raises
    ------
    ValueError
        On an unknown or malformed spec (``"lp_l1:0"``, ``"lp_l1:x"``), an
        energy rank above ``n*n``, out-of-range or duplicated pairs, an energy
        spec without calibration, or calibration of the wrong shape.

    Notes
    -----
    Energy rankings break ties toward lower ``(i + j, i, j)``, so a constant
    score map yields the same set as the low-pass order.  The energy ranking
    maximizes the summed score of the selected set (the scores are additive),
    so ``energy_l2:r`` keeps the most calibration energy of any ``r`` bases.

    Examples
    --------
    >>> import numpy as np
    >>> from lbpcore import select_bases
    >>> select_bases(8, "lp_l1:6").rank
    21
    >>> select_bases(8, "lp_linf:2").indices.tolist()
    [[0, 0], [0, 1], [1, 0], [1, 1]]
    >>> score = np.zeros((4, 4)); score[3, 2] = 5.0; score[0, 1] = 1.0
    >>> select_bases(4, "energy_l2:2", calibration=score).indices.tolist()
    [[0, 1], [3, 2]]
    """
    n = check_patch(n, "n")
    if not isinstance(spec, str):
        return as_basis(n, spec)
    kind, value = parse_spec(spec, n)
    if not kind.startswith("energy"):
        return as_basis(n, spec)
    if calibration is None:
        raise ValueError(f"spec {spec!r} ranks bases by energy and needs calibration= data or an (n, n) score map")
    score = _score_map(calibration, n, kind, grid=grid, extra_tokens=extra_tokens, pad=pad, layout=layout)
    canon = canonical_order(n)
    flat = score[canon[:, 0], canon[:, 1]]
    if not np.all(np.isfinite(flat)):
        raise ValueError("calibration scores must be finite (found NaN or inf)")
    # stable sort on -score keeps canonical order among ties
    order = np.argsort(-flat, kind="stable")[:value]
    sel = canon[order]
    return BasisSet(n, tuple(map(tuple, sel.tolist())), f"{kind}:{value}")


def _score_map(calibration, n, kind, *, grid, extra_tokens, pad, layout):
    xp, cal = as_float_array(calibration, "calibration")
    check_calibration(tuple(cal.shape), n, layout)
    if cal.ndim == 2:
        return to_numpy(cal).astype(np.float64)
    full = BasisSet(n, tuple(map(tuple, canonical_order(n).tolist())), "full")
    coef = project(cal, grid=grid, patch=n, bases=full, pad=pad, extra_tokens=extra_tokens, layout=layout)
    r_axis = 2 if layout == "tokens" else 3
    other = tuple(a for a in range(coef.ndim) if a != r_axis)
    if kind == "energy_l2":
        s = xp.sum(coef * coef, axis=other)
    else:
        s = xp.sum(xp.abs(coef), axis=other)
    s = to_numpy(s).astype(np.float64)
    out = np.zeros((n, n))
    idx = full.indices
    out[idx[:, 0], idx[:, 1]] = s
    return out

