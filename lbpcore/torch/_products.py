"""The two backward products of a converted layer, on the faster of PyTorch's two CPU GEMMs.

A converted layer's backward multiplies the projected rows ``gs`` ``(R, C_out)``
of ``grad_y`` by the saved coefficients ``xs`` ``(R, C_in)`` of ``x``
(``grad_weight = gs.T @ xs``) and by the weight (the coefficients of
``grad_x``, ``gs @ W``).  PyTorch has two CPU GEMMs for them: :func:`torch.mm`
(the BLAS PyTorch was built with, MKL on x86) and oneDNN, which runs
PyTorch's convolutions.  A matrix ``(R, C)`` in row-major memory *is* a
``(1, C, R, 1)`` map in ``torch.channels_last`` memory, so the two products are
a 1x1 convolution and its weight gradient on views, with no copy (here
:func:`torch.nn.functional.conv2d` and ``aten::convolution_backward``).

Which is faster depends on the CPU and the build: on the AMD EPYC of the
project's benchmarks MKL's single-precision GEMM runs at about 160-185 GFLOP/s
on 2 threads and oneDNN's 1x1 convolution at 280-400, on the product shapes of
ViT-S/16 and EfficientFormer-L1 (``docs/benchmarks.md``, whole models); the
dense 1x1 convolutions of a model (EfficientFormer's MLPs) already run on
oneDNN.  :func:`products_engine` sets the choice, made per call: oneDNN for
float32 CPU tensors where PyTorch has it, :func:`torch.mm` otherwise (float64,
for which oneDNN has no kernels; CUDA; empty products).  Both are exact
products rounded in float32; they differ only in the order of the sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["PRODUCTS", "grad_weight_product", "gs_times_weight", "products_engine"]

#: The settings of the backward products: ``"auto"`` (oneDNN for float32 CPU tensors
#: where PyTorch has it, else ``torch.mm``) or ``"mm"`` (always ``torch.mm``).
PRODUCTS = ("auto", "mm")

_choice = {"engine": "auto"}


def products_engine(engine: str | None = None) -> str:
    """Get, or set, which GEMM runs the backward products of converted layers on the CPU.

    Parameters
    ----------
    engine : {"auto", "mm"}, optional
        ``"auto"`` (default): oneDNN for float32 CPU tensors where PyTorch was
        built with it, :func:`torch.mm` otherwise; ``"mm"``: always
        :func:`torch.mm` (on a CPU whose BLAS beats oneDNN, say).  Omitted:
        only report.

    Returns
    -------
    str
        The setting before the call.

    Raises
    ------
    ValueError
        If ``engine`` is not one of :data:`PRODUCTS`.

    Examples
    --------
    >>> from lbpcore.torch import products_engine
    >>> before = products_engine("mm")
    >>> products_engine(before)
    'mm'
    """
    before = _choice["engine"]
    if engine is not None:
        if engine not in PRODUCTS:
            raise ValueError(f"engine must be one of {PRODUCTS}, got {engine!r}")
        _choice["engine"] = engine
    return before


def _onednn(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the products of ``a`` and ``b`` go through oneDNN."""
    if _choice["engine"] == "mm" or a.device.type != "cpu" or a.dtype != torch.float32:
        return False
    if 0 in a.shape or 0 in b.shape or not torch.backends.mkldnn.is_available():
        return False
    return a.is_contiguous() and b.is_contiguous()


def _as_map(rows: torch.Tensor) -> torch.Tensor:
    """A contiguous ``(R, C)`` matrix as the ``(1, C, R, 1)`` channels-last map on its memory."""
    return rows[None, :, None, :].permute(0, 3, 1, 2)


def _as_rows(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_as_map` (a view when ``y`` is in channels-last memory, else a copy)."""
    return y.permute(0, 2, 3, 1).reshape(y.shape[2], y.shape[1])


def gs_times_weight(gs2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``gs2 @ weight``: ``(R, C_out) @ (C_out, C_in)`` -> ``(R, C_in)``, the coefficients of ``grad_x``."""
    if not _onednn(gs2, weight):
        return torch.mm(gs2, weight)
    w = weight.t().contiguous()[:, :, None, None]  # (C_in, C_out, 1, 1): the 1x1 convolution gs2 -> gx
    return _as_rows(F.conv2d(_as_map(gs2), w))


def grad_weight_product(gs2: torch.Tensor, xs2: torch.Tensor) -> torch.Tensor:
    """``gs2.T @ xs2``: ``(R, C_out)`` and ``(R, C_in)`` -> ``(C_out, C_in)``, the weight gradient."""
    if not _onednn(gs2, xs2):
        return torch.mm(gs2.t(), xs2)
    c_out, c_in = gs2.shape[1], xs2.shape[1]
    w = xs2.new_empty((c_out, c_in, 1, 1))  # only its shape is read
    _, gw, _ = torch.ops.aten.convolution_backward(_as_map(gs2), _as_map(xs2), w, None, [1, 1], [0, 0], [1, 1],
                                                   False, [0, 0], 1, [False, True, False])
    return gw.view(c_out, c_in)
