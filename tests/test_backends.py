"""Every public array function through every namespace (NumPy, array-api-strict on
its default and a non-default device, CuPy when a GPU is present), compared with
NumPy; results must stay in the input's namespace and on the input's device."""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import assert_allclose_dtype

import lbpcore

DTYPES = ["float32", "float64"]


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    d = dict(
        x=rng.standard_normal((2, 1 + 7 * 9, 3)),  # 1 extra token + 7x9 grid
        gy=rng.standard_normal((2, 1 + 7 * 9, 4)),
        w=rng.standard_normal((4, 3)),
        b=rng.standard_normal(4),
        maps=rng.standard_normal((2, 3, 6, 10)),
        gmaps=rng.standard_normal((2, 4, 6, 10)),
        vec=rng.standard_normal((3, 16, 8)),
    )
    return {k: v.astype(dtype) for k, v in d.items()}


def _cmp(backend, got, want, like, dtype):
    backend.check_kind(got, like)
    assert str(got.dtype).endswith(dtype), f"{backend.name}: dtype {got.dtype}, want {dtype}"
    g = backend.to_numpy(got)
    assert g.shape == np.shape(want)
    assert_allclose_dtype(g, want, dtype=dtype, err_msg=backend.name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ordering", ["natural", "sequency", "dyadic"])
def test_fwht_family(backend, dtype, ordering):
    d = _data(dtype)
    v = backend.asarray(d["vec"])
    for name in ("fwht", "ifwht"):
        f = getattr(lbpcore, name)
        for axis in (1, -1):
            for norm in ("backward", "ortho"):
                _cmp(backend, f(v, axis=axis, ordering=ordering, norm=norm),
                     f(d["vec"], axis=axis, ordering=ordering, norm=norm), v, dtype)
    for name in ("fwht2", "ifwht2"):
        f = getattr(lbpcore, name)
        _cmp(backend, f(v, axes=(1, 2), ordering=ordering), f(d["vec"], axes=(1, 2), ordering=ordering), v, dtype)


def test_walsh_matrix_namespace_and_device(backend):
    m = lbpcore.walsh_matrix(8, xp=backend.xp, device=backend.device, dtype=backend.xp.float32)
    ref = backend.asarray(np.zeros(1, np.float32))
    backend.check_kind(m, ref)
    np.testing.assert_array_equal(backend.to_numpy(m), lbpcore.walsh_matrix(8))
    imgs = lbpcore.select_bases(4, "lp_l1:3").images(xp=backend.xp, device=backend.device)
    backend.check_kind(imgs, ref)
    np.testing.assert_array_equal(backend.to_numpy(imgs), lbpcore.select_bases(4, "lp_l1:3").images())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pad", ["reflect", "zero"])
def test_project_reconstruct_apply_projector(backend, dtype, pad):
    d = _data(dtype)
    kw = dict(grid=(7, 9), patch=4, bases="lp_l1:3", pad=pad)
    x = backend.asarray(d["x"])
    c = lbpcore.project(x, extra_tokens=1, **kw)
    c_np = lbpcore.project(d["x"], extra_tokens=1, **kw)
    _cmp(backend, c, c_np, x, dtype)
    _cmp(backend, lbpcore.reconstruct(c, **kw), lbpcore.reconstruct(c_np, **kw), x, dtype)
    _cmp(backend, lbpcore.apply_projector(x, extra_tokens=1, **kw),
         lbpcore.apply_projector(d["x"], extra_tokens=1, **kw), x, dtype)
    # nchw, and an explicit basis that is not a rectangle
    m = backend.asarray(d["maps"])
    kw2 = dict(patch=4, bases=[(0, 0), (2, 1), (3, 3)], pad=pad, layout="nchw")
    cm = lbpcore.project(m, **kw2)
    cm_np = lbpcore.project(d["maps"], **kw2)
    _cmp(backend, cm, cm_np, m, dtype)
    _cmp(backend, lbpcore.reconstruct(cm, grid=(6, 10), **kw2), lbpcore.reconstruct(cm_np, grid=(6, 10), **kw2), m,
         dtype)
    _cmp(backend, lbpcore.apply_projector(m, **kw2), lbpcore.apply_projector(d["maps"], **kw2), m, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_dense_lbp_backward(backend, dtype):
    d = _data(dtype)
    x, w, gy, b = (backend.asarray(d[k]) for k in ("x", "w", "gy", "b"))
    _cmp(backend, lbpcore.linear(x, w, b), lbpcore.linear(d["x"], d["w"], d["b"]), x, dtype)
    for got, want in zip(lbpcore.dense_backward(x, w, gy, bias=b),
                         lbpcore.dense_backward(d["x"], d["w"], d["gy"], bias=d["b"]), strict=True):
        _cmp(backend, got, want, x, dtype)
    kw = dict(grid=(7, 9), patch=4, bases="lp_l1:3", extra_tokens=1)
    for got, want in zip(lbpcore.lbp_backward(x, w, gy, bias=b, **kw),
                         lbpcore.lbp_backward(d["x"], d["w"], d["gy"], bias=d["b"], **kw), strict=True):
        _cmp(backend, got, want, x, dtype)
    # nchw
    m, gm = backend.asarray(d["maps"]), backend.asarray(d["gmaps"])
    _cmp(backend, lbpcore.linear(m, w, b, layout="nchw"), lbpcore.linear(d["maps"], d["w"], d["b"], layout="nchw"), m,
         dtype)
    for got, want in zip(lbpcore.dense_backward(m, w, gm, layout="nchw"),
                         lbpcore.dense_backward(d["maps"], d["w"], d["gmaps"], layout="nchw"), strict=True):
        if want is not None:
            _cmp(backend, got, want, m, dtype)
    kwn = dict(patch=4, bases="lp_linf:2", pad="zero", layout="nchw")
    for got, want in zip(lbpcore.lbp_backward(m, w, gm, bias=b, **kwn),
                         lbpcore.lbp_backward(d["maps"], d["w"], d["gmaps"], bias=d["b"], **kwn), strict=True):
        _cmp(backend, got, want, m, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lbplinear_layer(backend, dtype):
    d = _data(dtype)
    x, w, gy, b = (backend.asarray(d[k]) for k in ("x", "w", "gy", "b"))
    kw = dict(grid=(7, 9), patch=4, bases="lp_l1:3", extra_tokens=1)
    layer = lbpcore.LBPLinear(w, b, **kw)
    ref = lbpcore.LBPLinear(d["w"], d["b"], **kw)
    _cmp(backend, layer.forward(x), ref.forward(d["x"]), x, dtype)
    for got, want in zip(layer.backward(gy), ref.backward(d["gy"]), strict=True):
        _cmp(backend, got, want, x, dtype)
    assert layer.saved_nbytes == ref.saved_nbytes


def test_energy_selection_from_backend_calibration(backend):
    d = _data("float64")
    cal = backend.asarray(d["x"])
    a = lbpcore.select_bases(4, "energy_l2:5", calibration=cal, grid=(7, 9), extra_tokens=1)
    b = lbpcore.select_bases(4, "energy_l2:5", calibration=d["x"], grid=(7, 9), extra_tokens=1)
    assert a == b


def test_integer_input_promotes_to_default_float(backend):
    v = backend.asarray(np.arange(8, dtype=np.int32))
    y = lbpcore.fwht(v, ordering="natural")
    backend.check_kind(y, v)
    assert "float" in str(y.dtype)
    np.testing.assert_array_equal(backend.to_numpy(y), lbpcore.fwht(np.arange(8.0), ordering="natural"))


def test_mixed_namespaces_are_type_errors(backend):
    if backend.name == "numpy":
        pytest.skip("needs a second namespace")
    d = _data("float64")
    with pytest.raises(TypeError, match=r"weight"):
        lbpcore.dense_backward(backend.asarray(d["x"]), d["w"], backend.asarray(d["gy"]))


def test_mixed_devices_are_value_errors():
    xs = pytest.importorskip("array_api_strict")
    d = _data("float64")
    x = xs.asarray(d["x"], device=xs.Device("device1"))
    w = xs.asarray(d["w"])  # default device
    gy = xs.asarray(d["gy"], device=xs.Device("device1"))
    with pytest.raises(ValueError, match=r"weight.*device"):
        lbpcore.dense_backward(x, w, gy)
