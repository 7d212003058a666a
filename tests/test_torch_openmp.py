"""The compiled kernels on PyTorch's OpenMP team: the same bits as on lbpcore's pool, every row written once.

Each patch is computed alone by the same kernel code whichever thread takes
it, so the team and the pool must agree bit for bit; outputs start as NaN, so
a row that no thread wrote shows.  The split is forced (the inputs are small)
by lowering the size from which the kernels go parallel.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")
torch = pytest.importorskip("torch")

from lbpcore import make_plan  # noqa: E402 - after the importorskip
from lbpcore._patches import _compiled  # noqa: E402
from lbpcore.torch import LBPConv2d, LBPLinear, _bridge  # noqa: E402

GOMP = _bridge._torch_gomp_parallel()
needs_team = pytest.mark.skipif(GOMP is None, reason="PyTorch does not run on an OpenMP runtime of its own here")


@pytest.fixture
def split(monkeypatch):
    """Split every kernel call, however small its input."""
    monkeypatch.setattr(_compiled, "_PARALLEL_MIN_BYTES", 0)


def _both(kind, a, plan, e, scale, team):
    """``kind`` of ``a`` on the pool, then on ``team``: the two NaN-initialised outputs."""
    results = []
    for t in (None, team):
        with _compiled.openmp_team(t):
            if kind == "project":
                out = np.full((a.shape[0], e + plan.num_patches * plan.rank, a.shape[2]), np.nan, dtype=a.dtype)
                _compiled.project_compiled(a, plan, e, scale, out, oe=e)
            else:
                h, w = plan.grid
                out = np.full((a.shape[0], e + h * w, a.shape[2]), np.nan, dtype=a.dtype)
                _compiled.reconstruct_compiled(a, plan, out, scale, ce=e, oe=e)
        results.append(out[:, e:])
    return results


@needs_team
@pytest.mark.parametrize("grid,pad,bases,e", [((20, 12), "reflect", "lp_l1:6", 1), ((14, 14), "zero", "lp_l1:3", 0),
                                              ((7, 9), "reflect", "lp_linf:8", 2), ((16, 8), "none", "lp_l1:1", 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads,chunks", [(2, 16), (2, 1), (3, 4), (8, 1000)])
def test_the_team_gives_the_bits_of_the_pool(split, monkeypatch, grid, pad, bases, e, dtype, threads, chunks):
    monkeypatch.setattr(_compiled, "_CHUNKS", chunks)
    plan = make_plan(grid, 8, bases, pad)
    x = np.random.default_rng(0).standard_normal((3, e + grid[0] * grid[1], 5)).astype(dtype)
    pool, team = _both("project", x, plan, e, 0.5, (GOMP, threads))
    assert not np.isnan(pool).any()
    np.testing.assert_array_equal(team, pool)
    coef = np.concatenate([np.zeros((3, e, 5), dtype), pool], axis=1)
    pool_g, team_g = _both("reconstruct", coef, plan, e, 0.25, (GOMP, threads))
    assert not np.isnan(pool_g).any()
    np.testing.assert_array_equal(team_g, pool_g)


@needs_team
def test_the_bridge_runs_the_kernels_on_pytorchs_team_and_the_gradients_do_not_change(split, monkeypatch):
    calls = []
    real = _compiled._team_runner()
    monkeypatch.setattr(_compiled, "_team_runner", lambda: lambda *a: calls.append(a[1]) or real(*a))
    torch.manual_seed(0)
    layers = [LBPConv2d.from_conv(torch.nn.Conv2d(6, 4, 1)), LBPLinear.from_linear(torch.nn.Linear(6, 4),
                                                                                   extra_tokens=1)]
    inputs = [torch.randn(2, 6, 17, 9).contiguous(memory_format=torch.channels_last), torch.randn(2, 1 + 144, 6)]
    for layer, x in zip(layers, inputs, strict=True):
        grads = []
        for gomp in (GOMP, None):  # PyTorch's team, then lbpcore's pool
            monkeypatch.setattr(_bridge, "_torch_gomp_parallel", lambda gomp=gomp: gomp)
            xr = x.clone().requires_grad_()
            y = layer(xr)
            grads.append(torch.autograd.grad(y, [xr, layer.weight], torch.ones_like(y)))
        for a, b in zip(*grads, strict=True):
            assert torch.equal(a, b)
    assert calls == ["project", "project", "reconstruct"] * 2  # x, grad_y, grad_x of each layer, on the team


def test_lbpcore_openmp_0_keeps_the_kernels_on_lbpcores_pool():
    code = "from lbpcore.torch import _bridge; print(_bridge._torch_gomp_parallel() is None)"
    env = {**os.environ, "LBPCORE_OPENMP": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
