"""Golden test vectors from the authors' released PyTorch operator (SPEC section 6).

``tests/data/lbp_wht_reference.npz`` holds 9 cases keyed ``caseNN/<field>``;
bases are ``lp_l1:k`` with ``k = lp_l1_k``, patch ``n``, reflect padding, float64.
Every case is run through both layouts: ``linear`` cases also as NCHW maps
(when they have no extra tokens), ``pointwise_conv_nchw`` cases also as tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from oracles import lbp_backward_oracle, lp_l1_oracle, nchw_from_tokens, tokens_from_nchw

import lbpcore
import lbpcore.testing as lt

DATA = Path(__file__).parent / "data" / "lbp_wht_reference.npz"
RTOL = 1e-10  # the requirement: 1e-10 relative


def _load():
    with np.load(DATA, allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    cases = {}
    for key, val in files.items():
        name, field = key.split("/", 1)
        cases.setdefault(name, {})[field] = val
    return cases


CASES = _load()
CASE_NAMES = sorted(CASES)


def test_golden_file_has_nine_cases():
    assert CASE_NAMES == [f"case{i:02d}" for i in range(9)]
    for c in CASES.values():
        assert str(c["kind"]) in ("linear", "pointwise_conv_nchw")
        assert c["x"].dtype == np.float64


def _case(name):
    c = CASES[name]
    return dict(
        kind=str(c["kind"]),
        x=c["x"],
        weight=c["weight"],
        bias=c.get("bias"),
        grad_y=c["grad_y"],
        y=c["y"],
        grad_x=c["grad_x"],
        grad_weight=c["grad_weight"],
        grad_bias=c.get("grad_bias"),
        grid=tuple(int(v) for v in c["grid"]),
        n=int(c["patch"]),
        k=int(c["lp_l1_k"]),
        e=int(c["extra_tokens"]),
    )


def assert_rel(actual, desired, name):
    """Elementwise rtol=1e-10 with an absolute floor of 1e-10 * max|desired|,
    plus a relative error of the whole array below 1e-10."""
    actual = np.asarray(actual)
    assert actual.shape == desired.shape, name
    assert actual.dtype == np.float64, name
    scale = float(np.max(np.abs(desired)))
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=RTOL * scale, err_msg=name)
    rel = np.linalg.norm(actual - desired) / np.linalg.norm(desired)
    assert rel <= RTOL, f"{name}: relative error {rel:.3e}"


def _layouts(c):
    """[(layout, x, grad_y, expected grad_x, y, kwargs)] for every layout the case allows."""
    out = []
    if c["kind"] == "linear":
        out.append(("tokens", c["x"], c["grad_y"], c["grad_x"], c["y"], dict(grid=c["grid"], extra_tokens=c["e"])))
        if c["e"] == 0:
            g = c["grid"]
            out.append(
                ("nchw", nchw_from_tokens(c["x"], g), nchw_from_tokens(c["grad_y"], g),
                 nchw_from_tokens(c["grad_x"], g), nchw_from_tokens(c["y"], g), {})
            )
    else:
        assert c["x"].shape[2:] == c["grid"]
        out.append(("nchw", c["x"], c["grad_y"], c["grad_x"], c["y"], {}))
        out.append(
            ("tokens", tokens_from_nchw(c["x"]), tokens_from_nchw(c["grad_y"]), tokens_from_nchw(c["grad_x"]),
             tokens_from_nchw(c["y"]), dict(grid=c["grid"]))
        )
    return out


LAYOUT_PARAMS = [
    pytest.param(name, i, id=f"{name}-{layout}")
    for name in CASE_NAMES
    for i, (layout, *_rest) in enumerate(_layouts(_case(name)))
]


@pytest.mark.parametrize("name,which", LAYOUT_PARAMS)
def test_golden_lbp_backward(name, which):
    c = _case(name)
    layout, x, gy, gx_expected, _, kw = _layouts(c)[which]
    g = lbpcore.lbp_backward(
        x, c["weight"], gy, patch=c["n"], bases=f"lp_l1:{c['k']}", pad="reflect", layout=layout,
        bias=c["bias"], **kw,
    )
    assert_rel(g.grad_x, gx_expected, "grad_x")
    assert_rel(g.grad_weight, c["grad_weight"], "grad_weight")
    if c["bias"] is None:
        assert g.grad_bias is None
        assert c["grad_bias"] is None
    else:
        assert_rel(g.grad_bias, c["grad_bias"], "grad_bias")


@pytest.mark.parametrize("name,which", LAYOUT_PARAMS)
def test_golden_forward(name, which):
    c = _case(name)
    layout, x, _, _, y_expected, _ = _layouts(c)[which]
    y = lbpcore.linear(x, c["weight"], c["bias"], layout=layout)
    assert_rel(y, y_expected, "y")


@pytest.mark.parametrize("name,which", LAYOUT_PARAMS)
def test_golden_lbplinear(name, which):
    c = _case(name)
    layout, x, gy, gx_expected, y_expected, kw = _layouts(c)[which]
    layer = lbpcore.LBPLinear(c["weight"], c["bias"], patch=c["n"], bases=f"lp_l1:{c['k']}", layout=layout, **kw)
    assert_rel(layer.forward(x), y_expected, "y")
    g = layer.backward(gy)
    assert_rel(g.grad_x, gx_expected, "grad_x")
    assert_rel(g.grad_weight, c["grad_weight"], "grad_weight")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_golden_independent_oracles(name):
    """The test suite's own oracle and lbpcore.testing agree with the golden data too."""
    c = _case(name)
    layout = "tokens" if c["kind"] == "linear" else "nchw"
    indices = lp_l1_oracle(c["n"], c["k"])
    mine = lbp_backward_oracle(
        c["x"], c["weight"], c["grad_y"], grid=c["grid"], n=c["n"], indices=indices, extra_tokens=c["e"],
        layout=layout, bias=c["bias"] is not None,
    )
    theirs = lt.lbp_backward_reference(
        c["x"], c["weight"], c["grad_y"], grid=c["grid"], patch=c["n"], indices=indices, extra_tokens=c["e"],
        layout=layout, bias=c["bias"],
    )
    for got in (mine, theirs):
        assert_rel(got[0], c["grad_x"], "grad_x")
        assert_rel(got[1], c["grad_weight"], "grad_weight")
        if c["bias"] is not None:
            assert_rel(got[2], c["grad_bias"], "grad_bias")


def test_golden_case_with_full_basis_is_dense():
    """case05 selects lp_l1:16 on patch 8: every basis, divisible grid -> dense."""
    c = _case("case05")
    assert c["k"] >= 2 * c["n"] - 1 and c["grid"][0] % c["n"] == 0 and c["grid"][1] % c["n"] == 0
    gx, gw, gb = lt.dense_backward_reference(c["x"], c["weight"], c["grad_y"], bias=c["bias"])
    assert_rel(gx, c["grad_x"], "grad_x")
    assert_rel(gw, c["grad_weight"], "grad_weight")
