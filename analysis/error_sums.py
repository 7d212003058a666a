"""Gradient errors as sums over the batch: the per-chunk machinery behind :mod:`analysis.errors`.

Every number of an :class:`~analysis.errors.ErrorReport` is a function of sums
over batch items, so a batch can be processed in chunks and the sums added:

* ``grad_weight`` of the dense backward and of each method (``C_out x C_in``
  matrices: a sum over the batch of ``grad_y^T x`` products);
* for ``grad_x``, per method, the sums of ``||g~ - g||^2``, ``<g~, g>`` and
  ``||g~||^2``, and ``||g||^2`` of the dense ``grad_x``;
* for the projection errors, the sums of ``||v - Q v||^2`` and ``||v||^2``;
* for the KLT baseline and the energy-ranked selections, the Gram matrix, the
  energy and the L1 sums of the ``grad_y`` patch vectors (:func:`calibration_sums`),
  which fix the subspaces before the sums above are taken.

The in-memory functions take these sums over one chunk, the whole batch; the
streamed ones add them over chunks (:func:`analysis.stream.reduce_batches`).
Both finish with :func:`method_metrics`.  Which baselines stream in one pass
and which need two is explained in :ref:`method-streaming`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

import lbpcore
from lbpcore._validation import check_choice

from .baselines import dct_basis, random_basis, walsh_basis
from .coefficients import basis_sums, full_basis, full_coefficients
from .metrics import cosine, cosine_of_sums, relative_error, relative_error_of_sums

__all__ = ["Geometry", "Chunk", "Subspaces", "calibration_sums", "error_sums", "method_metrics"]


class Geometry:
    """The token grid, patches and Walsh frame of a layer: what every chunk shares.

    Parameters
    ----------
    shape : tuple of int
        Shape of ``x``: ``(B, e + h*w, C_in)`` or ``(B, C_in, H, W)``.
    grid : (int, int) or None
        Required for tokens; ``(H, W)`` for nchw.
    patch : int
    pad : {"reflect", "zero", "none"}
    extra_tokens : int
    layout : {"tokens", "nchw"}

    Attributes
    ----------
    n : int
        Patch size.
    basis : lbpcore.BasisSet
        All ``n*n`` Walsh bases (:func:`analysis.coefficients.full_basis`).
    plan : lbpcore.PatchPlan
    walsh_frame : ndarray, shape (n*n, n*n)
        Orthogonal: row ``k`` is basis ``k`` in pixels.

    Examples
    --------
    >>> from analysis.error_sums import Geometry
    >>> g = Geometry((2, 65, 3), (8, 8), 4, "reflect", 1, "tokens")
    >>> g.grid, g.extra_tokens, g.plan.num_patches
    ((8, 8), 1, 4)
    """

    def __init__(self, shape, grid, patch, pad, extra_tokens, layout):
        self.layout = check_choice(layout, "layout", ("tokens", "nchw"))
        self.basis = full_basis(patch)
        self.n = self.basis.patch
        self.pad = pad
        if layout == "nchw":
            if len(shape) != 4:
                raise ValueError(f"x must have shape (B, C, H, W) for layout='nchw', got {tuple(shape)}")
            self.grid, self.extra_tokens = (int(shape[2]), int(shape[3])), 0
        elif grid is None:
            raise ValueError("grid=(h, w) is required for layout='tokens'")
        else:
            self.grid, self.extra_tokens = tuple(int(v) for v in grid), int(extra_tokens)
        self.plan = lbpcore.make_plan(self.grid, self.n, self.basis, pad)
        self.walsh_frame = walsh_basis(self.n, self.basis)

    def walsh_rows(self, basis):
        """Rows selecting ``basis`` in Walsh coordinates, shape (r, n*n)."""
        pos = {tuple(p): k for k, p in enumerate(self.basis.indices.tolist())}
        return np.eye(self.n * self.n)[[pos[tuple(p)] for p in basis.indices.tolist()]]

    def to_walsh(self, q_pixels):
        """Orthonormal rows in pixels (r, n*n) expressed in Walsh coordinates."""
        return q_pixels @ self.walsh_frame.T

    def score_map(self, per_basis):
        """A per-basis vector (K,) laid out as an ``(n, n)`` map."""
        out = np.zeros((self.n, self.n))
        idx = self.basis.indices
        out[idx[:, 0], idx[:, 1]] = per_basis
        return out


class Chunk:
    """Batch items of one layer in float64: their full Walsh coefficients and dense gradients.

    Parameters
    ----------
    x : array_like, shape (b, e + h*w, C_in) or (b, C_in, H, W)
    weight : array_like, shape (C_out, C_in)
    grad_y : array_like, shape (b, e + h*w, C_out) or (b, C_out, H, W)
    geometry : Geometry

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.error_sums import Chunk, Geometry
    >>> rng = np.random.default_rng(0)
    >>> geo = Geometry((1, 64, 3), (8, 8), 4, "reflect", 0, "tokens")
    >>> c = Chunk(rng.standard_normal((1, 64, 3)), rng.standard_normal((2, 3)), rng.standard_normal((1, 64, 2)), geo)
    >>> c.x_walsh.shape, c.dense.grad_weight.shape
    ((1, 4, 16, 3), (2, 3))
    """

    def __init__(self, x, weight, grad_y, geometry):
        self.geo = geometry
        self.x = np.asarray(x, dtype=np.float64)
        self.weight = np.asarray(weight, dtype=np.float64)
        self.grad_y = np.asarray(grad_y, dtype=np.float64)
        g = geometry
        self.dense = lbpcore.dense_backward(self.x, self.weight, self.grad_y, layout=g.layout)  # validates shapes
        kw = dict(grid=g.grid, patch=g.n, pad=g.pad, extra_tokens=g.extra_tokens, layout=g.layout)
        # the padded patch vectors in orthonormal Walsh coordinates, (b, P, n*n, C)
        self.x_walsh = full_coefficients(self.x, **kw) / g.n
        self.grad_y_walsh = full_coefficients(self.grad_y, **kw) / g.n

    def project_grad_y(self, q_walsh):
        """``Q pad(grad_y)`` in Walsh coordinates (b, P, n*n, C_out) and its r coefficients (b, P, r, C_out)."""
        a = np.matmul(q_walsh, self.grad_y_walsh)
        return np.matmul(q_walsh.T, a), a

    def backward(self, q_walsh):
        """(grad_x, grad_weight) with ``grad_y`` projected by ``Q`` (rows ``q_walsh``, shape (r, n*n))."""
        pg, a = self.project_grad_y(q_walsh)
        gw = np.tensordot(a, np.matmul(q_walsh, self.x_walsh), axes=([0, 1, 2], [0, 1, 2]))
        g = self.geo
        kw = dict(grid=g.grid, patch=g.n, bases=g.basis, pad=g.pad, layout=g.layout)
        coef = pg * g.n  # unnormalized coefficients on the full basis
        if g.layout == "nchw":
            gproj = lbpcore.reconstruct(coef.transpose(0, 3, 1, 2), **kw)  # (b, C_out, h, w)
            return np.einsum("bohw,oi->bihw", gproj, self.weight, optimize=True), gw
        gproj = lbpcore.reconstruct(coef, **kw)  # (b, h*w, C_out)
        return self.with_extra_tokens(gproj @ self.weight, gw)

    def with_extra_tokens(self, gx, gw):
        """Prepend the exact extra-token rows to ``grad_x`` (tokens) and add their share to ``grad_weight``."""
        e = self.geo.extra_tokens
        if not e:
            return gx, gw
        xe, ge = self.x[:, :e], self.grad_y[:, :e]
        return np.concatenate([ge @ self.weight, gx], axis=1), gw + np.tensordot(ge, xe, axes=([0, 1], [0, 1]))

    def projection_sums(self, q_walsh):
        """``[||(I - Q) g||^2, ||(I - Q) x||^2]`` over the padded patch vectors of ``grad_y`` and ``x``."""
        pg, _ = self.project_grad_y(q_walsh)
        px = np.matmul(q_walsh.T, np.matmul(q_walsh, self.x_walsh))
        return np.array([_sq(pg - self.grad_y_walsh), _sq(px - self.x_walsh)])

    def grid_tokens(self, a):
        """The grid tokens of ``a`` (extra tokens dropped; nchw maps as tokens), shape (b, h*w, C)."""
        if self.geo.layout == "nchw":
            b, c, h, w = a.shape
            return a.reshape(b, c, h * w).transpose(0, 2, 1)
        return a[:, self.geo.extra_tokens:]

    @cached_property
    def svd_u(self):
        """Left singular vectors of each item's grid-token ``grad_y``, shape (b, h*w, m)."""
        return np.linalg.svd(self.grid_tokens(self.grad_y), full_matrices=False)[0]

    def svd_backward(self, k):
        """(grad_x, grad_weight, projection sums, reference sums) with ``grad_y`` truncated to rank ``k`` per item."""
        gt, xt = self.grid_tokens(self.grad_y), self.grid_tokens(self.x)
        uk = self.svd_u[:, :, :k]
        gp = uk @ np.matmul(uk.transpose(0, 2, 1), gt)
        xp = uk @ np.matmul(uk.transpose(0, 2, 1), xt)
        gw = np.tensordot(gp, xt, axes=([0, 1], [0, 1]))
        gx = gp @ self.weight  # (b, h*w, C_in)
        if self.geo.layout == "nchw":
            b, c_in, h, w = self.x.shape
            gx = gx.transpose(0, 2, 1).reshape(b, c_in, h, w)
        else:
            gx, gw = self.with_extra_tokens(gx, gw)
        return gx, gw, np.array([_sq(gp - gt), _sq(xp - xt)]), np.array([_sq(gt), _sq(xt)])


def _sq(a) -> float:
    """Squared Frobenius norm, in float64."""
    flat = np.ravel(a)
    return float(np.dot(flat, flat))


def calibration_sums(grad_y_walsh, n, *, gram=False) -> dict:
    """Sums over ``grad_y`` patch vectors that fix the data-fitted subspaces.

    Parameters
    ----------
    grad_y_walsh : ndarray, shape (b, P, n*n, C_out)
        Padded patch vectors in orthonormal Walsh coordinates
        (:attr:`Chunk.grad_y_walsh`).
    n : int
        Patch size.
    gram : bool, optional
        Also the Gram matrix (for the KLT); default False.

    Returns
    -------
    dict
        ``"l2"`` and ``"l1"`` (K,): energy and L1 sums of the unnormalized
        coefficients per basis (the maps :func:`analysis.spectrum.energy_maps`
        gives); with ``gram`` also ``"gram"`` (K, K), the uncentered second
        moment of the patch vectors.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.error_sums import calibration_sums
    >>> s = calibration_sums(np.ones((1, 1, 4, 1)), 2, gram=True)
    >>> s["l2"].tolist(), s["gram"].shape
    ([4.0, 4.0, 4.0, 4.0], (4, 4))
    """
    out = dict(zip(("l2", "l1"), basis_sums(grad_y_walsh * n, (0, 1, 3)), strict=True))
    if gram:
        out["gram"] = np.tensordot(grad_y_walsh, grad_y_walsh, axes=([0, 1, 3], [0, 1, 3]))
    return out


@dataclass(frozen=True)
class Subspaces:
    """The LBP selection and the baselines' per-patch subspaces at its rank.

    Parameters
    ----------
    basis : lbpcore.BasisSet
        The LBP-WHT selection; its rank ``r`` is every method's rank.
    methods : tuple of str
        Baselines, a subset of :data:`analysis.errors.BASELINES`.
    rows : dict of str to ndarray
        Per-patch method name to its orthonormal rows (r, n*n) in Walsh
        coordinates (``lbp``, ``dct``, ``klt``, ``random``).
    info : dict of str to dict
        Method details for the report.
    svd_rank : int
        Rank of the ``svd`` baseline, ``min(P r, h w, C_out)``.

    Examples
    --------
    >>> import lbpcore
    >>> from analysis.error_sums import Geometry, Subspaces
    >>> geo = Geometry((1, 64, 3), (8, 8), 4, "reflect", 0, "tokens")
    >>> s = Subspaces.at(geo, lbpcore.select_bases(4, "lp_l1:2"), ("dct",), c_out=2)
    >>> sorted(s.rows), s.rows["dct"].shape, s.svd_rank
    (['dct', 'lbp'], (3, 16), 2)
    """

    basis: lbpcore.BasisSet
    methods: tuple
    rows: dict = field(repr=False)
    info: dict
    svd_rank: int

    @classmethod
    def at(cls, geometry, basis, methods, *, c_out, seed=0, klt=None, random=None):
        """The subspaces for the selection ``basis``.

        Parameters
        ----------
        geometry : Geometry
        basis : lbpcore.BasisSet
        methods : tuple of str
        c_out : int
            Output channels (caps the SVD rank).
        seed : int, optional
            Seed of the ``random`` baseline.
        klt : ndarray, shape (n*n, n*n), optional
            All KLT rows by decreasing eigenvalue (from the Gram matrix of
            :func:`calibration_sums`); required for ``klt``.
        random : ndarray, shape (n*n, n*n), optional
            All random rows in Walsh coordinates (computed from ``seed`` if
            not given).

        Returns
        -------
        Subspaces
        """
        g, r = geometry, basis.rank
        rows = {"lbp": g.walsh_rows(basis)}
        info = {"lbp": {"bases": basis.spec}}
        for m in methods:
            if m == "dct":
                rows[m], info[m] = g.to_walsh(dct_basis(g.n, r)), {"order": "(i+j, i, j) low-pass"}
            elif m == "klt":
                rows[m], info[m] = klt[:r], {"fit": "grad_y patch vectors, uncentered"}
            elif m == "random":
                full = g.to_walsh(random_basis(g.n, g.n * g.n, seed)) if random is None else random
                rows[m], info[m] = full[:r], {"seed": seed}
        svd_rank = min(g.plan.num_patches * r, g.grid[0] * g.grid[1], int(c_out))
        if "svd" in methods:
            info["svd"] = {"svd_rank": int(svd_rank), "scope": "per batch item, grid tokens"}
        return cls(basis, tuple(methods), rows, info, int(svd_rank))


def error_sums(chunk, subspaces) -> dict:
    """The sums of one chunk from which every method's errors follow (see the module docstring).

    Parameters
    ----------
    chunk : Chunk
    subspaces : Subspaces

    Returns
    -------
    dict of str to ndarray
        ``"dense.gw"`` (C_out, C_in), ``"dense.gx"`` ``[||g||^2]``,
        ``"walsh"`` ``[||pad grad_y||^2, ||pad x||^2]``; per method ``m``:
        ``"m.gw"`` (C_out, C_in), ``"m.gx"`` ``[||g~ - g||^2, <g~, g>,
        ||g~||^2]``, ``"m.proj"`` ``[||(I-Q) grad_y||^2, ||(I-Q) x||^2]``; with
        ``svd`` also ``"svd.ref"`` (the grid-token norms its projection errors
        are relative to).

    Examples
    --------
    >>> import numpy as np
    >>> import lbpcore
    >>> from analysis.error_sums import Chunk, Geometry, Subspaces, error_sums
    >>> rng = np.random.default_rng(0)
    >>> geo = Geometry((1, 64, 3), (8, 8), 4, "reflect", 0, "tokens")
    >>> c = Chunk(rng.standard_normal((1, 64, 3)), rng.standard_normal((2, 3)), rng.standard_normal((1, 64, 2)), geo)
    >>> s = error_sums(c, Subspaces.at(geo, lbpcore.select_bases(4, "lp_linf:4"), (), c_out=2))
    >>> bool(s["lbp.gx"][0] < 1e-20)  # every basis: exact
    True
    """
    g, d = chunk.geo, chunk.dense
    out = {"dense.gw": d.grad_weight, "dense.gx": np.array([_sq(d.grad_x)]),
           "walsh": np.array([_sq(chunk.grad_y_walsh), _sq(chunk.x_walsh)])}
    lbp = lbpcore.lbp_backward(chunk.x, chunk.weight, chunk.grad_y, grid=g.grid, patch=g.n, bases=subspaces.basis,
                               pad=g.pad, extra_tokens=g.extra_tokens, layout=g.layout)
    _add_method(out, "lbp", lbp.grad_x, lbp.grad_weight, chunk.projection_sums(subspaces.rows["lbp"]), d.grad_x)
    for m in subspaces.methods:
        if m == "svd":
            gx, gw, proj, out["svd.ref"] = chunk.svd_backward(subspaces.svd_rank)
        else:
            q = subspaces.rows[m]
            (gx, gw), proj = chunk.backward(q), chunk.projection_sums(q)
        _add_method(out, m, gx, gw, proj, d.grad_x)
    return out


def _add_method(out, name, gx, gw, proj, dense_gx):
    a, b = np.ravel(gx), np.ravel(dense_gx)
    diff = a - b
    out[f"{name}.gw"] = gw
    out[f"{name}.gx"] = np.array([np.dot(diff, diff), np.dot(a, b), np.dot(a, a)])
    out[f"{name}.proj"] = proj


def method_metrics(sums, name) -> tuple:
    """The errors of one method from the (summed) :func:`error_sums`.

    Parameters
    ----------
    sums : dict
        :func:`error_sums` of one chunk, or their sum over chunks.
    name : str
        ``"lbp"`` or a baseline.

    Returns
    -------
    (dict, dict, dict)
        ``grad_x`` and ``grad_weight`` as ``{"rel_error", "cosine"}``, and
        ``projection`` as ``{"grad_y", "x"}``: the fields of
        :class:`analysis.errors.GradientError`.

    Examples
    --------
    >>> import numpy as np
    >>> from analysis.error_sums import method_metrics
    >>> s = {"dense.gw": np.eye(2), "dense.gx": np.array([4.0]), "walsh": np.array([1.0, 1.0]),
    ...      "m.gw": np.eye(2), "m.gx": np.array([1.0, 3.0, 3.0]), "m.proj": np.array([0.25, 0.0])}
    >>> gx, gw, proj = method_metrics(s, "m")
    >>> gx["rel_error"], gw["rel_error"], proj["grad_y"]
    (0.5, 0.0, 0.5)
    """
    gx = sums[f"{name}.gx"]
    ref = sums["dense.gx"][0]
    grad_x = {"rel_error": relative_error_of_sums(gx[0], ref), "cosine": cosine_of_sums(gx[1], gx[2], ref)}
    gw, gw_ref = sums[f"{name}.gw"], sums["dense.gw"]
    grad_weight = {"rel_error": relative_error(gw, gw_ref), "cosine": cosine(gw, gw_ref)}
    proj, norms = sums[f"{name}.proj"], sums["svd.ref" if name == "svd" else "walsh"]
    projection = {"grad_y": relative_error_of_sums(proj[0], norms[0]),
                  "x": relative_error_of_sums(proj[1], norms[1])}
    return grad_x, grad_weight, projection
