"""analysis.methods: the registry, the keep-everything limits and each rule against an oracle written here.

The samplers' statistics (unbiasedness, variances) are in tests/test_methods_sampling.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbpcore
from analysis.methods import PAPER_DEFAULTS, PARETO_SWEEP, available_methods, get_method
from analysis.methods.measure import method_errors
from analysis.methods.sampling import bernoulli_probabilities
from tests.tolerances import keep_all_bound

GRID = (8, 8)
E = 1


def _layer(seed=0, b=3, c_in=16, c_out=24, grid=GRID, e=E):
    rng = np.random.default_rng(seed)
    length = e + grid[0] * grid[1]
    return (rng.standard_normal((b, length, c_in)), rng.standard_normal((c_out, c_in)),
            rng.standard_normal((b, length, c_out)))


def _dense(x, w, gy):
    """The dense backward, written out: grad_x[b,l,i] = sum_o gy[b,l,o] w[o,i]; grad_W[o,i] = sum gy x."""
    return np.einsum("blo,oi->bli", gy, w), np.einsum("blo,bli->oi", gy, x)


def _fro(a):
    return float(np.linalg.norm(np.ravel(a)))


def _assert_dense(gx, gw, x, w, gy, transform=0):
    ex, ew = _dense(x, w, gy)
    n = x.shape[0] * x.shape[1]
    assert _fro(gw - ew) <= keep_all_bound(n, transform) * _fro(gy) * _fro(x)
    assert _fro(gx - ex) <= keep_all_bound(w.shape[0], transform) * _fro(gy) * _fro(w)


# ---------------------------------------------------------------------------
# registry and specs


def test_available_methods_lists_every_family():
    forms = available_methods()
    assert list(forms) == ["lbp", "velora", "compact", "wtacrs", "crs", "meprop", "rad", "hot", "calibrated"]
    for spec in PAPER_DEFAULTS + PARETO_SWEEP:
        assert get_method(spec).family in forms


@pytest.mark.parametrize("spec", ["svd:3", "foo", "", "wtacrs", "wtacrs:0", "wtacrs:1.5", "wtacrs:abc", "crs:-0.1",
                                  "rad:nan", "meprop:", "velora:0", "velora:x", "calibrated:-1", "calibrated:2.5",
                                  "hot:gx=int1", "hot:foo=1", "hot:keep=2", "hot:block=12", "hot:gx",
                                  "lbp:nonsense", "lbp:"])
def test_bad_specs_name_the_accepted_ones(spec):
    with pytest.raises(ValueError) as info:
        get_method(spec)
    msg = str(info.value)
    assert repr(spec) in msg or spec.strip() in msg
    family = spec.partition(":")[0]
    if family in available_methods() and family != "lbp":
        assert available_methods()[family][0].split("[")[0] in msg  # the accepted form of that family
    elif family not in available_methods():
        assert "accepted specs" in msg and "wtacrs:rho" in msg and "lbp:<bases>" in msg


def test_spec_must_be_a_string():
    with pytest.raises(TypeError, match="string"):
        get_method(0.3)


def test_specs_are_normalized_and_methods_pass_through():
    m = get_method("  WTACRS:0.3 ")
    assert m.spec == "wtacrs:0.3" and get_method(m) is m
    assert get_method("hot").spec == "hot"


def test_calibrated_methods_refuse_backward_before_calibrate():
    x, w, gy = _layer()
    for spec in ("velora:4", "calibrated:3", "lbp:energy_l2:6"):
        with pytest.raises(RuntimeError, match="calibrate"):
            get_method(spec).backward(x, w, gy, grid=GRID, extra_tokens=E)


def test_velora_groups_must_divide_c_in():
    x, w, gy = _layer(c_in=10)
    with pytest.raises(ValueError, match="divide C_in = 10"):
        get_method("velora:4").calibrate(x, w, gy, grid=GRID, extra_tokens=E)


def test_shapes_are_checked():
    x, w, gy = _layer()
    with pytest.raises(ValueError, match="tokens"):
        get_method("rad:0.5").backward(x, w, gy, grid=(7, 8), extra_tokens=E)
    with pytest.raises(ValueError):
        get_method("rad:0.5").backward(x, w[:, :3], gy, grid=GRID, extra_tokens=E)
    with pytest.raises(TypeError, match="floating"):
        get_method("rad:0.5").backward(x.astype(int), w, gy, grid=GRID, extra_tokens=E)


# ---------------------------------------------------------------------------
# keep everything: the dense backward


@pytest.mark.parametrize(("spec", "transform"), [
    ("lbp:lp_linf:8", 64), ("calibrated:64", 64), ("velora:16", 0), ("wtacrs:1", 0), ("crs:1", 0), ("rad:1", 0),
    ("meprop:1", 0), ("hot:gx=fp,gw=fp,keep=1", 16), ("hot:gx=fp,gw=fp,keep=1,block=4", 4),
])
def test_keep_everything_is_dense(spec, transform):
    x, w, gy = _layer(seed=1)
    m = get_method(spec)
    if m.needs_calibration:
        cx, cw, cgy = _layer(seed=2)
        m.calibrate(cx, w, cgy, grid=GRID, extra_tokens=E)
    gx, gw = m.backward(x, w, gy, grid=GRID, extra_tokens=E, rng=3)
    _assert_dense(gx, gw, x, w, gy, transform)
    assert m.saved_fraction(x.shape, w.shape[0], grid=GRID, extra_tokens=E) >= 1.0 - 1e-12


def test_compact_is_not_exact_at_rho_1():
    """The Gaussian P P^T is not I even with r = C_in: the method is unbiased, never exact (documented)."""
    x, w, gy = _layer()
    _, gw = get_method("compact:1").backward(x, w, gy, grid=GRID, extra_tokens=E, rng=0)
    assert _fro(gw - _dense(x, w, gy)[1]) > 0.1 * _fro(_dense(x, w, gy)[1])


# ---------------------------------------------------------------------------
# each rule against its formula


def test_lbp_is_lbpcore():
    x, w, gy = _layer()
    gx, gw = get_method("lbp:lp_l1:4").backward(x, w, gy, grid=GRID, patch=4, extra_tokens=E)
    ref = lbpcore.lbp_backward(x, w, gy, grid=GRID, patch=4, bases="lp_l1:4", extra_tokens=E)
    assert np.array_equal(gx, ref.grad_x) and np.array_equal(gw, ref.grad_weight)


def test_velora_against_its_formula():
    x, w, gy = _layer(seed=4)
    cx, _, cgy = _layer(seed=5)
    groups, d = 4, 4
    m = get_method(f"velora:{groups}").calibrate(cx, w, cgy, grid=GRID, extra_tokens=E)
    gx, gw = m.backward(x, w, gy, grid=GRID, extra_tokens=E)
    subs = [cx[b, t, g * d:(g + 1) * d] for b in range(cx.shape[0]) for t in range(cx.shape[1]) for g in range(groups)]
    v = np.sum(subs, axis=0)
    v = v / np.sqrt(np.sum(v * v))  # the normalized mean (the mean's scale cancels)
    xs = x.reshape(x.shape[0], x.shape[1], groups, d)
    z = np.einsum("bltd,d->blt", xs, v)
    x_hat = (z[..., None] * v).reshape(x.shape)
    np.testing.assert_allclose(gw, np.einsum("blo,bli->oi", gy, x_hat), rtol=1e-12, atol=1e-12 * _fro(gy) * _fro(x))
    assert np.array_equal(gx, (gy.reshape(-1, w.shape[0]) @ w).reshape(x.shape))
    assert m.saved_fraction(x.shape, 24, grid=GRID, extra_tokens=E) == groups / 16


def test_compact_against_its_formula():
    x, w, gy = _layer(seed=6)
    r = math.ceil(0.3 * 16)
    p = np.random.default_rng(7).standard_normal((16, r)) / math.sqrt(r)  # the documented draw
    _, gw = get_method("compact:0.3").backward(x, w, gy, grid=GRID, extra_tokens=E, rng=7)
    ref = np.einsum("blo,blr,ir->oi", gy, np.einsum("bli,ir->blr", x, p), p)
    np.testing.assert_allclose(gw, ref, rtol=1e-12, atol=1e-12 * _fro(ref))


def test_meprop_against_its_formula():
    x, w, gy = _layer(seed=8)
    k = math.ceil(0.2 * 24)
    sparse = np.zeros_like(gy)
    for b in range(gy.shape[0]):
        for t in range(gy.shape[1]):
            top = sorted(range(24), key=lambda o, row=gy[b, t]: -abs(row[o]))[:k]
            sparse[b, t, top] = gy[b, t, top]
    gx, gw = get_method("meprop:0.2").backward(x, w, gy, grid=GRID, extra_tokens=E)
    ex, ew = _dense(x, w, sparse)
    np.testing.assert_allclose(gx, ex, rtol=1e-12, atol=1e-12 * _fro(ex))
    np.testing.assert_allclose(gw, ew, rtol=1e-12, atol=1e-12 * _fro(ew))


def test_rad_against_its_formula():
    x, w, gy = _layer(seed=9)
    keep = np.random.default_rng(10).random(x.reshape(-1, 16).shape) < 0.4  # the documented draw
    x_tilde = np.where(keep, x.reshape(-1, 16) / 0.4, 0.0).reshape(x.shape)
    _, gw = get_method("rad:0.4").backward(x, w, gy, grid=GRID, extra_tokens=E, rng=10)
    np.testing.assert_allclose(gw, _dense(x_tilde, w, gy)[1], rtol=1e-12, atol=1e-12 * _fro(gw))


def test_crs_against_its_formula():
    x, w, gy = _layer(seed=11)
    x2, g2 = x.reshape(-1, 16), gy.reshape(-1, 24)
    n, k = x2.shape[0], math.ceil(0.25 * x2.shape[0])
    s = np.sqrt((x2 ** 2).sum(1) * (g2 ** 2).sum(1))
    lo, hi = 0.0, 1.0 / s.min()  # sum(min(1, c s)) = k by bisection on c
    for _ in range(200):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.minimum(1, c * s).sum() < k else (lo, c)
    p = np.minimum(1, c * s)
    keep = np.random.default_rng(12).random(n) < p
    ref = sum(np.outer(g2[i], x2[i]) / p[i] for i in range(n) if keep[i])
    _, gw = get_method("crs:0.25").backward(x, w, gy, grid=GRID, extra_tokens=E, rng=12)
    np.testing.assert_allclose(gw, ref, rtol=1e-9, atol=1e-9 * _fro(ref))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.just(0.0), st.floats(1e-150, 1e150)), min_size=1, max_size=40), st.integers(1, 40))
def test_bernoulli_probabilities_properties(scores, k):
    s = np.array(scores)
    p = bernoulli_probabilities(s, k)
    nnz = int(np.count_nonzero(s))
    assert np.all((p >= 0) & (p <= 1)) and np.all(p[s == 0] == 0)
    assert abs(p.sum() - min(k, nnz)) <= 1e-9 * max(k, 1)
    free = (p < 1) & (s > 0)
    if free.any():  # one constant c for the rows not clipped, and every clipped row scores at least as high
        c = p[free] / s[free]
        assert np.allclose(c, c[0], rtol=1e-9)
        assert np.all(s[p == 1] * c[0] >= 1 - 1e-9)


def _sequency_hadamard(n):
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    changes = [(np.diff(np.sign(row)) != 0).sum() for row in h]
    return h[np.argsort(changes)] / math.sqrt(n)


def _q(a, bits):
    s = np.abs(a).max() / (2 ** (bits - 1) - 1)
    return np.round(a / s) * s


def test_hot_against_its_formula():
    x, w, gy = _layer(seed=13, c_out=40)  # C_out = 40 and L = 65 pad to 48 and 80
    b, length, c_in = x.shape
    h = _sequency_hadamard(16)
    hbd = np.kron(np.eye(3), h)  # (48, 48) block diagonal along C_out
    gp = np.concatenate([gy, np.zeros((b, length, 8))], axis=2).reshape(-1, 48)
    wp = np.concatenate([w, np.zeros((8, c_in))], axis=0)
    ref_gx = (_q(gp @ hbd.T, 4) @ _q(hbd @ wp, 4)).reshape(x.shape)
    tk = np.kron(np.eye(5), h[:8])  # (40, 80): the 8 lowest sequencies of each block of 16 tokens
    pad = ((0, 0), (0, 80 - length), (0, 0))
    a = np.einsum("st,btc->bsc", tk, np.pad(gy, pad))
    c = np.einsum("st,btc->bsc", tk, np.pad(x, pad))
    ref_gw = np.einsum("bso,bsi->oi", _q(a, 8), _q(c, 8))
    gx, gw = get_method("hot").backward(x, w, gy, grid=GRID, extra_tokens=E)
    np.testing.assert_allclose(gx, ref_gx, rtol=1e-9, atol=1e-9 * _fro(ref_gx))
    np.testing.assert_allclose(gw, ref_gw, rtol=1e-9, atol=1e-9 * _fro(ref_gw))
    assert get_method("hot").saved_fraction(x.shape, 40, grid=GRID, extra_tokens=E) == b * 40 * c_in * 8 / 32 / (
        b * length * c_in)


def _patches(a, n):
    """(B, P, n*n, C) patch vectors of the grid tokens of a (divisible grid, row-major patches)."""
    b, _, c = a.shape
    g = a[:, E:].reshape(b, GRID[0] // n, n, GRID[1] // n, n, c)
    return g.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, n * n, c)


def _unpatch(v, n, c):
    b = v.shape[0]
    g = v.reshape(b, GRID[0] // n, GRID[1] // n, n, n, c).transpose(0, 1, 3, 2, 4, 5)
    return g.reshape(b, GRID[0] * GRID[1], c)


def test_calibrated_against_its_formula():
    n, r = 4, 5
    x, w, gy = _layer(seed=14)
    cx, _, cgy = _layer(seed=15)
    vec = _patches(cgy, n).transpose(0, 1, 3, 2).reshape(-1, n * n)
    evals, evecs = np.linalg.eigh(vec.T @ vec)
    q = evecs[:, np.argsort(-evals)[:r]]  # (n*n, r): the frozen subspace
    proj = np.einsum("pk,bjkc->bjpc", q @ q.T, _patches(gy, n))
    g_proj = np.concatenate([gy[:, :E], _unpatch(proj, n, 24)], axis=1)  # extra tokens exact
    ref_gw = np.einsum("blo,bli->oi", g_proj, x)
    ref_gx = g_proj @ w
    m = get_method(f"calibrated:{r}").calibrate(cx, w, cgy, grid=GRID, patch=n, extra_tokens=E)
    gx, gw = m.backward(x, w, gy, grid=GRID, patch=n, extra_tokens=E)
    np.testing.assert_allclose(gw, ref_gw, rtol=1e-9, atol=1e-9 * _fro(ref_gw))
    np.testing.assert_allclose(gx, ref_gx, rtol=1e-9, atol=1e-9 * _fro(ref_gx))


# ---------------------------------------------------------------------------
# costs


def test_costs_follow_the_cost_model():
    shape, c_out, n = (3, 65, 16), 24, 3 * 65
    dense = 4 * n * 16 * c_out
    lbp = lbpcore.backward_cost(shape, c_out, grid=GRID, bases="lp_l1:6", extra_tokens=E)
    assert get_method("lbp:lp_l1:6").backward_flops(shape, c_out, grid=GRID, extra_tokens=E) == lbp.lbp_flops
    assert get_method("lbp:lp_l1:6").saved_fraction(shape, c_out, grid=GRID, extra_tokens=E) == lbp.memory_ratio
    k = math.ceil(0.3 * n)
    for spec in ("wtacrs:0.3", "crs:0.3"):
        m = get_method(spec)
        assert m.saved_fraction(shape, c_out, grid=GRID, extra_tokens=E) == k / n
        assert m.backward_flops(shape, c_out, grid=GRID, extra_tokens=E) == (
            dense // 2 + 2 * k * 16 * c_out + 2 * n * (16 + c_out) + k * 16)
    kept = math.ceil(0.25 * c_out)
    assert get_method("meprop:0.25").backward_flops(shape, c_out, grid=GRID, extra_tokens=E) == (
        4 * n * kept * 16 + n * c_out)
    assert get_method("meprop:0.25").saved_fraction(shape, c_out, grid=GRID, extra_tokens=E) == 1.0
    assert math.isnan(get_method("rad:0.5").saved_fraction((0, 65, 16), c_out, grid=GRID, extra_tokens=E))


# ---------------------------------------------------------------------------
# method_errors


def test_method_errors_bias_plus_variance_is_the_mean_squared_error():
    x, w, gy = _layer(seed=16, b=4)
    res = method_errors(x, w, gy, ["rad:0.3", "meprop:0.2", "lbp:lp_l1:3"], grid=GRID, extra_tokens=E, seeds=6)
    for e in res.values():
        g = e.grad_weight
        assert math.isclose(g["bias2"] + g["variance"], g["rel_error"] ** 2, rel_tol=1e-9)
    assert res["meprop:0.2"].grad_weight["variance"] == 0.0 and res["meprop:0.2"].seeds == 1
    assert res["rad:0.3"].seeds == 6 and res["rad:0.3"].grad_x["rel_error"] < 1e-14
    assert res["lbp:lp_l1:3"].flops_fraction < 1


def test_method_errors_cross_fits_calibrated_methods():
    x, w, gy = _layer(seed=17, b=4)
    res = method_errors(x, w, gy, ["velora:4"], grid=GRID, extra_tokens=E)["velora:4"]
    assert res.info["calibration"].startswith("two-fold")
    m_a = get_method("velora:4").calibrate(x[:2], w, gy[:2], grid=GRID, extra_tokens=E)
    m_b = get_method("velora:4").calibrate(x[2:], w, gy[2:], grid=GRID, extra_tokens=E)
    gw = m_b.backward(x[:2], w, gy[:2], grid=GRID, extra_tokens=E)[1] + m_a.backward(x[2:], w, gy[2:], grid=GRID,
                                                                                        extra_tokens=E)[1]
    exact = _dense(x, w, gy)[1]
    assert math.isclose(res.grad_weight["rel_error"], _fro(gw - exact) / _fro(exact), rel_tol=1e-9)


def test_method_errors_nchw_matches_tokens():
    x, w, gy = _layer(seed=18, e=0)
    maps = [a.reshape(3, 8, 8, -1).transpose(0, 3, 1, 2) for a in (x, gy)]
    tok = method_errors(x, w, gy, ["hot", "crs:0.5"], grid=GRID, seeds=2)
    nchw = method_errors(maps[0], w, maps[1], ["hot", "crs:0.5"], layout="nchw", seeds=2)
    for spec in tok:
        assert math.isclose(tok[spec].grad_weight["rel_error"], nchw[spec].grad_weight["rel_error"], rel_tol=1e-9)


def test_method_errors_rejects_bad_arguments():
    x, w, gy = _layer()
    with pytest.raises(ValueError, match="accepted specs"):
        method_errors(x, w, gy, ["nope"], grid=GRID, extra_tokens=E)
    with pytest.raises(ValueError, match="seeds"):
        method_errors(x, w, gy, ["rad:0.5"], grid=GRID, extra_tokens=E, seeds=0)
