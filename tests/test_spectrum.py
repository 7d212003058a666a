"""analysis.spectrum: energy maps, energy kept, energy curves and the streaming accumulator.

The maps are checked against independent computations: the oracles of tests/oracles.py
(``numpy.pad`` and dense Walsh images from Sylvester's recursion), the core's
projector :func:`lbpcore.apply_projector` (energy kept = 1 - relative squared
projection error, Parseval), and sub-grid / per-channel slicing.
"""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
from oracles import coefficients_oracle, lp_linf_oracle, pad_oracle

import lbpcore
from analysis import spectrum
from analysis.io import write_json
from analysis.spectrum import (
    SpectrumAccumulator,
    energy_curves,
    energy_kept,
    energy_maps,
)


def smooth_field(rng, b, h, w, c, width=3.0):
    """Gaussian-filtered white noise (periodic), tokens (b, h*w, c)."""
    noise = rng.standard_normal((b, h, w, c))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    filt = np.exp(-2 * (np.pi * width) ** 2 * (fx**2 + fy**2))
    f = np.fft.ifft2(np.fft.fft2(noise, axes=(1, 2)) * filt[None, :, :, None], axes=(1, 2)).real
    return f.reshape(b, h * w, c)


def oracle_maps(x, grid, n, pad, e):
    """(l2, l1) from the coefficient oracle of tests/oracles.py (dense images, numpy.pad)."""
    pairs = lp_linf_oracle(n, n)
    c = coefficients_oracle(x, grid=grid, n=n, indices=pairs, pad=pad, extra_tokens=e)  # (B, P, K, C)
    l2 = np.zeros((n, n))
    l1 = np.zeros((n, n))
    for k, (i, j) in enumerate(pairs):
        l2[i, j] = np.sum(c[:, :, k] ** 2)
        l1[i, j] = np.sum(np.abs(c[:, :, k]))
    return l2, l1


CASES = [  # grid, patch, pad, extra tokens
    ((8, 8), 4, "reflect", 0),
    ((14, 14), 8, "reflect", 1),
    ((7, 10), 4, "zero", 2),
    ((6, 5), 4, "reflect", 0),
    ((16, 8), 8, "none", 0),
]


@pytest.mark.parametrize("grid,n,pad,e", CASES)
def test_maps_match_independent_oracle(rng, grid, n, pad, e):
    x = rng.standard_normal((3, e + grid[0] * grid[1], 4))
    res = energy_maps(x, grid=grid, patch=n, pad=pad, extra_tokens=e)
    l2, l1 = oracle_maps(x, grid, n, pad, e)
    np.testing.assert_allclose(res.l2, l2, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(res.l1, l1, rtol=1e-12, atol=1e-10)
    assert res.l2.shape == (n, n) and res.patch == n and res.grid == grid
    plan = lbpcore.make_plan(grid, n, "lp_l1:1", pad)
    assert res.count == 3 * plan.num_patches * 4
    assert res.batch == 3


@pytest.mark.parametrize("grid,n,pad,e", CASES)
def test_map_sums_to_total_energy_of_padded_grid(rng, grid, n, pad, e):
    h, w = grid
    x = rng.standard_normal((2, e + h * w, 3))
    res = energy_maps(x, grid=grid, patch=n, pad=pad, extra_tokens=e)
    padded = pad_oracle(x[:, e:].reshape(2, h, w, 3), (1, 2), n, pad)
    expected = float(np.sum(padded**2))
    assert res.l2.sum() / n**2 == pytest.approx(expected, rel=1e-12)
    assert res.total_energy == pytest.approx(expected, rel=1e-12)
    if h % n == 0 and w % n == 0:  # divisible: exactly the grid's energy, extra tokens excluded
        assert res.total_energy == pytest.approx(float(np.sum(x[:, e:] ** 2)), rel=1e-12)


@pytest.mark.parametrize("spec", ["lp_l1:1", "lp_l1:3", "lp_l1:6", "lp_linf:2", "lp_linf:5", "energy_l2:7",
                                  [(0, 0), (3, 5), (7, 1)]])
@pytest.mark.parametrize("e", [0, 1])
def test_energy_kept_equals_projection_error_from_core(rng, spec, e):
    grid, n = (16, 24), 8
    x = smooth_field(rng, 2, *grid, 3, width=1.5)
    if e:
        x = np.concatenate([rng.standard_normal((2, e, 3)) * 10.0, x], axis=1)
    res = energy_maps(x, grid=grid, patch=n, extra_tokens=e)
    if isinstance(spec, str) and spec.startswith("energy"):
        basis = lbpcore.select_bases(n, spec, calibration=res.energy_map)
    else:
        basis = lbpcore.select_bases(n, spec)
    px = lbpcore.apply_projector(x, grid=grid, patch=n, bases=basis, extra_tokens=e)
    g = x[:, e:]
    expected = 1.0 - np.sum((g - px[:, e:]) ** 2) / np.sum(g**2)
    np.testing.assert_array_equal(px[:, :e], x[:, :e])
    assert energy_kept(res, basis) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert energy_kept(res.energy_map, spec) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_energy_kept_is_fraction_of_selected_entries():
    m = np.arange(16.0).reshape(4, 4)
    b = lbpcore.select_bases(4, "lp_linf:2")  # (0,0),(0,1),(1,0),(1,1)
    assert energy_kept(m, b) == pytest.approx((0 + 1 + 4 + 5) / 120)
    assert energy_kept(m, "lp_linf:4") == 1.0
    assert energy_kept(np.zeros((4, 4)), "lp_l1:1") == 1.0  # nothing to lose
    stacked = energy_kept(np.stack([m, np.ones((4, 4))]), b)
    np.testing.assert_allclose(stacked, [10 / 120, 4 / 16])


@pytest.mark.parametrize("bad", [np.ones((4, 5)), np.ones(4), -np.ones((4, 4)), np.full((4, 4), np.nan)])
def test_energy_kept_rejects_bad_maps(bad):
    with pytest.raises(ValueError, match="energy_map"):
        energy_kept(bad, "lp_l1:1")


def test_energy_kept_rejects_selection_of_wrong_size():
    with pytest.raises(ValueError):
        energy_kept(np.ones((4, 4)), lbpcore.select_bases(8, "lp_l1:2"))


def test_energy_l1_spec_ranks_by_l1_map(rng):
    x = rng.standard_normal((2, 64, 2))
    res = energy_maps(x, grid=(8, 8), patch=4)
    b1 = lbpcore.select_bases(4, "energy_l1:5", calibration=res.l1)
    assert energy_kept(res, "energy_l1:5") == pytest.approx(energy_kept(res, b1))


def test_per_channel_and_per_patch_breakdowns(rng):
    grid, n = (8, 16), 4
    x = rng.standard_normal((2, 1 + 128, 3))
    tot = energy_maps(x, grid=grid, patch=n, extra_tokens=1)
    pc = energy_maps(x, grid=grid, patch=n, extra_tokens=1, per="channel")
    pp = energy_maps(x, grid=grid, patch=n, extra_tokens=1, per="patch")
    assert pc.l2.shape == (3, n, n) and pp.l2.shape == (8, n, n)
    np.testing.assert_allclose(pc.energy_map, tot.l2, rtol=1e-12)
    np.testing.assert_allclose(pp.l1_map, tot.l1, rtol=1e-12)
    for c in range(3):  # channel c alone
        one = energy_maps(x[:, :, c:c + 1], grid=grid, patch=n, extra_tokens=1)
        np.testing.assert_allclose(pc.l2[c], one.l2, rtol=1e-12)
    g = x[:, 1:].reshape(2, 8, 16, 3)
    for p in range(8):  # patch (pr, pq) of the 2 x 4 patch grid, as its own 4x4 grid
        pr, pq = divmod(p, 4)
        sub = g[:, pr * n:(pr + 1) * n, pq * n:(pq + 1) * n].reshape(2, n * n, 3)
        one = energy_maps(sub, grid=(n, n), patch=n)
        np.testing.assert_allclose(pp.l2[p], one.l2, rtol=1e-12)
        np.testing.assert_allclose(pp.l1[p], one.l1, rtol=1e-12)


def test_nchw_layout_matches_tokens(rng):
    x = rng.standard_normal((2, 3, 6, 10))
    tokens = x.reshape(2, 3, 60).transpose(0, 2, 1)
    for per in (None, "channel", "patch"):
        a = energy_maps(x, patch=4, layout="nchw", per=per)
        b = energy_maps(tokens, grid=(6, 10), patch=4, per=per)
        np.testing.assert_allclose(a.l2, b.l2, rtol=1e-12)
        np.testing.assert_allclose(a.l1, b.l1, rtol=1e-12)
        assert a.grid == (6, 10) and a.count == b.count


def test_float32_input_is_accumulated_in_float64(rng):
    x32 = (rng.standard_normal((4, 64, 5)) * 1e3).astype(np.float32)
    a = energy_maps(x32, grid=(8, 8), patch=8)
    b = energy_maps(x32.astype(np.float64), grid=(8, 8), patch=8)
    assert a.l2.dtype == np.float64
    np.testing.assert_allclose(a.l2, b.l2, rtol=1e-13)  # float32 accumulation would be off by ~1e-7
    i = energy_maps(np.arange(64).reshape(1, 64, 1), grid=(8, 8), patch=8)  # integers are fine too
    assert i.total_energy == pytest.approx(float(np.sum(np.arange(64.0) ** 2)))


def test_smooth_field_is_low_pass_and_white_noise_is_flat(rng):
    smooth = smooth_field(rng, 4, 32, 32, 4, width=3.0)
    noise = rng.standard_normal((4, 1024, 4))
    ks = energy_maps(smooth, grid=(32, 32), patch=8).kept("lp_l1:6")
    kn = energy_maps(noise, grid=(32, 32), patch=8).kept("lp_l1:6")
    assert ks > 0.95
    assert kn == pytest.approx(21 / 64, abs=0.03)  # white noise: r / n^2 in expectation


# --------------------------------------------------------------------------
# accumulator
# --------------------------------------------------------------------------


@pytest.mark.parametrize("per", [None, "channel", "patch"])
def test_accumulator_over_chunks_equals_one_pass(rng, per):
    x = rng.standard_normal((11, 1 + 14 * 14, 3)).astype(np.float32)
    acc = SpectrumAccumulator(8, grid=(14, 14), extra_tokens=1, per=per)
    for lo, hi in [(0, 1), (1, 5), (5, 5), (5, 11)]:  # uneven, including an empty chunk
        assert acc.update(x[lo:hi]) is acc
    one = energy_maps(x, grid=(14, 14), patch=8, extra_tokens=1, per=per)
    res = acc.result()
    np.testing.assert_allclose(res.l2, one.l2, rtol=1e-12)
    np.testing.assert_allclose(res.l1, one.l1, rtol=1e-12)
    assert res.total_energy == pytest.approx(one.total_energy, rel=1e-12)
    assert (res.count, res.batch) == (one.count, 11)
    l2, _ = oracle_maps(x, (14, 14), 8, "reflect", 1)
    np.testing.assert_allclose(res.energy_map, l2, rtol=1e-10)


def test_accumulator_sub_batches_large_chunks(rng, monkeypatch):
    x = rng.standard_normal((9, 64, 2))
    whole = energy_maps(x, grid=(8, 8), patch=4)
    calls = []
    orig = lbpcore.project

    def counting(a, **kw):
        calls.append(a.shape[0])
        return orig(a, **kw)

    monkeypatch.setattr(spectrum, "_MAX_ELEMENTS", 2 * 64 * 2 * 2)  # two items per sub-batch
    monkeypatch.setattr(lbpcore, "project", counting)
    res = energy_maps(x, grid=(8, 8), patch=4)
    assert calls == [2, 2, 2, 2, 1]
    np.testing.assert_allclose(res.l2, whole.l2, rtol=1e-12)


def test_accumulator_reads_memory_mapped_data(rng, tmp_path):
    x = rng.standard_normal((5, 3, 8, 8))
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    a = energy_maps(mm, layout="nchw", patch=4)
    b = energy_maps(x, layout="nchw", patch=4)
    np.testing.assert_allclose(a.l2, b.l2, rtol=1e-12)


def test_accumulator_rejects_inconsistent_chunks(rng):
    acc = SpectrumAccumulator(4, grid=(8, 8))
    with pytest.raises(ValueError, match="before any data"):
        acc.result()
    acc.update(rng.standard_normal((2, 64, 3)))
    with pytest.raises(ValueError, match="channels"):
        acc.update(rng.standard_normal((2, 64, 4)))
    with pytest.raises(ValueError):
        acc.update(rng.standard_normal((2, 63, 3)))
    nchw = SpectrumAccumulator(4, layout="nchw")
    nchw.update(rng.standard_normal((1, 2, 8, 8)))
    with pytest.raises(ValueError):
        nchw.update(rng.standard_normal((1, 2, 8, 12)))
    assert nchw.result().grid == (8, 8)


@pytest.mark.parametrize("kw,match", [
    (dict(per="row"), "per"),
    (dict(layout="nhwc"), "layout"),
    (dict(pad="edge", grid=(8, 8)), "pad"),
    (dict(), "grid"),
    (dict(grid=(8, 8), patch=3), "power of two"),
])
def test_accumulator_validates_arguments(kw, match):
    kw = dict(kw)
    patch = kw.pop("patch", 4)
    with pytest.raises(ValueError, match=match):
        SpectrumAccumulator(patch, **kw)


def test_energy_maps_rejects_empty_batch():
    with pytest.raises(ValueError, match="empty"):
        energy_maps(np.zeros((0, 64, 1)), grid=(8, 8), patch=4)


# --------------------------------------------------------------------------
# curves and serialization
# --------------------------------------------------------------------------


def test_energy_curves_against_energy_kept(rng):
    res = energy_maps(smooth_field(rng, 2, 16, 16, 2, width=1.0), grid=(16, 16), patch=8)
    curves = energy_curves(res, policies=("lp_l1", "lp_linf", "energy", "energy_l1", "random"), trials=8)
    m = res.energy_map
    assert [e["param"] for e in curves["lp_l1"]] == list(range(1, 16))
    assert [e["param"] for e in curves["lp_linf"]] == list(range(1, 9))
    for policy in ("lp_l1", "lp_linf"):
        for e in curves[policy]:
            b = lbpcore.select_bases(8, f"{policy}:{e['param']}")
            assert e["rank"] == b.rank
            assert e["kept"] == pytest.approx(energy_kept(m, b), rel=1e-12)
    for e in curves["energy"]:
        assert e["kept"] == pytest.approx(energy_kept(m, f"energy_l2:{e['rank']}"), rel=1e-12)
    for e in curves["energy_l1"]:
        assert e["kept"] == pytest.approx(energy_kept(res, f"energy_l1:{e['rank']}"), rel=1e-12)
    best = {e["rank"]: e["kept"] for e in curves["energy"]}
    for policy, rows in curves.items():
        kept = [e["kept"] for e in rows]
        assert all(b >= a - 1e-15 for a, b in pairwise(kept)), policy  # nested: non-decreasing
        assert kept[-1] == pytest.approx(1.0)
        for e in rows:  # the energy ranking is the optimum of any r Walsh bases
            assert e["kept"] <= best[e["rank"]] + 1e-12, policy
    json.dumps(curves)  # plain data


def test_random_curve_is_uniform_mean_and_seeded():
    m = np.ones((4, 4))
    c = energy_curves(m, policies=("random",), trials=5, seed=3)["random"]
    for e in c:
        assert e["kept"] == pytest.approx(e["rank"] / 16) and e["std"] == pytest.approx(0.0, abs=1e-15)
    skew = np.arange(16.0).reshape(4, 4)
    a = energy_curves(skew, policies=("random",), seed=1)
    assert a == energy_curves(skew, policies=("random",), seed=1)
    assert a != energy_curves(skew, policies=("random",), seed=2)


def test_energy_curves_validation():
    with pytest.raises(ValueError, match="unknown policy"):
        energy_curves(np.ones((4, 4)), policies=("lowpass",))
    with pytest.raises(ValueError, match="SpectrumResult"):
        energy_curves(np.ones((4, 4)), policies=("energy_l1",))
    with pytest.raises(ValueError):
        energy_curves(np.ones((4, 4, 4, 4)))


def test_to_dict_is_json_and_consistent(rng, tmp_path):
    res = energy_maps(rng.standard_normal((2, 3, 8, 8)), patch=4, layout="nchw", per="channel")
    d = res.to_dict()
    back = json.loads(json.dumps(d))
    assert back["patch"] == 4 and back["grid"] == [8, 8] and back["per"] == "channel"
    np.testing.assert_allclose(back["energy_map"], res.energy_map)
    np.testing.assert_allclose(back["l1_map"], res.l1_map)
    assert np.shape(back["energy_maps_per"]) == (3, 4, 4)
    assert back["total_energy"] == pytest.approx(np.sum(back["energy_map"]) / 16)
    assert np.isclose(np.sum(res.fractions), 1.0)
    write_json(tmp_path / "s.json", res)
    assert json.loads((tmp_path / "s.json").read_text()) == back
    assert "energy_maps_per" not in energy_maps(rng.standard_normal((1, 16, 1)), grid=(4, 4), patch=4).to_dict()
