"""The one tolerance table of the tests: comparisons of lbpcore's results with float64 oracles.

:func:`lbpcore.testing.default_tolerance` holds looser, documented defaults for
users' own (larger) problems; the values here are for this suite's small ones.
"""

from __future__ import annotations

import numpy as np

#: (rtol, atol) used when comparing a library result with a float64 oracle
#: evaluated at the same precision as the library input.  float32 results are
#: sums of at most a few thousand terms of O(1) size; 2e-5 relative / 2e-5
#: absolute (on unit-scale data) is ~170 ulp and has ample margin.
TOL = {
    np.dtype(np.float32): (2e-5, 2e-5),
    np.dtype(np.float64): (1e-12, 1e-12),
}

FLOAT_DTYPES = (np.float32, np.float64)


def tol(dtype, scale=1.0):
    """(rtol, atol) for ``dtype``; atol scaled by the data's magnitude ``scale``."""
    rtol, atol = TOL[np.dtype(dtype)]
    return rtol, atol * scale


def assert_allclose_dtype(actual, desired, dtype=None, scale=None, err_msg=""):
    """``numpy.testing.assert_allclose`` with the per-dtype tolerances above.

    ``scale`` defaults to ``max(1, max|desired|)`` so that the absolute part
    tracks the magnitude of the data (cancellation makes some entries tiny).
    """
    actual = np.asarray(actual)
    desired = np.asarray(desired)
    if dtype is None:
        dtype = actual.dtype
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(desired)))) if desired.size else 1.0
    rtol, atol = tol(dtype, scale)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, err_msg=err_msg)


#: float64 unit roundoff.
U64 = float(np.finfo(np.float64).eps) / 2
#: unit roundoff of float32
U32 = float(np.finfo(np.float32).eps) / 2

#: Allowance for the growth of a relative perturbation of ``grad_x`` on its way
#: back through the layers between two converted ones (layer norms, softmax,
#: batch norms, GELU of randomly initialized replicas): each is a Jacobian of
#: norm ~1/sigma of its input, about 1-10 at initialization; 100 bounds their
#: product over the few layers between two linear layers with margin.
KAPPA_BACKPROP = 100.0


def backprop_rtol(layers: int, inner: int, patch: int = 8) -> float:
    """Normwise relative tolerance of a parameter gradient when ``layers`` linear layers use the full basis.

    Full-basis LBP-WHT computes the dense products in another order: per layer,
    ``grad_weight`` sums ``inner`` products (``B * L`` rows, at most the padded
    grid's) and ``grad_x`` ``C_out`` of them, each after a projection and before a
    reconstruction summing ``patch**2`` terms (exact powers of two as scales).
    The classical bound ``gamma_k ~ k u`` for a sum of ``k`` products gives a
    normwise relative error of at most ``(inner + 2 patch**2) u`` per layer;
    the errors of the layers add along the backward chain, each grown by at
    most :data:`KAPPA_BACKPROP` on its way through the operations in between.
    """
    return KAPPA_BACKPROP * layers * (inner + 2 * patch**2) * U64


# --- training trajectories ----------------------------------------------------
#
# Two backward paths that agree in exact arithmetic (full basis and dense) give
# per-step gradients that agree to rounding (:func:`backprop_rtol`): that is a
# bound, and the teacher-forced tests compare at it.  A *trajectory* compounds
# the per-step differences: each step's parameter difference changes the next
# gradient, and AdamW divides by ``sqrt(v) + eps``, which grows a difference by
# up to ``lr |H| / sqrt(v)`` per step where a coordinate's gradients are small.
# No a-priori constant bounds that growth for a given run, so the trajectory
# tests measure it: they inject, at every step, an isotropic random gradient
# perturbation of normwise size ``rho ||g||`` (``rho`` = the per-step bound) and
# measure how far the parameters move (first-order perturbation analysis, as in
# the stochastic-arithmetic error estimates).  For the linearized trajectory
# ``D = sum_j J_j e_j``, an isotropic ``e`` in ``n`` coordinates has
# ``E |J e|^2 = rho^2 |g|^2 |J|_F^2 / n >= rho^2 |g|^2 |J|_2^2 / n``, and
# independent steps add in quadrature, so a worst-case per-step error of size
# ``rho |g|`` moves the parameters by at most ``sqrt(n k)`` times the RMS of the
# perturbed runs' deviations (``k`` steps).  ``TRAJECTORY_SAMPLE_MARGIN`` covers
# estimating that RMS from a few samples (a chi distribution with ``S n`` degrees
# of freedom: relative spread ~ 1/sqrt(2 S n), far below 2).

#: Margin on the RMS of the few perturbed runs that estimate a trajectory's growth.
TRAJECTORY_SAMPLE_MARGIN = 2.0


def trajectory_bound(deviations, n_params: int, steps: int) -> float:
    """Bound on a trajectory difference from perturbed runs' ``deviations`` (see above).

    Parameters
    ----------
    deviations : sequence of float
        Normwise deviations of ``S`` runs perturbed at every step by the per-step bound.
    n_params : int
        Parameters the perturbation spreads over.
    steps : int
        Optimizer steps.
    """
    rms = float(np.sqrt(np.mean(np.square(deviations))))
    return TRAJECTORY_SAMPLE_MARGIN * np.sqrt(n_params * steps) * rms


# --- componentwise bounds of products -----------------------------------------
#
# An entry of a product that cancels has no relative error bound: the classical
# componentwise one is |fl(A B) - A B| <= gamma_k |A| |B| (k terms per entry,
# gamma_k = k u / (1 - k u)), whatever order a BLAS kernel sums in.  Two computed
# paths of the same product differ by at most twice that.


def gamma(k: int, u: float = U64) -> float:
    """``gamma_k = k u / (1 - k u)``: the relative error bound of a ``k``-term sum of products."""
    ku = k * u
    if ku >= 1:
        raise ValueError(f"k u must be below 1, got k={k}, u={u}")
    return ku / (1 - ku)


def assert_product_close(actual, a, b, *, terms=None, err_msg=""):
    """Assert ``actual`` equals ``a @ b`` within twice the componentwise bound.

    ``terms`` (default the inner dimension) is the number of rounded operations
    per entry along ``actual``'s own path (e.g. inner products plus a projection's
    and a reconstruction's sums).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    k = a.shape[-1] if terms is None else int(terms)
    bound = 2 * gamma(k) * (np.abs(a) @ np.abs(b))
    diff = np.abs(np.asarray(actual, dtype=np.float64) - a @ b)
    bad = diff > bound
    assert not np.any(bad), (f"{err_msg} {int(np.sum(bad))} entries past the componentwise bound 2 gamma_{k} |A||B|; "
                             f"worst |diff| / bound = {float(np.max(diff / np.where(bound > 0, bound, np.inf))):.3g}")


# --- analysis.methods (tests/test_methods*.py): keep-everything limits and samplers


def keep_all_bound(inner: int, transform: int = 0) -> float:
    """Normwise bound, relative to ``||A||_F ||B||_F``, of a product ``A^T B`` computed two ways.

    A sum of ``inner`` products has error at most ``gamma_inner ~ inner u`` times
    ``|A|^T |B|``, whose Frobenius norm is at most ``||A||_F ||B||_F``; an
    orthonormal transform of length ``transform`` applied to each factor first
    adds ``transform u`` per factor.  The method and the dense oracle each err
    by that much, hence the factor 2.
    """
    return 2 * (inner + 2 * transform) * U64


#: Markov's inequality on ``||mean_S - exact||^2``, whose expectation is ``V / S`` for an
#: unbiased sampler of total variance ``V``: exceeding ``MARKOV_T * V / S`` has
#: probability at most ``1 / MARKOV_T`` (1 %) for a random choice of the fixed seeds.
MARKOV_T = 100.0

#: z-score bound of a sample mean of S draws against its exact expectation (the CLT:
#: two-sided tail ~6e-7 at 5 standard errors, fixed seeds).
Z_BOUND = 5.0


# --- hostile inputs on the newer surfaces (issue 19, item 3) --------------------

#: Margin over the rounding bound of :func:`single_layer_rtol` (the bound is a
#: worst case; 10 covers the constant of ``gamma_k`` and the reduction orders of
#: different BLAS kernels, and still sits orders of magnitude below any real
#: difference such as a missing term, which is O(1) relative).
SINGLE_LAYER_MARGIN = 10.0


def single_layer_rtol(inner: int, patch: int) -> float:
    """Normwise relative tolerance, float64, of one full-basis layer against the dense one (no chain).

    The same bound as :func:`backprop_rtol` for a single layer, without the
    growth through other layers: at most ``(inner + 2 patch**2) u`` (a product
    summing ``inner`` terms after a projection and before a reconstruction of
    ``patch**2`` terms each), times :data:`SINGLE_LAYER_MARGIN`.  Gradients
    summed over ``k`` backward calls or calls of a shared module add the errors
    of ``k`` such terms: pass ``inner`` times ``k``.
    """
    return SINGLE_LAYER_MARGIN * (inner + 2 * patch**2) * U64
