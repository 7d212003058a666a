"""Basis selection (SPEC section 3): lbpcore.select_bases and lbpcore.BasisSet."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import (
    PATCHES,
    basis_images_oracle,
    coefficients_oracle,
    lbp_backward_oracle,
    lp_l1_oracle,
    lp_linf_oracle,
    reflect_ok,
    walsh_oracle,
)

import lbpcore


def canon_key(p):
    return (p[0] + p[1], p[0], p[1])


def as_pairs(basis):
    return [tuple(int(v) for v in row) for row in basis.indices]


# --------------------------------------------------------------------------
# low-pass selections
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", PATCHES)
def test_lp_l1_sizes_and_members(n):
    for k in range(1, 2 * n + 2):
        b = lbpcore.select_bases(n, f"lp_l1:{k}")
        pairs = as_pairs(b)
        assert pairs == lp_l1_oracle(n, k)
        assert b.rank == len(pairs)
        if k <= n:
            assert b.rank == k * (k + 1) // 2
        assert all(i + j < k and 0 <= i < n and 0 <= j < n for i, j in pairs)
        if k >= 2 * n - 1:  # clipped to the full square
            assert b.rank == n * n


@pytest.mark.parametrize("n", PATCHES)
def test_lp_linf_sizes_and_members(n):
    for k in range(1, n + 4):
        b = lbpcore.select_bases(n, f"lp_linf:{k}")
        assert as_pairs(b) == lp_linf_oracle(n, k)
        assert b.rank == min(k, n) ** 2


def test_lp_l1_paper_configs():
    assert lbpcore.select_bases(8, "lp_l1:6").rank == 21
    assert lbpcore.select_bases(8, "lp_l1:3").rank == 6
    assert lbpcore.select_bases(8, "lp_l1:8").rank == 36
    assert lbpcore.select_bases(8, "lp_l1:100").rank == 64  # clipping, never indexing past n


@pytest.mark.parametrize("spec", ["lp_l1:5", "lp_linf:3", [(2, 1), (0, 0), (1, 2), (0, 3)]])
def test_indices_are_canonical_readonly_and_match_mask(spec):
    b = lbpcore.select_bases(4, spec)
    pairs = as_pairs(b)
    assert pairs == sorted(pairs, key=canon_key)
    assert b.indices.dtype == np.int64 and b.indices.shape == (b.rank, 2)
    with pytest.raises(ValueError):
        b.indices[0, 0] = 3
    mask = b.mask
    assert mask.shape == (4, 4) and mask.dtype == bool
    with pytest.raises(ValueError):
        mask[0, 0] = False
    expected = np.zeros((4, 4), bool)
    for i, j in pairs:
        expected[i, j] = True
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_images_are_outer_products_of_sequency_rows(n, dtype):
    b = lbpcore.select_bases(n, f"lp_l1:{n}")
    imgs = b.images(dtype=dtype)
    assert imgs.dtype == dtype and imgs.shape == (b.rank, n, n)
    np.testing.assert_array_equal(imgs, basis_images_oracle(n, as_pairs(b)))
    w = walsh_oracle(n)
    for k, (i, j) in enumerate(as_pairs(b)):
        # i is the vertical sequency: sign changes down each column
        col_changes = np.count_nonzero(np.diff(np.sign(imgs[k][:, 0])))
        row_changes = np.count_nonzero(np.diff(np.sign(imgs[k][0, :])))
        assert (col_changes, row_changes) == (i, j)
        np.testing.assert_array_equal(imgs[k], np.outer(w[i], w[j]))


def test_from_indices_sorts_and_compares():
    a = lbpcore.BasisSet.from_indices(4, [(1, 0), (0, 0), (0, 1)])
    b = lbpcore.BasisSet.from_indices(4, np.array([[0, 1], [1, 0], [0, 0]]))
    assert as_pairs(a) == [(0, 0), (0, 1), (1, 0)]
    assert a == b and hash(a) == hash(b)
    assert a == lbpcore.select_bases(4, "lp_l1:2")
    assert a != lbpcore.select_bases(4, "lp_l1:3")
    assert lbpcore.select_bases(4, a) is a  # a BasisSet passes through


@given(st.sampled_from([1, 2, 4, 8]).flatmap(
    lambda n: st.tuples(st.just(n), st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1))
))
def test_explicit_pairs_roundtrip(n_pairs):
    n, pairs = n_pairs
    b = lbpcore.select_bases(n, list(pairs))
    assert as_pairs(b) == sorted(pairs, key=canon_key)
    assert b.rank == len(pairs)
    assert int(b.mask.sum()) == len(pairs)


# --------------------------------------------------------------------------
# energy selection against brute force
# --------------------------------------------------------------------------


def brute_force_selection(score, r):
    """The r-subset with the largest total score; ties -> the lexicographically
    smallest sorted list of canonical positions, i.e. toward lower (i+j, i, j)."""
    n = score.shape[0]
    canon = sorted(((i, j) for i in range(n) for j in range(n)), key=canon_key)
    vals = [score[p] for p in canon]
    best_key = None
    best = None
    for combo in itertools.combinations(range(len(canon)), r):  # combos come sorted, lexicographic
        total = sum(vals[c] for c in combo)
        if best_key is None or total > best_key:
            best_key, best = total, combo
    return sorted((canon[c] for c in best), key=canon_key)


@st.composite
def score_problems(draw):
    n = draw(st.sampled_from([1, 2, 4, 8]))
    max_r = n * n if n <= 4 else 2
    if n == 4:
        max_r = 4  # C(16, r) stays small; larger r covered by complements below
    r = draw(st.integers(1, max_r))
    # small integers: exact sums and plenty of ties
    score = np.array(draw(st.lists(st.integers(0, 4), min_size=n * n, max_size=n * n)), dtype=np.float64)
    return score.reshape(n, n), r


@given(score_problems(), st.sampled_from(["energy_l1", "energy_l2"]))
@settings(max_examples=40)
def test_energy_selection_is_brute_force_optimum(problem, kind):
    score, r = problem
    n = score.shape[0]
    b = lbpcore.select_bases(n, f"{kind}:{r}", calibration=score)
    expected = brute_force_selection(score, r)
    assert as_pairs(b) == expected
    assert b.rank == r


@pytest.mark.parametrize("r", list(range(1, 17)))
def test_energy_selection_brute_force_n4_all_ranks(r):
    rng = np.random.default_rng(r)
    score = rng.integers(0, 3, size=(4, 4)).astype(float)
    b = lbpcore.select_bases(4, f"energy_l2:{r}", calibration=score)
    assert as_pairs(b) == brute_force_selection(score, r)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_energy_constant_scores_follow_low_pass_order(n):
    canon = lp_linf_oracle(n, n)  # every pair, canonical order
    for r in sorted({1, min(2, n * n), n, n * n}):
        b = lbpcore.select_bases(n, f"energy_l1:{r}", calibration=np.ones((n, n)))
        assert as_pairs(b) == canon[:r]


def test_energy_docstring_example():
    score = np.zeros((4, 4))
    score[3, 2] = 5.0
    score[0, 1] = 1.0
    assert as_pairs(lbpcore.select_bases(4, "energy_l2:2", calibration=score)) == [(0, 1), (3, 2)]


@st.composite
def calibration_data(draw):
    n = draw(st.sampled_from([2, 4]))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    pad = draw(st.sampled_from(["reflect", "zero"]))
    if pad == "reflect" and not reflect_ok((h, w), n):
        pad = "zero"
    e = draw(st.integers(0, 2))
    b = draw(st.integers(1, 2))
    c = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31))
    x = np.random.default_rng(seed).standard_normal((b, e + h * w, c))
    r = draw(st.integers(1, n * n))
    return x, (h, w), n, pad, e, r


def _oracle_scores(x, grid, n, pad, e, kind):
    everything = lp_linf_oracle(n, n)
    coef = coefficients_oracle(x, grid=grid, n=n, indices=everything, pad=pad, extra_tokens=e)  # (B, P, r, C)
    s = (coef**2).sum(axis=(0, 1, 3)) if kind == "energy_l2" else np.abs(coef).sum(axis=(0, 1, 3))
    out = np.zeros((n, n))
    for (i, j), v in zip(everything, s, strict=True):
        out[i, j] = v
    return out


@given(calibration_data(), st.sampled_from(["energy_l1", "energy_l2"]))
@settings(max_examples=30)
def test_energy_from_token_calibration_matches_oracle_scores(data, kind):
    x, grid, n, pad, e, r = data
    b = lbpcore.select_bases(n, f"{kind}:{r}", calibration=x, grid=grid, extra_tokens=e, pad=pad)
    score = _oracle_scores(x, grid, n, pad, e, kind)
    # the selected set must be optimal for the oracle scores (robust to float ties)
    chosen = sum(score[p] for p in as_pairs(b))
    best = np.sort(score.ravel())[::-1][:r].sum()
    np.testing.assert_allclose(chosen, best, rtol=1e-12, atol=1e-12)
    # and identical to selecting from the oracle score map
    b2 = lbpcore.select_bases(n, f"{kind}:{r}", calibration=score)
    if len(np.unique(np.round(score, 9))) == n * n:  # no near-ties
        assert as_pairs(b) == as_pairs(b2)


def test_energy_from_nchw_calibration_equals_tokens(rng):
    x = rng.standard_normal((2, 3, 6, 10))  # (B, C, H, W)
    tokens = x.reshape(2, 3, 60).transpose(0, 2, 1)
    for kind in ("energy_l1", "energy_l2"):
        a = lbpcore.select_bases(4, f"{kind}:5", calibration=x, layout="nchw", pad="zero")
        b = lbpcore.select_bases(4, f"{kind}:5", calibration=tokens, grid=(6, 10), pad="zero")
        assert a == b


def test_energy_l2_keeps_the_most_calibration_energy(rng):
    """energy_l2:r beats every low-pass set of the same size on its own data."""
    x = rng.standard_normal((2, 64, 3)).cumsum(axis=1)  # smooth-ish, not low-pass-ordered
    for r in (1, 3, 6, 10):
        sel = lbpcore.select_bases(8, f"energy_l2:{r}", calibration=x, grid=(8, 8))
        lp = lbpcore.select_bases(8, lp_l1_oracle(8, 64)[:r])
        kept = lambda basis: float(np.sum(lbpcore.project(x, grid=(8, 8), patch=8, bases=basis) ** 2))  # noqa: E731
        assert kept(sel) >= kept(lp) - 1e-9


def test_images_copy_does_not_poison_cache():
    b = lbpcore.select_bases(4, "lp_l1:2")
    imgs = b.images()
    imgs[:] = 7.0
    np.testing.assert_array_equal(b.images(), basis_images_oracle(4, as_pairs(b)))


def test_energy_basis_set_drives_lbp_backward(rng):
    """An energy-selected BasisSet is accepted by lbp_backward and matches the oracle."""
    x = rng.standard_normal((2, 1 + 49, 3))
    wt = rng.standard_normal((2, 3))
    gy = rng.standard_normal((2, 1 + 49, 2))
    basis = lbpcore.select_bases(4, "energy_l2:5", calibration=gy, grid=(7, 7), extra_tokens=1)
    g = lbpcore.lbp_backward(x, wt, gy, grid=(7, 7), patch=4, bases=basis, extra_tokens=1)
    ref = lbp_backward_oracle(x, wt, gy, grid=(7, 7), n=4, indices=as_pairs(basis), extra_tokens=1)
    np.testing.assert_allclose(g.grad_x, ref[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.grad_weight, ref[1], rtol=1e-10, atol=1e-12)
    # energy_l2 on grad_y keeps at least as much of grad_y's energy as lp_l1 with the same rank
    def kept(bb):
        return float(np.sum(lbpcore.apply_projector(gy, grid=(7, 7), patch=4, bases=bb, extra_tokens=1)[:, 1:] ** 2))

    assert kept(basis) >= kept(lp_l1_oracle(4, 16)[:5]) - 1e-9
