"""The compiled (Numba) and cache-blocked kernels of the backward passes' projections, against float64 oracles.

Both write the coefficients in the order ``(p, i, q, j)`` (patch row, selected
vertical sequency, patch column, the horizontal sequencies selected with it),
rebuilt here from the basis indices alone.  The oracle sums the basis images
of :mod:`oracles` in float64; the bound is componentwise: a kernel's value is
a sum of the ``n**2`` (padded) patch values with weights ``+-scale``, formed
by two passes of at most ``n`` terms each, so it is within
``gamma_{2n} * scale * sum|patch|`` of the exact sum (the scale is a power of
two: exact).  The reconstruction's value at a pixel is ``scale * sum_k
+-coef_k``, within ``gamma_{2n} * scale * sum_k |coef_k|``.  Both kernels are
also checked to give each other's order, so that either may serve either
side of a backward pass.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import _crop, _from_patches, _padded_grid, _to_patches, basis_images_oracle, draw_grid_and_pad
from tolerances import U32, U64, gamma

import lbpcore._patches._dispatch as dispatch
from lbpcore import make_plan
from lbpcore._patches import _blocked, _compiled

pytest.importorskip("numba")

N = 8
KERNELS = ("compiled", "blocked")
UNIT = {np.dtype(np.float32): U32, np.dtype(np.float64): U64}


def blocked_order(indices) -> list:
    """Per patch-row block, the ``(i, q-independent position)`` layout: ``[(k, t, pos, len(J_t))]`` of basis ``k``."""
    rows = sorted({int(i) for i, _ in indices})
    out = []
    for t, i in enumerate(rows):
        js = sorted(int(j) for ii, j in indices if ii == i)
        for pos, j in enumerate(js):
            k = next(kk for kk, (a, b) in enumerate(indices) if a == i and b == j)
            out.append((k, t, pos, len(js)))
    return out


def to_blocked(canon, plan):
    """``(B, P, r, C)`` coefficients, canonical ``(p, q, k)`` order -> ``(B, P r, C)``, ``(p, i, q, j)`` order."""
    b, _, r, c = canon.shape
    ph, pw = plan.patches
    canon = canon.reshape(b, ph, pw, r, c)
    out = np.empty((b, ph, pw * r, c), dtype=canon.dtype)
    offset = 0
    layout = blocked_order(plan.basis.indices.tolist())
    starts = {}
    for _, t, _, length in layout:
        if t not in starts:
            starts[t] = offset
            offset += pw * length
    for k, t, pos, length in layout:
        for q in range(pw):
            out[:, :, starts[t] + q * length + pos] = canon[:, :, q, k]
    return out.reshape(b, ph * pw * r, c)


def from_blocked(coef, plan):
    """Inverse of :func:`to_blocked`."""
    b, _, c = coef.shape
    p, r = plan.num_patches, plan.rank
    where = to_blocked(np.arange(p * r).reshape(1, p, r, 1), plan)[0, :, 0]  # canonical row of each kernel row
    canon = np.empty_like(coef)
    canon[:, where] = coef
    return canon.reshape(b, p, r, c)


def run_project(kernel, x, plan, e, scale):
    m = plan.num_patches * plan.rank
    if kernel == "compiled":
        out = np.full((x.shape[0], e + m, x.shape[2]), np.nan, dtype=x.dtype)
        _compiled.project_compiled(x, plan, e, scale, out, oe=e)
        assert np.all(np.isnan(out[:, :e]))  # the extra rows are the caller's
        return out[:, e:]
    out = np.full((x.shape[0], m, x.shape[2]), np.nan, dtype=x.dtype)
    return _blocked.project_blocked(x, plan, e, scale, out)


def run_reconstruct(kernel, coef, plan, e, scale):
    b, _, c = coef.shape
    h, w = plan.grid
    if kernel == "compiled":
        full = np.concatenate([np.full((b, e, c), 7.0, dtype=coef.dtype), coef], axis=1)
        out = np.full((b, e + h * w, c), np.nan, dtype=coef.dtype)
        out[:, :e] = 3.0
        _compiled.reconstruct_compiled(full, plan, out, scale, ce=e, oe=e)
        assert np.all(out[:, :e] == 3.0)  # the extra rows are the caller's
        return out[:, e:]
    out = np.full((b, h * w, c), np.nan, dtype=coef.dtype)
    return _blocked.reconstruct_blocked(coef, plan, out, scale)


@st.composite
def cases(draw):
    h, w, pad = draw_grid_and_pad(draw, st, N, None, 24)
    bases = draw(st.sampled_from(["lp_l1:6", "lp_l1:1", "lp_l1:3", "lp_linf:8", "lp_linf:2", "random"]))
    if bases == "random":
        pairs = draw(st.lists(st.tuples(st.integers(0, N - 1), st.integers(0, N - 1)), min_size=1, max_size=12,
                              unique=True))
        bases = np.array(pairs, dtype=np.int64)
    return (h, w), pad, bases, draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)), \
        draw(st.sampled_from([np.float32, np.float64])), draw(st.sampled_from([1.0, 0.125, 0.5]))


def _plan(grid, pad, bases):
    if isinstance(bases, np.ndarray):
        from lbpcore import BasisSet  # noqa: PLC0415

        bases = BasisSet.from_indices(N, bases)
    return make_plan(grid, N, bases, pad)


@pytest.mark.parametrize("kernel", KERNELS)
@given(cases())
@settings(max_examples=40, deadline=None)
def test_projection_matches_the_basis_images_within_the_componentwise_bound(kernel, case):
    grid, pad, bases, e, b, c, dtype, scale = case
    plan = _plan(grid, pad, bases)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, e + grid[0] * grid[1], c)).astype(dtype)
    got = run_project(kernel, x, plan, e, scale)
    indices = plan.basis.indices
    patches = _to_patches(_padded_grid(x.astype(np.float64), grid, N, pad, e), N)  # (B, ph, pw, 64, C)
    bm = basis_images_oracle(N, indices).reshape(len(indices), N * N)
    exact = to_blocked(np.einsum("ru,bpquc->bpqrc", bm, patches).reshape(b, -1, len(indices), c), plan) * scale
    size = to_blocked(np.broadcast_to(np.abs(patches).sum(axis=3, keepdims=True),
                                      patches.shape[:3] + (len(indices), c)).reshape(b, -1, len(indices), c), plan)
    bound = gamma(2 * N, UNIT[np.dtype(dtype)]) * scale * size
    assert got.dtype == dtype
    diff = np.abs(got.astype(np.float64) - exact)
    assert np.all(diff <= bound), float(np.max(diff - bound))


@pytest.mark.parametrize("kernel", KERNELS)
@given(cases())
@settings(max_examples=40, deadline=None)
def test_reconstruction_matches_the_basis_images_within_the_componentwise_bound(kernel, case):
    grid, pad, bases, e, b, c, dtype, scale = case
    plan = _plan(grid, pad, bases)
    rng = np.random.default_rng(1)
    coef = rng.standard_normal((b, plan.num_patches * plan.rank, c)).astype(dtype)
    got = run_reconstruct(kernel, coef, plan, e, scale)
    canon = from_blocked(coef.astype(np.float64), plan)  # (B, P, r, C)
    bm = basis_images_oracle(N, plan.basis.indices).reshape(plan.rank, N * N)
    ph, pw = plan.patches
    patches = np.einsum("ru,bprc->bpuc", bm, canon).reshape(b, ph, pw, N * N, c)
    exact = _crop(_from_patches(patches, N), grid, N) * scale
    size = np.broadcast_to(np.abs(canon).sum(axis=2)[:, :, None, :], (b, ph * pw, N * N, c))
    size = _crop(_from_patches(size.reshape(b, ph, pw, N * N, c), N), grid, N) * scale
    bound = gamma(2 * N, UNIT[np.dtype(dtype)]) * size
    assert got.dtype == dtype
    diff = np.abs(got.astype(np.float64) - exact)
    assert np.all(diff <= bound), float(np.max(diff - bound))


@pytest.mark.parametrize("grid,pad", [((56, 56), "reflect"), ((14, 14), "reflect"), ((7, 9), "zero"),
                                      ((16, 8), "none")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_kernels_give_the_same_coefficients_in_the_same_order(grid, pad, dtype):
    plan = make_plan(grid, N, "lp_l1:6", pad)
    x = np.random.default_rng(2).standard_normal((3, 1 + grid[0] * grid[1], 16)).astype(dtype)
    a, b = run_project("compiled", x, plan, 1, 0.125), run_project("blocked", x, plan, 1, 0.125)
    bound = 2 * gamma(2 * N, UNIT[np.dtype(dtype)]) * 0.125 * N * N * float(np.max(np.abs(x)))
    assert np.max(np.abs(a.astype(np.float64) - b)) <= bound
    ga, gb = run_reconstruct("compiled", a, plan, 1, 0.125), run_reconstruct("blocked", a, plan, 1, 0.125)
    bound = 2 * gamma(2 * N, UNIT[np.dtype(dtype)]) * 0.125 * plan.rank * float(np.max(np.abs(a)))
    assert np.max(np.abs(ga.astype(np.float64) - gb)) <= bound


@pytest.mark.parametrize("chunks", [1, 4, 5, 1000])
def test_any_split_of_the_patch_rows_over_threads_gives_the_same_bits(monkeypatch, chunks):
    # 3 images x 3 patch rows (20 rows, padded to 24) = 9 rows in chunks of 9, 3, 2 (the last one short) and 1,
    # taken by the threads in turn; each patch is computed alone, so any split gives the same bits.
    plan = make_plan((20, 12), N, "lp_l1:6", "reflect")
    x = np.random.default_rng(3).standard_normal((3, 1 + 240, 5)).astype(np.float32)
    ref_c = run_project("compiled", x, plan, 1, 0.5)
    ref_g = run_reconstruct("compiled", ref_c, plan, 1, 0.5)
    monkeypatch.setattr(_compiled, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(_compiled, "_CHUNKS", chunks)
    coef = run_project("compiled", x, plan, 1, 0.5)  # NaN-filled output: a row left out stays NaN
    np.testing.assert_array_equal(coef, ref_c)
    np.testing.assert_array_equal(run_reconstruct("compiled", coef, plan, 1, 0.5), ref_g)


def test_the_dispatcher_uses_the_compiled_kernel_where_it_serves(monkeypatch):
    calls = []
    real = _compiled.project_compiled
    monkeypatch.setattr(_compiled, "project_compiled", lambda *a, **k: calls.append("p") or real(*a, **k))
    real_r = _compiled.reconstruct_compiled
    monkeypatch.setattr(_compiled, "reconstruct_compiled", lambda *a, **k: calls.append("r") or real_r(*a, **k))
    plan = make_plan((14, 14), N, "lp_l1:6", "reflect")
    x = np.ones((2, 1 + 196, 4))
    _, coef = dispatch.project_raw(np, x, plan, "tokens", 1, keep_extra=True, any_order=True)
    dispatch.reconstruct_raw(np, coef, plan, "tokens", 1, any_order=True)
    assert calls == ["p", "r"]
    calls.clear()  # patch 4, float16 and a strided array go to the blocked kernel
    dispatch.project_raw(np, np.ones((2, 64, 4)), make_plan((8, 8), 4, "lp_l1:2", "zero"), "tokens", any_order=True)
    dispatch.project_raw(np, np.ones((2, 196, 4), np.float16), plan, "tokens", any_order=True)
    dispatch.project_raw(np, np.ones((2, 196, 8))[:, :, ::2], plan, "tokens", any_order=True)
    assert calls == []


def test_lbpcore_numba_0_turns_the_compiled_kernel_off():
    code = ("import lbpcore._patches._compiled as c, numpy as np, lbpcore; "
            "p = lbpcore.make_plan((8, 8), 8, 'lp_l1:2'); "
            "print(c.available(), c.serves(np.ones((1, 64, 2)), p))")
    for value, expected in (("0", "False False"), ("1", "True True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "LBPCORE_NUMBA": value})
        assert out.stdout.split() == expected.split()


def test_importing_lbpcore_does_not_import_numba():
    code = "import sys, lbpcore, lbpcore._patches; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
