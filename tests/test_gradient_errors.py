"""analysis.errors and analysis.baselines: gradient errors of LBP-WHT and rank-matched baselines.

(Named ``test_gradient_errors.py`` because ``tests/test_errors.py`` holds the
core's error-message tests.)

Checks against independent computations: an explicit per-patch projector on
``numpy.pad``-ded patches, ``scipy.fft.dct``, ``numpy.linalg.svd``, and the
core's :func:`lbpcore.lbp_backward`.  Also checks what is and is not
guaranteed about the ordering of the methods:

* KLT has the smallest projection error of ``grad_y`` of any per-patch
  rank-``r`` projector (asserted against WHT, DCT and random at every rank),
  and the global SVD is smaller still on divisible grids (Eckart–Young);
* the downstream ``grad_x`` / ``grad_weight`` errors are *not* ordered in
  general (a constructed counterexample), but obey
  ``||dgrad_x|| <= ||W||_2 ||(I-Q) g||`` (equality of relative errors for ``W``
  with orthonormal rows) and ``||dgrad_W|| <= ||(I-Q) g|| ||(I-Q) x||``.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from oracles import basis_images_oracle, lp_l1_oracle, pad_oracle, pad_widths

import lbpcore
from analysis import progress
from analysis.baselines import dct_basis, dct_matrix, klt_basis, random_basis, top_eigenvectors, walsh_basis
from analysis.errors import (
    ErrorReport,
    gradient_errors,
    patch_vectors,
    rank_sweep,
    report_rows,
    subspace_backward,
)
from analysis.io import write_csv, write_json
from analysis.metrics import cosine, energy_fraction, relative_error
from analysis.spectrum import energy_kept, energy_maps


def smooth(rng, shape, width=1.5):
    """Smooth random field along axes 1, 2 of a (B, h, w, C) array, plus a little noise."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[1])[:, None]
    fx = np.fft.fftfreq(shape[2])[None, :]
    filt = np.exp(-2 * (np.pi * width) ** 2 * (fx**2 + fy**2))
    f = np.fft.ifft2(np.fft.fft2(noise, axes=(1, 2)) * filt[None, :, :, None], axes=(1, 2)).real
    return f / f.std() + 0.1 * rng.standard_normal(shape)


def layer(rng, grid, e=0, b=2, c_in=5, c_out=4):
    h, w = grid
    x = smooth(rng, (b, h, w, c_in)).reshape(b, h * w, c_in)
    gy = smooth(rng, (b, h, w, c_out), width=1.0).reshape(b, h * w, c_out)
    if e:
        x = np.concatenate([rng.standard_normal((b, e, c_in)), x], axis=1)
        gy = np.concatenate([rng.standard_normal((b, e, c_out)), gy], axis=1)
    return x, rng.standard_normal((c_out, c_in)), gy


def to_patches(a, n):
    b, hp, wp, c = a.shape
    return a.reshape(b, hp // n, n, wp // n, n, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, n * n, c)


def from_patches(a, n, hp, wp):
    b, _, _, c = a.shape
    return a.reshape(b, hp // n, wp // n, n, n, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)


def projector_backward_oracle(x, w, gy, *, grid, n, proj, pad, e):
    """grad_x = crop(P pad(gy)) @ W, grad_W = (P pad(gy))^T pad(x): explicit (n*n, n*n) projector."""
    b = x.shape[0]
    h, wd = grid
    xg = pad_oracle(x[:, e:].reshape(b, h, wd, -1), (1, 2), n, pad)
    gg = pad_oracle(gy[:, e:].reshape(b, h, wd, -1), (1, 2), n, pad)
    pg = np.einsum("uv,bpvc->bpuc", proj, to_patches(gg, n))
    gw = np.einsum("bpuo,bpui->oi", pg, to_patches(xg, n)) + np.einsum("blo,bli->oi", gy[:, :e], x[:, :e])
    full = from_patches(pg, n, *xg.shape[1:3])
    top, left = pad_widths(h, n)[0], pad_widths(wd, n)[0]
    gx = full[:, top:top + h, left:left + wd].reshape(b, h * wd, -1) @ w
    return np.concatenate([gy[:, :e] @ w, gx], axis=1), gw


# --------------------------------------------------------------------------
# metrics and bases
# --------------------------------------------------------------------------


def test_relative_error_and_cosine():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert relative_error(a, a) == 0.0
    assert relative_error(2 * a, a) == pytest.approx(1.0)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.ones(3), np.zeros(3)) == np.inf
    assert cosine(a, 3 * a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine([1.0, 0.0], [0.0, 2.0]) == 0.0
    assert cosine(np.zeros(2), np.zeros(2)) == 1.0 and cosine(np.zeros(2), np.ones(2)) == 0.0
    assert relative_error(a.astype(np.float32), a) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        relative_error(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="shapes"):
        cosine(np.ones(3), np.ones(4))
    assert energy_fraction(1.0, 4.0) == 0.25 and energy_fraction(0.0, 0.0) == 1.0
    assert energy_fraction(1.0 + 1e-16, 1.0) == 1.0  # rounding past the total is clipped
    fractions = energy_fraction(np.array([0.0, 2.0, 3.0]), np.array([1.0, 4.0, 0.0]))
    np.testing.assert_array_equal(fractions, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_dct_matrix_is_orthonormal_dct_ii(n):
    scipy_fft = pytest.importorskip("scipy.fft")
    d = dct_matrix(n)
    np.testing.assert_allclose(d @ d.T, np.eye(n), atol=1e-13)
    np.testing.assert_allclose(d, scipy_fft.dct(np.eye(n), norm="ortho", axis=0), atol=1e-13)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_dct_basis_orthonormal_low_pass_order(n):
    q = dct_basis(n, n * n)
    np.testing.assert_allclose(q @ q.T, np.eye(n * n), atol=1e-12)
    d = dct_matrix(n)
    pairs = sorted(((i, j) for i in range(n) for j in range(n)), key=lambda p: (p[0] + p[1], p[0], p[1]))
    for row, (i, j) in zip(q, pairs, strict=True):
        np.testing.assert_allclose(row, np.outer(d[i], d[j]).ravel(), atol=1e-14)
    np.testing.assert_array_equal(dct_basis(n, 3), q[:3])
    with pytest.raises(ValueError, match="rank"):
        dct_basis(n, n * n + 1)


def test_walsh_basis_matches_oracle_images():
    for spec in ("lp_l1:3", "lp_linf:8"):
        pairs = [tuple(p) for p in lbpcore.select_bases(8, spec).indices.tolist()]
        np.testing.assert_array_equal(walsh_basis(8, spec), basis_images_oracle(8, pairs).reshape(len(pairs), 64) / 8)


def test_klt_basis_is_the_optimal_subspace(rng):
    v = rng.standard_normal((500, 16)) @ rng.standard_normal((16, 16))
    for r in (1, 4, 9):
        q = klt_basis(v, r)
        np.testing.assert_allclose(q @ q.T, np.eye(r), atol=1e-12)
        vt = np.linalg.svd(v, full_matrices=False)[2][:r]  # right singular vectors
        np.testing.assert_allclose(q.T @ q, vt.T @ vt, atol=1e-9)
        err = np.sum((v - v @ q.T @ q) ** 2)
        assert err == pytest.approx(np.sum(np.linalg.svd(v, compute_uv=False)[r:] ** 2), rel=1e-10)
        for seed in range(5):
            p = random_basis(4, r, seed=seed)
            assert err <= np.sum((v - v @ p.T @ p) ** 2)
    q3 = klt_basis(v, 3)  # deterministic signs: largest entry of each row positive
    assert np.all(q3[np.arange(3), np.abs(q3).argmax(axis=1)] > 0)
    np.testing.assert_array_equal(klt_basis(-v, 3), q3)
    with pytest.raises(ValueError):
        klt_basis(v, 17)
    with pytest.raises(ValueError):
        klt_basis(v[0], 1)
    np.testing.assert_array_equal(top_eigenvectors(v.T @ v)[:3], q3)


def test_random_basis_orthonormal_nested_seeded():
    q = random_basis(4, 16, seed=7)
    np.testing.assert_allclose(q @ q.T, np.eye(16), atol=1e-12)
    np.testing.assert_array_equal(random_basis(4, 5, seed=7), q[:5])
    assert not np.allclose(random_basis(4, 5, seed=8), q[:5])
    with pytest.raises(ValueError):
        random_basis(4, 0)


@pytest.mark.parametrize("layout", ["tokens", "nchw"])
def test_patch_vectors_match_padded_patches(rng, layout):
    grid, n, e = (6, 7), 4, 1
    x, _, _ = layer(rng, grid, e=e if layout == "tokens" else 0, c_in=3)
    ref = to_patches(pad_oracle(x[:, x.shape[1] - 42:].reshape(2, 6, 7, 3), (1, 2), n, "reflect"), n)
    ref = ref.transpose(0, 1, 3, 2).reshape(-1, n * n)  # rows (b, p, c)
    if layout == "nchw":
        xin = x.reshape(2, 6, 7, 3).transpose(0, 3, 1, 2)
        got = patch_vectors(xin, patch=n, layout="nchw")
    else:
        got = patch_vectors(x, grid=grid, patch=n, extra_tokens=e)
    np.testing.assert_allclose(got, ref, atol=1e-12)


# --------------------------------------------------------------------------
# the generic machinery
# --------------------------------------------------------------------------

MACHINERY = [  # grid, patch, pad, extra tokens
    ((8, 8), 4, "reflect", 0),
    ((14, 14), 8, "reflect", 1),
    ((10, 7), 4, "zero", 2),
    ((16, 16), 8, "none", 0),
]


@pytest.mark.parametrize("grid,n,pad,e", MACHINERY)
@pytest.mark.parametrize("k", [1, 3, 6])
def test_generic_path_reproduces_lbp_backward(rng, grid, n, pad, e, k):
    x, w, gy = layer(rng, grid, e)
    spec = f"lp_l1:{k}"
    ref = lbpcore.lbp_backward(x, w, gy, grid=grid, patch=n, bases=spec, pad=pad, extra_tokens=e)
    for basis in (spec, walsh_basis(n, spec)):
        got = subspace_backward(x, w, gy, basis, grid=grid, patch=n, pad=pad, extra_tokens=e)
        np.testing.assert_allclose(got.grad_x, ref.grad_x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.grad_weight, ref.grad_weight, rtol=1e-12, atol=1e-11)


def test_generic_path_reproduces_lbp_backward_nchw(rng):
    x = rng.standard_normal((2, 3, 10, 12))
    gy = rng.standard_normal((2, 4, 10, 12))
    w = rng.standard_normal((4, 3))
    b = lbpcore.select_bases(4, [(0, 0), (2, 3), (1, 1)])
    ref = lbpcore.lbp_backward(x, w, gy, patch=4, bases=b, layout="nchw")
    got = subspace_backward(x, w, gy, b, layout="nchw")
    np.testing.assert_allclose(got.grad_x, ref.grad_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.grad_weight, ref.grad_weight, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("grid,n,pad,e", MACHINERY)
@pytest.mark.parametrize("which", ["dct", "random"])
def test_generic_path_matches_explicit_projector(rng, grid, n, pad, e, which):
    x, w, gy = layer(rng, grid, e)
    q = dct_basis(n, 5) if which == "dct" else random_basis(n, 5, seed=3)
    gx_ref, gw_ref = projector_backward_oracle(x, w, gy, grid=grid, n=n, proj=q.T @ q, pad=pad, e=e)
    got = subspace_backward(x, w, gy, q, grid=grid, pad=pad, extra_tokens=e)
    np.testing.assert_allclose(got.grad_x, gx_ref, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(got.grad_weight, gw_ref, rtol=1e-11, atol=1e-10)


def test_subspace_backward_validation(rng):
    x, w, gy = layer(rng, (8, 8))
    with pytest.raises(ValueError, match="orthonormal"):
        subspace_backward(x, w, gy, 2 * dct_basis(4, 3), grid=(8, 8))
    with pytest.raises(ValueError, match="n\\*n"):
        subspace_backward(x, w, gy, np.eye(15)[:3], grid=(8, 8))
    with pytest.raises(ValueError, match="patch"):
        subspace_backward(x, w, gy, "lp_l1:2", grid=(8, 8))
    with pytest.raises(ValueError, match="grid"):
        subspace_backward(x, w, gy, dct_basis(4, 3))
    with pytest.raises(ValueError):
        subspace_backward(x, w, gy[:, :10], dct_basis(4, 3), grid=(8, 8))


# --------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------


def test_report_lbp_numbers_are_the_core_numbers(rng):
    grid, n, e = (14, 14), 8, 1
    x, w, gy = layer(rng, grid, e)
    rep = gradient_errors(x, w, gy, grid=grid, patch=n, bases="lp_l1:6", extra_tokens=e)
    assert isinstance(rep, ErrorReport)
    assert rep.rank == 21 and rep.num_patches == 4 and rep.grid == grid and rep.bases == "lp_l1:6"
    assert list(rep.baselines) == ["dct", "klt", "svd", "random"]
    dense = lbpcore.dense_backward(x, w, gy)
    lbp = lbpcore.lbp_backward(x, w, gy, grid=grid, patch=n, bases="lp_l1:6", extra_tokens=e)
    g = rep.lbp
    assert g.grad_x["rel_error"] == pytest.approx(
        np.linalg.norm(lbp.grad_x - dense.grad_x) / np.linalg.norm(dense.grad_x), rel=1e-10)
    assert g.grad_weight["rel_error"] == pytest.approx(
        np.linalg.norm(lbp.grad_weight - dense.grad_weight) / np.linalg.norm(dense.grad_weight), rel=1e-10)
    cos = np.sum(lbp.grad_weight * dense.grad_weight) / (
        np.linalg.norm(lbp.grad_weight) * np.linalg.norm(dense.grad_weight))
    assert g.grad_weight["cosine"] == pytest.approx(cos, rel=1e-12)
    # projection error of grad_y = sqrt(1 - energy kept) on the padded grid (Parseval)
    kept = energy_kept(energy_maps(gy, grid=grid, patch=n, extra_tokens=e), "lp_l1:6")
    assert g.projection["grad_y"] == pytest.approx(np.sqrt(1 - kept), rel=1e-10)
    kept_x = energy_kept(energy_maps(x, grid=grid, patch=n, extra_tokens=e), "lp_l1:6")
    assert g.projection["x"] == pytest.approx(np.sqrt(1 - kept_x), rel=1e-10)


@pytest.mark.parametrize("grid,n,pad,e", MACHINERY)
def test_baseline_numbers_match_explicit_projectors(rng, grid, n, pad, e):
    x, w, gy = layer(rng, grid, e)
    rep = gradient_errors(x, w, gy, grid=grid, patch=n, bases="lp_l1:3", pad=pad, extra_tokens=e, seed=5)
    dense = lbpcore.dense_backward(x, w, gy)
    vecs = patch_vectors(gy, grid=grid, patch=n, pad=pad, extra_tokens=e)
    bases = {"dct": dct_basis(n, 6), "random": random_basis(n, 6, seed=5), "klt": klt_basis(vecs, 6)}
    for name, q in bases.items():
        gx, gw = projector_backward_oracle(x, w, gy, grid=grid, n=n, proj=q.T @ q, pad=pad, e=e)
        got = rep.baselines[name]
        assert got.rank == 6
        assert got.grad_x["rel_error"] == pytest.approx(relative_error(gx, dense.grad_x), rel=1e-9), name
        assert got.grad_weight["rel_error"] == pytest.approx(
            relative_error(gw, dense.grad_weight), rel=1e-9), name
        assert got.grad_x["cosine"] == pytest.approx(cosine(gx, dense.grad_x), rel=1e-12), name
        assert got.projection["grad_y"] == pytest.approx(relative_error(vecs @ q.T @ q, vecs), rel=1e-9), name


@pytest.mark.parametrize("e", [0, 2])
def test_svd_baseline_matches_numpy_svd(rng, e):
    grid, n = (8, 12), 4
    x, w, gy = layer(rng, grid, e, c_out=40)
    rep = gradient_errors(x, w, gy, grid=grid, patch=n, bases="lp_l1:2", extra_tokens=e, baselines=("svd",))
    k = rep.num_patches * 3  # 6 patches x 3 bases = 18 < min(96, 40)
    gp = np.empty_like(gy[:, e:])
    for b in range(gy.shape[0]):
        u, s, vt = np.linalg.svd(gy[b, e:], full_matrices=False)
        gp[b] = (u[:, :k] * s[:k]) @ vt[:k]
    gx = np.concatenate([gy[:, :e] @ w, gp @ w], axis=1)
    gw = np.einsum("blo,bli->oi", gp, x[:, e:]) + np.einsum("blo,bli->oi", gy[:, :e], x[:, :e])
    dense = lbpcore.dense_backward(x, w, gy)
    svd = rep.baselines["svd"]
    assert svd.info["svd_rank"] == k
    assert svd.grad_x["rel_error"] == pytest.approx(relative_error(gx, dense.grad_x), rel=1e-9)
    assert svd.grad_weight["rel_error"] == pytest.approx(relative_error(gw, dense.grad_weight), rel=1e-9)
    assert svd.projection["grad_y"] == pytest.approx(relative_error(gp, gy[:, e:]), rel=1e-9)
    capped = gradient_errors(x, w, gy, grid=grid, patch=n, bases="lp_l1:4", extra_tokens=e, baselines=("svd",))
    assert capped.baselines["svd"].info["svd_rank"] == 40  # P*r = 60 capped at min(h*w, C_out)
    assert capped.baselines["svd"].grad_x["rel_error"] < 1e-12


@pytest.mark.parametrize("grid,n,pad,e", [((14, 14), 8, "reflect", 1), ((16, 16), 8, "none", 0),
                                         ((12, 10), 4, "zero", 0)])
def test_klt_projection_error_is_smallest_at_every_rank(rng, grid, n, pad, e):
    x, w, gy = layer(rng, grid, e, c_out=6)
    sweep = rank_sweep(x, w, gy, grid=grid, patch=n, pad=pad, extra_tokens=e, progress=False)
    assert [rep.bases for rep in sweep] == [f"lp_l1:{k}" for k in range(1, 2 * n)]
    divisible = grid[0] % n == 0 and grid[1] % n == 0
    strict = 0
    for rep in sweep:
        klt = rep.baselines["klt"].projection["grad_y"]
        for name in ("lbp", "dct", "random"):
            assert klt <= rep.methods[name].projection["grad_y"] + 1e-12, (rep.bases, name)
        strict += klt < rep.lbp.projection["grad_y"] - 1e-6
        if divisible:  # a per-patch projector is one rank-P*r token projector: Eckart-Young
            assert rep.baselines["svd"].projection["grad_y"] <= klt + 1e-9, rep.bases
    assert strict >= n  # and the KLT really is better than the Walsh low-pass on most ranks
    last = sweep[-1]  # every basis: all per-patch projectors are the identity
    for name in ("lbp", "dct", "klt", "random"):
        assert last.methods[name].projection["grad_y"] < 1e-12
        if divisible:
            assert last.methods[name].grad_x["rel_error"] < 1e-12
            assert last.methods[name].grad_weight["rel_error"] < 1e-12


def test_downstream_errors_are_not_ordered_like_projection_errors(rng):
    """Counterexample: KLT fits the dominant channel; W and x look only at the other one."""
    n, grid = 4, (8, 8)
    pairs = lp_l1_oracle(n, 8)
    imgs = basis_images_oracle(n, pairs)  # (16, 4, 4)
    high = [pairs.index(p) for p in [(3, 3), (2, 3), (3, 2)]]
    low = [pairs.index(p) for p in [(0, 0), (0, 1), (1, 0)]]

    def field(idx, amp, c):
        coef = rng.standard_normal((1, 2, 2, len(idx), c)) * amp  # (B, ph, pw, k, C)
        patches = np.einsum("bpqkc,kuv->bpuqvc", coef, imgs[idx])  # (B, ph, n, pw, n, C)
        return patches.reshape(1, 64, c)

    gy = np.concatenate([field(high, 10.0, 1), field(low, 1.0, 1)], axis=2)  # (1, 64, 2)
    x = field(low, 1.0, 1)  # low-pass input
    w = np.array([[0.0], [1.0]])  # grad_x reads only channel 1 of grad_y
    rep = gradient_errors(x, w, gy, grid=grid, patch=n, bases="lp_l1:2", baselines=("klt",))
    lbp, klt = rep.lbp, rep.baselines["klt"]
    assert klt.projection["grad_y"] < 0.2 < 0.9 < lbp.projection["grad_y"]  # KLT far better on grad_y...
    assert lbp.grad_x["rel_error"] < 1e-12 and klt.grad_x["rel_error"] == pytest.approx(1.0)  # ...worse downstream
    assert lbp.grad_weight["rel_error"] < 1e-12 and klt.grad_weight["rel_error"] == pytest.approx(1.0)


def test_error_bounds_that_do_hold(rng):
    grid, n = (16, 16), 8
    x, _, gy = layer(rng, grid, c_in=6, c_out=4)
    w = np.linalg.qr(rng.standard_normal((6, 4)))[0].T  # (4, 6) with orthonormal rows
    dense = lbpcore.dense_backward(x, w, gy)
    nx, ng, nw = np.linalg.norm(x), np.linalg.norm(gy), np.linalg.norm(dense.grad_weight)
    for rep in rank_sweep(x, w, gy, grid=grid, patch=n, ks=[1, 3, 6, 10], progress=False):
        for name, m in rep.methods.items():
            # W W^T = I: the grad_x error is exactly the projection error of grad_y
            assert m.grad_x["rel_error"] == pytest.approx(m.projection["grad_y"], rel=1e-9, abs=1e-13), name
            # g^T (I-Q) x = ((I-Q) g)^T ((I-Q) x)
            bound = m.projection["grad_y"] * ng * m.projection["x"] * nx
            assert m.grad_weight["rel_error"] * nw <= bound * (1 + 1e-9) + 1e-12 * nw, name


def test_float32_input_is_analysed_in_float64(rng):
    x, w, gy = layer(rng, (8, 8), 1)
    x32, w32, g32 = (a.astype(np.float32) for a in (x, w, gy))
    a = gradient_errors(x32, w32, g32, grid=(8, 8), patch=4, bases="lp_l1:3", extra_tokens=1).to_dict()
    b = gradient_errors(*(v.astype(np.float64) for v in (x32, w32, g32)), grid=(8, 8), patch=4,
                        bases="lp_l1:3", extra_tokens=1).to_dict()
    assert json.dumps(a) == json.dumps(b)  # bit-identical: the float32 data are converted first
    full = gradient_errors(x32, w32, g32, grid=(8, 8), patch=4, bases="lp_linf:4", extra_tokens=1)
    assert full.lbp.grad_x["rel_error"] < 1e-12  # float32 rounding would give ~1e-7


def test_nchw_report_matches_tokens(rng):
    x = rng.standard_normal((2, 3, 12, 8))
    gy = rng.standard_normal((2, 4, 12, 8))
    w = rng.standard_normal((4, 3))
    tok = lambda a: a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 2, 1)  # noqa: E731
    a = gradient_errors(x, w, gy, patch=4, bases="lp_l1:3", layout="nchw")
    b = gradient_errors(tok(x), w, tok(gy), grid=(12, 8), patch=4, bases="lp_l1:3")
    for name, m in a.methods.items():
        other = b.methods[name]
        for part in ("grad_x", "grad_weight", "projection"):
            for key, val in getattr(m, part).items():
                assert val == pytest.approx(getattr(other, part)[key], rel=1e-9, abs=1e-14), (name, part, key)


def test_energy_spec_is_calibrated_on_grad_y(rng):
    x, w, gy = layer(rng, (16, 16))
    rep = gradient_errors(x, w, gy, grid=(16, 16), patch=8, bases="energy_l2:10", baselines=())
    assert rep.rank == 10 and rep.baselines == {}
    kept = energy_kept(energy_maps(gy, grid=(16, 16), patch=8), "energy_l2:10")
    assert rep.lbp.projection["grad_y"] == pytest.approx(np.sqrt(1 - kept), rel=1e-9)
    lp = gradient_errors(x, w, gy, grid=(16, 16), patch=8, bases=lbpcore.select_bases(8, "lp_l1:4"), baselines=())
    assert rep.lbp.projection["grad_y"] <= lp.lbp.projection["grad_y"] + 1e-12  # best 10 vs lp_l1:4 (10 bases)


def test_rank_sweep_equals_single_reports_and_serializes(rng, tmp_path):
    x, w, gy = layer(rng, (8, 8), 1)
    sweep = rank_sweep(x, w, gy, grid=(8, 8), patch=4, ks=[2, 5], extra_tokens=1, seed=3, progress=False)
    for k, rep in zip([2, 5], sweep, strict=True):
        one = gradient_errors(x, w, gy, grid=(8, 8), patch=4, bases=f"lp_l1:{k}", extra_tokens=1, seed=3)
        assert json.dumps(rep.to_dict()) == json.dumps(one.to_dict())
    d = json.loads(json.dumps(sweep[0].to_dict()))
    assert d["lbp"]["method"] == "lbp" and set(d["baselines"]) == {"dct", "klt", "svd", "random"}
    assert set(d["lbp"]["grad_x"]) == {"rel_error", "cosine"}
    write_json(tmp_path / "sweep.json", sweep)
    assert json.loads((tmp_path / "sweep.json").read_text())[1]["bases"] == "lp_l1:5"
    rows = report_rows(sweep)
    write_csv(tmp_path / "sweep.csv", rows)
    with open(tmp_path / "sweep.csv", newline="") as fh:
        back = list(csv.DictReader(fh))
    assert len(back) == 10 and back[0]["method"] == "lbp" and back[1]["method"] == "dct"
    assert float(back[3]["grad_weight_rel_error"]) == rows[3]["grad_weight_rel_error"]


def test_rank_sweep_progress_bar(rng, monkeypatch, capsys):
    x, w, gy = layer(rng, (8, 8))
    rank_sweep(x, w, gy, grid=(8, 8), patch=4, ks=[1, 2], methods=())
    assert capsys.readouterr().err == ""  # fast: silent
    monkeypatch.setattr(progress, "DELAY", 0.0)
    rank_sweep(x, w, gy, grid=(8, 8), patch=4, ks=[1, 2], methods=())
    err = capsys.readouterr().err
    assert "rank sweep" in err and "2/2" in err and err.endswith("\n")
    rank_sweep(x, w, gy, grid=(8, 8), patch=4, ks=[1, 2], methods=(), progress=False)
    assert capsys.readouterr().err == ""


def test_gradient_errors_validation(rng):
    x, w, gy = layer(rng, (8, 8))
    with pytest.raises(ValueError, match="unknown baseline"):
        gradient_errors(x, w, gy, grid=(8, 8), patch=4, baselines=("pca",))
    with pytest.raises(ValueError, match="grid"):
        gradient_errors(x, w, gy, patch=4)
    with pytest.raises(ValueError, match="layout"):
        rank_sweep(x, w, gy, grid=(8, 8), patch=4, layout="nhwc")
    with pytest.raises(ValueError):
        gradient_errors(x, w[:, :3], gy, grid=(8, 8), patch=4)
