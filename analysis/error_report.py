"""The results of :mod:`analysis.errors`: one method's gradient errors, and a report of all methods at one rank.

:class:`GradientError` holds the relative errors and cosines of ``grad_x`` and
``grad_weight`` and the projection errors of one approximate backward;
:class:`ErrorReport` gathers LBP-WHT and its rank-matched baselines; both turn
into JSON (``to_dict``) and CSV rows (:func:`report_rows`).  They are also
importable from :mod:`analysis.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lbpcore

__all__ = ["GradientError", "ErrorReport", "report_rows"]


@dataclass(frozen=True)
class GradientError:
    """Errors of one approximate backward against the dense one.

    Attributes
    ----------
    method : str
        ``"lbp"``, ``"dct"``, ``"klt"``, ``"svd"``, ``"random"`` (or a caller's label).
    rank : int
        Rank ``r`` per patch (``svd``: the LBP rank it is matched to).
    grad_x : dict
        ``{"rel_error": float, "cosine": float}`` of ``grad_x``.
    grad_weight : dict
        Same for ``grad_weight``.
    projection : dict
        ``{"grad_y": float, "x": float}``: relative projection errors
        ``||v - Q v||_F / ||v||_F`` of ``grad_y`` and of ``x`` under the same
        projector (padded patch vectors for per-patch methods; grid tokens
        for ``svd``).
    info : dict
        Method details (``svd_rank``, the KLT ``fit``...).

    Examples
    --------
    >>> from analysis.errors import GradientError
    >>> ge = GradientError("lbp", 21, {"rel_error": 0.1, "cosine": 0.99},
    ...                    {"rel_error": 0.2, "cosine": 0.98}, {"grad_y": 0.3, "x": 0.1})
    >>> ge.row()["grad_weight_rel_error"], ge.to_dict()["projection"]["grad_y"]
    (0.2, 0.3)
    """

    method: str
    rank: int
    grad_x: dict
    grad_weight: dict
    projection: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serializable dict of all fields."""
        return {
            "method": self.method,
            "rank": int(self.rank),
            "grad_x": {k: float(v) for k, v in self.grad_x.items()},
            "grad_weight": {k: float(v) for k, v in self.grad_weight.items()},
            "projection": {k: float(v) for k, v in self.projection.items()},
            "info": dict(self.info),
        }

    def row(self) -> dict:
        """One flat dict (CSV row): method, rank, ``grad_x_rel_error``, ..."""
        d = {"method": self.method, "rank": int(self.rank)}
        for part in ("grad_x", "grad_weight"):
            for k, v in getattr(self, part).items():
                d[f"{part}_{k}"] = float(v)
        for k, v in self.projection.items():
            d[f"proj_error_{k}"] = float(v)
        return d


@dataclass(frozen=True)
class ErrorReport:
    """LBP-WHT and baseline gradient errors at one rank.

    Attributes
    ----------
    rank : int
        Bases per patch ``r``.
    patch : int
    grid : (int, int)
    num_patches : int
        ``P``.
    bases : str
        Spec of the LBP selection (``"lp_l1:6"``, ``"explicit"``...).
    lbp : GradientError
    baselines : dict of str to GradientError
        In the order requested.
    selection : lbpcore.BasisSet or None
        The LBP selection itself (its ``indices``; for an energy spec the
        bases the data ranked first).  Not part of :meth:`to_dict`.
    alternatives : dict of str to analysis.methods.measure.MethodError
        The published methods asked for (``methods=`` of
        :func:`~analysis.errors.gradient_errors`), by spec; in :meth:`to_dict`
        when there are any.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.errors import gradient_errors
    >>> rng = np.random.default_rng(0)
    >>> x, gy = rng.standard_normal((1, 64, 3)), rng.standard_normal((1, 64, 2))
    >>> rep = gradient_errors(x, rng.standard_normal((2, 3)), gy, grid=(8, 8), patch=4,
    ...                       bases="lp_l1:2", baselines=("dct",))
    >>> rep.rank, rep.num_patches, list(rep.methods), len(rep.rows())
    (3, 4, ['lbp', 'dct'], 2)
    """

    rank: int
    patch: int
    grid: tuple
    num_patches: int
    bases: str
    lbp: GradientError
    baselines: dict
    selection: lbpcore.BasisSet | None = field(default=None, repr=False, compare=False)
    alternatives: dict = field(default_factory=dict)

    @property
    def methods(self) -> dict:
        """``{"lbp": lbp, **baselines}``."""
        return {"lbp": self.lbp, **self.baselines}

    def to_dict(self) -> dict:
        """JSON-serializable dict (nested :meth:`GradientError.to_dict`)."""
        return {
            "rank": int(self.rank),
            "patch": int(self.patch),
            "grid": [int(v) for v in self.grid],
            "num_patches": int(self.num_patches),
            "bases": self.bases,
            "lbp": self.lbp.to_dict(),
            "baselines": {k: v.to_dict() for k, v in self.baselines.items()},
            **({"alternatives": {k: v.to_dict() for k, v in self.alternatives.items()}} if self.alternatives else {}),
        }

    def rows(self) -> list:
        """Flat rows (one per method) for CSV, each with ``bases`` and ``patch``."""
        return [{"bases": self.bases, "patch": int(self.patch), **m.row()} for m in self.methods.values()]


def report_rows(reports) -> list:
    """Concatenate :meth:`ErrorReport.rows` of several reports (a rank sweep).

    Parameters
    ----------
    reports : iterable of ErrorReport
        E.g. the result of :func:`rank_sweep`.

    Returns
    -------
    list of dict
        One flat dict per report and method (for :func:`analysis.io.write_csv`).

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.errors import rank_sweep, report_rows
    >>> rng = np.random.default_rng(0)
    >>> x, gy = rng.standard_normal((1, 16, 2)), rng.standard_normal((1, 16, 3))
    >>> w = rng.standard_normal((3, 2))
    >>> reps = rank_sweep(x, w, gy, grid=(4, 4), patch=4, ks=[1, 2], methods=("klt",), progress=False)
    >>> [(r["bases"], r["method"]) for r in report_rows(reps)]
    [('lp_l1:1', 'lbp'), ('lp_l1:1', 'klt'), ('lp_l1:2', 'lbp'), ('lp_l1:2', 'klt')]
    """
    return [row for rep in reports for row in rep.rows()]
