"""Gradient error of LBP-WHT against the dense backward, next to rank-matched baselines.

For one linear layer ``(x, weight, grad_y)`` and a per-patch rank ``r``,
:func:`gradient_errors` compares the gradients of the backward with ``grad_y``
projected patch by patch (``lbp``: the selected Walsh bases; ``dct``, ``klt``,
``random``: the subspaces of :mod:`analysis.baselines`) or along the tokens
(``svd``: a global truncated SVD of rank ``P r``) with
:func:`lbpcore.dense_backward`.  The baselines, what is guaranteed about their
errors and what is not, are explained in :ref:`method-baselines`.

All computations run in float64 whatever the input dtype, so the errors
measure the approximation, not float32 rounding.  Every error is computed from
sums over the batch (:mod:`analysis.error_sums`), so :func:`gradient_errors`
also streams data larger than memory: shards, Zarr stores, Dask arrays
(:mod:`analysis.stream`).  The results are :class:`GradientError` and
:class:`ErrorReport` (defined in :mod:`analysis.error_report`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import numpy as np

import lbpcore

from .baselines import random_basis, top_eigenvectors, walsh_basis
from .coefficients import full_basis, full_coefficients
from .error_report import ErrorReport, GradientError, report_rows
from .error_sums import Chunk, Geometry, Subspaces, calibration_sums, error_sums, method_metrics
from .metrics import unit_exponent, unit_scale
from .progress import progress_bar
from .stream import as_batches, is_streamed, reduce_batches

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
        from :func:`analysis.coefficients.full_coefficients` by an orthogonal
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
    geo = Geometry(np.shape(x), grid, n, pad, extra_tokens, layout)
    gx, gw = Chunk(x, weight, grad_y, geo).backward(geo.to_walsh(q))
    return lbpcore.Gradients(gx, gw, None)


# ---------------------------------------------------------------------------
# from sums to reports


def _energy_spec(bases) -> bool:
    return isinstance(bases, str) and bases.strip().startswith("energy")


def _selection(geo, bases, calibration):
    """The LBP selection; energy specs are ranked by the calibration sums of ``grad_y``."""
    if not _energy_spec(bases):
        return lbpcore.select_bases(geo.n, bases)
    score = calibration["l1" if bases.strip().startswith("energy_l1") else "l2"]
    return lbpcore.select_bases(geo.n, bases, calibration=geo.score_map(score))


def _subspaces(geo, basis, methods, c_out, seed, calibration, random=None):
    klt = top_eigenvectors(calibration["gram"]) if "klt" in methods else None
    return Subspaces.at(geo, basis, methods, c_out=c_out, seed=seed, klt=klt, random=random)


def _report(sums, geo, subspaces) -> ErrorReport:
    r = subspaces.basis.rank

    def result(name):
        return GradientError(name, r, *method_metrics(sums, name), dict(subspaces.info[name]))

    return ErrorReport(rank=r, patch=geo.n, grid=geo.grid, num_patches=geo.plan.num_patches,
                       bases=subspaces.basis.spec, lbp=result("lbp"),
                       baselines={m: result(m) for m in subspaces.methods}, selection=subspaces.basis)


def _scaled(chunk, exponent):
    """A chunk in float64 times ``2**exponent`` (exact: every reported number is invariant to it)."""
    return np.ldexp(np.asarray(chunk, dtype=np.float64), exponent)


def _calibration_chunk(grad_y, geo, gram, exponent):
    """:func:`calibration_sums` of a chunk of ``grad_y`` (pass 1 of a streamed run)."""
    coef = full_coefficients(_scaled(grad_y, exponent), grid=geo.grid, patch=geo.n, pad=geo.pad,
                             extra_tokens=geo.extra_tokens, layout=geo.layout)
    return calibration_sums(coef / geo.n, geo.n, gram=gram)


def _error_chunk(x, grad_y, weight, geo, subspaces, exponents):
    """:func:`error_sums` of a chunk (pass 2 of a streamed run)."""
    return error_sums(Chunk(_scaled(x, exponents[0]), weight, _scaled(grad_y, exponents[1]), geo), subspaces)


class _StreamedLayer:
    """A layer read in chunks: its sources, unit-scaled weight, geometry and the scales of ``x`` and ``grad_y``.

    One power of two per array for the whole batch, taken from its first item
    (the largest magnitude of the whole batch is not known before it is read),
    keeps every sum exact, as the in-memory scaling does (:func:`_unit_scaled`).
    """

    def __init__(self, x, weight, grad_y, geo_args):
        self.x, self.grad_y = as_batches(x), as_batches(grad_y)
        weight = np.asarray(weight)
        for name, shape in (("x", self.x.shape), ("weight", weight.shape), ("grad_y", self.grad_y.shape)):
            if math.prod(shape) == 0:
                raise ValueError(f"{name} is empty (shape {tuple(shape)}): there is no gradient to compare")
        self.weight = unit_scale(weight)
        self.geo = Geometry(self.x.shape, *geo_args)
        self.exponents = tuple(unit_exponent(np.asarray(a[:1])) for a in (self.x, self.grad_y))


def _streamed_calibration(layer, bases, methods, run):
    """Pass 1 over ``grad_y`` (only when the KLT or an energy spec needs it): its calibration sums."""
    if not (_energy_spec(bases) or "klt" in methods):
        return None
    geo = layer.geo
    if _energy_spec(bases):  # a bad spec fails before the data are read
        lbpcore.select_bases(geo.n, bases, calibration=np.ones((geo.n, geo.n)))
    chunk = partial(_calibration_chunk, geo=geo, gram="klt" in methods, exponent=layer.exponents[1])
    sums, _ = reduce_batches([layer.grad_y], chunk, desc="grad_y calibration", **run)
    return sums


def _streamed_report(layer, subspaces, run) -> ErrorReport:
    """Pass 2: the error sums of every chunk, added up."""
    chunk = partial(_error_chunk, weight=layer.weight, geo=layer.geo, subspaces=subspaces, exponents=layer.exponents)
    sums, _ = reduce_batches([layer.x, layer.grad_y], chunk, desc="gradient errors", **run)
    return _report(sums, layer.geo, subspaces)


def _streamed_errors(x, weight, grad_y, geo_args, bases, methods, seed, run) -> ErrorReport:
    layer = _StreamedLayer(x, weight, grad_y, geo_args)
    calibration = _streamed_calibration(layer, bases, methods, run)
    basis = _selection(layer.geo, bases, calibration)
    subspaces = _subspaces(layer.geo, basis, methods, layer.weight.shape[0], seed, calibration)
    return _streamed_report(layer, subspaces, run)


def _streamed_sweep(x, weight, grad_y, geo_args, ks, methods, seed, run, bar) -> list:
    layer = _StreamedLayer(x, weight, grad_y, geo_args)
    geo = layer.geo
    calibration = _streamed_calibration(layer, "lp_l1:1", methods, run)
    random = geo.to_walsh(random_basis(geo.n, geo.n * geo.n, seed)) if "random" in methods else None
    reports = []
    for k in (range(1, 2 * geo.n) if ks is None else ks):
        basis = lbpcore.select_bases(geo.n, f"lp_l1:{k}")
        subspaces = _subspaces(geo, basis, methods, layer.weight.shape[0], seed, calibration, random)
        reports.append(_streamed_report(layer, subspaces, run))
        bar.update()
    return reports


def gradient_errors(x, weight, grad_y, *, grid=None, patch=8, bases="lp_l1:6", pad="reflect", extra_tokens=0,
                    layout="tokens", baselines=BASELINES, seed=0, memory=None, scheduler=None,
                    progress=False, methods=(), method_seeds=8) -> ErrorReport:
    """Gradient errors of LBP-WHT and rank-matched baselines against the dense backward.

    Parameters
    ----------
    x : array_like, path, BatchSource or dask.array.Array, shape (B, e + h*w, C_in) or (B, C_in, H, W)
        Layer input; float32 or float64 (computed in float64).  Paths (see
        :func:`analysis.sources.open_source`), sources and Dask arrays are
        streamed in batch chunks (:func:`analysis.stream.reduce_batches`).
    weight : array_like, shape (C_out, C_in)
    grad_y : array_like, path, BatchSource or dask.array.Array, shape (B, e + h*w, C_out) or (B, C_out, H, W)
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
    memory, scheduler, progress
        Memory budget, ``dask.distributed`` scheduler and progress output of
        a streamed run, as for :func:`analysis.spectrum.energy_maps`.  The
        streamed errors equal the in-memory ones to float64 rounding of the
        sums; with ``klt`` or an energy spec the data are read twice
        (:ref:`method-streaming`).
    methods : sequence of str, optional
        Published methods to measure too (specs of
        :func:`analysis.methods.get_method`, e.g. ``("wtacrs:0.3", "hot")``),
        by :func:`analysis.methods.measure.method_errors`: in
        :attr:`ErrorReport.alternatives`.  In-memory arrays only.
    method_seeds : int, optional
        Draws of each stochastic method for its bias² and variance (default 8).

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
    methods, published = _check_methods(baselines), _check_published(methods, method_seeds)
    geo_args = (grid, patch, pad, extra_tokens, layout)
    if is_streamed(x, memory, scheduler) or is_streamed(grad_y):
        if published:
            raise ValueError("methods= needs the arrays in memory (not a path, source, Dask array or memory budget)")
        run = dict(memory=memory, scheduler=scheduler, progress=progress)
        return _streamed_errors(x, weight, grad_y, geo_args, bases, methods, seed, run)
    x, weight, grad_y = _unit_scaled(x, weight, grad_y)
    geo = Geometry(np.shape(x), *geo_args)
    chunk = Chunk(x, weight, grad_y, geo)
    calibration = None
    if _energy_spec(bases) or "klt" in methods:
        calibration = calibration_sums(chunk.grad_y_walsh, geo.n, gram="klt" in methods)
    basis = _selection(geo, bases, calibration)
    subspaces = _subspaces(geo, basis, methods, chunk.weight.shape[0], seed, calibration)
    report = _report(error_sums(chunk, subspaces), geo, subspaces)
    if not published:
        return report
    from .methods.measure import method_errors  # noqa: PLC0415 - analysis.methods imports this module

    alternatives = method_errors(x, weight, grad_y, published, grid=grid, patch=geo.n, extra_tokens=extra_tokens,
                                 layout=layout, seeds=method_seeds, seed=seed)
    return replace(report, alternatives=alternatives)


def _check_published(methods, seeds):
    """The published-method specs, each checked (a bad one fails before any work)."""
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(methods or ())
    if methods:
        from .methods import get_method  # noqa: PLC0415 - analysis.methods imports this module

        for spec in methods:
            get_method(spec)
        if int(seeds) < 1:
            raise ValueError(f"method_seeds must be >= 1, got {seeds}")
    return methods


def rank_sweep(x, weight, grad_y, *, grid=None, patch=8, ks=None, methods=BASELINES, pad="reflect",
               extra_tokens=0, layout="tokens", seed=0, progress=True, memory=None, scheduler=None) -> list:
    """Gradient errors over ``lp_l1:k`` for a range of ``k``.

    The data are projected once and the KLT, SVD and random bases computed
    once, so a sweep costs little more than its projections.  Streamed
    inputs (paths, sources, Dask arrays, or a ``memory`` budget) are read
    once for the KLT and once per ``k``.

    Parameters
    ----------
    x, weight, grad_y, grid, patch, pad, extra_tokens, layout, seed, memory, scheduler
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
    ks = None if ks is None else [int(k) for k in ks]
    if is_streamed(x, memory, scheduler) or is_streamed(grad_y):
        run = dict(memory=memory, scheduler=scheduler, progress=False)
        with progress_bar(None if ks is None else len(ks), "rank sweep", enabled=None if progress else False) as bar:
            return _streamed_sweep(x, weight, grad_y, (grid, patch, pad, extra_tokens, layout), ks, methods, seed,
                                   run, bar)
    x, weight, grad_y = _unit_scaled(x, weight, grad_y)
    geo = Geometry(np.shape(x), grid, patch, pad, extra_tokens, layout)
    chunk = Chunk(x, weight, grad_y, geo)
    calibration = calibration_sums(chunk.grad_y_walsh, geo.n, gram=True) if "klt" in methods else None
    random = geo.to_walsh(random_basis(geo.n, geo.n * geo.n, seed)) if "random" in methods else None
    ks = list(range(1, 2 * geo.n)) if ks is None else ks
    reports = []
    with progress_bar(len(ks), "rank sweep", enabled=None if progress else False) as bar:
        for k in ks:
            basis = lbpcore.select_bases(geo.n, f"lp_l1:{k}")
            subspaces = _subspaces(geo, basis, methods, chunk.weight.shape[0], seed, calibration, random)
            reports.append(_report(error_sums(chunk, subspaces), geo, subspaces))
            bar.update()
    return reports
