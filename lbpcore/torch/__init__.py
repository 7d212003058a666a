"""PyTorch layers with the LBP-WHT backward: :func:`lbp_linear`, :class:`LBPLinear`, :func:`convert`.

A thin, exact bridge: the forward pass of a converted layer is PyTorch's own
linear layer, and the backward pass is :func:`lbpcore.lbp_backward` computed
from the projected input saved by the forward pass.  The projections of CPU
tensors run through lbpcore's NumPy kernels on the tensors' memory, those of
CUDA tensors through CuPy by DLPack on PyTorch's current stream (with the
array-API path on the tensors themselves when CuPy is missing); both products
of the backward pass are PyTorch's (oneDNN's for float32 CPU tensors, see
:func:`products_engine`).  Each converted layer has its own grid
(``grid="auto"`` reads it off every input: windowed attention, channels-last
MLPs and NCHW stages in one model).  Importing :mod:`lbpcore` never imports
PyTorch; importing this module does.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from lbpcore.torch import convert
>>> mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
>>> convert(mlp, "*", grid=(16, 16))
['0', '2']
>>> loss = mlp(torch.randn(4, 256, 16)).square().mean()
>>> loss.backward()
>>> mlp[0].weight.grad.shape
torch.Size([64, 16])
"""

from ._convert import convert, linear_layers, match_layers, revert
from ._function import lbp_linear
from ._modules import LBPConv2d, LBPLinear
from ._products import products_engine

__all__ = ["lbp_linear", "LBPLinear", "LBPConv2d", "convert", "revert", "match_layers", "linear_layers",
           "products_engine"]
