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


# --------------------------------------------------------------------------
# hostile inputs on the newer surfaces (issue 19, item 3)
# --------------------------------------------------------------------------

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
