"""Bad input: every error is a ValueError or TypeError whose message names the argument."""

from __future__ import annotations

import numpy as np
import pytest

import lbpcore

RNG = np.random.default_rng(1234)
X = RNG.standard_normal((2, 64, 3))  # 8x8 grid, C_in = 3
W = RNG.standard_normal((4, 3))  # C_out = 4
GY = RNG.standard_normal((2, 64, 4))
MAPS = RNG.standard_normal((2, 3, 8, 8))
GMAPS = RNG.standard_normal((2, 4, 8, 8))


def lbp(x=X, w=W, gy=GY, **kw):
    kw.setdefault("grid", (8, 8))
    kw.setdefault("patch", 4)
    kw.setdefault("bases", "lp_l1:2")
    return lbpcore.lbp_backward(x, w, gy, **kw)


# --------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------


@pytest.mark.parametrize("func", [lbpcore.fwht, lbpcore.ifwht])
@pytest.mark.parametrize("length", [0, 3, 6, 12, 100])
def test_fwht_non_power_of_two_length(func, length):
    with pytest.raises(ValueError, match=r"(?i)length.*power of two"):
        func(np.ones((2, length)))


@pytest.mark.parametrize("func", [lbpcore.fwht2, lbpcore.ifwht2])
def test_fwht2_non_power_of_two_length(func):
    with pytest.raises(ValueError, match=r"(?i)length.*axis 0.*power of two"):
        func(np.ones((6, 4)))


@pytest.mark.parametrize("n", [0, 3, 6, -4])
def test_walsh_matrix_non_power_of_two(n):
    with pytest.raises(ValueError, match=r"\bn\b.*power of two"):
        lbpcore.walsh_matrix(n)


@pytest.mark.parametrize("axis", [2, -3, 10])
def test_fwht_axis_out_of_range(axis):
    with pytest.raises(ValueError, match=r"axis"):
        lbpcore.fwht(np.ones((4, 4)), axis=axis)


@pytest.mark.parametrize("axes", [(0, 2), (-3, 0), (0, 0), (1, -1), (0,), (0, 1, 2), "ab"])
def test_fwht2_bad_axes(axes):
    with pytest.raises(ValueError, match=r"axes"):
        lbpcore.fwht2(np.ones((4, 4)), axes=axes)


@pytest.mark.parametrize("func", [lbpcore.fwht, lbpcore.ifwht, lbpcore.fwht2, lbpcore.ifwht2])
def test_unknown_ordering_and_norm(func):
    with pytest.raises(ValueError, match=r"ordering"):
        func(np.ones((4, 4)), ordering="hadamard")
    with pytest.raises(ValueError, match=r"norm"):
        func(np.ones((4, 4)), norm="unitary")
    with pytest.raises(ValueError, match=r"ordering"):
        lbpcore.walsh_matrix(4, ordering="Sequency")


def test_fwht_zero_dim():
    with pytest.raises(ValueError, match=r"\bx\b"):
        lbpcore.fwht(np.float64(3.0))


@pytest.mark.parametrize(
    "bad", [np.ones(4, dtype=bool), np.ones(4, dtype=np.complex128), np.ones(4, dtype=np.complex64)]
)
@pytest.mark.parametrize("func", [lbpcore.fwht, lbpcore.ifwht])
def test_fwht_complex_and_bool_are_type_errors(func, bad):
    with pytest.raises(TypeError, match=r"\bx\b.*dtype"):
        func(bad)


def test_fwht_non_array_is_type_error():
    with pytest.raises(TypeError, match=r"\bx\b"):
        lbpcore.fwht("abcd")


# --------------------------------------------------------------------------
# bases
# --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["lp_l1:0", "lp_l1:x", "lp_l1:", "lp_l1:-1", "lp_l1:2.5", "lp_l1", "", "6"])
def test_malformed_spec(spec):
    with pytest.raises(ValueError, match=r"spec"):
        lbpcore.select_bases(8, spec)


@pytest.mark.parametrize("spec", ["lowpass:3", "energy:3", "lp_l2:3", "LP_L1:3"])
def test_unknown_spec_kind(spec):
    with pytest.raises(ValueError, match=r"spec"):
        lbpcore.select_bases(8, spec)


@pytest.mark.parametrize("spec", ["energy_l1:65", "energy_l2:100"])
def test_energy_rank_above_n_squared(spec):
    with pytest.raises(ValueError, match=r"spec.*rank"):
        lbpcore.select_bases(8, spec, calibration=np.ones((8, 8)))


@pytest.mark.parametrize("spec", ["energy_l1:3", "energy_l2:1"])
def test_energy_without_calibration(spec):
    with pytest.raises(ValueError, match=r"calibration"):
        lbpcore.select_bases(8, spec)
    with pytest.raises(ValueError, match=r"calibration"):
        lbp(bases=spec)


def test_energy_calibration_bad_shape():
    with pytest.raises(ValueError, match=r"calibration"):
        lbpcore.select_bases(4, "energy_l2:3", calibration=np.ones((8, 8)))


def test_energy_calibration_nan_scores():
    s = np.ones((4, 4))
    s[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"calibration"):
        lbpcore.select_bases(4, "energy_l2:3", calibration=s)


@pytest.mark.parametrize(
    "pairs,pattern",
    [
        ([(0, 0), (0, 0)], r"spec.*\(0, 0\).*more than once"),
        ([(1, 2), (0, 0), (1, 2)], r"spec.*\(1, 2\).*more than once"),
        ([(0, 4)], r"spec.*\(0, 4\).*out of range"),
        ([(-1, 0)], r"spec.*out of range"),
        ([(0, 0), (9, 9)], r"spec.*\(9, 9\).*out of range"),
        ([], r"spec"),
        ([(0, 0, 0)], r"spec"),
        ([(0.5, 1)], r"spec"),
    ],
)
def test_explicit_pairs_invalid(pairs, pattern):
    with pytest.raises(ValueError, match=pattern):
        lbpcore.select_bases(4, pairs)
    with pytest.raises(ValueError, match=pattern):
        lbpcore.BasisSet.from_indices(4, pairs)


def test_explicit_rank_above_n_squared():
    pairs = [(i, j) for i in range(4) for j in range(4)] + [(0, 0)]  # 17 pairs for 16 bases
    with pytest.raises(ValueError, match=r"spec"):
        lbpcore.select_bases(4, pairs)


def test_basis_set_patch_mismatch():
    b = lbpcore.select_bases(4, "lp_l1:2")
    with pytest.raises(ValueError, match=r"(?i)patch"):
        lbpcore.select_bases(8, b)
    with pytest.raises(ValueError, match=r"(?i)patch"):
        lbp(patch=8, bases=b)


@pytest.mark.parametrize("n", [0, 3, 12, -8])
def test_select_bases_n_not_power_of_two(n):
    with pytest.raises(ValueError, match=r"\bn\b.*power of two"):
        lbpcore.select_bases(n, "lp_l1:2")


def test_select_bases_n_not_integer():
    with pytest.raises(TypeError, match=r"\bn\b"):
        lbpcore.select_bases(4.0, "lp_l1:2")
    with pytest.raises(TypeError, match=r"\bn\b"):
        lbpcore.select_bases(True, "lp_l1:2")


# --------------------------------------------------------------------------
# patches / lbp arguments
# --------------------------------------------------------------------------


@pytest.mark.parametrize("patch", [0, 3, 6, 12, -4])
def test_patch_not_power_of_two(patch):
    with pytest.raises(ValueError, match=r"patch.*power of two"):
        lbp(patch=patch)
    with pytest.raises(ValueError, match=r"patch.*power of two"):
        lbpcore.project(X, grid=(8, 8), patch=patch)
    with pytest.raises(ValueError, match=r"patch.*power of two"):
        lbpcore.LBPLinear(W, grid=(8, 8), patch=patch)


@pytest.mark.parametrize("func", ["project", "apply_projector", "lbp"])
def test_unknown_pad_and_layout(func):
    f = {"project": lambda **k: lbpcore.project(X, grid=(8, 8), patch=4, **k),
         "apply_projector": lambda **k: lbpcore.apply_projector(X, grid=(8, 8), patch=4, **k),
         "lbp": lambda **k: lbp(**k)}[func]
    with pytest.raises(ValueError, match=r"\bpad\b"):
        f(pad="symmetric")
    with pytest.raises(ValueError, match=r"layout"):
        f(layout="nhwc")


def test_unknown_layout_in_linear_dense_and_layer():
    with pytest.raises(ValueError, match=r"layout"):
        lbpcore.linear(X, W, layout="NCHW")
    with pytest.raises(ValueError, match=r"layout"):
        lbpcore.dense_backward(X, W, GY, layout="channels_last")
    with pytest.raises(ValueError, match=r"layout"):
        lbpcore.LBPLinear(W, grid=(8, 8), layout="tokens2")


def test_unknown_spec_in_lbp_backward():
    with pytest.raises(ValueError, match=r"spec"):
        lbp(bases="highpass:3")
    with pytest.raises(ValueError, match=r"spec"):
        lbp(bases="lp_l1:0")


def test_shape_mismatch_x_weight():
    with pytest.raises(ValueError, match=r"\bx\b.*C_in"):
        lbp(w=RNG.standard_normal((4, 5)))
    with pytest.raises(ValueError, match=r"\bx\b.*C_in"):
        lbpcore.dense_backward(X, RNG.standard_normal((4, 5)), GY)
    with pytest.raises(ValueError, match=r"\bx\b.*C_in"):
        lbpcore.linear(X, RNG.standard_normal((4, 5)))
    with pytest.raises(ValueError, match=r"weight"):
        lbp(w=RNG.standard_normal((4, 3, 1)))


def test_shape_mismatch_grad_y_channels():
    with pytest.raises(ValueError, match=r"grad_y"):
        lbp(gy=RNG.standard_normal((2, 64, 5)))
    with pytest.raises(ValueError, match=r"grad_y"):
        lbpcore.dense_backward(X, W, RNG.standard_normal((2, 64, 5)))


def test_shape_mismatch_batch():
    with pytest.raises(ValueError, match=r"grad_y"):
        lbp(gy=RNG.standard_normal((3, 64, 4)))
    with pytest.raises(ValueError, match=r"grad_y"):
        lbpcore.dense_backward(X, W, RNG.standard_normal((1, 64, 4)))
    with pytest.raises(ValueError, match=r"grad_y"):
        lbp(x=MAPS, gy=RNG.standard_normal((3, 4, 8, 8)), grid=None, layout="nchw")


def test_shape_mismatch_tokens():
    with pytest.raises(ValueError, match=r"grad_y"):
        lbp(gy=RNG.standard_normal((2, 65, 4)))


def test_shape_mismatch_bias():
    with pytest.raises(ValueError, match=r"bias"):
        lbp(bias=np.zeros(3))
    with pytest.raises(ValueError, match=r"bias"):
        lbpcore.linear(X, W, np.zeros((4, 1)))


@pytest.mark.parametrize("grid,e", [((8, 7), 0), ((7, 8), 0), ((4, 4), 0), ((8, 8), 1), ((9, 9), 0)])
def test_tokens_not_e_plus_hw(grid, e):
    with pytest.raises(ValueError, match=r"(?i)\bL\b|tokens"):
        lbp(grid=grid, extra_tokens=e, pad="zero")
    with pytest.raises(ValueError, match=r"(?i)\bL\b|tokens"):
        lbpcore.project(X, grid=grid, patch=4, extra_tokens=e, pad="zero")


@pytest.mark.parametrize("grid", [(0, 8), (8, 0), (-8, -8), (0, 0)])
def test_non_positive_grid(grid):
    with pytest.raises(ValueError, match=r"grid"):
        lbp(grid=grid)
    with pytest.raises(ValueError, match=r"grid"):
        lbpcore.project(X, grid=grid, patch=4)
    with pytest.raises(ValueError, match=r"grid"):
        lbpcore.LBPLinear(W, grid=grid, patch=4)


@pytest.mark.parametrize("grid", [(8,), (8, 8, 1), "88", 8, None])
def test_malformed_grid(grid):
    with pytest.raises((ValueError, TypeError), match=r"grid"):
        lbp(grid=grid)


def test_grid_mismatch_nchw():
    with pytest.raises(ValueError, match=r"grid"):
        lbp(x=MAPS, gy=GMAPS, grid=(4, 16), layout="nchw")


@pytest.mark.parametrize("e", [-1, -5])
def test_negative_extra_tokens(e):
    with pytest.raises(ValueError, match=r"extra_tokens"):
        lbp(extra_tokens=e)
    with pytest.raises(ValueError, match=r"extra_tokens"):
        lbpcore.project(X, grid=(8, 8), patch=4, extra_tokens=e)


@pytest.mark.parametrize("e", [65, 100])
def test_too_many_extra_tokens(e):
    with pytest.raises(ValueError, match=r"extra_tokens"):
        lbp(extra_tokens=e)


def test_extra_tokens_with_nchw():
    with pytest.raises(ValueError, match=r"extra_tokens"):
        lbp(x=MAPS, gy=GMAPS, grid=None, layout="nchw", extra_tokens=1)


def test_extra_tokens_not_integer():
    with pytest.raises(TypeError, match=r"extra_tokens"):
        lbp(extra_tokens=1.5)


@pytest.mark.parametrize("grid", [(6, 8), (8, 6), (7, 7)])
def test_pad_none_on_non_divisible_grid(grid):
    h, w = grid
    x = RNG.standard_normal((1, h * w, 3))
    gy = RNG.standard_normal((1, h * w, 4))
    with pytest.raises(ValueError, match=r"\bpad\b.*none"):
        lbpcore.lbp_backward(x, W, gy, grid=grid, patch=4, pad="none")
    with pytest.raises(ValueError, match=r"\bpad\b.*none"):
        lbpcore.project(x, grid=grid, patch=4, pad="none")
    # fine with padding
    lbpcore.lbp_backward(x, W, gy, grid=grid, patch=4, pad="zero")


@pytest.mark.parametrize("grid,patch", [((3, 3), 8), ((1, 4), 2), ((16, 4), 16), ((16, 2), 8)])
def test_reflect_padding_wider_than_grid(grid, patch):
    h, w = grid
    x = RNG.standard_normal((1, h * w, 3))
    gy = RNG.standard_normal((1, h * w, 4))
    with pytest.raises(ValueError, match=r"(?i)reflect.*grid"):
        lbpcore.lbp_backward(x, W, gy, grid=grid, patch=patch, bases="lp_l1:2")
    with pytest.raises(ValueError, match=r"(?i)reflect.*grid"):
        lbpcore.apply_projector(x, grid=grid, patch=patch, bases="lp_l1:2")
    # zero padding is always possible
    lbpcore.lbp_backward(x, W, gy, grid=grid, patch=patch, bases="lp_l1:2", pad="zero")


def test_reflect_padding_just_allowed():
    """Pads of grid-1 on a side are the widest single mirror: allowed."""
    x = RNG.standard_normal((1, 5 * 5, 3))  # 5 -> 8: pads (2, 1)
    lbpcore.apply_projector(x, grid=(5, 5), patch=8, bases="lp_l1:2")
    x = RNG.standard_normal((1, 3 * 3, 3))  # 3 -> 4: pads (1, 0)
    lbpcore.apply_projector(x, grid=(3, 3), patch=4, bases="lp_l1:2")


def test_tokens_layout_requires_grid():
    with pytest.raises(ValueError, match=r"grid"):
        lbpcore.lbp_backward(X, W, GY, patch=4)
    with pytest.raises(ValueError, match=r"grid"):
        lbpcore.LBPLinear(W, patch=4)


def test_wrong_ndim_for_layout():
    with pytest.raises(ValueError, match=r"\bx\b"):
        lbpcore.project(MAPS, grid=(8, 8), patch=4)  # 4-D as tokens
    with pytest.raises(ValueError, match=r"\bx\b"):
        lbpcore.project(X, patch=4, layout="nchw")  # 3-D as nchw


def test_reconstruct_bad_coefficient_shape():
    c = lbpcore.project(X, grid=(8, 8), patch=4, bases="lp_l1:2")
    with pytest.raises(ValueError, match=r"coef"):
        lbpcore.reconstruct(c[:, :3], grid=(8, 8), patch=4, bases="lp_l1:2")
    with pytest.raises(ValueError, match=r"coef"):
        lbpcore.reconstruct(c[0], grid=(8, 8), patch=4, bases="lp_l1:2")
    with pytest.raises(ValueError, match=r"coef"):
        lbpcore.reconstruct(c, grid=(8, 8), patch=4, bases="lp_l1:3")


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["x", "weight", "grad_y"])
@pytest.mark.parametrize("bad_dtype", [np.complex128, bool])
def test_complex_or_bool_inputs_are_type_errors(arg, bad_dtype):
    arrays = {"x": X, "weight": W, "grad_y": GY}
    arrays[arg] = arrays[arg].astype(bad_dtype)
    with pytest.raises(TypeError, match=rf"\b{arg}\b"):
        lbpcore.lbp_backward(arrays["x"], arrays["weight"], arrays["grad_y"], grid=(8, 8), patch=4)
    with pytest.raises(TypeError, match=rf"\b{arg}\b"):
        lbpcore.dense_backward(arrays["x"], arrays["weight"], arrays["grad_y"])


@pytest.mark.parametrize("func", ["project", "apply_projector"])
def test_project_complex_is_type_error(func):
    with pytest.raises(TypeError, match=r"\bx\b"):
        getattr(lbpcore, func)(X.astype(np.complex64), grid=(8, 8), patch=4)


def test_reconstruct_complex_is_type_error():
    c = lbpcore.project(X, grid=(8, 8), patch=4, bases="lp_l1:2")
    with pytest.raises(TypeError, match=r"coef"):
        lbpcore.reconstruct(c.astype(complex), grid=(8, 8), patch=4, bases="lp_l1:2")


def test_mixed_float_dtypes_are_type_errors():
    with pytest.raises(TypeError, match=r"weight"):
        lbp(w=W.astype(np.float32))
    with pytest.raises(TypeError, match=r"grad_y"):
        lbp(gy=GY.astype(np.float32))


def test_bool_calibration_is_type_error():
    with pytest.raises(TypeError, match=r"calibration"):
        lbpcore.select_bases(4, "energy_l2:2", calibration=np.ones((4, 4), bool))


def test_object_input_is_type_error():
    with pytest.raises(TypeError, match=r"\bx\b"):
        lbpcore.fwht(np.array([object()] * 4))


# --------------------------------------------------------------------------
# NaN / inf propagate instead of raising
# --------------------------------------------------------------------------


def test_nan_in_grad_y_propagates():
    gy = GY.copy()
    gy[1, 5, 2] = np.nan
    g = lbp(gy=gy, bias=np.zeros(4))
    assert np.isnan(g.grad_x).any() and np.isnan(g.grad_weight).any() and np.isnan(g.grad_bias[2])
    d = lbpcore.dense_backward(X, W, gy, bias=np.zeros(4))
    assert np.isnan(d.grad_x).any() and np.isnan(d.grad_weight).any() and np.isnan(d.grad_bias[2])


def test_nan_in_x_propagates():
    x = X.copy()
    x[0, 0, 0] = np.nan
    g = lbp(x=x)
    assert np.isnan(g.grad_weight[:, 0]).all()
    assert np.isfinite(g.grad_x).all()  # grad_x does not depend on x
    maps = MAPS.copy()
    maps[0, 1, 2, 3] = np.inf
    with np.errstate(invalid="ignore"):
        g = lbp(x=maps, gy=GMAPS, grid=None, layout="nchw")
    assert not np.isfinite(g.grad_weight[:, 1]).any()


def test_nan_in_calibration_data_raises_naming_calibration():
    cal = X.copy()
    cal[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"calibration"):
        lbpcore.select_bases(4, "energy_l2:3", calibration=cal, grid=(8, 8))
