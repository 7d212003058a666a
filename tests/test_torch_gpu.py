"""``lbpcore.torch`` on CUDA tensors, against the CPU (marked gpu).

Skipped cleanly without a CUDA build of PyTorch and a device; the tests of the CuPy
path also skip without CuPy (the path of CUDA tensors without CuPy, lbpcore's
array-API code on the tensors, is tested either way).
"""

from __future__ import annotations

import numpy as np
import pytest

import lbpcore

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("PyTorch has no CUDA device", allow_module_level=True)

from torch import nn  # noqa: E402 - after the skips
from torch_models import grads_of, loss_of, make_vit, random_layer  # noqa: E402

from lbpcore.torch import _bridge, _function, convert, lbp_linear  # noqa: E402

CUDA = torch.device("cuda")


@pytest.fixture(params=["cupy", "torch"])
def kind(request, monkeypatch):
    """The engine of CUDA tensors: CuPy by DLPack (skips without CuPy), or lbpcore's array-API path on the tensors."""
    if request.param == "cupy":
        pytest.importorskip("cupy")
        assert _bridge.engine(torch.ones(1, device=CUDA)) == "cupy"
    else:
        monkeypatch.setattr(_function, "engine", lambda t: "torch")
    return request.param


def _grads(x, w, b, gy, **kw):
    return grads_of(lambda *leaves: lbp_linear(*leaves, **kw), (x, w, b), gy)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["tokens", "nchw"])
def test_cuda_matches_cpu(kind, dtype, layout):
    if layout == "tokens":
        x, w, b, gy = random_layer(layout, dtype, (14, 14), 24, 16, extra_tokens=1)
        kw = dict(grid=(14, 14), extra_tokens=1)
    else:
        x, w, b, gy = random_layer(layout, dtype, (10, 12), 24, 16)
        kw = dict(patch=4, bases="lp_l1:3")
    cpu = _grads(x, w, b, gy, layout=layout, **kw)
    cuda = _grads(x.to(CUDA), w.to(CUDA), b.to(CUDA), gy.to(CUDA), layout=layout, **kw)
    rtol, atol = (2e-5, 1e-4) if dtype == torch.float32 else (1e-12, 1e-10)
    for got, want, what in zip(cuda, cpu, ("y", "grad_x", "grad_weight", "grad_bias"), strict=True):
        assert got.device.type == "cuda" and got.dtype == dtype, what
        torch.testing.assert_close(got.cpu(), want, rtol=rtol, atol=atol, msg=what)


def test_cupy_arrays_share_the_tensors_memory():
    cp = pytest.importorskip("cupy")
    t = torch.randn(4, 64, 8, device=CUDA)
    a = _bridge.as_array(t, "cupy")
    assert isinstance(a, cp.ndarray) and a.data.ptr == t.data_ptr()
    assert _bridge.as_tensor(a).data_ptr() == t.data_ptr()


def test_no_host_round_trip(kind, monkeypatch):
    """Neither forward nor backward moves data to the host."""
    def no_host(*args, **kwargs):
        raise AssertionError("a CUDA tensor went to the host")

    monkeypatch.setattr(torch.Tensor, "cpu", no_host)
    monkeypatch.setattr(torch.Tensor, "numpy", no_host)
    x = torch.randn(2, 64, 8, device=CUDA, requires_grad=True)
    w = torch.randn(4, 8, device=CUDA, requires_grad=True)
    lbp_linear(x, w, grid=(8, 8)).square().sum().backward()
    assert x.grad.device.type == "cuda" and w.grad.device.type == "cuda"


def test_side_stream(kind):
    """Work queued on a non-default PyTorch stream is ordered with lbpcore's kernels."""
    x = torch.randn(8, 256, 64, device=CUDA)
    w = torch.randn(32, 64, device=CUDA)
    gy = torch.randn(8, 256, 32, device=CUDA)
    want = _grads(x, w, torch.zeros(32, device=CUDA), gy, grid=(16, 16))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        x2 = x * 1.0  # produced on the side stream, consumed at once by the projection
        got = _grads(x2, w, torch.zeros(32, device=CUDA), gy * 1.0, grid=(16, 16))
    torch.cuda.current_stream().wait_stream(stream)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_converted_vit_step_on_cuda_matches_cpu(kind):
    model, images, labels = make_vit()
    gpu_model = make_vit()[0].to(CUDA)
    for m in (model, gpu_model):
        convert(m, "blocks.*.mlp.*", grid=m.grid, extra_tokens=1)
    loss_of(model, images, labels).backward()
    loss_of(gpu_model, images.to(CUDA), labels.to(CUDA)).backward()
    for (name, p), q in zip(model.named_parameters(), gpu_model.parameters(), strict=True):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-9, atol=1e-11, msg=name)


def test_saved_bytes_on_cuda(kind):
    lin = nn.Linear(64, 32).to(CUDA)
    params = {p.untyped_storage().data_ptr() for p in lin.parameters()}
    sizes = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            sizes.append(t.numel() * t.element_size())
        return t

    x = torch.randn(4, 1 + 256, 64, device=CUDA, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lbp_linear(x, lin.weight, lin.bias, grid=(16, 16), extra_tokens=1)
    plan = lbpcore.make_plan((16, 16), 8, "lp_l1:6")
    assert sum(sizes) == 4 * (plan.num_patches * plan.rank + 1) * 64 * 4


def test_bench_torch_rows_on_cuda():
    from analysis.bench_torch import bench_torch  # noqa: PLC0415 - after the skips

    rows = bench_torch(2, 1, [((16, 16), 32, 64)], specs=("lp_l1:6",), device="gpu")
    assert rows[0]["device"].startswith("cuda") and rows[0]["specs"]["lp_l1:6"]["speedup"] > 0
    assert np.isfinite(rows[0]["times_s"]["LBPLinear lp_l1:6"])
