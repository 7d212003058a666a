"""Gradient error of LBP-WHT against the dense backward, next to rank-matched baselines.

For one linear layer ``(x, weight, grad_y)`` and a per-patch rank ``r``,
:func:`gradient_errors` compares the gradients of the backward with ``grad_y``
projected patch by patch (``lbp``: the selected Walsh bases; ``dct``, ``klt``,
``random``: the subspaces of :mod:`analysis.baselines`) or along the tokens
(``svd``: a global truncated SVD of rank ``P r``) with
:func:`lbpcore.dense_backward`.  The baselines, what is guaranteed about their
errors and what is not, are explained in :ref:`method-baselines`.

All computations run in float64 whatever the input dtype, so the errors
measure the approximation, not float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

import lbpcore

from .baselines import dct_basis, random_basis, top_eigenvectors, walsh_basis
from .metrics import cosine, relative_error, unit_scale
from .progress import progress_bar
from .spectrum import full_basis, full_coefficients

__all__ = [
    "BASELINES",
    "GradientError",
    "ErrorReport",
    "patch_vectors",
    "subspace_backward",
    "gradient_errors",
    "rank_sweep",
    "report_rows",
]

#: Names of the baselines :func:`gradient_errors` can compute, in their default order.
BASELINES = ("dct", "klt", "svd", "random")


def _metrics(approx, exact) -> dict:
    return {"rel_error": relative_error(approx, exact), "cosine": cosine(approx, exact)}


# ---------------------------------------------------------------------------
# results


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


# ---------------------------------------------------------------------------
# the generic per-patch projection machinery


class _Problem:
    """One layer's data in float64, its full Walsh coefficients and dense gradients."""

    def __init__(self, x, weight, grad_y, *, grid, patch, pad, extra_tokens, layout):
        self.x = np.asarray(x, dtype=np.float64)
        self.weight = np.asarray(weight, dtype=np.float64)
        self.grad_y = np.asarray(grad_y, dtype=np.float64)
        self.layout = layout
        self.pad = pad
        self.dense = lbpcore.dense_backward(self.x, self.weight, self.grad_y, layout=layout)  # validates shapes, layout
        self.basis = full_basis(patch)
        n = self.n = self.basis.patch
        kw = dict(grid=grid, patch=n, pad=pad, extra_tokens=extra_tokens, layout=layout)
        # the padded patch vectors in orthonormal Walsh coordinates, (B, P, n*n, C)
        self.x_walsh = full_coefficients(self.x, **kw) / n
        self.grad_y_walsh = full_coefficients(self.grad_y, **kw) / n
        if layout == "nchw":
            self.grid = (int(self.x.shape[2]), int(self.x.shape[3]))
            self.extra_tokens = 0
        else:
            self.grid = tuple(int(v) for v in grid)
            self.extra_tokens = int(extra_tokens)
        self.plan = lbpcore.make_plan(self.grid, n, self.basis, pad)
        self.walsh_frame = walsh_basis(n, self.basis)  # (n*n, n*n), orthogonal: row k is basis k in pixels
        self._klt = None
        self._svd = None
        self._random = {}

    # -- per-patch projector Q given by its orthonormal rows q_walsh (r, n*n) in Walsh coordinates --
    def project_grad_y(self, q_walsh):
        """``Q pad(grad_y)`` in Walsh coordinates (B, P, n*n, C_out) and its r coefficients (B, P, r, C_out)."""
        a = np.matmul(q_walsh, self.grad_y_walsh)  # (B, P, r, C_out)
        return np.matmul(q_walsh.T, a), a

    def backward(self, q_walsh):
        """(grad_x, grad_weight) with ``grad_y`` projected by ``Q``."""
        pg, a = self.project_grad_y(q_walsh)
        b = np.matmul(q_walsh, self.x_walsh)  # (B, P, r, C_in)
        gw = np.tensordot(a, b, axes=([0, 1, 2], [0, 1, 2]))
        n = self.n
        coef = pg * n  # unnormalized coefficients on the full basis
        kw = dict(grid=self.grid, patch=n, bases=self.basis, pad=self.pad, layout=self.layout)
        if self.layout == "nchw":
            gproj = lbpcore.reconstruct(coef.transpose(0, 3, 1, 2), **kw)  # (B, C_out, h, w)
            gx = np.einsum("bohw,oi->bihw", gproj, self.weight, optimize=True)
        else:
            gproj = lbpcore.reconstruct(coef, **kw)  # (B, h*w, C_out)
            gx, gw = self.with_extra_tokens(gproj @ self.weight, gw)
        return gx, gw

    def with_extra_tokens(self, gx, gw):
        """Prepend the exact extra-token rows to ``grad_x`` (tokens) and add their share to ``grad_weight``."""
        if not self.extra_tokens:
            return gx, gw
        xe, ge = self.x[:, : self.extra_tokens], self.grad_y[:, : self.extra_tokens]
        return np.concatenate([ge @ self.weight, gx], axis=1), gw + np.tensordot(ge, xe, axes=([0, 1], [0, 1]))

    def projection_errors(self, q_walsh):
        pg, _ = self.project_grad_y(q_walsh)
        px = np.matmul(q_walsh.T, np.matmul(q_walsh, self.x_walsh))
        return {"grad_y": relative_error(pg, self.grad_y_walsh), "x": relative_error(px, self.x_walsh)}

    def result(self, method, rank, q_walsh, info=None, grads=None):
        gx, gw = self.backward(q_walsh) if grads is None else grads
        return GradientError(method, int(rank), _metrics(gx, self.dense.grad_x),
                             _metrics(gw, self.dense.grad_weight), self.projection_errors(q_walsh), dict(info or {}))

    # -- bases in Walsh coordinates --
    def walsh_rows(self, basis):
        pos = {tuple(p): k for k, p in enumerate(self.basis.indices.tolist())}
        rows = [pos[tuple(p)] for p in basis.indices.tolist()]
        return np.eye(self.n * self.n)[rows]

    def to_walsh(self, q_pixels):
        return q_pixels @ self.walsh_frame.T

    def klt_rows(self, r):
        if self._klt is None:
            gram = np.tensordot(self.grad_y_walsh, self.grad_y_walsh, axes=([0, 1, 3], [0, 1, 3]))  # (n*n, n*n)
            self._klt = top_eigenvectors(gram)
        return self._klt[:r]

    def random_rows(self, r, seed):
        """Rows of :func:`analysis.baselines.random_basis` (pixel coordinates) in Walsh coordinates."""
        if seed not in self._random:
            self._random[seed] = self.to_walsh(random_basis(self.n, self.n * self.n, seed))
        return self._random[seed][:r]

    # -- global truncated SVD along tokens, per batch item --
    def grid_tokens(self, a):
        if self.layout == "nchw":
            b, c, h, w = a.shape
            return a.reshape(b, c, h * w).transpose(0, 2, 1)
        return a[:, self.extra_tokens:]

    def svd_result(self, r):
        gt = self.grid_tokens(self.grad_y)  # (B, h*w, C_out)
        xt = self.grid_tokens(self.x)
        if self._svd is None:
            self._svd = np.linalg.svd(gt, full_matrices=False)[0]  # (B, h*w, m)
        u = self._svd
        k = min(self.plan.num_patches * r, u.shape[2])
        uk = u[:, :, :k]
        gp = uk @ np.matmul(uk.transpose(0, 2, 1), gt)
        xp = uk @ np.matmul(uk.transpose(0, 2, 1), xt)
        gw = np.tensordot(gp, xt, axes=([0, 1], [0, 1]))
        gx = gp @ self.weight  # (B, h*w, C_in)
        if self.layout == "nchw":
            b, c_in, h, w = self.x.shape
            gx = gx.transpose(0, 2, 1).reshape(b, c_in, h, w)
        else:
            gx, gw = self.with_extra_tokens(gx, gw)
        proj = {"grad_y": relative_error(gp, gt), "x": relative_error(xp, xt)}
        return GradientError("svd", int(r), _metrics(gx, self.dense.grad_x), _metrics(gw, self.dense.grad_weight),
                             proj, {"svd_rank": int(k), "scope": "per batch item, grid tokens"})


def _unit_scaled(x, weight, grad_y):
    """The layer's arrays, each brought to unit scale by a power of two (exact; see :func:`gradient_errors`)."""
    arrays = [np.asarray(a) for a in (x, weight, grad_y)]
    for name, a in zip(("x", "weight", "grad_y"), arrays, strict=True):
        if a.size == 0:
            raise ValueError(f"{name} is empty (shape {a.shape}): there is no gradient to compare")
    return [unit_scale(a) for a in arrays]


def _check_methods(methods):
    methods = tuple(methods)
    for m in methods:
        if m not in BASELINES:
            raise ValueError(f"unknown baseline {m!r}; choose from {', '.join(BASELINES)}")
    return methods


def patch_vectors(x, *, grid=None, patch=8, pad="reflect", extra_tokens=0, layout="tokens"):
    """The ``n*n`` pixel vectors of every padded patch of every channel.

    Parameters
    ----------
    x : array_like, shape (B, e + h*w, C) or (B, C, H, W)
    grid, patch, pad, extra_tokens, layout
        As for :func:`lbpcore.project`.

    Returns
    -------
    ndarray of float64, shape (B * P * C, n*n)
        Row ``(b, p, c)`` (in that nesting order) is patch ``p`` of channel
        ``c`` of item ``b`` of the padded grid, flattened row-major.  Obtained
        from :func:`analysis.spectrum.full_coefficients` by an orthogonal
        change of basis.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.errors import patch_vectors
    >>> x = np.arange(16.0).reshape(1, 16, 1)  # a 4x4 grid
    >>> patch_vectors(x, grid=(4, 4), patch=2)[1].round(12).tolist()  # patch (0, 1)
    [2.0, 3.0, 6.0, 7.0]
    """
    basis = full_basis(patch)
    n = basis.patch
    coef = full_coefficients(x, grid=grid, patch=n, pad=pad, extra_tokens=extra_tokens, layout=layout)
    v = (coef / n).transpose(0, 1, 3, 2).reshape(-1, n * n)
    return v @ walsh_basis(n, basis)


def subspace_backward(x, weight, grad_y, basis, *, grid=None, patch=None, pad="reflect", extra_tokens=0,
                      layout="tokens"):
    """Backward of a linear layer with ``grad_y`` projected per patch onto any subspace.

    Parameters
    ----------
    x : array_like, shape (B, e + h*w, C_in) or (B, C_in, H, W)
    weight : array_like, shape (C_out, C_in)
    grad_y : array_like, shape (B, e + h*w, C_out) or (B, C_out, H, W)
    basis : array_like of shape (r, n*n), or str / pairs / lbpcore.BasisSet
        Orthonormal rows spanning the per-patch subspace, each a flattened
        (row-major) ``n x n`` image; or a Walsh selection (then ``patch`` is
        required), which reproduces :func:`lbpcore.lbp_backward`.
    grid : (int, int), optional
        Required for tokens.
    patch : int, optional
        Patch size; inferred from ``basis.shape[1] = n*n`` for arrays.
    pad, extra_tokens, layout
        As for :func:`lbpcore.lbp_backward`.

    Returns
    -------
    lbpcore.Gradients
        float64 ``grad_x = crop(Q pad(grad_y)) @ W`` (exact on extra tokens)
        and ``grad_weight = (Q pad(grad_y))^T pad(x)`` (plus the exact
        extra-token part); ``grad_bias`` is None.

    Raises
    ------
    ValueError
        If the rows are not orthonormal (to 1e-8) or their length is not a
        square of a power of two, or as :func:`lbpcore.lbp_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> import lbpcore
    >>> from analysis.errors import subspace_backward, walsh_basis
    >>> rng = np.random.default_rng(0)
    >>> x, gy = rng.standard_normal((2, 36, 3)), rng.standard_normal((2, 36, 4))
    >>> w = rng.standard_normal((4, 3))
    >>> ours = subspace_backward(x, w, gy, walsh_basis(4, "lp_l1:3"), grid=(6, 6))
    >>> ref = lbpcore.lbp_backward(x, w, gy, grid=(6, 6), patch=4, bases="lp_l1:3")
    >>> bool(np.allclose(ours.grad_x, ref.grad_x)), bool(np.allclose(ours.grad_weight, ref.grad_weight))
    (True, True)
    """
    q = None
    if not isinstance(basis, (str, lbpcore.BasisSet)):
        q = np.asarray(basis, dtype=np.float64)
        if q.ndim == 2 and q.shape[1] == 2:  # (i, j) pairs (n*n is never 2)
            q = None
    if q is None:
        if patch is None:
            patch = basis.patch if isinstance(basis, lbpcore.BasisSet) else None
        if patch is None:
            raise ValueError("patch= is required when basis is a Walsh selection")
        q = walsh_basis(patch, basis)
    if q.ndim != 2:
        raise ValueError(f"basis must have shape (r, n*n), got {q.shape}")
    n = math.isqrt(q.shape[1])
    if n * n != q.shape[1] or (patch is not None and n != patch):
        raise ValueError(f"basis rows have length {q.shape[1]}, not n*n for patch size {patch or 'n'}")
    if not np.allclose(q @ q.T, np.eye(q.shape[0]), atol=1e-8, rtol=0):
        raise ValueError("basis rows must be orthonormal")
    prob = _Problem(x, weight, grad_y, grid=grid, patch=n, pad=pad, extra_tokens=extra_tokens, layout=layout)
    gx, gw = prob.backward(prob.to_walsh(q))
    return lbpcore.Gradients(gx, gw, None)


def _report(prob, basis, methods, seed):
    r = basis.rank
    gl = lbpcore.lbp_backward(prob.x, prob.weight, prob.grad_y, grid=prob.grid, patch=prob.n, bases=basis,
                              pad=prob.pad, extra_tokens=prob.extra_tokens, layout=prob.layout)
    lbp = prob.result("lbp", r, prob.walsh_rows(basis), {"bases": basis.spec},
                      grads=(gl.grad_x, gl.grad_weight))
    out = {}
    for m in methods:
        if m == "dct":
            out[m] = prob.result(m, r, prob.to_walsh(dct_basis(prob.n, r)), {"order": "(i+j, i, j) low-pass"})
        elif m == "klt":
            out[m] = prob.result(m, r, prob.klt_rows(r), {"fit": "grad_y patch vectors, uncentered"})
        elif m == "random":
            out[m] = prob.result(m, r, prob.random_rows(r, seed), {"seed": seed})
        else:
            out[m] = prob.svd_result(r)
    return ErrorReport(rank=r, patch=prob.n, grid=prob.grid, num_patches=prob.plan.num_patches,
                       bases=basis.spec, lbp=lbp, baselines=out)


def gradient_errors(x, weight, grad_y, *, grid=None, patch=8, bases="lp_l1:6", pad="reflect", extra_tokens=0,
                    layout="tokens", baselines=BASELINES, seed=0) -> ErrorReport:
    """Gradient errors of LBP-WHT and rank-matched baselines against the dense backward.

    Parameters
    ----------
    x : array_like, shape (B, e + h*w, C_in) or (B, C_in, H, W)
        Layer input; float32 or float64 (computed in float64).
    weight : array_like, shape (C_out, C_in)
    grad_y : array_like, shape (B, e + h*w, C_out) or (B, C_out, H, W)
    grid : (int, int), optional
        Required for tokens.
    patch : int, optional
        Default 8.
    bases : str, sequence of pairs or lbpcore.BasisSet, optional
        LBP selection, default ``"lp_l1:6"``; its rank ``r`` sets the rank of
        every baseline.  Energy specs (``"energy_l2:r"``) are calibrated on
        ``grad_y`` itself.
    pad, extra_tokens, layout
        As for :func:`lbpcore.lbp_backward`.
    baselines : sequence of str, optional
        Subset of :data:`BASELINES`, ``("dct", "klt", "svd", "random")`` (all by
        default); see :ref:`method-baselines`.
    seed : int, optional
        Seed of the ``random`` baseline.

    Returns
    -------
    ErrorReport

    Raises
    ------
    ValueError
        On an unknown baseline, an empty array (no gradient to compare), or
        as :func:`lbpcore.lbp_backward`.

    Notes
    -----
    ``x``, ``weight`` and ``grad_y`` are each multiplied by a power of two that
    brings their largest magnitude to ``[0.5, 1)`` before anything is
    computed: exact, and every reported number (relative errors, cosines,
    projection errors) is invariant to it, so finite data near the ends of the
    float64 range (``1e300``) gives finite errors instead of an overflow.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.errors import gradient_errors
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 64, 4)); w = rng.standard_normal((3, 4))
    >>> gy = rng.standard_normal((2, 64, 3))
    >>> rep = gradient_errors(x, w, gy, grid=(8, 8), patch=4, bases="lp_l1:3", baselines=("klt", "svd"))
    >>> rep.rank, sorted(rep.methods)
    (6, ['klt', 'lbp', 'svd'])
    >>> bool(rep.baselines["klt"].projection["grad_y"] <= rep.lbp.projection["grad_y"])
    True
    """
    methods = _check_methods(baselines)
    prob = _Problem(*_unit_scaled(x, weight, grad_y), grid=grid, patch=patch, pad=pad, extra_tokens=extra_tokens,
                    layout=layout)
    if isinstance(bases, str) and bases.strip().startswith("energy"):
        basis = lbpcore.select_bases(prob.n, bases, calibration=prob.grad_y, grid=prob.grid,
                                     extra_tokens=prob.extra_tokens, pad=pad, layout=layout)
    else:
        basis = lbpcore.select_bases(prob.n, bases)
    return _report(prob, basis, methods, seed)


def rank_sweep(x, weight, grad_y, *, grid=None, patch=8, ks=None, methods=BASELINES, pad="reflect",
               extra_tokens=0, layout="tokens", seed=0, progress=True) -> list:
    """Gradient errors over ``lp_l1:k`` for a range of ``k``.

    The data are projected once and the KLT, SVD and random bases computed
    once, so a sweep costs little more than its projections.

    Parameters
    ----------
    x, weight, grad_y, grid, patch, pad, extra_tokens, layout, seed
        As for :func:`gradient_errors`.
    ks : iterable of int, optional
        Values of ``k``; default ``1 .. 2n - 1`` (``lp_l1:2n-1`` is every basis).
    methods : sequence of str, optional
        Baselines, as ``baselines`` of :func:`gradient_errors`.
    progress : bool, optional
        True (default): show a progress bar on stderr if the sweep takes more
        than about 2 s; False: never.

    Returns
    -------
    list of ErrorReport
        One per ``k``, in order.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.errors import rank_sweep
    >>> rng = np.random.default_rng(1)
    >>> x = rng.standard_normal((1, 64, 3)); w = rng.standard_normal((2, 3))
    >>> gy = rng.standard_normal((1, 64, 2))
    >>> sweep = rank_sweep(x, w, gy, grid=(8, 8), patch=4, methods=("dct",), progress=False)
    >>> [rep.rank for rep in sweep]
    [1, 3, 6, 10, 13, 15, 16]
    >>> bool(sweep[-1].lbp.grad_x["rel_error"] < 1e-12)  # every basis: exact
    True
    """
    methods = _check_methods(methods)
    prob = _Problem(*_unit_scaled(x, weight, grad_y), grid=grid, patch=patch, pad=pad, extra_tokens=extra_tokens,
                    layout=layout)
    ks = list(range(1, 2 * prob.n)) if ks is None else [int(k) for k in ks]
    reports = []
    with progress_bar(len(ks), "rank sweep", enabled=None if progress else False) as bar:
        for k in ks:
            reports.append(_report(prob, lbpcore.select_bases(prob.n, f"lp_l1:{k}"), methods, seed))
            bar.update()
    return reports
