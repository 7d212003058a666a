"""Patch projection (SPEC sections 4-5): project / reconstruct / apply_projector.

Identities checked: coefficients equal the definition c_ij = sum B_ij * Z on the
padded patches; reconstruct(project(x)) == crop(P pad(x)); P is symmetric and
idempotent; Parseval; nested selections keep non-decreasing energy; the full
basis is the identity.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import (
    PATCHES,
    coefficients_oracle,
    draw_grid_and_pad,
    lp_l1_oracle,
    lp_linf_oracle,
    nchw_from_tokens,
    pad_oracle,
    pad_widths,
    patch_projector_oracle,
    projector_apply_oracle,
    tokens_from_nchw,
)
from tolerances import assert_allclose_dtype

import lbpcore
import lbpcore.testing as lt

# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------


@st.composite
def bases_for(draw, n):
    kind = draw(st.sampled_from(["lp_l1", "lp_linf", "explicit"]))
    if kind == "lp_l1":
        k = draw(st.integers(1, 2 * n))
        return f"lp_l1:{k}", lp_l1_oracle(n, k)
    if kind == "lp_linf":
        k = draw(st.integers(1, n + 1))
        return f"lp_linf:{k}", lp_linf_oracle(n, k)
    pair = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
    pairs = draw(st.lists(pair, min_size=1, max_size=min(8, n * n), unique=True))
    return pairs, pairs


@st.composite
def grid_configs(draw, divisible=None, max_side=20, patches=PATCHES, dtypes=(np.float32, np.float64)):
    """(x tokens, grid, n, spec, indices, pad, e, dtype)."""
    n = draw(st.sampled_from(patches))
    h, w, pad = draw_grid_and_pad(draw, st, n, divisible, max_side)
    spec, indices = draw(bases_for(n))
    e = draw(st.integers(0, 2))
    b = draw(st.integers(1, 2))
    c = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**31))
    x = np.random.default_rng(seed).standard_normal((b, e + h * w, c)).astype(dtype)
    return x, (h, w), n, spec, indices, pad, e, dtype


# --------------------------------------------------------------------------
# padding helper
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", PATCHES)
def test_padding_split_matches_spec(n):
    for length in range(1, 40):
        count, before, after = lbpcore.padding(length, n)
        assert count == -(-length // n)
        assert (before, after) == pad_widths(length, n)
        assert before + after == count * n - length
        assert before - after in (0, 1)  # top gets the odd row


def test_padding_docstring_values():
    assert lbpcore.padding(14, 8) == (2, 1, 1)
    assert lbpcore.padding(7, 4) == (2, 1, 0)


# --------------------------------------------------------------------------
# project
# --------------------------------------------------------------------------


@given(grid_configs())
@settings(max_examples=40)
def test_project_matches_coefficient_definition(cfg):
    x, grid, n, spec, indices, pad, e, dtype = cfg
    coef = lbpcore.project(x, grid=grid, patch=n, bases=spec, pad=pad, extra_tokens=e)
    ph, pw = -(-grid[0] // n), -(-grid[1] // n)
    r = len(set(indices))
    assert coef.shape == (x.shape[0], ph * pw, r, x.shape[2])
    assert coef.dtype == dtype
    canon = sorted(set(indices), key=lambda p: (p[0] + p[1], p[0], p[1]))
    expected = coefficients_oracle(x, grid=grid, n=n, indices=canon, pad=pad, extra_tokens=e)
    assert_allclose_dtype(coef, expected, dtype=dtype, scale=4.0 * n * n)


@given(grid_configs(), st.sampled_from([True, False]))
@settings(max_examples=30)
def test_project_nchw_equals_tokens(cfg, _):
    x, grid, n, spec, indices, pad, e, dtype = cfg
    xg = x[:, e:]
    maps = nchw_from_tokens(xg, grid)
    a = lbpcore.project(maps, patch=n, bases=spec, pad=pad, layout="nchw")
    b = lbpcore.project(xg, grid=grid, patch=n, bases=spec, pad=pad)
    assert a.shape == (b.shape[0], b.shape[3], b.shape[1], b.shape[2])
    assert_allclose_dtype(a, np.transpose(b, (0, 3, 1, 2)), dtype=dtype, scale=4.0 * n * n)


@given(grid_configs())
@settings(max_examples=40)
def test_reconstruct_project_is_crop_P_pad(cfg):
    x, grid, n, spec, indices, pad, e, dtype = cfg
    coef = lbpcore.project(x, grid=grid, patch=n, bases=spec, pad=pad, extra_tokens=e)
    z = lbpcore.reconstruct(coef, grid=grid, patch=n, bases=spec, pad=pad)
    assert z.shape == (x.shape[0], grid[0] * grid[1], x.shape[2]) and z.dtype == dtype
    expected = projector_apply_oracle(x, grid=grid, n=n, indices=indices, pad=pad, extra_tokens=e)[:, e:]
    assert_allclose_dtype(z, expected, dtype=dtype, scale=4.0)


@given(grid_configs())
@settings(max_examples=40)
def test_apply_projector_matches_oracle_and_passes_extra_tokens(cfg):
    x, grid, n, spec, indices, pad, e, dtype = cfg
    y = lbpcore.apply_projector(x, grid=grid, patch=n, bases=spec, pad=pad, extra_tokens=e)
    assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_array_equal(y[:, :e], x[:, :e])  # bit-for-bit
    expected = projector_apply_oracle(x, grid=grid, n=n, indices=indices, pad=pad, extra_tokens=e)
    assert_allclose_dtype(y, expected, dtype=dtype, scale=4.0)


@given(grid_configs())
@settings(max_examples=25)
def test_apply_projector_nchw_equals_tokens(cfg):
    x, grid, n, spec, indices, pad, e, dtype = cfg
    xg = np.ascontiguousarray(x[:, e:])
    a = lbpcore.apply_projector(nchw_from_tokens(xg, grid), patch=n, bases=spec, pad=pad, layout="nchw")
    b = lbpcore.apply_projector(xg, grid=grid, patch=n, bases=spec, pad=pad)
    assert a.shape == (x.shape[0], x.shape[2]) + grid
    assert_allclose_dtype(tokens_from_nchw(a), b, dtype=dtype, scale=4.0)


@given(grid_configs(dtypes=(np.float64,)))
@settings(max_examples=30)
def test_full_basis_is_identity_on_any_grid(cfg):
    """With every basis P = I on the padded grid, so crop(P pad(x)) = x for any pad."""
    x, grid, n, _, _, pad, e, dtype = cfg
    y = lbpcore.apply_projector(x, grid=grid, patch=n, bases=f"lp_linf:{n}", pad=pad, extra_tokens=e)
    np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-12)


@given(grid_configs(dtypes=(np.float64,)))
@settings(max_examples=30)
def test_projector_is_idempotent_on_divisible_grids(cfg):
    x, grid, n, spec, indices, pad, e, dtype = cfg
    if grid[0] % n or grid[1] % n:
        # P pad then crop is not a projection on padded grids; idempotence is a
        # divisible-grid property (checked below via the explicit matrix).
        return
    kw = dict(grid=grid, patch=n, bases=spec, pad=pad, extra_tokens=e)
    once = lbpcore.apply_projector(x, **kw)
    twice = lbpcore.apply_projector(once, **kw)
    np.testing.assert_allclose(twice, once, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# the explicit projector matrix
# --------------------------------------------------------------------------


def explicit_projector(grid, n, spec, pad="none"):
    """Apply apply_projector to every identity column: channel c holds e_c."""
    h, w = grid
    eye = np.eye(h * w)[None]  # (1, L=h*w, C=h*w)
    return lbpcore.apply_projector(eye, grid=grid, patch=n, bases=spec, pad=pad)[0]


@pytest.mark.parametrize(
    "grid,n,spec",
    [
        ((4, 4), 4, "lp_l1:3"),
        ((8, 4), 4, "lp_linf:2"),
        ((8, 8), 8, "lp_l1:6"),
        ((4, 8), 2, [(1, 1)]),
        ((2, 6), 2, [(0, 1), (1, 0)]),
        ((16, 8), 8, "lp_l1:2"),
        ((3, 5), 1, "lp_l1:1"),
        ((16, 16), 16, "lp_l1:5"),
    ],
)
def test_projector_matrix_symmetric_idempotent(grid, n, spec):
    p = explicit_projector(grid, n, spec)
    indices = [tuple(v) for v in lbpcore.select_bases(n, spec).indices.tolist()]
    ref = lt.projector_matrix(grid, n, indices)
    np.testing.assert_allclose(p, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p, p.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(p @ p, p, rtol=0, atol=1e-12)
    # rank = (number of patches) * r; eigenvalues 0 or 1
    npatch = (grid[0] // n) * (grid[1] // n)
    assert round(float(np.trace(p))) == npatch * len(indices)
    ev = np.linalg.eigvalsh(p)
    assert np.all(np.minimum(np.abs(ev), np.abs(ev - 1)) < 1e-10)
    # the same per-patch block as the independent oracle
    if grid == (n, n):
        np.testing.assert_allclose(p, patch_projector_oracle(n, indices), atol=1e-12)


def test_projector_matrix_pad_mode_irrelevant_on_divisible_grid():
    a = explicit_projector((8, 8), 4, "lp_l1:3", pad="none")
    b = explicit_projector((8, 8), 4, "lp_l1:3", pad="reflect")
    c = explicit_projector((8, 8), 4, "lp_l1:3", pad="zero")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_non_divisible_projector_is_crop_P_pad_matrix():
    """On a padded grid the operator is crop @ P @ pad (pad a linear map)."""
    grid, n, spec = (5, 6), 4, "lp_l1:3"
    h, w = grid
    for pad in ("reflect", "zero"):
        op = explicit_projector(grid, n, spec, pad=pad)
        # pad / crop as matrices on flattened grids, from the oracle
        eye = np.eye(h * w).reshape(h * w, h, w)
        padm = pad_oracle(eye, (1, 2), n, pad).reshape(h * w, -1).T  # (Hp*Wp, h*w)
        hp, wp = -(-h // n) * n, -(-w // n) * n
        top, left = pad_widths(h, n)[0], pad_widths(w, n)[0]
        crop = np.zeros((h * w, hp * wp))
        for u in range(h):
            for v in range(w):
                crop[u * w + v, (u + top) * wp + (v + left)] = 1.0
        indices = [tuple(t) for t in lbpcore.select_bases(n, spec).indices.tolist()]
        expected = crop @ lt.projector_matrix((hp, wp), n, indices) @ padm
        np.testing.assert_allclose(op, expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# Parseval and energy
# --------------------------------------------------------------------------


@st.composite
def divisible_grids(draw):
    n = draw(st.sampled_from([1, 2, 4, 8, 16]))
    ph = draw(st.integers(1, max(1, 32 // n)))
    pw = draw(st.integers(1, max(1, 32 // n)))
    b = draw(st.integers(1, 2))
    c = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31))
    g = np.random.default_rng(seed).standard_normal((b, ph * n * pw * n, c))
    return g, (ph * n, pw * n), n


@given(divisible_grids(), st.data())
@settings(max_examples=40)
def test_parseval_dropped_energy(grid_cfg, data):
    """||g - Pg||^2 == sum of dropped coefficients^2 / n^2 (all coefficients from fwht2)."""
    g, grid, n = grid_cfg
    spec, indices = data.draw(bases_for(n))
    h, w = grid
    b, _, c = g.shape
    pg = lbpcore.apply_projector(g, grid=grid, patch=n, bases=spec, pad="none")
    # all n*n coefficients of every patch, independently of project(): fwht2 on patches
    patches = g.reshape(b, h // n, n, w // n, n, c)
    allc = lbpcore.fwht2(patches, axes=(2, 4))  # sequency, unnormalized
    mask = np.zeros((n, n), bool)
    for i, j in indices:
        mask[i, j] = True
    dropped = np.where(mask[None, None, :, None, :, None], 0.0, allc)
    lhs = np.sum((g - pg) ** 2)
    rhs = np.sum(dropped**2) / n**2
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    # and the kept energy: ||Pg||^2 = sum of kept coefficients^2 / n^2
    kept = np.where(mask[None, None, :, None, :, None], allc, 0.0)
    np.testing.assert_allclose(np.sum(pg**2), np.sum(kept**2) / n**2, rtol=1e-10, atol=1e-10)
    # Pythagoras: ||g||^2 = ||Pg||^2 + ||g - Pg||^2
    np.testing.assert_allclose(np.sum(g**2), np.sum(pg**2) + lhs, rtol=1e-10)
    # and project()'s coefficients give the same kept energy
    coef = lbpcore.project(g, grid=grid, patch=n, bases=spec, pad="none")
    np.testing.assert_allclose(np.sum(coef**2) / n**2, np.sum(pg**2), rtol=1e-10, atol=1e-10)


@given(divisible_grids())
@settings(max_examples=25)
def test_nested_low_pass_selections_keep_more_energy(grid_cfg):
    g, grid, n = grid_cfg
    energies = [
        float(np.sum(lbpcore.apply_projector(g, grid=grid, patch=n, bases=f"lp_l1:{k}", pad="none") ** 2))
        for k in range(1, 2 * n)
    ]
    assert all(b >= a * (1 - 1e-12) - 1e-12 for a, b in pairwise(energies))
    np.testing.assert_allclose(energies[-1], np.sum(g**2), rtol=1e-10)  # full basis keeps everything
    assert energies[0] <= np.sum(g**2) * (1 + 1e-12)


@given(divisible_grids(), st.data())
@settings(max_examples=25)
def test_nested_random_selections_keep_more_energy(grid_cfg, data):
    g, grid, n = grid_cfg
    everything = lp_linf_oracle(n, n)
    order = data.draw(st.permutations(everything))
    sizes = sorted(set(data.draw(st.lists(st.integers(1, n * n), min_size=1, max_size=5))))
    energies = [
        float(np.sum(lbpcore.apply_projector(g, grid=grid, patch=n, bases=list(order[:s]), pad="none") ** 2))
        for s in sizes
    ]
    assert all(b >= a * (1 - 1e-12) - 1e-12 for a, b in pairwise(energies))


# --------------------------------------------------------------------------
# dtype and misc
# --------------------------------------------------------------------------


@pytest.mark.parametrize("func", ["project", "apply_projector"])
def test_integer_input_promotes_to_float64(func):
    x = np.arange(2 * 16 * 3, dtype=np.int32).reshape(2, 16, 3)
    f = getattr(lbpcore, func)
    y = f(x, grid=(4, 4), patch=4, bases="lp_l1:2")
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, f(x.astype(np.float64), grid=(4, 4), patch=4, bases="lp_l1:2"))


def test_reconstruct_keeps_float32(rng):
    x = rng.standard_normal((1, 49, 2)).astype(np.float32)
    c = lbpcore.project(x, grid=(7, 7), patch=4, bases="lp_l1:3")
    assert c.dtype == np.float32
    assert lbpcore.reconstruct(c, grid=(7, 7), patch=4, bases="lp_l1:3").dtype == np.float32


def test_project_docstring_example():
    c = lbpcore.project(np.ones((1, 16, 1)), grid=(4, 4), patch=4, bases="lp_l1:2")
    np.testing.assert_array_equal(c[0, 0, :, 0], [16.0, 0.0, 0.0])
    y = lbpcore.apply_projector(np.array([[[1.0], [3.0], [5.0], [7.0]]]), grid=(2, 2), patch=2, bases="lp_l1:1")
    np.testing.assert_array_equal(y[0, :, 0], [4.0, 4.0, 4.0, 4.0])


def test_apply_projector_nan_stays_in_its_patch():
    x = np.zeros((1, 64, 1))
    x[0, 0, 0] = np.nan  # top-left patch of an 8x8 grid with patch 4
    y = lbpcore.apply_projector(x, grid=(8, 8), patch=4, bases="lp_l1:2", pad="none")[0, :, 0].reshape(8, 8)
    assert np.all(np.isnan(y[:4, :4]))
    assert np.all(np.isfinite(y[4:, :])) and np.all(np.isfinite(y[:, 4:]))


@given(grid_configs())
@settings(max_examples=25)
def test_reconstruct_nchw_matches_oracle(cfg):
    x, grid, n, spec, indices, pad, e, dtype = cfg
    maps = nchw_from_tokens(np.ascontiguousarray(x[:, e:]), grid)
    coef = lbpcore.project(maps, patch=n, bases=spec, pad=pad, layout="nchw")
    z = lbpcore.reconstruct(coef, grid=grid, patch=n, bases=spec, pad=pad, layout="nchw")
    assert z.shape == maps.shape and z.dtype == dtype
    expected = projector_apply_oracle(x, grid=grid, n=n, indices=indices, pad=pad, extra_tokens=e)[:, e:]
    assert_allclose_dtype(tokens_from_nchw(z), expected, dtype=dtype, scale=4.0)


@given(grid_configs())
@settings(max_examples=15)
def test_inputs_are_not_modified(cfg):
    x, grid, n, spec, indices, pad, e, dtype = cfg
    keep = x.copy()
    kw = dict(grid=grid, patch=n, bases=spec, pad=pad, extra_tokens=e)
    c = lbpcore.project(x, **kw)
    lbpcore.apply_projector(x, **kw)
    keep_c = c.copy()
    lbpcore.reconstruct(c, grid=grid, patch=n, bases=spec, pad=pad)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(c, keep_c)
