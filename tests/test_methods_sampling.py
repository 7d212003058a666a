"""analysis.methods: the samplers are unbiased, with the variances of their formulas (statistical tests, fixed seeds).

For an unbiased sampler of total variance ``V = E||g~ - g||^2`` the mean of S
independent draws has ``E||mean - g||^2 = V / S`` exactly, so Markov's
inequality bounds ``||mean - g||^2 <= MARKOV_T V / S`` (false alarm at most
``1 / MARKOV_T`` for a random choice of the fixed seeds).  ``V`` is computed
here from each method's variance formula, and checked against the draws with
a z-score of the mean squared error (``Z_BOUND`` standard errors).  A biased
method (meProp, CRS without its ``1/p`` scaling) fails the same criterion.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.methods import get_method
from tests.tolerances import MARKOV_T, Z_BOUND

GRID = (4, 4)
S = 3000


def _layer(seed=0):
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.standard_normal((2, 16, 1)))  # rows of uneven norms: the samplers' weights matter
    return rng.standard_normal((2, 16, 6)) * scale, rng.standard_normal((5, 6)), rng.standard_normal((2, 16, 5))


def _terms(x, gy):
    x2, g2 = x.reshape(-1, x.shape[-1]), gy.reshape(-1, gy.shape[-1])
    return x2, g2, np.sqrt((x2 ** 2).sum(1) * (g2 ** 2).sum(1))


def _variance_rad(x, gy, rho):
    _, _, s = _terms(x, gy)
    return (1 - rho) / rho * float((s ** 2).sum())


def _variance_crs(x, gy, rho):
    x2, _, s = _terms(x, gy)
    k = math.ceil(rho * x2.shape[0])
    lo, hi = 0.0, 1.0 / s.min()
    for _ in range(200):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.minimum(1, c * s).sum() < k else (lo, c)
    p = np.minimum(1, c * s)
    return float(((1 - p) / p * s ** 2).sum())


def _variance_wtacrs(x, gy, rho):
    x2, g2, s = _terms(x, gy)
    n = x2.shape[0]
    k = math.ceil(rho * n)
    p = s / s.sum()
    order = np.argsort(-p)
    best = min(range(k), key=lambda c: (1 - p[order[:c]].sum()) / (k - c))  # brute force over the winners
    rest = order[best:]
    q = p[rest] / p[rest].sum()
    a_rest = g2[rest].T @ x2[rest]
    return (float((s[rest] ** 2 / q).sum()) - float((a_rest ** 2).sum())) / (k - best)


def _variance_compact(x, gy, rho):
    c_in = x.shape[-1]
    r = math.ceil(rho * c_in)
    a = gy.reshape(-1, gy.shape[-1]).T @ x.reshape(-1, c_in)
    return (c_in + 1) / r * float((a ** 2).sum())


CASES = [("rad:0.3", _variance_rad, 0.3), ("crs:0.25", _variance_crs, 0.25), ("wtacrs:0.25", _variance_wtacrs, 0.25),
         ("wtacrs:0.6", _variance_wtacrs, 0.6), ("compact:0.5", _variance_compact, 0.5)]


def _draws(estimator, x, w, gy, seed):
    exact = gy.reshape(-1, gy.shape[-1]).T @ x.reshape(-1, x.shape[-1])
    total = np.zeros_like(exact)
    d2 = np.empty(S)
    for s in range(S):
        est = estimator(x, w, gy, np.random.default_rng([seed, s]))
        total += est
        d2[s] = float(((est - exact) ** 2).sum())
    return exact, total / S, d2


def _method(spec):
    m = get_method(spec)
    return lambda x, w, gy, rng: m.backward(x, w, gy, grid=GRID, rng=rng)[1]


@pytest.mark.parametrize(("spec", "variance", "rho"), CASES, ids=[c[0] for c in CASES])
def test_sampler_is_unbiased_with_its_variance(spec, variance, rho):
    x, w, gy = _layer(seed=1)
    v = variance(x, gy, rho)
    exact, mean, d2 = _draws(_method(spec), x, w, gy, seed=2)
    assert float(((mean - exact) ** 2).sum()) <= MARKOV_T * v / S
    assert abs(d2.mean() - v) <= Z_BOUND * d2.std(ddof=1) / math.sqrt(S)
    assert get_method(spec).unbiased




def _unscaled(x, gy, rng):
    from analysis.methods.sampling import bernoulli_probabilities  # noqa: PLC0415

    x2, g2, s = _terms(x, gy)
    p = bernoulli_probabilities(s, math.ceil(0.25 * x2.shape[0]))
    keep = rng.random(x2.shape[0]) < p
    return g2[keep].T @ x2[keep]


@pytest.mark.parametrize("estimator", [_unscaled, "meprop:0.3"], ids=["crs-unscaled", "meprop"])
def test_biased_estimators_fail_the_criterion(estimator):
    x, w, gy = _layer(seed=1)
    est = _method(estimator) if isinstance(estimator, str) else (lambda x, w, gy, rng: _unscaled(x, gy, rng))
    exact, mean, _ = _draws(est, x, w, gy, seed=2)
    v = _variance_crs(x, gy, 0.25)  # the variance an unbiased CRS would have
    assert float(((mean - exact) ** 2).sum()) > MARKOV_T * v / S


def test_draws_are_deterministic_given_the_seed():
    x, w, gy = _layer()
    for spec in ("rad:0.3", "crs:0.3", "wtacrs:0.3", "compact:0.3"):
        m = get_method(spec)
        a = m.backward(x, w, gy, grid=GRID, rng=5)[1]
        b = m.backward(x, w, gy, grid=GRID, rng=np.random.default_rng(5))[1]
        assert np.array_equal(a, b)
        assert not np.array_equal(a, m.backward(x, w, gy, grid=GRID, rng=6)[1])
