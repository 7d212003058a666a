"""What a converted layer allocates: its coefficients and ``grad_x``, no full-size copy of its tensors.

The dense backward of a linear layer allocates ``grad_x``, ``grad_weight`` and
``grad_bias``.  The LBP-WHT backward may add only the coefficients of
``grad_y`` and of ``grad_x`` (``(e + P r) / L`` of the full tensors, about 0.43
here): no copy, fill or concatenation of a full-size ``grad_y``, ``x`` or
``grad_x`` (the overheads that once made a converted step slower than the dense
one).  PyTorch's allocations are counted with :mod:`torch.profiler`, NumPy's
(the kernels' outputs) with :mod:`tracemalloc`, whose peak also holds Python
objects of a few kilobytes: :data:`SLACK` covers them.  The cache-blocked kernel
also keeps one L2-sized scratch buffer per thread (:data:`SCRATCH`).  Both stay
far below any full-size tensor here.
"""

from __future__ import annotations

import tracemalloc

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("torch_single_thread")

from torch.profiler import ProfilerActivity, profile  # noqa: E402 - after the importorskip

from lbpcore._patches import _blocked  # noqa: E402
from lbpcore.torch import LBPConv2d, LBPLinear  # noqa: E402

#: Bytes of Python objects a backward call may allocate besides arrays (tracebacks, tuples, plans).
SLACK = 64 * 1024
B, C_IN, C_OUT = 16, 128, 512
#: The kernel's scratch on the one thread of these tests: an L2-sized chunk, or one tile (6 sequency rows of a
#: 14-token-wide grid row) when that is larger.
SCRATCH = max(_blocked._CHUNK_BYTES, 6 * 14 * C_OUT * 4)


def _allocated(fn):
    """Bytes PyTorch allocates during one ``fn()``, and the peak of memory traced by :mod:`tracemalloc` in another.

    Two calls: the profiler's own Python objects would swamp the traced peak.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    torch_bytes = sum(max(e.self_cpu_memory_usage, 0) for e in prof.events() if e.name != "[memory]")
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return torch_bytes, peak


def _backward_bytes(layer, x):
    y = layer(x)
    g = torch.randn_like(y)
    params = [p for p in layer.parameters()]
    torch.autograd.grad(y, [x] + params, g, retain_graph=True)  # warm caches (constants, plans)
    return _allocated(lambda: torch.autograd.grad(y, [x] + params, g, retain_graph=True)[0])


def _rows(n_tokens, e=0):
    return e + 4 * 21  # 2x2 patches of lp_l1:6 (21 bases) on the grids below


@pytest.mark.parametrize("case", ["tokens", "channels_last_tokens", "conv_channels_last"])
def test_no_full_size_temporaries(case):
    if case == "tokens":  # a ViT layer: 1 class token + 14x14 patches
        dense = torch.nn.Linear(C_IN, C_OUT)
        layer = LBPLinear.from_linear(dense, grid=(14, 14), extra_tokens=1)
        x = torch.randn(B, 197, C_IN, requires_grad=True)
        rows, full = _rows(196, 1), 197
    elif case == "channels_last_tokens":  # a Swin / ConvNeXt MLP on (B, H, W, C)
        dense = torch.nn.Linear(C_IN, C_OUT)
        layer = LBPLinear.from_linear(dense)
        x = torch.randn(B, 14, 14, C_IN, requires_grad=True)
        rows, full = _rows(196), 196
    else:  # an EfficientFormer 1x1 convolution on channels-last NCHW maps
        dense = torch.nn.Conv2d(C_IN, C_OUT, 1)
        layer = LBPConv2d.from_conv(dense)
        x = torch.randn(B, C_IN, 14, 14).contiguous(memory_format=torch.channels_last).requires_grad_()
        rows, full = _rows(196), 196
    dense_torch, dense_numpy = _backward_bytes(dense, x)
    lbp_torch, lbp_numpy = _backward_bytes(layer, x)
    coefficients = B * rows * (C_IN + C_OUT) * 4  # gs and the coefficients of grad_x
    full_grad_y = B * full * C_OUT * 4
    assert coefficients + SCRATCH + SLACK < full_grad_y  # so that a full-size copy could not hide in the allowance
    assert lbp_torch + lbp_numpy <= dense_torch + dense_numpy + coefficients + SCRATCH + SLACK, (
        lbp_torch, lbp_numpy, dense_torch, dense_numpy, coefficients)


def test_nchw_maps_in_contiguous_memory_cost_one_copy_each_way():
    """The documented exception: NCHW-contiguous maps are copied once into channels-last order for the kernels."""
    dense = torch.nn.Conv2d(C_IN, C_OUT, 1)
    layer = LBPConv2d.from_conv(dense)
    x = torch.randn(B, C_IN, 14, 14, requires_grad=True)
    dense_total = sum(_backward_bytes(dense, x))
    lbp_total = sum(_backward_bytes(layer, x))
    coefficients = B * _rows(196) * (C_IN + C_OUT) * 4
    grad_y_copy = B * 196 * C_OUT * 4
    assert lbp_total > dense_total + coefficients + SCRATCH + SLACK  # the copy is there...
    assert lbp_total <= dense_total + coefficients + grad_y_copy + SCRATCH + SLACK  # ...and it is the only one
